//! What the one-shot commands share: how a command ends. Each command's body lives beside the module it drives
//! (`report::command`, `office::cli::publish`, …) and returns an [`Outcome`]; `main.rs` only parses the command
//! line, dispatches, and maps the outcome to the exit status.

use std::fmt;

/// How a command failed, which decides its exit status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Exit 1: the command ran and did not succeed (a device did not answer, a credential is invalid, the office
    /// could not be reached). The message (if not empty) goes to standard error; what the command found has already
    /// been printed.
    Failed(String),
    /// Exit 2: bad usage, input or config; the message says what to change.
    Usage(String),
}

impl Failure {
    /// A usage failure with this message.
    pub fn usage(msg: impl Into<String>) -> Self {
        Failure::Usage(msg.into())
    }

    /// A failure whose findings the command has printed already.
    pub fn quiet() -> Self {
        Failure::Failed(String::new())
    }

    /// The process exit status: 1 or 2.
    pub fn status(&self) -> u8 {
        match self {
            Failure::Failed(_) => 1,
            Failure::Usage(_) => 2,
        }
    }

    /// The message for standard error (may be empty).
    pub fn message(&self) -> &str {
        match self {
            Failure::Failed(m) | Failure::Usage(m) => m,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

/// The result of a command: `Ok` exits 0.
pub type Outcome = Result<(), Failure>;

/// `Ok` when `ok`, else a quiet exit-1 failure (the command printed what it found).
pub fn ok_if(ok: bool) -> Outcome {
    if ok { Ok(()) } else { Err(Failure::quiet()) }
}

/// A time given on the command line (`--at`, `--effective`): the named flag, any form [`crate::domain::Timestamp::parse`]
/// takes; `None` is the clock.
pub fn time_arg(flag: &str, value: Option<&str>) -> Result<crate::domain::Timestamp, Failure> {
    match value.map(crate::domain::Timestamp::parse) {
        None => Ok(crate::hw::now()),
        Some(Ok(t)) => Ok(t),
        Some(Err(e)) => Err(Failure::usage(format!("{flag} {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_map_to_their_exit_status() {
        assert_eq!(Failure::usage("x").status(), 2);
        assert_eq!(Failure::quiet().status(), 1);
        assert_eq!(Failure::quiet().message(), "");
        assert_eq!(ok_if(true), Ok(()));
        assert_eq!(ok_if(false), Err(Failure::quiet()));
    }

    #[test]
    fn a_time_argument_names_its_flag_when_it_is_wrong() {
        let t = time_arg("--at", Some("2021-07-02T07:38:27+0000")).unwrap();
        assert_eq!(Some(t), crate::domain::Timestamp::parse_rfc3339("2021-07-02T07:38:27Z"));
        let Err(Failure::Usage(m)) = time_arg("--at", Some("yesterday")) else { panic!("accepted") };
        assert!(m.starts_with("--at "), "{m}");
    }
}

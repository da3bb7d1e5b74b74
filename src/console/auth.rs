//! Operator login: PINs kept only as Argon2id hashes (PHC strings) in the config, sessions as random tokens in an
//! HttpOnly cookie, and a lock-out: after `lockout_failures` wrong PINs in a row the console refuses every login for
//! `lockout` (a passer-by trying PINs gets nowhere).
//!
//! Invariants: a PIN is never stored, logged or compared in clear; time is an argument (tests drive it); a locked
//! console stays locked for the whole period whatever is typed.

use std::collections::HashMap;
use std::time::Duration;

use argon2::{PasswordHash, PasswordHasher, PasswordVerifier};

use crate::domain::Timestamp;

/// Hash a PIN for the config (`sibi console hash-pin`).
pub fn hash_pin(pin: &str) -> Result<String, String> {
    argon2::Argon2::default().hash_password(pin.as_bytes()).map(|h| h.to_string()).map_err(|e| e.to_string())
}

/// Check that `hash` is a PHC string this console can verify.
pub fn check_hash(hash: &str) -> Result<(), String> {
    PasswordHash::new(hash).map(drop).map_err(|e| format!("not a PIN hash (`sibi console hash-pin`): {e}"))
}

/// True if `pin` matches `hash` (constant-time inside argon2).
pub fn pin_matches(pin: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| argon2::Argon2::default().verify_password(pin.as_bytes(), &h).is_ok())
}

/// Why a login was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Wrong operator or PIN; this many tries are left before the lock.
    Wrong {
        /// Tries left.
        left: u32,
    },
    /// Locked until this time.
    Locked {
        /// Until.
        until: Timestamp,
    },
}

impl Refusal {
    /// For the login page.
    pub fn zh(&self, now: Timestamp) -> String {
        match self {
            Refusal::Wrong { left: 0 } => "PIN 错误，控制台已锁定".into(),
            Refusal::Wrong { left } => format!("工号或 PIN 错误，还可尝试 {left} 次"),
            Refusal::Locked { until } => {
                let minutes = ((until.0 - now.0).max(0) + 59_999) / 60_000;
                format!("PIN 错误次数过多，控制台已锁定，请 {minutes} 分钟后再试")
            }
        }
    }
}

/// Sessions and the failure counter.
#[derive(Debug)]
pub struct Sessions {
    failures_allowed: u32,
    lockout: Duration,
    ttl: Duration,
    failures: u32,
    locked_until: Option<Timestamp>,
    live: HashMap<String, (String, Timestamp)>,
}

impl Sessions {
    /// Lock after `failures_allowed` wrong PINs in a row, for `lockout`; sessions last `ttl`.
    pub fn new(failures_allowed: u32, lockout: Duration, ttl: Duration) -> Sessions {
        Sessions { failures_allowed, lockout, ttl, failures: 0, locked_until: None, live: HashMap::new() }
    }

    /// Whether logins are refused now.
    pub fn locked(&self, now: Timestamp) -> Option<Timestamp> {
        self.locked_until.filter(|u| now < *u)
    }

    /// Record a login attempt whose PIN check gave `ok` for `operator`: a new session token, or the refusal.
    pub fn attempt(&mut self, operator: &str, ok: bool, now: Timestamp) -> Result<String, Refusal> {
        if let Some(until) = self.locked(now) {
            return Err(Refusal::Locked { until });
        }
        if !ok {
            self.failures += 1;
            if self.failures >= self.failures_allowed {
                self.failures = 0;
                let until = now.plus_ms(self.lockout.as_millis() as i64);
                self.locked_until = Some(until);
                return Err(Refusal::Locked { until });
            }
            return Err(Refusal::Wrong { left: self.failures_allowed - self.failures });
        }
        self.failures = 0;
        let token = crate::keys::random32().map(|b| crate::keys::hex(&b)).map_err(|_| Refusal::Wrong { left: 0 })?;
        self.live.retain(|_, (_, exp)| *exp > now);
        self.live.insert(token.clone(), (operator.to_string(), now.plus_ms(self.ttl.as_millis() as i64)));
        Ok(token)
    }

    /// The operator behind a live session token.
    pub fn operator(&self, token: &str, now: Timestamp) -> Option<String> {
        self.live.get(token).filter(|(_, exp)| *exp > now).map(|(op, _)| op.clone())
    }

    /// End a session.
    pub fn logout(&mut self, token: &str) {
        self.live.remove(token);
    }
}

/// `sibi console hash-pin [--pin P]`: the PIN from the flag or the first line of `stdin`, checked (4–12 digits),
/// hashed for `[[console.operator]] pin_hash`.
pub fn hash_pin_command(pin: Option<String>, stdin: &mut dyn std::io::BufRead) -> Result<String, crate::cli::Failure> {
    use crate::cli::Failure;
    let pin = match pin {
        Some(p) => p,
        None => {
            let mut line = String::new();
            stdin.read_line(&mut line).map_err(|_| Failure::usage("cannot read the PIN from stdin"))?;
            line.trim().to_string()
        }
    };
    if !(4..=12).contains(&pin.len()) || !pin.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Failure::usage("a PIN is 4–12 digits"));
    }
    hash_pin(&pin).map_err(Failure::Usage)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_are_hashed_and_checked() {
        let h = hash_pin("2468").unwrap();
        assert!(h.starts_with("$argon2id$") && !h.contains("2468"));
        assert!(check_hash(&h).is_ok() && check_hash("2468").is_err());
        assert!(pin_matches("2468", &h) && !pin_matches("2469", &h) && !pin_matches("2468", "garbage"));
    }

    #[test]
    fn five_wrong_pins_lock_the_console_for_the_period_whatever_is_typed() {
        let mut s = Sessions::new(5, Duration::from_secs(300), Duration::from_secs(3600));
        let t = Timestamp(1_000_000);
        for left in [4, 3, 2, 1] {
            assert_eq!(s.attempt("vol-01", false, t), Err(Refusal::Wrong { left }));
        }
        let until = t.plus_ms(300_000);
        assert_eq!(s.attempt("vol-01", false, t), Err(Refusal::Locked { until }));
        assert_eq!(s.attempt("vol-01", true, t.plus_ms(299_999)), Err(Refusal::Locked { until }), "even the right PIN");
        assert!(Refusal::Locked { until }.zh(t).contains("5 分钟后再试"));
        let token = s.attempt("vol-01", true, until).unwrap();
        assert_eq!(s.operator(&token, until).as_deref(), Some("vol-01"));
        assert_eq!(s.operator(&token, until.plus_ms(3_600_000)), None, "expired");
        assert_eq!(s.operator("forged", until), None);
        s.logout(&token);
        assert_eq!(s.operator(&token, until), None);
    }

    #[test]
    fn a_right_pin_resets_the_count() {
        let mut s = Sessions::new(3, Duration::from_secs(60), Duration::from_secs(60));
        let t = Timestamp(0);
        assert!(s.attempt("a", false, t).is_err() && s.attempt("a", false, t).is_err());
        assert!(s.attempt("a", true, t).is_ok());
        assert_eq!(s.attempt("a", false, t), Err(Refusal::Wrong { left: 2 }));
    }

    #[test]
    fn hash_pin_takes_the_first_line_of_stdin_and_refuses_what_is_not_a_pin() {
        let h = hash_pin_command(None, &mut &b"1357\nignored\n"[..]).unwrap();
        assert!(pin_matches("1357", &h));
        for bad in ["123", "1234567890123", "12a4", ""] {
            let e = hash_pin_command(Some(bad.into()), &mut &b""[..]).unwrap_err();
            assert_eq!((e.status(), e.message()), (2, "a PIN is 4–12 digits"), "{bad:?}");
        }
    }
}

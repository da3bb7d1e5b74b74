//! Living under systemd (`Type=notify`, `WatchdogSec=`): the daemon says when it is ready, pings the watchdog from its
//! main loop (so a hung loop stops the pings and systemd restarts it), says when it is stopping, and logs to the
//! journal when the journal is its stderr. Outside systemd every call here is a no-op.

use std::time::{Duration, Instant};

use sd_notify::NotifyState;

/// Readiness and watchdog notifications.
#[derive(Debug)]
pub struct Notifier {
    watchdog: Option<Duration>,
    last_ping: Option<Instant>,
}

impl Notifier {
    /// From the environment systemd sets (`NOTIFY_SOCKET`, `WATCHDOG_USEC`).
    pub fn from_env() -> Notifier {
        Notifier { watchdog: sd_notify::watchdog_enabled(), last_ping: None }
    }

    /// The watchdog period, if systemd asked for pings.
    pub fn watchdog(&self) -> Option<Duration> {
        self.watchdog
    }

    /// Startup is finished.
    pub fn ready(&mut self, status: &str) {
        if let Err(e) = sd_notify::notify(&[NotifyState::Ready, NotifyState::Status(status)]) {
            tracing::warn!(error = %e, "cannot notify systemd");
        }
        self.ping();
    }

    /// Call from the main loop: pings the watchdog at a third of its period.
    pub fn alive(&mut self) {
        if let Some(period) = self.watchdog
            && self.last_ping.is_none_or(|t| t.elapsed() >= period / 3)
        {
            self.ping();
        }
    }

    fn ping(&mut self) {
        if self.watchdog.is_some() {
            let _ = sd_notify::notify(&[NotifyState::Watchdog]);
            self.last_ping = Some(Instant::now());
        }
    }

    /// Shutdown has begun.
    pub fn stopping(&self) {
        let _ = sd_notify::notify(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
    }
}

/// Log to the journal when systemd connected stderr to it (`JOURNAL_STREAM`), to stderr otherwise. `SIBI_LOG` sets
/// the filter (default `info`).
pub fn init_logging() {
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = || EnvFilter::try_from_env("SIBI_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    if std::env::var_os("JOURNAL_STREAM").is_some()
        && let Ok(journal) = tracing_journald::layer()
    {
        let _ = tracing_subscriber::registry()
            .with(filter())
            .with(journal.with_syslog_identifier("sibi".into()))
            .try_init();
        return;
    }
    let _ = tracing_subscriber::fmt().with_env_filter(filter()).with_writer(std::io::stderr).try_init();
}

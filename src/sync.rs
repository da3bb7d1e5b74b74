//! Sync to the street office: an outbox over the entries table, signed batches, acknowledgement up to a sequence
//! number, retries with backoff and jitter. Never on the decision path: it runs on a thread of its own with its own
//! database connection, and the gate decides and records at full speed with the office unreachable for days.
//!
//! Wire format: `POST {office}/v1/ingest` with a JSON body `{"gate": ID, "entries": [ROW...]}` (each row every column
//! of the entries table), headers `x-sibi-gate: ID`, `x-sibi-counter: N` and `x-sibi-signature: HEX` (Ed25519, by
//! the gate key from `sibi keygen`, over `sibi-request N\n` and the exact body bytes: [`crate::keys::request_message`]).
//! N is the gate's request counter, committed in the store before each request and only ever rising; the office
//! takes each gate's counters only rising, so a recorded request sent again is refused (401). The office answers `{"acked": SEQ}` once the rows are committed; it stores
//! rows by (gate, seq), so a batch resent after a lost answer changes nothing. The batch also says how many entries
//! the gate still holds after it (`"backlog"`), and after every round the gate sends a signed `POST /v1/heartbeat`
//! (`{"gate", "backlog"}`) so the office sees a quiet gate as alive and a catching-up gate's remaining backlog.

use std::path::PathBuf;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use serde::Deserialize;

use crate::domain::Timestamp;
use crate::hw::StopFlag;
use crate::store::{Store, SyncStatus};

/// `[sync]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncSettings {
    /// The office's base URL: `https://...`, or `http://` on loopback only.
    pub office: String,
    /// The gate's private signing key (`sibi keygen --name gate`).
    pub gate_key: PathBuf,
    /// Seconds between rounds when the backlog is empty (default 5).
    #[serde(default = "default_interval")]
    pub interval_secs: f64,
    /// Entries per batch (default 500).
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// HTTP timeout per request, ms (default 10000).
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// Hold back a pass whose gate action is not yet recorded for this long, ms (default 2000).
    #[serde(default = "default_settle")]
    pub settle_ms: i64,
    /// Longest wait between retries, seconds (default 300).
    #[serde(default = "default_max_backoff")]
    pub max_backoff_secs: f64,
    /// The office's public signing key (`office.pub`): policy bundles are fetched and applied only if signed by it.
    /// Without it no bundle is fetched.
    pub office_key: Option<PathBuf>,
    /// Hour of the day (UTC+8, 0–23) at which the day's report is made and queued for the office (default 22).
    #[serde(default = "default_report_hour")]
    pub report_hour: u8,
    /// PEM file of the certificate authority that signed the office's TLS certificate, for an office on a private CA
    /// (default: the public web PKI roots built in).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

/// TLS that trusts only the certificates in the PEM file `path`.
pub fn tls_trusting(path: &std::path::Path) -> Result<ureq::tls::TlsConfig, String> {
    use ureq::tls::{PemItem, RootCerts, TlsConfig};
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let certs: Vec<_> = ureq::tls::parse_pem(&pem)
        .filter_map(|item| match item {
            Ok(PemItem::Certificate(c)) => Some(c.to_owned()),
            _ => None,
        })
        .collect();
    if certs.is_empty() {
        return Err(format!("{}: no CERTIFICATE in the PEM file", path.display()));
    }
    Ok(TlsConfig::builder().root_certs(RootCerts::Specific(std::sync::Arc::new(certs))).build())
}

fn default_report_hour() -> u8 {
    22
}

fn default_interval() -> f64 {
    5.0
}
fn default_batch() -> usize {
    500
}
fn default_timeout() -> u64 {
    10_000
}
fn default_settle() -> i64 {
    2_000
}
fn default_max_backoff() -> f64 {
    300.0
}

impl SyncSettings {
    /// Settings for a client built in-process (tools, tests, benchmarks) that is handed its key directly: every
    /// field at its config default, no settle delay, and no key file.
    pub fn for_office(office: impl Into<String>) -> SyncSettings {
        SyncSettings {
            office: office.into(),
            gate_key: PathBuf::new(),
            interval_secs: default_interval(),
            batch: default_batch(),
            timeout_ms: default_timeout(),
            settle_ms: 0,
            max_backoff_secs: default_max_backoff(),
            office_key: None,
            report_hour: default_report_hour(),
            ca_file: None,
        }
    }

    /// Problems, for the config loader.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        let loopback = ["http://127.", "http://localhost", "http://[::1]"].iter().any(|l| self.office.starts_with(l));
        if !(self.office.starts_with("https://") || loopback) {
            p.push(format!("`sync.office` = {:?}: use https:// (plain http only to a loopback address)", self.office));
        }
        if !(0.2..=3600.0).contains(&self.interval_secs) {
            p.push(format!("`sync.interval_secs` = {}: use 0.2–3600", self.interval_secs));
        }
        if !(1..=5000).contains(&self.batch) {
            p.push(format!("`sync.batch` = {}: use 1–5000", self.batch));
        }
        if !(100..=120_000).contains(&self.timeout_ms) {
            p.push(format!("`sync.timeout_ms` = {}: use 100–120000", self.timeout_ms));
        }
        if !(0..=60_000).contains(&self.settle_ms) {
            p.push(format!("`sync.settle_ms` = {}: use 0–60000", self.settle_ms));
        }
        if self.report_hour > 23 {
            p.push(format!("`sync.report_hour` = {}: use 0–23", self.report_hour));
        }
        if !(1.0..=86_400.0).contains(&self.max_backoff_secs) {
            p.push(format!("`sync.max_backoff_secs` = {}: use 1–86400", self.max_backoff_secs));
        }
        p
    }
}

/// Why a round failed.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The local database.
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
    /// The network or the office.
    #[error("office: {0}")]
    Office(String),
}

/// One gate's sync client.
pub struct SyncClient {
    agent: ureq::Agent,
    base: String,
    key: SigningKey,
    gate: String,
    batch: usize,
    settle_ms: i64,
}

#[derive(Deserialize)]
struct Ack {
    acked: i64,
}

impl SyncClient {
    /// A client for `gate` signing with `key`.
    pub fn new(settings: &SyncSettings, gate: &str, key: SigningKey) -> SyncClient {
        let mut config = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_millis(settings.timeout_ms)))
            .http_status_as_error(false);
        if let Some(ca) = &settings.ca_file {
            match tls_trusting(ca) {
                Ok(tls) => config = config.tls_config(tls),
                Err(e) => {
                    tracing::error!(error = %e, "`sync.ca_file` unusable; the office's certificate will not verify")
                }
            }
        }
        let agent = config.build().new_agent();
        SyncClient {
            agent,
            base: settings.office.trim_end_matches('/').to_string(),
            key,
            gate: gate.to_string(),
            batch: settings.batch,
            settle_ms: settings.settle_ms,
        }
    }

    /// Send one batch; returns how many entries the office acknowledged (0: nothing to send).
    pub fn round(&self, store: &mut Store, now: Timestamp) -> Result<usize, SyncError> {
        let rows = store.outbox_batch(self.batch, now, self.settle_ms)?;
        let Some(last) = rows.last().and_then(|r| r.get("seq")).and_then(serde_json::Value::as_i64) else {
            return Ok(0);
        };
        let backlog = store.head_seq()? - last;
        let body = serde_json::to_vec(&serde_json::json!({ "gate": self.gate, "entries": rows, "backlog": backlog }))
            .map_err(|e| SyncError::Office(format!("cannot encode the batch: {e}")))?;
        let text = match self.post_signed(store, "/v1/ingest", &body) {
            Ok(t) => t,
            Err(e) => {
                store.sync_failed(&e.to_string(), now)?;
                return Err(e);
            }
        };
        let ack: Ack = match serde_json::from_str(&text) {
            Ok(a) => a,
            Err(e) => {
                let e = SyncError::Office(format!("unreadable acknowledgement: {e}"));
                store.sync_failed(&e.to_string(), now)?;
                return Err(e);
            }
        };
        // Never beyond what was sent, never backwards.
        let acked = ack.acked.min(last);
        let before = store.acked_seq()?;
        store.sync_acked(acked, now)?;
        Ok(usize::try_from(acked - before).unwrap_or(0))
    }

    /// POST `body` to `path`, signed with the gate key under the next request counter (committed in `store` first,
    /// so no counter is ever used twice); the answer's text if the office said 200.
    fn post_signed(&self, store: &mut Store, path: &str, body: &[u8]) -> Result<String, SyncError> {
        let counter = store.next_request_counter(crate::hw::now())?;
        let signature = crate::keys::sign_request(&self.key, counter, body);
        let mut response = self
            .agent
            .post(&format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .header("x-sibi-gate", &self.gate)
            .header(crate::keys::COUNTER_HEADER, counter.to_string())
            .header("x-sibi-signature", &signature)
            .send(body)
            .map_err(|e| SyncError::Office(e.to_string()))?;
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        if status != 200 {
            return Err(SyncError::Office(format!("HTTP {status}: {}", text.chars().take(200).collect::<String>())));
        }
        Ok(text)
    }

    /// Tell the office this gate is alive and how many entries it still has to send (signed like a batch).
    pub fn heartbeat(&self, store: &mut Store) -> Result<(), SyncError> {
        let backlog = store.sync_status()?.backlog;
        let body = serde_json::to_vec(&serde_json::json!({ "gate": self.gate, "backlog": backlog }))
            .map_err(|e| SyncError::Office(format!("cannot encode the heartbeat: {e}")))?;
        self.post_signed(store, "/v1/heartbeat", &body).map(drop)
    }

    /// Send every queued daily report the office does not have yet; returns how many it took.
    pub fn send_reports(&self, store: &mut Store) -> Result<usize, SyncError> {
        let mut sent = 0;
        for (date, body) in store.unsent_reports()? {
            self.post_signed(store, "/v1/report", body.as_bytes())?;
            store.report_sent(&date, crate::hw::now())?;
            sent += 1;
        }
        Ok(sent)
    }

    /// The office's current signed bundle for `community` as text, `None` if it has none.
    pub fn fetch_bundle(&self, community: &str) -> Result<Option<String>, SyncError> {
        let mut response = self
            .agent
            .get(&format!("{}/v1/bundle", self.base))
            .query("community", community)
            .call()
            .map_err(|e| SyncError::Office(e.to_string()))?;
        match response.status().as_u16() {
            200 => Ok(Some(response.body_mut().read_to_string().map_err(|e| SyncError::Office(e.to_string()))?)),
            404 => Ok(None),
            s => Err(SyncError::Office(format!("bundle: HTTP {s}"))),
        }
    }

    /// One whole exchange with the office: the backlog, the queued daily reports, then the heartbeat. Returns how
    /// many entries and reports went; a failure is also recorded in the store's sync status.
    pub fn exchange(&self, store: &mut Store) -> Result<(usize, usize), SyncError> {
        let result = self
            .drain(store)
            .and_then(|n| self.send_reports(store).map(|r| (n, r)))
            .and_then(|sent| self.heartbeat(store).map(|()| sent));
        if let Err(e) = &result {
            store.sync_failed(&e.to_string(), crate::hw::now())?;
        }
        result
    }

    /// Rounds until the backlog is empty or a round fails.
    pub fn drain(&self, store: &mut Store) -> Result<usize, SyncError> {
        let mut total = 0;
        loop {
            let n = self.round(store, crate::hw::now())?;
            if n == 0 {
                return Ok(total);
            }
            total += n;
        }
    }
}

/// The wait before retry `attempt` (1, 2, ...): exponential from 1 s up to `max`, times a random factor in
/// [0.5, 1.5) so a street's gates coming back online do not all call at once.
pub fn backoff(attempt: u32, max: Duration) -> Duration {
    let base = Duration::from_secs(1).saturating_mul(1u32 << attempt.saturating_sub(1).min(16)).min(max);
    let mut r = [0u8; 2];
    let _ = getrandom::fill(&mut r);
    let jitter = 0.5 + f64::from(u16::from_le_bytes(r)) / 65_536.0;
    base.mul_f64(jitter)
}

/// Make and queue `date`'s report.
pub fn queue_report(store: &mut Store, gate: &str, community: &str, date: &str) -> Result<(), String> {
    let r = crate::report::daily(store, gate, community, date)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("`{date}` is not a date"))?;
    let body = serde_json::to_string(&r).map_err(|e| e.to_string())?;
    store.queue_report(date, &body, crate::hw::now()).map_err(|e| e.to_string())
}

/// Queue today's report once its hour has come (UTC+8).
fn report_if_due(store: &mut Store, gate: &str, community: &str, hour: u8) {
    let now = crate::hw::now().to_rfc3339();
    let (date, h) = (&now[..10], now[11..13].parse::<u8>().unwrap_or(0));
    if h >= hour && !store.has_report(date).unwrap_or(true) {
        match queue_report(store, gate, community, date) {
            Ok(()) => tracing::info!(date, "daily report queued for the office"),
            Err(e) => tracing::warn!(error = %e, "cannot make the daily report"),
        }
    }
}

/// Where a fetched bundle goes: the office key to check it with, and the daemon's event channel.
pub struct BundleSink {
    /// The office's public signing key.
    pub office: ed25519_dalek::VerifyingKey,
    /// The daemon's source channel (the checkpoint receives `Event::Tiers`).
    pub tx: tokio::sync::mpsc::Sender<crate::hw::SourceMsg>,
    /// The camera reader's trust, which takes the bundle's lists.
    pub trust: crate::credential::SharedTrust,
}

/// Fetch, verify and apply the office's bundle; a refusal is journaled once per distinct bundle.
fn bundle_round(
    client: &SyncClient,
    store: &mut Store,
    community: &str,
    sink: &BundleSink,
    last_refused: &mut Option<String>,
) -> Result<(), SyncError> {
    let Some(text) = client.fetch_bundle(community)? else { return Ok(()) };
    let have = store.applied_bundle()?.map_or(0, |(v, _)| v);
    match crate::bundle::verify(&text, &sink.office, community, have) {
        Ok(bundle) => {
            let now = crate::hw::now();
            sink.trust
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .apply_bundle(&bundle)
                .map_err(|e| SyncError::Office(format!("policy bundle: {e}")))?;
            store.save_bundle(bundle.version, &text, &bundle.summary(), now)?;
            tracing::info!(version = bundle.version, "policy bundle {}", bundle.summary());
            let tiers = bundle.tier_changes().unwrap_or_default();
            let event = crate::checkpoint::Event::Tiers { version: bundle.version, tiers };
            let _ = sink.tx.blocking_send(crate::hw::SourceMsg::Event(crate::hw::Stamped { event, at: now }));
        }
        Err(crate::bundle::BundleError::Older { got, have }) if got == have => {}
        Err(e) => {
            if last_refused.as_deref() != Some(text.as_str()) {
                tracing::warn!(error = %e, "policy bundle refused; the last good one stays");
                store.journal(crate::hw::now(), "policy_bundle_refused", &e.to_string())?;
                *last_refused = Some(text);
            }
        }
    }
    Ok(())
}

/// Run the sync loop on a thread of its own until `stop`. Acknowledged entries older than `retention_ms` are purged
/// at most once an hour, after a successful round. The day's report is made at `settings.report_hour` and sent with
/// the entries; with a `bundles` sink, the office's policy bundle is fetched every round.
#[allow(clippy::too_many_arguments)]
pub fn spawn(
    settings: SyncSettings,
    db: PathBuf,
    gate: String,
    community: String,
    key: SigningKey,
    retention_ms: i64,
    bundles: Option<BundleSink>,
    stop: StopFlag,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name("sync".into()).spawn(move || {
        let client = SyncClient::new(&settings, &gate, key);
        let mut store = match Store::open(&db, &gate) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "sync cannot open the database; records stay local");
                return;
            }
        };
        let interval = Duration::from_secs_f64(settings.interval_secs);
        let max = Duration::from_secs_f64(settings.max_backoff_secs);
        let mut failures = 0u32;
        let mut last_purge: Option<std::time::Instant> = None;
        let mut last_refused = None;
        while !stop.is_stopped() {
            report_if_due(&mut store, &gate, &community, settings.report_hour);
            let result = client.exchange(&mut store).and_then(|(n, _)| match &bundles {
                Some(sink) => bundle_round(&client, &mut store, &community, sink, &mut last_refused).map(|_| n),
                None => Ok(n),
            });
            let wait = match result {
                Ok(n) => {
                    if failures > 0 {
                        let _ = store.journal(crate::hw::now(), "sync_online", "office reachable again");
                    }
                    if failures > 0 || n > 0 {
                        let s = store.sync_status().ok();
                        tracing::info!(sent = n, backlog = s.map_or(-1, |s| s.backlog), "synced to the office");
                    }
                    failures = 0;
                    if last_purge.is_none_or(|t| t.elapsed() >= Duration::from_secs(3600)) {
                        last_purge = Some(std::time::Instant::now());
                        match store.purge_synced(crate::hw::now(), retention_ms) {
                            Ok(0) => {}
                            Ok(n) => tracing::info!(purged = n, "acknowledged entries past retention deleted"),
                            Err(e) => tracing::warn!(error = %e, "purge failed"),
                        }
                    }
                    interval
                }
                Err(e) => {
                    if failures == 0 {
                        let _ = store.journal(crate::hw::now(), "sync_offline", &e.to_string());
                    }
                    failures += 1;
                    let wait = backoff(failures, max);
                    let backlog = store.sync_status().map_or(-1, |s| s.backlog);
                    tracing::warn!(error = %e, backlog, retry_in_ms = wait.as_millis() as u64, "sync failed");
                    wait
                }
            };
            let until = std::time::Instant::now() + wait;
            while !stop.is_stopped() && std::time::Instant::now() < until {
                std::thread::sleep(Duration::from_millis(100).min(until - std::time::Instant::now()));
            }
        }
    })
}

/// The status line for `sibi sync` and the console.
pub fn describe(s: &SyncStatus) -> String {
    let t = |ms: Option<i64>| ms.map_or("never".to_string(), |m| Timestamp(m).to_rfc3339());
    format!(
        "acknowledged up to #{}, backlog {}, last success {}, last attempt {}{}",
        s.acked_seq,
        s.backlog,
        t(s.last_success_ms),
        t(s.last_attempt_ms),
        s.last_error.as_ref().map(|e| format!(", last error: {e}")).unwrap_or_default()
    )
}

/// Fetch the office's bundle for the gate's community and keep it if it verifies and is newer: its version.
fn client_bundle(
    client: &SyncClient,
    config: &crate::config::Config,
    store: &mut Store,
    key: &ed25519_dalek::VerifyingKey,
) -> Result<Option<u64>, String> {
    let Some(text) = client.fetch_bundle(&config.gate.community).map_err(|e| e.to_string())? else {
        return Ok(None);
    };
    let have = store.applied_bundle().map_err(|e| e.to_string())?.map_or(0, |(v, _)| v);
    match crate::bundle::verify(&text, key, &config.gate.community, have) {
        Ok(b) => {
            store.save_bundle(b.version, &text, &b.summary(), crate::hw::now()).map_err(|e| e.to_string())?;
            Ok(Some(b.version))
        }
        Err(crate::bundle::BundleError::Older { got, have }) if got == have => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

/// `sibi sync --config F [--now]`: with `now`, sends the whole backlog; then prints where sync stands. Exit 1 when
/// the office could not be reached.
pub fn command(path: &std::path::Path, now: bool) -> crate::cli::Outcome {
    use crate::cli::Failure;
    let config = crate::config::load(path).map_err(|e| Failure::Usage(e.to_string()))?;
    let Some(s) = &config.sync else {
        return Err(Failure::usage(format!("{} has no [sync] section: records stay on this gate", path.display())));
    };
    let mut store = Store::open(&config.db_path, &config.gate.id).map_err(|e| Failure::Usage(e.to_string()))?;
    let mut outcome = Ok(());
    if now {
        let client = SyncClient::new(&s.settings, &config.gate.id, s.key.clone());
        match client.exchange(&mut store) {
            Ok((n, r)) => println!("sent {n} entries and {r} daily reports to {}", s.settings.office),
            Err(e) => {
                println!("sync failed: {e}");
                outcome = Err(Failure::quiet());
            }
        }
        // The office's policy bundle too, kept for the daemon's next start (a running daemon fetches it itself).
        if let Some(key) = s.office_key {
            match client_bundle(&client, &config, &mut store, &key) {
                Ok(Some(v)) => println!("policy bundle version {v} applied"),
                Ok(None) => {}
                Err(e) => {
                    println!("policy bundle: {e}");
                    outcome = Err(Failure::quiet());
                }
            }
        }
    }
    let status = store.sync_status().map_err(|e| Failure::Usage(e.to_string()))?;
    println!("{}", describe(&status));
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_the_cap_with_jitter() {
        let max = Duration::from_secs(60);
        for attempt in 1..20 {
            let b = backoff(attempt, max);
            let base = Duration::from_secs(1 << (attempt - 1).min(16)).min(max);
            assert!(b >= base.mul_f64(0.5) && b < base.mul_f64(1.5), "attempt {attempt}: {b:?}");
        }
        let samples: std::collections::HashSet<u128> = (0..20).map(|_| backoff(3, max).as_micros()).collect();
        assert!(samples.len() > 1, "jittered");
    }

    #[test]
    fn plain_http_only_to_loopback() {
        let s = SyncSettings::for_office;
        assert!(s("http://127.0.0.1:8700").problems().is_empty());
        assert!(s("https://office.example.gov.cn").problems().is_empty());
        assert_eq!(s("http://office.example.gov.cn").problems().len(), 1);
    }
}

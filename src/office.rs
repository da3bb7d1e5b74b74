//! The street office server (`sibi office serve`): enrolled gates, signed ingest idempotent on (gate, seq), and a
//! Chinese status page.
//!
//! Invariants: a batch is accepted only from an enrolled gate whose signature over the exact body verifies, and only
//! if every row belongs to that gate; rows are committed (WAL, `synchronous=FULL`) before the acknowledgement is sent;
//! a row already held is left as it is, so a resent batch changes nothing.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use ed25519_dalek::{Verifier, VerifyingKey};
use rusqlite::{Connection, params};
use serde::Deserialize;

use crate::domain::Timestamp;

/// `office.toml` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOfficeConfig {
    office: RawOffice,
    #[serde(default)]
    gate: Vec<RawEnrollment>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOffice {
    /// Address to listen on (`127.0.0.1:8700`; put TLS in front for anything else).
    listen: String,
    /// SQLite database file, relative to this file.
    database: PathBuf,
    /// Display name (某某街道办事处).
    name: Option<String>,
    /// A day's report is due by this hour of that day (UTC+8, 1–24; default 24: by midnight).
    report_due_hour: Option<u8>,
    /// The office's Ed25519 key that signs policy bundles (`sibi keygen --name office`); gates hold `office.pub`.
    signing_key: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEnrollment {
    id: String,
    /// `sibi-ed25519-public:...` (the gate's `gate.pub`), inline or as a path.
    key: String,
    name: Option<String>,
    community: Option<String>,
}

/// An enrolled gate.
#[derive(Debug, Clone)]
pub struct Enrolled {
    /// Its public key.
    pub key: VerifyingKey,
    /// Display name.
    pub name: String,
    /// Community.
    pub community: String,
}

/// The office's validated configuration.
#[derive(Debug, Clone)]
pub struct OfficeConfig {
    /// Listen address.
    pub listen: SocketAddr,
    /// Absolute database path.
    pub database: PathBuf,
    /// Display name.
    pub name: String,
    /// Enrolled gates by id.
    pub gates: BTreeMap<String, Enrolled>,
    /// A day's report is due by this hour of that day (UTC+8).
    pub report_due_hour: u8,
    /// The key that signs policy bundles.
    pub signing_key: Option<ed25519_dalek::SigningKey>,
}

/// Load and check `office.toml`; every problem is listed.
pub fn load(path: &Path) -> Result<OfficeConfig, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let raw: RawOfficeConfig = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut problems = Vec::new();
    let listen = raw.office.listen.parse::<SocketAddr>().map_err(|e| problems.push(format!("`office.listen`: {e}")));
    let report_due_hour = raw.office.report_due_hour.unwrap_or(24);
    if !(1..=24).contains(&report_due_hour) {
        problems.push(format!("`office.report_due_hour` = {report_due_hour}: use 1–24"));
    }
    let mut gates = BTreeMap::new();
    for (i, g) in raw.gate.into_iter().enumerate() {
        let text = if g.key.starts_with("sibi-ed25519-public:") {
            g.key.clone()
        } else {
            std::fs::read_to_string(base.join(&g.key)).unwrap_or_default()
        };
        match crate::credential::pass::parse_verifying_key(&text) {
            Some(key) => {
                let e = Enrolled {
                    key,
                    name: g.name.unwrap_or_else(|| g.id.clone()),
                    community: g.community.unwrap_or_default(),
                };
                if gates.insert(g.id.clone(), e).is_some() {
                    problems.push(format!("`gate[{i}]`: gate `{}` is enrolled twice", g.id));
                }
            }
            None => problems.push(format!("`gate[{i}].key`: not a gate public key (`sibi keygen --name gate`)")),
        }
    }
    let signing_key = raw.office.signing_key.and_then(|p| {
        crate::credential::pass::read_signing_key(&base.join(p))
            .map_err(|e| problems.push(format!("`office.signing_key`: {e}")))
            .ok()
    });
    match (listen, problems.is_empty()) {
        (Ok(listen), true) => Ok(OfficeConfig {
            listen,
            database: base.join(raw.office.database),
            name: raw.office.name.unwrap_or_else(|| "街道办".into()),
            gates,
            report_due_hour,
            signing_key,
        }),
        _ => Err(format!("{} is not usable:\n  - {}", path.display(), problems.join("\n  - "))),
    }
}

/// The office database.
pub struct OfficeDb {
    conn: Connection,
}

/// One gate as the office sees it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct GateState {
    /// Gate id.
    pub gate: String,
    /// Last accepted batch (ms).
    pub last_contact_ms: Option<i64>,
    /// Highest sequence number held.
    pub acked_seq: i64,
    /// Entries held.
    pub entries: i64,
}

impl OfficeDb {
    /// Open (creating) the database.
    pub fn open(path: &Path) -> Result<OfficeDb, String> {
        if let Some(d) = path.parent() {
            let _ = std::fs::create_dir_all(d);
        }
        let e = |e: rusqlite::Error| format!("{}: {e}", path.display());
        let conn = Connection::open(path).map_err(e)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(e)?;
        conn.pragma_update(None, "synchronous", "FULL").map_err(e)?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(e)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS gates (
                gate_id TEXT PRIMARY KEY,
                last_contact_ms INTEGER,
                acked_seq INTEGER NOT NULL DEFAULT 0
            );
            CREATE TABLE IF NOT EXISTS entries (
                gate_id TEXT NOT NULL,
                seq INTEGER NOT NULL,
                at_ms INTEGER NOT NULL,
                verdict TEXT NOT NULL,
                rule TEXT NOT NULL,
                category TEXT NOT NULL,
                body TEXT NOT NULL,
                received_ms INTEGER NOT NULL,
                PRIMARY KEY (gate_id, seq)
            ) WITHOUT ROWID;
            CREATE TABLE IF NOT EXISTS bundles (
                community TEXT NOT NULL,
                version INTEGER NOT NULL,
                signed TEXT NOT NULL,
                PRIMARY KEY (community, version)
            ) WITHOUT ROWID;
            CREATE TABLE IF NOT EXISTS reports (
                gate_id TEXT NOT NULL,
                date TEXT NOT NULL,
                body TEXT NOT NULL,
                first_received_ms INTEGER NOT NULL,
                received_ms INTEGER NOT NULL,
                PRIMARY KEY (gate_id, date)
            ) WITHOUT ROWID;",
        )
        .map_err(e)?;
        Ok(OfficeDb { conn })
    }

    /// Store a verified batch; returns the highest sequence number now held for the gate.
    pub fn ingest(&mut self, gate: &str, rows: &[serde_json::Value], now: Timestamp) -> Result<i64, String> {
        let tx = self.conn.transaction().map_err(|e| e.to_string())?;
        let mut max = 0;
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO entries (gate_id, seq, at_ms, verdict, rule, category, body, received_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )
                .map_err(|e| e.to_string())?;
            for row in rows {
                let int = |k: &str| row.get(k).and_then(serde_json::Value::as_i64);
                let text = |k: &str| row.get(k).and_then(serde_json::Value::as_str).unwrap_or("");
                let seq = int("seq").unwrap_or(0);
                max = max.max(seq);
                insert
                    .execute(params![
                        gate,
                        seq,
                        int("at_ms").unwrap_or(0),
                        text("verdict"),
                        text("rule"),
                        text("category"),
                        row.to_string(),
                        now.0
                    ])
                    .map_err(|e| e.to_string())?;
            }
        }
        tx.execute(
            "INSERT INTO gates (gate_id, last_contact_ms, acked_seq) VALUES (?1, ?2, ?3)
             ON CONFLICT(gate_id) DO UPDATE SET last_contact_ms = ?2, acked_seq = MAX(acked_seq, ?3)",
            params![gate, now.0, max],
        )
        .map_err(|e| e.to_string())?;
        let acked: i64 = tx
            .query_row("SELECT acked_seq FROM gates WHERE gate_id = ?1", [gate], |r| r.get(0))
            .map_err(|e| e.to_string())?;
        tx.commit().map_err(|e| e.to_string())?;
        Ok(acked)
    }

    /// Store a gate's daily report: idempotent per (gate, date), the latest version kept, the first arrival time
    /// (which decides on time or late) kept too.
    pub fn store_report(&mut self, gate: &str, date: &str, body: &str, now: Timestamp) -> Result<(), String> {
        self.conn
            .execute(
                "INSERT INTO reports (gate_id, date, body, first_received_ms, received_ms) VALUES (?1, ?2, ?3, ?4, ?4)
                 ON CONFLICT(gate_id, date) DO UPDATE SET body = ?3, received_ms = ?4",
                params![gate, date, body, now.0],
            )
            .map_err(|e| e.to_string())?;
        Ok(())
    }

    /// The latest signed bundle for `community`.
    pub fn latest_bundle(&self, community: &str) -> Result<Option<String>, String> {
        use rusqlite::OptionalExtension;
        self.conn
            .query_row(
                "SELECT signed FROM bundles WHERE community = ?1 ORDER BY version DESC LIMIT 1",
                [community],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| e.to_string())
    }

    /// Publish the next bundle for `community`: the previous schedule plus `change`, the previous revocations plus
    /// `revoke`, signed with `key`. Returns it.
    pub fn publish(
        &mut self,
        key: &ed25519_dalek::SigningKey,
        community: &str,
        change: Option<crate::bundle::BundleTier>,
        revoke: &[String],
        now: Timestamp,
    ) -> Result<crate::bundle::Bundle, String> {
        let previous = match self.latest_bundle(community)? {
            Some(text) => {
                crate::bundle::verify(&text, &key.verifying_key(), community, 0).map_err(|e| e.to_string())?
            }
            None => crate::bundle::Bundle {
                version: 0,
                community: community.into(),
                issued_at: String::new(),
                tiers: Vec::new(),
                revoked_passes: Vec::new(),
            },
        };
        let mut b = previous;
        b.version += 1;
        b.issued_at = now.to_rfc3339();
        b.tiers.extend(change);
        for r in revoke {
            if !b.revoked_passes.contains(r) {
                b.revoked_passes.push(r.clone());
            }
        }
        if b.tier_changes().is_none() {
            return Err("a bundle needs a tier: give --tier (and --effective) for the first one".into());
        }
        let signed = serde_json::to_string(&b.sign(key)).map_err(|e| e.to_string())?;
        self.conn
            .execute(
                "INSERT INTO bundles (community, version, signed) VALUES (?1, ?2, ?3)",
                params![community, b.version as i64, signed],
            )
            .map_err(|e| e.to_string())?;
        Ok(b)
    }

    /// When a gate's report for `date` first arrived, if it has.
    pub fn report_received(&self, gate: &str, date: &str) -> Result<Option<i64>, String> {
        use rusqlite::OptionalExtension;
        self.conn
            .query_row(
                "SELECT first_received_ms FROM reports WHERE gate_id = ?1 AND date = ?2",
                params![gate, date],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| e.to_string())
    }

    /// Every gate that has reported.
    pub fn gates(&self) -> Result<Vec<GateState>, String> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT g.gate_id, g.last_contact_ms, g.acked_seq,
                    (SELECT COUNT(*) FROM entries e WHERE e.gate_id = g.gate_id)
                 FROM gates g ORDER BY g.gate_id",
            )
            .map_err(|e| e.to_string())?;
        let rows = stmt
            .query_map([], |r| {
                Ok(GateState { gate: r.get(0)?, last_contact_ms: r.get(1)?, acked_seq: r.get(2)?, entries: r.get(3)? })
            })
            .map_err(|e| e.to_string())?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| e.to_string())
    }

    /// A gate's entries as received, in order.
    pub fn entries(&self, gate: &str) -> Result<Vec<serde_json::Value>, String> {
        let mut stmt =
            self.conn.prepare("SELECT body FROM entries WHERE gate_id = ?1 ORDER BY seq").map_err(|e| e.to_string())?;
        let rows = stmt.query_map([gate], |r| r.get::<_, String>(0)).map_err(|e| e.to_string())?;
        rows.map(|r| r.map_err(|e| e.to_string()).and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string())))
            .collect()
    }
}

/// Shared server state.
pub struct Office {
    config: OfficeConfig,
    db: Mutex<OfficeDb>,
}

impl Office {
    /// Open the database for `config`.
    pub fn open(config: OfficeConfig) -> Result<Arc<Office>, String> {
        let db = OfficeDb::open(&config.database)?;
        Ok(Arc::new(Office { config, db: Mutex::new(db) }))
    }

    /// A gate's entries as held, in sequence order.
    pub fn entries(&self, gate: &str) -> Result<Vec<serde_json::Value>, String> {
        self.db.lock().map_err(|_| "database lock poisoned".to_string())?.entries(gate)
    }

    /// Every gate that has reported.
    pub fn gates(&self) -> Result<Vec<GateState>, String> {
        self.db.lock().map_err(|_| "database lock poisoned".to_string())?.gates()
    }
}

/// The HTTP routes.
pub fn router(office: Arc<Office>) -> Router {
    Router::new()
        .route("/v1/ingest", post(ingest))
        .route("/v1/report", post(report))
        .route("/v1/bundle", get(bundle))
        .route("/v1/gates", get(gates_json))
        .route("/", get(dashboard))
        .with_state(office)
}

fn refuse(status: StatusCode, why: String) -> Response {
    tracing::warn!(%why, "batch refused");
    (status, axum::Json(serde_json::json!({ "error": why }))).into_response()
}

/// The enrolled gate that signed `body`, or the refusal.
fn signed_by(office: &Office, headers: &HeaderMap, body: &[u8]) -> Result<String, (StatusCode, String)> {
    let gate = headers.get("x-sibi-gate").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let Some(enrolled) = office.config.gates.get(&gate) else {
        return Err((StatusCode::FORBIDDEN, format!("gate `{gate}` is not enrolled")));
    };
    let signature =
        headers.get("x-sibi-signature").and_then(|v| v.to_str().ok()).and_then(crate::keys::signature_from_hex);
    let Some(signature) = signature else {
        return Err((StatusCode::UNAUTHORIZED, format!("gate `{gate}`: missing or malformed signature")));
    };
    if enrolled.key.verify(body, &signature).is_err() {
        return Err((StatusCode::UNAUTHORIZED, format!("gate `{gate}`: signature does not verify (tampered?)")));
    }
    Ok(gate)
}

async fn report(State(office): State<Arc<Office>>, headers: HeaderMap, body: Bytes) -> Response {
    let gate = match signed_by(&office, &headers, &body) {
        Ok(g) => g,
        Err((status, why)) => return refuse(status, why),
    };
    let parsed: Result<crate::report::DailyReport, _> = serde_json::from_slice(&body);
    let date = match parsed {
        Ok(r) if r.gate == gate && crate::report::day_bounds(&r.date).is_some() => r.date,
        Ok(_) => return refuse(StatusCode::BAD_REQUEST, format!("gate `{gate}`: a report that is not this gate's")),
        Err(e) => return refuse(StatusCode::BAD_REQUEST, format!("gate `{gate}`: malformed report: {e}")),
    };
    let text = String::from_utf8_lossy(&body).into_owned();
    let stored = office
        .db
        .lock()
        .map_err(|_| "database lock poisoned".to_string())
        .and_then(|mut db| db.store_report(&gate, &date, &text, crate::hw::now()));
    match stored {
        Ok(()) => axum::Json(serde_json::json!({ "date": date })).into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, axum::Json(serde_json::json!({ "error": e }))).into_response(),
    }
}

async fn ingest(State(office): State<Arc<Office>>, headers: HeaderMap, body: Bytes) -> Response {
    let gate = match signed_by(&office, &headers, &body) {
        Ok(g) => g,
        Err((status, why)) => return refuse(status, why),
    };
    #[derive(Deserialize)]
    struct Batch {
        gate: String,
        entries: Vec<serde_json::Value>,
    }
    let batch: Batch = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, format!("gate `{gate}`: malformed batch: {e}")),
    };
    if batch.gate != gate
        || batch.entries.iter().any(|r| {
            r.get("gate_id").and_then(|g| g.as_str()) != Some(gate.as_str())
                || r.get("seq").and_then(serde_json::Value::as_i64).is_none_or(|s| s < 1)
        })
    {
        return refuse(StatusCode::BAD_REQUEST, format!("gate `{gate}`: rows that are not this gate's"));
    }
    let office2 = office.clone();
    let result = tokio::task::spawn_blocking(move || {
        let mut db = office2.db.lock().map_err(|_| "database lock poisoned".to_string())?;
        db.ingest(&gate, &batch.entries, crate::hw::now())
    })
    .await;
    let why = match result {
        Ok(Ok(acked)) => return axum::Json(serde_json::json!({ "acked": acked })).into_response(),
        Ok(Err(e)) => e,
        Err(e) => format!("ingest task failed: {e}"),
    };
    tracing::error!(error = %why, "ingest failed");
    (StatusCode::SERVICE_UNAVAILABLE, axum::Json(serde_json::json!({ "error": why }))).into_response()
}

async fn gates_json(State(office): State<Arc<Office>>) -> Response {
    match office.db.lock().map_err(|_| "lock".to_string()).and_then(|db| db.gates()) {
        Ok(g) => axum::Json(g).into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e).into_response(),
    }
}

/// Where a gate's report for a day stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportStatus {
    /// Arrived by the due hour.
    OnTime,
    /// Arrived after it (迟报).
    Late,
    /// Not arrived, and the due hour has passed (漏报).
    Missing,
    /// Not arrived, not yet due.
    Pending,
}

impl ReportStatus {
    /// For the page.
    pub fn zh(self) -> &'static str {
        match self {
            ReportStatus::OnTime => "已报",
            ReportStatus::Late => "迟报",
            ReportStatus::Missing => "漏报",
            ReportStatus::Pending => "待报",
        }
    }
}

impl Office {
    /// A gate's report status for `date`, as at `at`.
    pub fn report_status(&self, gate: &str, date: &str, at: Timestamp) -> Result<ReportStatus, String> {
        let (start, _) = crate::report::day_bounds(date).ok_or_else(|| format!("`{date}` is not a date"))?;
        let due = start.plus_ms(i64::from(self.config.report_due_hour) * 3_600_000);
        let received = self.db.lock().map_err(|_| "database lock poisoned".to_string())?.report_received(gate, date)?;
        Ok(match received {
            Some(t) if t <= due.0 => ReportStatus::OnTime,
            Some(_) => ReportStatus::Late,
            None if at >= due => ReportStatus::Missing,
            None => ReportStatus::Pending,
        })
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[derive(Deserialize)]
struct BundleQuery {
    community: String,
}

async fn bundle(State(office): State<Arc<Office>>, Query(q): Query<BundleQuery>) -> Response {
    match office
        .db
        .lock()
        .map_err(|_| "database lock poisoned".to_string())
        .and_then(|db| db.latest_bundle(&q.community))
    {
        Ok(Some(signed)) => ([(header::CONTENT_TYPE, "application/json")], signed).into_response(),
        Ok(None) => (StatusCode::NOT_FOUND, "no bundle for this community").into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e).into_response(),
    }
}

#[derive(Deserialize)]
struct DashboardQuery {
    /// Show the page as at this time (RFC 3339), to review a past day.
    at: Option<String>,
}

async fn dashboard(State(office): State<Arc<Office>>, Query(q): Query<DashboardQuery>) -> Response {
    let at = q.at.as_deref().and_then(Timestamp::parse_rfc3339).unwrap_or_else(crate::hw::now);
    let today = at.to_rfc3339()[..10].to_string();
    let yesterday = at.plus_ms(-86_400_000).to_rfc3339()[..10].to_string();
    let seen: BTreeMap<String, GateState> = office
        .db
        .lock()
        .ok()
        .and_then(|db| db.gates().ok())
        .unwrap_or_default()
        .into_iter()
        .map(|g| (g.gate.clone(), g))
        .collect();
    let mut rows = String::new();
    for (id, g) in &office.config.gates {
        let s = seen.get(id);
        let contact =
            s.and_then(|s| s.last_contact_ms).map_or("从未联系".to_string(), |m| Timestamp(m).to_rfc3339());
        let status = |date: &str| {
            let s = office.report_status(id, date, at).unwrap_or(ReportStatus::Pending);
            format!(
                "<td class=\"{}\">{}</td>",
                serde_json::to_value(s).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default(),
                s.zh()
            )
        };
        rows.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>{}{}</tr>",
            esc(&g.name),
            esc(&g.community),
            esc(&contact),
            s.map_or(0, |s| s.entries),
            s.map_or(0, |s| s.acked_seq),
            status(&yesterday),
            status(&today),
        ));
    }
    let page = format!(
        "<!doctype html><html lang=\"zh-CN\"><head><meta charset=\"utf-8\"><title>{name} · 闸口状态</title>\
         <style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}\
         td,th{{border:1px solid #999;padding:.4em .8em}}.missing,.late{{background:#fdd;color:#a00;font-weight:bold}}\
         .on_time{{background:#dfd}}</style></head><body><h1>{name} · 闸口状态</h1><p>截至 {at}</p>\
         <table><tr><th>闸口</th><th>小区</th><th>最后联系</th><th>已收记录</th><th>已确认序号</th>\
         <th>日报 {yesterday}</th><th>日报 {today}</th></tr>{rows}</table></body></html>",
        name = esc(&office.config.name),
        at = at.to_rfc3339(),
    );
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], Html(page)).into_response()
}

/// Serve `office` on a loopback port from a runtime thread of its own, for the rest of the process (tests and
/// benchmarks). Returns the address.
pub fn serve_in_background(office: Arc<Office>) -> std::io::Result<SocketAddr> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new().name("office".into()).spawn(move || {
        let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
            Ok(rt) => rt,
            Err(e) => return drop(tx.send(Err(e))),
        };
        rt.block_on(async move {
            let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
                Ok(l) => l,
                Err(e) => return drop(tx.send(Err(e))),
            };
            let _ = tx.send(listener.local_addr());
            if let Err(e) = serve(office, listener, std::future::pending()).await {
                tracing::error!(error = %e, "office server stopped");
            }
        });
    })?;
    rx.recv().map_err(|_| std::io::Error::other("the office thread ended"))?
}

/// Serve until `shutdown` resolves.
pub async fn serve(
    office: Arc<Office>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(office)).with_graceful_shutdown(shutdown).await
}

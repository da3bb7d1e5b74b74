//! The street office server (`sibi office serve`): enrolled gates, signed ingest idempotent on (gate, seq), and a
//! Chinese status page.
//!
//! Invariants: a batch is accepted only from an enrolled gate whose signature over its request counter and the exact
//! body verifies, with a counter above every one taken from that gate before (no replays), and only if every row
//! belongs to that gate; rows are committed (WAL, `synchronous=FULL`) before the acknowledgement is sent;
//! a row already held is left as it is, so a resent batch changes nothing.

use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use ed25519_dalek::{Verifier, VerifyingKey};
use serde::Deserialize;

use crate::domain::Timestamp;

mod beats;
pub mod cli;
pub mod db;
pub mod designate;
pub mod enroll;
pub mod export;
pub mod gateway;
pub mod rollup;

pub use db::{Database, Enrollment, GateState, OfficeDb, SignedBeat, StoredReport, Taken};

/// `office.toml` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOfficeConfig {
    office: RawOffice,
    #[serde(default)]
    gate: Vec<RawEnrollment>,
    health_code: Option<gateway::RawGateway>,
    upstream: Option<rollup::RawUpstream>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOffice {
    /// Address to listen on (`127.0.0.1:8700`; put TLS in front for anything else).
    listen: String,
    /// SQLite database file, relative to this file…
    database: Option<PathBuf>,
    /// …or a PostgreSQL server (`postgres://user@host:port/dbname`).
    database_url: Option<String>,
    /// The office's secret sealing key (`sibi keygen --kind seal`), to open personal data in exports.
    seal_key: Option<PathBuf>,
    /// Display name (某某街道办事处).
    name: Option<String>,
    /// A day's report is due by this hour of that day (UTC+8, 1–24; default 24: by midnight).
    report_due_hour: Option<u8>,
    /// The office's Ed25519 key that signs policy bundles (`sibi keygen --name office`); gates hold `office.pub`.
    signing_key: Option<PathBuf>,
    /// Database connections this process keeps (1–64; default 8 on PostgreSQL, 1 on SQLite: one writer).
    pool_size: Option<u32>,
    /// This office's id (as its parent office enrolled it); default `office`.
    id: Option<String>,
    /// `street` (default), `district` or `city` (四级联动: the community is the gates).
    level: Option<String>,
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
    /// The database.
    pub database: Database,
    /// The secret sealing key's file (read only when exporting).
    pub seal_key: Option<PathBuf>,
    /// The health-code verification gateway.
    pub gateway: gateway::GatewayConfig,
    /// Display name.
    pub name: String,
    /// Enrolled gates by id.
    pub gates: BTreeMap<String, Enrolled>,
    /// A day's report is due by this hour of that day (UTC+8).
    pub report_due_hour: u8,
    /// The key that signs policy bundles.
    pub signing_key: Option<ed25519_dalek::SigningKey>,
    /// Database connections this process keeps.
    pub pool_size: u32,
    /// This office's id.
    pub id: String,
    /// Its level.
    pub level: rollup::Level,
    /// The parent office it sends its roll-ups to.
    pub upstream: Option<rollup::Upstream>,
}

impl OfficeConfig {
    /// An office on `database` with these gates and every other setting at its default (loopback, any port; report
    /// due by midnight; no signing or sealing key; no gateway endpoints).
    pub fn new(database: Database, gates: BTreeMap<String, Enrolled>) -> OfficeConfig {
        let database_of_new = database.clone();
        OfficeConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            database,
            seal_key: None,
            gateway: gateway::GatewayConfig { timeout: std::time::Duration::from_secs(2), ..Default::default() },
            name: "街道办".into(),
            gates,
            report_due_hour: 24,
            signing_key: None,
            pool_size: default_pool_size(&database_of_new),
            id: "office".into(),
            level: rollup::Level::Street,
            upstream: None,
        }
    }
}

/// 8 connections on PostgreSQL; 1 on SQLite (one writer at a time anyway).
fn default_pool_size(database: &Database) -> u32 {
    match database {
        Database::Sqlite(_) => 1,
        Database::Postgres(_) => 8,
    }
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
    let database = match (raw.office.database, raw.office.database_url) {
        (Some(path), None) => Some(Database::Sqlite(base.join(path))),
        (None, Some(url)) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            Some(Database::Postgres(url))
        }
        (None, Some(_)) => {
            problems.push("`office.database_url`: only postgres:// URLs are supported".into());
            None
        }
        (Some(_), Some(_)) => {
            problems.push("give `office.database` (SQLite) or `office.database_url` (PostgreSQL), not both".into());
            None
        }
        (None, None) => {
            problems.push("`office.database` (an SQLite file) or `office.database_url` is required".into());
            None
        }
    };
    let gateway = gateway::GatewayConfig::load(raw.health_code, base).map_err(|e| problems.push(e)).ok();
    let level = match raw.office.level.as_deref() {
        None | Some("street") => rollup::Level::Street,
        Some("district") => rollup::Level::District,
        Some("city") => rollup::Level::City,
        Some(other) => {
            problems.push(format!("`office.level` = `{other}`: use street, district or city"));
            rollup::Level::Street
        }
    };
    let id = raw.office.id.unwrap_or_else(|| "office".into());
    if !enroll::id_ok(&id) {
        problems.push(format!("`office.id` = `{id}`: 1–64 letters, digits, `.`, `_` or `-`"));
    }
    let upstream =
        raw.upstream.map(|u| rollup::Upstream::load(u, base)).transpose().map_err(|e| problems.push(e)).ok().flatten();
    if upstream.is_some() && level == rollup::Level::City {
        problems.push("`[upstream]`: a city office has no office above it".into());
    }
    if let Some(n) = raw.office.pool_size
        && !(1..=64).contains(&n)
    {
        problems.push(format!("`office.pool_size` = {n}: use 1–64"));
    }
    match (listen, database, gateway, problems.is_empty()) {
        (Ok(listen), Some(database), Some(gateway), true) => Ok(OfficeConfig {
            listen,
            seal_key: raw.office.seal_key.map(|p| base.join(p)),
            gateway,
            name: raw.office.name.unwrap_or_else(|| "街道办".into()),
            gates,
            report_due_hour,
            signing_key,
            pool_size: raw.office.pool_size.unwrap_or_else(|| default_pool_size(&database)),
            database,
            id,
            level,
            upstream,
        }),
        _ => Err(format!("{} is not usable:\n  - {}", path.display(), problems.join("\n  - "))),
    }
}

/// Signers' keys as read from the database (with their key in hex; `None`: not enrolled), and when.
type KeyCache = std::collections::HashMap<String, (std::time::Instant, Option<(Enrolled, String)>)>;

/// Shared server state. Nothing in it that the database does not hold but the configuration: any number of office
/// processes can serve one PostgreSQL database behind a balancer.
pub struct Office {
    config: OfficeConfig,
    db: r2d2::Pool<db::Connector>,
    /// Signers' keys read from the database, with their key in hex, reused for [`KEY_TTL`] (an absence for
    /// [`ENROLMENT_TTL`]). Only a cache of keys to verify with: every signed change checks the enrolment with that key
    /// in its own transaction, so a revocation is in force at once at every instance.
    enrolments: std::sync::Mutex<KeyCache>,
    /// The health-code gateway's client for the provincial endpoints.
    provinces: ureq::Agent,
    /// Signed heartbeats, committed in groups.
    beats: beats::Committer,
}

impl Office {
    /// Open the database for `config`.
    pub fn open(config: OfficeConfig) -> Result<Arc<Office>, String> {
        // One connection first, for its clear error (`cannot connect to …`), then the pool.
        drop(OfficeDb::open(&config.database)?);
        let db = r2d2::Pool::builder()
            .max_size(config.pool_size.max(1))
            // Every connection opened at start, not under the first peak.
            .min_idle(None)
            // A dead connection shows itself on use (`is_closed`) and is replaced; no round trip per request.
            .test_on_check_out(false)
            .connection_timeout(std::time::Duration::from_secs(5))
            .build(db::Connector(config.database.clone()))
            .map_err(|e| format!("{}: {e}", config.database.describe()))?;
        let provinces = gateway::agent(&config.gateway);
        let beats = beats::Committer::start(db.clone(), config.database.describe())
            .map_err(|e| format!("cannot start the heartbeat committer: {e}"))?;
        Ok(Arc::new(Office { config, db, provinces, beats, enrolments: Default::default() }))
    }

    /// Run `f` on a pooled database connection (blocking; from async code use [`blocking`]). A connection that
    /// failed (the server restarted) is replaced by the pool.
    pub fn with_db<T>(&self, f: impl FnOnce(&mut OfficeDb) -> Result<T, String>) -> Result<T, String> {
        let mut conn =
            self.db.get().map_err(|e| format!("no database connection ({}): {e}", self.config.database.describe()))?;
        f(&mut conn)
    }

    /// A gate's entries as held, in sequence order.
    pub fn entries(&self, gate: &str) -> Result<Vec<serde_json::Value>, String> {
        self.with_db(|db| db.entries(gate))
    }

    /// Every gate that has reported.
    pub fn gates(&self) -> Result<Vec<GateState>, String> {
        self.with_db(|db| db.gates())
    }

    /// The configuration.
    pub fn config(&self) -> &OfficeConfig {
        &self.config
    }

    /// The signer `id` as enrolled: in office.toml, or in the database (not revoked) as read at most [`KEY_TTL`] ago
    /// (an absence at most [`ENROLMENT_TTL`] ago).
    pub fn enrolled(&self, id: &str) -> Result<Option<Enrolled>, String> {
        match self.signer(id, false, true) {
            Ok(found) => Ok(found.map(|(e, _)| e)),
            Err(Unchecked::Refused(_, e)) | Err(Unchecked::NeedsDatabase(e)) => Err(e),
        }
    }

    /// The signer `id` as enrolled with its key in hex when the database holds it (`None` for office.toml's), from
    /// the cache unless `fresh`; read from the database if need be only when `read` (else
    /// [`Unchecked::NeedsDatabase`]).
    fn signer(&self, id: &str, fresh: bool, read: bool) -> Result<Option<(Enrolled, Option<String>)>, Unchecked> {
        if let Some(e) = self.config.gates.get(id) {
            return Ok(Some((e.clone(), None)));
        }
        let now = std::time::Instant::now();
        let ttl = |e: &Option<(Enrolled, String)>| if e.is_some() { KEY_TTL } else { ENROLMENT_TTL };
        if !fresh
            && let Some(e) = self
                .enrolments
                .lock()
                .ok()
                .and_then(|c| c.get(id).filter(|(at, e)| now.duration_since(*at) < ttl(e)).map(|(_, e)| e.clone()))
        {
            return Ok(e.map(|(e, key)| (e, Some(key))));
        }
        if !read {
            return Err(Unchecked::NeedsDatabase(format!("`{id}` is not in the enrolment cache")));
        }
        let found = self
            .with_db(|db| db.enrolled(id))
            .map_err(|e| Unchecked::Refused(StatusCode::SERVICE_UNAVAILABLE, e))?
            .and_then(|e| enrolled_of(&e).map(|x| (x, e.public_key)));
        if let Ok(mut c) = self.enrolments.lock() {
            if c.len() > 100_000 {
                c.retain(|_, (at, e)| now.duration_since(*at) < ttl(e));
            }
            c.insert(id.to_string(), (now, found.clone()));
        }
        Ok(found.map(|(e, key)| (e, Some(key))))
    }

    /// Forget what the cache holds of `id` (the database said it is no longer enrolled with that key).
    fn forget(&self, id: &str) {
        if let Ok(mut c) = self.enrolments.lock() {
            c.remove(id);
        }
    }

    /// Every gate enrolled now, office.toml's and the database's, by id: its name and community only (no key is
    /// parsed: for the pages and roll-ups, which list thousands).
    pub fn gate_directory(&self) -> Result<BTreeMap<String, GateInfo>, String> {
        let mut all: BTreeMap<String, GateInfo> = self
            .with_db(|db| db.enrollments())?
            .into_iter()
            .filter(|e| e.revoked_ms.is_none() && e.kind == "gate")
            .map(|e| (e.id, GateInfo { name: e.name, community: e.community }))
            .collect();
        all.extend(
            self.config
                .gates
                .iter()
                .map(|(k, v)| (k.clone(), GateInfo { name: v.name.clone(), community: v.community.clone() })),
        );
        Ok(all)
    }
}

/// A gate's name and community, as the pages show them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateInfo {
    /// Display name.
    pub name: String,
    /// Community.
    pub community: String,
}

/// A database enrolment as the office checks signatures with it (`None` if its stored key is not one).
fn enrolled_of(e: &Enrollment) -> Option<Enrolled> {
    let key = crate::credential::pass::parse_verifying_key(&format!("sibi-ed25519-public:{}", e.public_key))?;
    Some(Enrolled { key, name: e.name.clone(), community: e.community.clone() })
}

/// Run `f` off the async workers: the database calls block (and the PostgreSQL client runs its own runtime).
async fn blocking<T: Send + 'static>(
    office: &Arc<Office>,
    f: impl FnOnce(&Office) -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    let office = office.clone();
    tokio::task::spawn_blocking(move || f(&office)).await.map_err(|e| format!("database task failed: {e}"))?
}

fn unavailable(e: String) -> Response {
    tracing::error!(error = %e, "office database");
    (StatusCode::SERVICE_UNAVAILABLE, axum::Json(serde_json::json!({ "error": e }))).into_response()
}

/// The HTTP routes.
pub fn router(office: Arc<Office>) -> Router {
    Router::new()
        .route("/v1/ingest", post(ingest))
        .route("/v1/report", post(report))
        .route("/v1/heartbeat", post(heartbeat))
        .route("/v1/rollup", post(rollup_in))
        .route("/v1/designations", get(designations_out))
        .route("/v1/bundle", get(bundle))
        .route("/v1/gates", get(gates_json))
        .route("/v1/health-code/verify", post(health_code))
        .route("/", get(dashboard))
        .with_state(office)
}

fn refuse(status: StatusCode, why: String) -> Response {
    tracing::warn!(%why, "request refused");
    (status, axum::Json(serde_json::json!({ "error": why }))).into_response()
}

/// A request whose signature verified: its signer, request counter and parsed body.
struct Signed<T> {
    /// The signer's id (`x-sibi-gate`).
    signer: String,
    /// Its request counter (`x-sibi-counter`), not yet taken.
    counter: u64,
    /// The key that signed, in hex, as the database holds it (`None`: a signer of office.toml). The change passes it
    /// on, so the transaction that takes the counter also checks the enrolment still holds that key.
    key: Option<String>,
    /// The body.
    body: T,
}

impl<T> Signed<T> {
    /// The answer to a change whose counter was not taken: a replay (401, logged) or a signer revoked or re-keyed
    /// since this process read its key (403, and the cached key forgotten).
    fn not_taken(&self, office: &Office, taken: Taken, what: &str) -> Response {
        match taken {
            Taken::Replay(last) => {
                tracing::warn!(signer = %self.signer, self.counter, last, what, "replayed or out-of-order request refused");
                refuse(
                    StatusCode::UNAUTHORIZED,
                    format!(
                        "gate `{}`: request counter {} is not above {last}: a replay, refused",
                        self.signer, self.counter
                    ),
                )
            }
            Taken::NotEnrolled | Taken::Yes => {
                office.forget(&self.signer);
                refuse(StatusCode::FORBIDDEN, format!("gate `{}` is not enrolled (revoked or re-keyed)", self.signer))
            }
        }
    }
}

/// Why a signature check did not pass.
enum Unchecked {
    /// Refused, with the status and the reason.
    Refused(StatusCode, String),
    /// Only the database can tell (the signer's key is not in the cache): check again off the async workers.
    NeedsDatabase(String),
}

/// The enrolled signer that signed `body` under its request counter, with the counter and its key; or why not. The
/// key comes from the cache or, when `read`, the database (blocking). A signature that does not verify with a cached
/// key is checked once more with the key the database holds now (the signer may have been re-keyed).
fn signed_by(office: &Office, headers: &HeaderMap, body: &[u8], read: bool) -> Result<Signed<()>, Unchecked> {
    let gate = headers.get("x-sibi-gate").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let not_enrolled = || Unchecked::Refused(StatusCode::FORBIDDEN, format!("gate `{gate}` is not enrolled"));
    let signature =
        headers.get("x-sibi-signature").and_then(|v| v.to_str().ok()).and_then(crate::keys::signature_from_hex);
    let counter = headers.get(crate::keys::COUNTER_HEADER).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
    let (mut enrolled, mut key) = office.signer(&gate, false, read)?.ok_or_else(not_enrolled)?;
    let Some(signature) = signature else {
        return Err(Unchecked::Refused(
            StatusCode::UNAUTHORIZED,
            format!("gate `{gate}`: missing or malformed signature"),
        ));
    };
    let Some(counter) = counter else {
        return Err(Unchecked::Refused(
            StatusCode::UNAUTHORIZED,
            format!("gate `{gate}`: no request counter (`{}`): update the gate", crate::keys::COUNTER_HEADER),
        ));
    };
    let message = crate::keys::request_message(counter, body);
    if enrolled.key.verify(&message, &signature).is_err() {
        if key.is_some() {
            (enrolled, key) = office.signer(&gate, true, read)?.ok_or_else(not_enrolled)?;
        }
        if key.is_none() || enrolled.key.verify(&message, &signature).is_err() {
            return Err(Unchecked::Refused(
                StatusCode::UNAUTHORIZED,
                format!("gate `{gate}`: signature does not verify (tampered?)"),
            ));
        }
    }
    Ok(Signed { signer: gate, counter, key, body: () })
}

/// A request signed by an enrolled signer under its request counter, its body parsed as `T` (a `what`); or the
/// refusal to answer with. Checked on the async worker when the signer's key is cached (the common case: no thread
/// hop), else off it.
async fn verified<T: serde::de::DeserializeOwned + Send + 'static>(
    office: &Arc<Office>,
    headers: HeaderMap,
    body: Bytes,
    what: &'static str,
) -> Result<Signed<T>, Response> {
    let checked = match signed_by(office, &headers, &body, false) {
        Err(Unchecked::NeedsDatabase(_)) => {
            let (o, b) = (office.clone(), body.clone());
            tokio::task::spawn_blocking(move || signed_by(&o, &headers, &b, true))
                .await
                .unwrap_or_else(|e| Err(Unchecked::NeedsDatabase(format!("database task failed: {e}"))))
        }
        checked => checked,
    };
    let signed = match checked {
        Ok(s) => s,
        Err(Unchecked::Refused(status, why)) => return Err(refuse(status, why)),
        Err(Unchecked::NeedsDatabase(e)) => return Err(unavailable(e)),
    };
    match serde_json::from_slice::<T>(&body) {
        Ok(parsed) => Ok(Signed { signer: signed.signer, counter: signed.counter, key: signed.key, body: parsed }),
        Err(e) => Err(refuse(StatusCode::BAD_REQUEST, format!("gate `{}`: malformed {what}: {e}", signed.signer))),
    }
}

/// Answer a request signed by an enrolled signer under its request counter, its body parsed as `T` (a `what`), with
/// `then`, off the async workers. `then` takes the counter in the same transaction as its change
/// ([`OfficeDb::take_counter`], [`OfficeDb::ingest_signed`]; in the database, so every office process sharing it
/// agrees) and answers one not taken with [`Signed::not_taken`].
async fn signed_call<T: serde::de::DeserializeOwned + Send + 'static>(
    office: &Arc<Office>,
    headers: HeaderMap,
    body: Bytes,
    what: &'static str,
    then: impl FnOnce(&Office, Signed<T>) -> Response + Send + 'static,
) -> Response {
    let signed = match verified::<T>(office, headers, body, what).await {
        Ok(s) => s,
        Err(refused) => return refused,
    };
    let office = office.clone();
    tokio::task::spawn_blocking(move || then(&office, signed))
        .await
        .unwrap_or_else(|e| unavailable(format!("database task failed: {e}")))
}

async fn report(State(office): State<Arc<Office>>, headers: HeaderMap, body: Bytes) -> Response {
    let text = String::from_utf8_lossy(&body).into_owned();
    signed_call(&office, headers, body, "report", move |o, s: Signed<crate::report::DailyReport>| {
        if s.body.gate != s.signer || crate::report::day_bounds(&s.body.date).is_none() {
            return refuse(StatusCode::BAD_REQUEST, format!("gate `{}`: a report that is not this gate's", s.signer));
        }
        let stored = o.with_db(|db| match db.take_counter(&s.signer, s.counter, s.key.as_deref())? {
            Taken::Yes => db.store_report(&s.signer, &s.body.date, &text, crate::hw::now()).map(|()| Taken::Yes),
            not => Ok(not),
        });
        match stored {
            Ok(Taken::Yes) => axum::Json(serde_json::json!({ "date": s.body.date })).into_response(),
            Ok(not) => s.not_taken(o, not, "report"),
            Err(e) => unavailable(e),
        }
    })
    .await
}

async fn ingest(State(office): State<Arc<Office>>, headers: HeaderMap, body: Bytes) -> Response {
    #[derive(Deserialize)]
    struct Batch {
        gate: String,
        entries: Vec<serde_json::Value>,
        /// Entries the gate still holds after this batch (gates before 0.1 did not say).
        #[serde(default)]
        backlog: Option<i64>,
    }
    signed_call(&office, headers, body, "batch", |o, s: Signed<Batch>| {
        let gate = s.signer.as_str();
        if s.body.gate != gate
            || s.body.entries.iter().any(|r| {
                r.get("gate_id").and_then(|g| g.as_str()) != Some(gate)
                    || r.get("seq").and_then(serde_json::Value::as_i64).is_none_or(|s| s < 1)
            })
        {
            return refuse(StatusCode::BAD_REQUEST, format!("gate `{gate}`: rows that are not this gate's"));
        }
        let stored = o.with_db(|db| {
            db.ingest_signed(gate, Some(s.counter), s.key.as_deref(), &s.body.entries, crate::hw::now(), s.body.backlog)
        });
        match stored {
            Ok(Ok(acked)) => axum::Json(serde_json::json!({ "acked": acked })).into_response(),
            Ok(Err(not)) => s.not_taken(o, not, "batch"),
            Err(e) => unavailable(e),
        }
    })
    .await
}

/// `GET /v1/designations`: every tier this office designated, signed (its streets verify them with its key).
async fn designations_out(State(office): State<Arc<Office>>) -> Response {
    match blocking(&office, |o| o.with_db(|db| db.designations())).await {
        Ok(list) => {
            let items: Vec<serde_json::Value> = list.iter().filter_map(|t| serde_json::from_str(t).ok()).collect();
            axum::Json(items).into_response()
        }
        Err(e) => unavailable(e),
    }
}

/// `POST /v1/rollup`: a child office's roll-up of a day (四级联动), signed with its key under its request counter.
async fn rollup_in(State(office): State<Arc<Office>>, headers: HeaderMap, body: Bytes) -> Response {
    let text = String::from_utf8_lossy(&body).into_owned();
    signed_call(&office, headers, body, "roll-up", move |o, s: Signed<rollup::RollUp>| {
        let child = s.signer.as_str();
        if s.body.office != child || crate::report::day_bounds(&s.body.date).is_none() {
            return refuse(StatusCode::BAD_REQUEST, format!("office `{child}`: a roll-up that is not its own"));
        }
        let stored = o.with_db(|db| {
            if db.enrolled(child)?.is_none_or(|e| e.kind != "office") {
                return Ok(None);
            }
            match db.take_counter(child, s.counter, s.key.as_deref())? {
                Taken::Yes => db.store_rollup(child, &s.body.date, &text, crate::hw::now()).map(|()| Some(Taken::Yes)),
                not => Ok(Some(not)),
            }
        });
        match stored {
            Ok(Some(Taken::Yes)) => axum::Json(serde_json::json!({ "ok": true })).into_response(),
            Ok(Some(not)) => s.not_taken(o, not, "roll-up"),
            Ok(None) => refuse(StatusCode::FORBIDDEN, format!("`{child}` is not enrolled as a child office")),
            Err(e) => unavailable(e),
        }
    })
    .await
}

/// `POST /v1/heartbeat`, signed like a batch: `{"gate": ID, "backlog": N}`. A gate calls after every round, so the
/// dashboard shows a quiet gate as in contact and a gate catching up after an outage with what it still has to send.
async fn heartbeat(State(office): State<Arc<Office>>, headers: HeaderMap, body: Bytes) -> Response {
    #[derive(Deserialize)]
    struct Heartbeat {
        gate: String,
        backlog: i64,
    }
    let s = match verified::<Heartbeat>(&office, headers, body, "heartbeat").await {
        Ok(s) => s,
        Err(refused) => return refused,
    };
    if s.body.gate != s.signer {
        return refuse(StatusCode::BAD_REQUEST, format!("gate `{}`: a heartbeat that is not this gate's", s.signer));
    }
    let beat = SignedBeat { signer: s.signer.clone(), counter: s.counter, key: s.key.clone(), backlog: s.body.backlog };
    match office.beats.heartbeat(beat).await {
        Ok(Taken::Yes) => axum::Json(serde_json::json!({ "ok": true })).into_response(),
        Ok(not) => s.not_taken(&office, not, "heartbeat"),
        Err(e) => unavailable(e),
    }
}

async fn gates_json(State(office): State<Arc<Office>>) -> Response {
    match blocking(&office, |o| o.gates()).await {
        Ok(g) => axum::Json(g).into_response(),
        Err(e) => unavailable(e),
    }
}

async fn health_code(State(office): State<Arc<Office>>, body: Bytes) -> Response {
    let req: crate::credential::health_code::VerifyRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, format!("malformed health-code check: {e}")),
    };
    let answer = blocking(&office, move |o| {
        Ok(o.enrolled(&req.gate)?.map(|_| gateway::check(&o.config.gateway, &o.provinces, &req)).ok_or(req.gate))
    });
    match answer.await {
        Ok(Ok(a)) => (StatusCode::from_u16(a.http).unwrap_or(StatusCode::BAD_GATEWAY), axum::Json(a)).into_response(),
        Ok(Err(gate)) => refuse(StatusCode::FORBIDDEN, format!("gate `{gate}` is not enrolled")),
        Err(e) => unavailable(e),
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
        let received = self.with_db(|db| db.report_received(gate, date))?;
        self.status_of(received, date, at)
    }

    /// A report's status for `date` as at `at`, given when it first arrived (if it has).
    fn status_of(&self, received: Option<i64>, date: &str, at: Timestamp) -> Result<ReportStatus, String> {
        let (start, _) = crate::report::day_bounds(date).ok_or_else(|| format!("`{date}` is not a date"))?;
        let due = start.plus_ms(i64::from(self.config.report_due_hour) * 3_600_000);
        Ok(match received {
            Some(t) if t <= due.0 => ReportStatus::OnTime,
            Some(_) => ReportStatus::Late,
            None if at >= due => ReportStatus::Missing,
            None => ReportStatus::Pending,
        })
    }
}

/// Above this many gates the status page opens on its communities (one row each, drilling down to their gates):
/// a street with 20,000 gates gets a page a person can read.
pub const GATE_ROWS_MAX: usize = 200;

/// The open problems (问题清单) as a table; an overnight one in red.
fn problems_table(problems: &[rollup::Problem], at: Timestamp) -> String {
    if problems.is_empty() {
        return "<h2>问题清单</h2><p>无待办问题</p>".into();
    }
    const SHOWN: usize = 200;
    let mut rows = String::new();
    for p in problems.iter().take(SHOWN) {
        rows.push_str(&format!(
            "<tr data-problem=\"{}\"{}><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&p.key),
            if p.overnight(at) { " class=\"overnight\"" } else { "" },
            p.kind_zh(),
            esc(&p.unit),
            esc(&p.date),
            esc(&p.detail),
            Timestamp(p.opened_ms).to_rfc3339()
        ));
    }
    let more = if problems.len() > SHOWN {
        format!("<p>另有 {} 项（`sibi office problems` 列出全部）</p>", problems.len() - SHOWN)
    } else {
        String::new()
    };
    format!(
        "<h2>问题清单（问题不过夜，共 {} 项）</h2><table id=\"problems\"><tr><th>问题</th><th>闸口</th><th>日期</th><th>情况</th>\
         <th>提出时间</th></tr>{rows}</table>{more}",
        problems.len()
    )
}

/// How long an office process trusts the absence of an enrolment it read from the database: a new enrolment signs in
/// at every instance within this time. (A revocation is in force at once: every signed change checks the enrolment
/// in its own transaction.)
pub const ENROLMENT_TTL: std::time::Duration = std::time::Duration::from_secs(2);

/// How long an office process reuses a signer's key it read from the database before reading it again.
pub const KEY_TTL: std::time::Duration = std::time::Duration::from_secs(60);

/// Communities to a page of the status page.
pub const COMMUNITY_ROWS: usize = 100;

/// Silence after which the dashboard shows a gate as out of contact (失联), ms.
const STALE_CONTACT_MS: i64 = 30 * 60 * 1000;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// `s` as one part of a URL's query.
fn url_part(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A unit's figures for one day, as the cells of its row (未上报 when its roll-up did not come).
fn figure_cells(unit: Option<&rollup::Unit>) -> String {
    match unit {
        Some(x) if x.reported => {
            let f = &x.figures;
            let flag = |n: i64| if n > 0 { " class=\"missing\"" } else { "" };
            format!(
                "<td>{}</td><td>{}</td><td{}>{}</td><td>{}</td><td{}>{}</td><td>{}</td><td>{}</td><td>{}</td><td{}>{}</td>",
                f.gates,
                f.total,
                flag(f.missing),
                f.missing,
                f.late,
                flag(f.fevers),
                f.fevers,
                f.red_codes,
                f.yellow_codes,
                f.open_problems,
                if f.overnight_problems > 0 { " class=\"overnight\"" } else { "" },
                f.overnight_problems
            )
        }
        _ => "<td colspan=\"9\" class=\"missing\">未上报</td>".to_string(),
    }
}

/// A page of units with yesterday's and today's figures (`days`), then the problems.
fn units_page(
    title: &str,
    nav: &str,
    units: &str,
    days: &[String],
    rows: &str,
    problems: &str,
    at: Timestamp,
) -> String {
    let head = |d: &str| {
        format!(
            "<th>闸口 {d}</th><th>通行记录</th><th>漏报</th><th>迟报</th><th>发热</th><th>红码</th><th>黄码</th>\
             <th>待办问题</th><th>隔夜未结</th>"
        )
    };
    format!(
        "<!doctype html><html lang=\"zh-CN\"><head><meta charset=\"utf-8\"><title>{title} · 四级联动</title>\
         <style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}\
         td,th{{border:1px solid #999;padding:.4em .8em}}.missing{{background:#fdd;color:#a00;font-weight:bold}}\
         .overnight{{background:#d00;color:#fff;font-weight:bold}}</style>\
         </head><body><h1>{title}</h1>{nav}<p>截至 {at}</p><table id=\"units\"><tr><th>{units}</th>\
         {h0}{h1}</tr>{rows}</table>{problems}</body></html>",
        at = at.to_rfc3339(),
        h0 = head(&days[0]),
        h1 = head(&days[1]),
    )
}

#[derive(Deserialize)]
struct BundleQuery {
    community: String,
}

async fn bundle(State(office): State<Arc<Office>>, Query(q): Query<BundleQuery>) -> Response {
    match blocking(&office, move |o| o.with_db(|db| db.latest_bundle(&q.community))).await {
        Ok(Some(signed)) => ([(header::CONTENT_TYPE, "application/json")], signed).into_response(),
        Ok(None) => (StatusCode::NOT_FOUND, "no bundle for this community").into_response(),
        Err(e) => unavailable(e),
    }
}

#[derive(Deserialize)]
struct DashboardQuery {
    /// Show the page as at this time (RFC 3339), to review a past day.
    at: Option<String>,
    /// Show this community's gates.
    community: Option<String>,
    /// The page of the communities (from 1).
    page: Option<usize>,
    /// At a district or city: show this child office's own units.
    unit: Option<String>,
}

async fn dashboard(State(office): State<Arc<Office>>, Query(q): Query<DashboardQuery>) -> Response {
    let at = q.at.as_deref().and_then(Timestamp::parse_rfc3339).unwrap_or_else(crate::hw::now);
    let page = q.page.unwrap_or(1);
    if let Some(unit) = q.unit.filter(|_| office.config.level != rollup::Level::Street) {
        return match blocking(&office, move |o| o.child_page(at, &unit, page)).await {
            Ok(Some(page)) => ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], Html(page)).into_response(),
            Ok(None) => (StatusCode::NOT_FOUND, Html("<p>没有这个下级单位</p>")).into_response(),
            Err(e) => unavailable(e),
        };
    }
    match blocking(&office, move |o| o.dashboard_page_at(at, q.community.as_deref(), page)).await {
        Ok(page) => ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], Html(page)).into_response(),
        Err(e) => unavailable(e),
    }
}

/// A community's standing as the office last published it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CommunityState {
    /// Community id.
    pub community: String,
    /// The tier in force at the time asked (none: nothing published yet).
    pub tier: Option<crate::domain::Tier>,
    /// Since when (RFC 3339).
    pub since: Option<String>,
    /// The latest bundle's version.
    pub version: u64,
    /// People under home quarantine.
    pub quarantined: usize,
    /// Revoked passes.
    pub revoked: usize,
}

impl Office {
    /// Every enrolled gate's community with its tier at `at`, from the latest published bundles.
    pub fn communities(&self, at: Timestamp) -> Result<Vec<CommunityState>, String> {
        let gates = self.gate_directory()?;
        let names: std::collections::BTreeSet<&str> =
            gates.values().map(|g| g.community.as_str()).filter(|c| !c.is_empty()).collect();
        let latest = self.with_db(|db| db.latest_bundles())?;
        let mut out = Vec::new();
        for c in names {
            let bundle = latest
                .get(c)
                .and_then(|t| serde_json::from_str::<crate::bundle::SignedBundle>(t).ok())
                .and_then(|s| serde_json::from_str::<crate::bundle::Bundle>(&s.body).ok());
            let current = bundle
                .as_ref()
                .and_then(|b| b.tier_changes())
                .and_then(|v| v.into_iter().rev().find(|t| t.effective <= at));
            out.push(CommunityState {
                community: c.to_string(),
                tier: current.map(|t| t.tier),
                since: current.map(|t| t.effective.to_rfc3339()),
                version: bundle.as_ref().map_or(0, |b| b.version),
                quarantined: bundle.as_ref().map_or(0, |b| b.quarantine.len()),
                revoked: bundle.as_ref().map_or(0, |b| b.revoked_passes.len()),
            });
        }
        Ok(out)
    }

    /// A district's or city's page: each child office with yesterday's and today's figures from its roll-ups, each
    /// reporting child linking to its own units ([`Office::child_page`]).
    pub fn children_page(&self, at: Timestamp) -> Result<String, String> {
        let days = rollup::round_dates(at);
        let ups = [self.rollup(&days[0], at)?, self.rollup(&days[1], at)?];
        let mut rows = String::new();
        for (i, u) in ups[1].units.iter().enumerate() {
            let y = ups[0].units.get(i).filter(|y| y.id == u.id);
            let name = if u.reported || y.is_some_and(|y| y.reported) {
                format!("<a href=\"?unit={}\">{}</a>", url_part(&u.id), esc(&u.name))
            } else {
                esc(&u.name)
            };
            rows.push_str(&format!(
                "<tr data-unit=\"{}\"><td>{name}</td>{}{}</tr>",
                esc(&u.id),
                figure_cells(y),
                figure_cells(Some(u))
            ));
        }
        Ok(units_page(
            &format!(
                "{}（{}）· 各{}日报汇总",
                esc(&self.config.name),
                self.config.level.zh(),
                self.config.level.units_zh()
            ),
            "",
            self.config.level.units_zh(),
            &days,
            &rows,
            &problems_table(&ups[1].problems, at),
            at,
        ))
    }

    /// One child office's units, one level down, from the roll-ups it sent for yesterday and today: a street's
    /// communities (its gates summed by community), a district's streets; with the problems it reported.
    /// [`COMMUNITY_ROWS`] to a page (`page` from 1). `None` if `child` is not a child office of this one.
    pub fn child_page(&self, at: Timestamp, child: &str, page: usize) -> Result<Option<String>, String> {
        let Some(enrolled) = self.with_db(|db| db.enrolled(child))?.filter(|e| e.kind == "office") else {
            return Ok(None);
        };
        let days = rollup::round_dates(at);
        let mut sent = Vec::new();
        for d in &days {
            let held = self.with_db(|db| db.rollups_on(d))?;
            sent.push(held.get(child).and_then(|(b, _)| serde_json::from_str::<rollup::RollUp>(b).ok()));
        }
        // A street's gates summed by community (a gate's problems counted, and flagged overnight as at `at`, in its
        // community); a district's streets as it sent them.
        let rows_of = |r: &rollup::RollUp| -> BTreeMap<String, (String, rollup::Unit)> {
            let mut out: BTreeMap<String, (String, rollup::Unit)> = BTreeMap::new();
            let mut community_of = std::collections::HashMap::new();
            for u in &r.units {
                let key = if u.community.is_empty() { u.id.clone() } else { u.community.clone() };
                let name = if u.community.is_empty() { u.name.clone() } else { u.community.clone() };
                community_of.insert(u.id.as_str(), key.clone());
                let row = out
                    .entry(key.clone())
                    .or_insert_with(|| (name, rollup::Unit { id: key, reported: true, ..rollup::Unit::default() }));
                row.1.reported &= u.reported;
                let mut f = u.figures.clone();
                if !u.community.is_empty() {
                    f.overnight_problems = 0;
                }
                row.1.figures.add(&f);
            }
            for p in r.problems.iter().filter(|p| p.overnight(at)) {
                if let Some(row) = community_of.get(p.unit.as_str()).and_then(|c| out.get_mut(c))
                    && r.level == rollup::Level::Street
                {
                    row.1.figures.overnight_problems += 1;
                }
            }
            out
        };
        let today = sent[1].as_ref().map(rows_of).unwrap_or_default();
        let yesterday = sent[0].as_ref().map(rows_of).unwrap_or_default();
        let ids: std::collections::BTreeSet<&String> = today.keys().chain(yesterday.keys()).collect();
        let pages = ids.len().div_ceil(COMMUNITY_ROWS).max(1);
        let page = page.clamp(1, pages);
        let mut rows = String::new();
        for id in ids.iter().skip((page - 1) * COMMUNITY_ROWS).take(COMMUNITY_ROWS) {
            let (t, y) = (today.get(*id), yesterday.get(*id));
            let name = t.or(y).map(|(n, _)| n.as_str()).unwrap_or("");
            rows.push_str(&format!(
                "<tr data-unit=\"{}\"><td>{}</td>{}{}</tr>",
                esc(id),
                esc(name),
                figure_cells(y.map(|(_, u)| u)),
                figure_cells(t.map(|(_, u)| u))
            ));
        }
        let level = sent.iter().flatten().next().map_or(rollup::Level::Street, |r| r.level);
        // A street's rows are its communities (its gates summed); a district's its streets.
        let units = if level == rollup::Level::Street { "社区" } else { level.units_zh() };
        let mut nav = format!("<p><a href=\"./\">返回{}</a>", esc(&self.config.name));
        if pages > 1 {
            for n in 1..=pages {
                nav.push_str(&if n == page {
                    format!(" <b>{n}</b>")
                } else {
                    format!(" <a href=\"?unit={}&amp;page={n}\">{n}</a>", url_part(child))
                });
            }
        }
        nav.push_str("</p>");
        let problems = sent[1].as_ref().map(|r| r.problems.clone()).unwrap_or_default();
        Ok(Some(units_page(
            &format!("{} · {}（{}）· 各{units}", esc(&self.config.name), esc(&enrolled.name), level.zh()),
            &nav,
            units,
            &days,
            &rows,
            &problems_table(&problems, at),
            at,
        )))
    }

    /// The dashboard page as at `at`: every gate, or (above [`GATE_ROWS_MAX`] gates) the first page of communities.
    pub fn dashboard_page(&self, at: Timestamp) -> Result<String, String> {
        self.dashboard_page_at(at, None, 1)
    }

    /// The dashboard page as at `at`: one community's gates, or the whole office; above [`GATE_ROWS_MAX`] gates
    /// the communities, [`COMMUNITY_ROWS`] to a page (`page` from 1), the ones with problems first.
    pub fn dashboard_page_at(&self, at: Timestamp, community: Option<&str>, page: usize) -> Result<String, String> {
        if self.config.level != rollup::Level::Street {
            return self.children_page(at);
        }
        let today = at.to_rfc3339()[..10].to_string();
        let yesterday = at.plus_ms(-86_400_000).to_rfc3339()[..10].to_string();
        let seen: BTreeMap<String, GateState> = self.gates()?.into_iter().map(|g| (g.gate.clone(), g)).collect();
        let (got_today, got_yesterday) =
            self.with_db(|db| Ok((db.reports_received_on(&today)?, db.reports_received_on(&yesterday)?)))?;
        let mut gates = self.gate_directory()?;
        if let Some(c) = community {
            gates.retain(|_, g| g.community == c);
        }
        let by_community = community.is_none() && gates.len() > GATE_ROWS_MAX;
        // Per gate: contact, and yesterday's and today's report status.
        struct Row<'a> {
            id: &'a str,
            g: &'a GateInfo,
            s: Option<&'a GateState>,
            stale: bool,
            contact: String,
            yesterday: ReportStatus,
            today: ReportStatus,
        }
        let mut rows = Vec::with_capacity(gates.len());
        for (id, g) in &gates {
            let s = seen.get(id);
            // A gate calls every few seconds when it can; half an hour of silence means it cannot.
            let (stale, contact) = match s.and_then(|s| s.last_contact_ms) {
                None => (true, "从未联系".to_string()),
                Some(m) if at.0 - m > STALE_CONTACT_MS => (true, format!("{}（失联）", Timestamp(m).to_rfc3339())),
                Some(m) => (false, Timestamp(m).to_rfc3339()),
            };
            rows.push(Row {
                id,
                g,
                s,
                stale,
                contact,
                yesterday: self.status_of(got_yesterday.get(id).copied(), &yesterday, at)?,
                today: self.status_of(got_today.get(id).copied(), &today, at)?,
            });
        }
        let cell = |s: ReportStatus| {
            format!(
                "<td class=\"{}\">{}</td>",
                serde_json::to_value(s).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default(),
                s.zh()
            )
        };
        let mut table = String::new();
        let states: BTreeMap<String, CommunityState> =
            self.communities(at)?.into_iter().map(|c| (c.community.clone(), c)).collect();
        let tier_cell = |c: &str| match states.get(c).and_then(|s| s.tier) {
            Some(t) => format!("<td class=\"tier-{}\">{}</td>", t.as_str(), t.zh()),
            None => "<td class=\"tier-none\">未发布</td>".to_string(),
        };
        let mut pages = String::new();
        if by_community {
            let mut sums: BTreeMap<&str, [i64; 7]> = BTreeMap::new();
            for r in &rows {
                let t = sums.entry(r.g.community.as_str()).or_default();
                t[0] += 1;
                t[1] += i64::from(r.stale);
                t[2] += r.s.map_or(0, |s| s.entries);
                t[3] += r.s.map_or(0, |s| s.backlog);
                t[4] += i64::from(r.yesterday == ReportStatus::Missing);
                t[5] += i64::from(r.yesterday == ReportStatus::Late);
                t[6] += i64::from(r.today == ReportStatus::Missing);
            }
            // The communities with gates out of contact or reports missing first.
            let mut sums: Vec<(&str, [i64; 7])> = sums.into_iter().collect();
            sums.sort_by_key(|(c, t)| (Reverse(t[1] + t[4] + t[6]), *c));
            let count = sums.len().div_ceil(COMMUNITY_ROWS).max(1);
            let page = page.clamp(1, count);
            let at_q = esc(&at.to_rfc3339()).replace('+', "%2B");
            for (c, t) in sums.iter().skip((page - 1) * COMMUNITY_ROWS).take(COMMUNITY_ROWS) {
                let flag = |n: i64| if n > 0 { " class=\"missing\"" } else { "" };
                table.push_str(&format!(
                    "<tr data-community-gates=\"{c}\"><td><a href=\"?community={c}&amp;at={at_q}\">{c}</a></td>{}\
                     <td>{}</td><td{}>{}</td><td>{}</td><td>{}</td><td{}>{}</td><td>{}</td><td{}>{}</td></tr>",
                    tier_cell(c),
                    t[0],
                    flag(t[1]),
                    t[1],
                    t[2],
                    t[3],
                    flag(t[4]),
                    t[4],
                    t[5],
                    flag(t[6]),
                    t[6],
                    c = esc(c),
                ));
            }
            if count > 1 {
                pages = format!("<p class=\"pages\">第 {page}/{count} 页");
                if page > 1 {
                    pages.push_str(&format!(" · <a href=\"?page={}&amp;at={at_q}\">上一页</a>", page - 1));
                }
                if page < count {
                    pages.push_str(&format!(" · <a href=\"?page={}&amp;at={at_q}\">下一页</a>", page + 1));
                }
                pages.push_str("</p>");
            }
            table = format!(
                "<h2>各小区（{} 个小区，{} 个闸口；有失联或漏报的在前；点小区名看其闸口）</h2>\
                 <table id=\"community-gates\"><tr><th>小区</th><th>风险等级</th><th>闸口</th>\
                 <th>失联</th><th>已收记录</th><th>待上传</th><th>漏报 {yesterday}</th><th>迟报 {yesterday}</th>\
                 <th>漏报 {today}</th></tr>{table}</table>{pages}",
                sums.len(),
                rows.len()
            );
        } else {
            for r in &rows {
                table.push_str(&format!(
                    "<tr data-gate=\"{}\"><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td>{}</td>\
                     <td>{}</td><td class=\"backlog\">{}</td>{}{}</tr>",
                    esc(r.id),
                    esc(&r.g.name),
                    esc(&r.g.community),
                    if r.stale { "stale" } else { "" },
                    esc(&r.contact),
                    r.s.map_or(0, |s| s.entries),
                    r.s.map_or(0, |s| s.acked_seq),
                    r.s.map_or(0, |s| s.backlog),
                    cell(r.yesterday),
                    cell(r.today),
                ));
            }
            table = format!(
                "<h2>闸口{}</h2><table id=\"gates\"><tr><th>闸口</th><th>小区</th><th>最后联系</th><th>已收记录</th>\
                 <th>已确认序号</th><th>待上传</th><th>日报 {yesterday}</th><th>日报 {today}</th></tr>{table}</table>",
                community.map(|c| format!("（{}）", esc(c))).unwrap_or_default()
            );
        }
        let mut tiers = String::new();
        for c in states.values().filter(|_| !by_community) {
            if community.is_some_and(|only| only != c.community) {
                continue;
            }
            let (class, tier) = match c.tier {
                Some(t) => (t.as_str(), t.zh()),
                None => ("none", "未发布"),
            };
            tiers.push_str(&format!(
                "<tr data-community=\"{}\"><td>{}</td><td class=\"tier-{class}\">{tier}</td><td>{}</td><td>{}</td>\
                 <td>{}</td><td>{}</td></tr>",
                esc(&c.community),
                esc(&c.community),
                esc(c.since.as_deref().unwrap_or("—")),
                c.version,
                c.quarantined,
                c.revoked
            ));
        }
        if !by_community {
            let open: Vec<rollup::Problem> =
                self.with_db(|db| db.problems(false))?.into_iter().filter(|p| gates.contains_key(&p.unit)).collect();
            table.push_str(&problems_table(&open, at));
            tiers = format!(
                "<h2>小区风险等级</h2><table id=\"communities\"><tr><th>小区</th><th>风险等级</th><th>生效时间</th>\
                 <th>策略版本</th><th>居家隔离</th><th>已撤销通行证</th></tr>{tiers}</table>"
            );
        }
        Ok(format!(
            "<!doctype html><html lang=\"zh-CN\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{name} · 闸口状态</title>\
             <style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;margin-bottom:2em}}\
             td,th{{border:1px solid #999;padding:.4em .8em}}.missing,.late,.stale{{background:#fdd;color:#a00;font-weight:bold}}\
             .on_time{{background:#dfd}}.tier-high{{background:#d00;color:#fff}}.tier-medium{{background:#f90}}\
             .tier-low{{background:#dfd}}</style></head><body><h1>{name} · 闸口状态</h1><p>截至 {at}{back}</p>\
             {tiers}{table}</body></html>",
            name = esc(&self.config.name),
            at = at.to_rfc3339(),
            back = if community.is_some() { " · <a href=\"/\">返回全部小区</a>" } else { "" },
        ))
    }
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

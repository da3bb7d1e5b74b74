//! The office database: embedded SQLite by default, PostgreSQL (`database_url = "postgres://..."`) for a district or
//! city that runs many offices against one server. Both hold the same tables and give the same answers.
//!
//! Invariants: entries are keyed by (gate, seq) and a row already held is never changed, so a resent batch changes
//! nothing; a batch is one transaction, committed before the acknowledgement is returned; a gate's acknowledged
//! sequence number only grows.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};

use crate::domain::Timestamp;

/// An office database error, for the connection pool.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DbError(pub String);

/// Opens the office's database connections for its pool (`r2d2`): a closed connection (the server restarted) is
/// dropped and a new one opened.
#[derive(Debug)]
pub struct Connector(pub Database);

impl r2d2::ManageConnection for Connector {
    type Connection = OfficeDb;
    type Error = DbError;

    fn connect(&self) -> Result<OfficeDb, DbError> {
        OfficeDb::connect(&self.0).map_err(DbError)
    }

    fn is_valid(&self, conn: &mut OfficeDb) -> Result<(), DbError> {
        conn.ping().map_err(DbError)
    }

    fn has_broken(&self, conn: &mut OfficeDb) -> bool {
        conn.is_closed()
    }
}

/// Where the office keeps its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Database {
    /// An SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL connection string (`postgres://user@host:port/db` or `host=... user=...`).
    Postgres(String),
}

impl Database {
    /// For logs: the file, or the server without its password.
    pub fn describe(&self) -> String {
        match self {
            Database::Sqlite(p) => p.display().to_string(),
            Database::Postgres(url) => match url.split_once('@') {
                Some((_, host)) => format!("postgres://…@{host}"),
                None => "postgres".into(),
            },
        }
    }
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
    /// Entries the gate still had to send when it last called (its own count).
    pub backlog: i64,
}

/// A gate (or a child office) enrolled in the database (`sibi office enroll --csv`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Enrollment {
    /// Its id (the `x-sibi-gate` it signs as).
    pub id: String,
    /// `gate` or `office`.
    pub kind: String,
    /// Display name.
    pub name: String,
    /// Its community (a gate's), or the area a child office covers.
    pub community: String,
    /// Its Ed25519 public key, 64 hex digits.
    pub public_key: String,
    /// When it was enrolled (ms).
    pub enrolled_ms: i64,
    /// When it was revoked (ms); a revoked signer's requests are refused.
    pub revoked_ms: Option<i64>,
}

/// A stored daily report.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredReport {
    /// Gate id.
    pub gate: String,
    /// The day (YYYY-MM-DD, UTC+8).
    pub date: String,
    /// The report as the gate signed it (JSON).
    pub body: String,
    /// When it first arrived (ms).
    pub first_received_ms: i64,
}

/// A signed heartbeat whose signature verified, for [`OfficeDb::heartbeats_signed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedBeat {
    /// The gate.
    pub signer: String,
    /// Its request counter.
    pub counter: u64,
    /// The key that signed, hex (`None`: a gate of office.toml).
    pub key: Option<String>,
    /// Entries it still has to send.
    pub backlog: i64,
}

/// What became of a signed request's counter ([`OfficeDb::take_counter`] and the signed changes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Taken {
    /// Taken: the change goes ahead.
    Yes,
    /// Not above the last counter taken (given): a replay, nothing changed.
    Replay(u64),
    /// The signer is not enrolled with the key that signed, as of this transaction (revoked or re-keyed since the
    /// office process read its key): nothing changed.
    NotEnrolled,
}

enum Backend {
    Sqlite(Connection),
    Postgres(Box<postgres::Client>),
}

/// The office database.
pub struct OfficeDb {
    backend: Backend,
    /// PostgreSQL statements prepared once per connection (the hot paths: heartbeat, ingest, enrolment lookup).
    prepared: std::collections::HashMap<&'static str, postgres::Statement>,
}

/// `sql`, prepared on `client` the first time and reused after.
fn prepared(
    client: &mut postgres::Client,
    cache: &mut std::collections::HashMap<&'static str, postgres::Statement>,
    sql: &'static str,
) -> Result<postgres::Statement, String> {
    if let Some(st) = cache.get(sql) {
        return Ok(st.clone());
    }
    let st = client.prepare(sql).map_err(pg)?;
    cache.insert(sql, st.clone());
    Ok(st)
}

const SQLITE_SCHEMA: &str = "CREATE TABLE IF NOT EXISTS gates (
        gate_id TEXT PRIMARY KEY,
        last_contact_ms INTEGER,
        acked_seq INTEGER NOT NULL DEFAULT 0,
        backlog INTEGER NOT NULL DEFAULT 0,
        held INTEGER NOT NULL DEFAULT 0
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
    CREATE INDEX IF NOT EXISTS entries_at ON entries (at_ms);
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
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS request_counters (
        signer TEXT PRIMARY KEY,
        counter INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS enrolled (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        name TEXT NOT NULL,
        community TEXT NOT NULL,
        public_key TEXT NOT NULL,
        enrolled_ms INTEGER NOT NULL,
        revoked_ms INTEGER
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS rollups (
        child TEXT NOT NULL,
        date TEXT NOT NULL,
        body TEXT NOT NULL,
        received_ms INTEGER NOT NULL,
        PRIMARY KEY (child, date)
    );
    CREATE TABLE IF NOT EXISTS designations (
        community TEXT PRIMARY KEY,
        version INTEGER NOT NULL,
        signed TEXT NOT NULL
    );
    CREATE TABLE IF NOT EXISTS problems (
        key TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        unit TEXT NOT NULL,
        date TEXT NOT NULL,
        detail TEXT NOT NULL,
        opened_ms INTEGER NOT NULL,
        closed_ms INTEGER,
        closed_by TEXT,
        note TEXT
    );";

const POSTGRES_SCHEMA: &str = "CREATE TABLE IF NOT EXISTS gates (
        gate_id TEXT PRIMARY KEY,
        last_contact_ms BIGINT,
        acked_seq BIGINT NOT NULL DEFAULT 0,
        backlog BIGINT NOT NULL DEFAULT 0,
        held BIGINT NOT NULL DEFAULT 0
    );
    ALTER TABLE gates ADD COLUMN IF NOT EXISTS backlog BIGINT NOT NULL DEFAULT 0;
    DO $$ BEGIN
      IF NOT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_name = 'gates' AND column_name = 'held') THEN
        ALTER TABLE gates ADD COLUMN held BIGINT NOT NULL DEFAULT 0;
        UPDATE gates SET held = (SELECT COUNT(*) FROM entries e WHERE e.gate_id = gates.gate_id);
      END IF;
    END $$;
    CREATE TABLE IF NOT EXISTS entries (
        gate_id TEXT NOT NULL,
        seq BIGINT NOT NULL,
        at_ms BIGINT NOT NULL,
        verdict TEXT NOT NULL,
        rule TEXT NOT NULL,
        category TEXT NOT NULL,
        body TEXT NOT NULL,
        received_ms BIGINT NOT NULL,
        PRIMARY KEY (gate_id, seq)
    );
    CREATE INDEX IF NOT EXISTS entries_at ON entries (at_ms);
    CREATE TABLE IF NOT EXISTS bundles (
        community TEXT NOT NULL,
        version BIGINT NOT NULL,
        signed TEXT NOT NULL,
        PRIMARY KEY (community, version)
    );
    CREATE TABLE IF NOT EXISTS reports (
        gate_id TEXT NOT NULL,
        date TEXT NOT NULL,
        body TEXT NOT NULL,
        first_received_ms BIGINT NOT NULL,
        received_ms BIGINT NOT NULL,
        PRIMARY KEY (gate_id, date)
    );
    CREATE TABLE IF NOT EXISTS request_counters (
        signer TEXT PRIMARY KEY,
        counter BIGINT NOT NULL
    );
    CREATE TABLE IF NOT EXISTS enrolled (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        name TEXT NOT NULL,
        community TEXT NOT NULL,
        public_key TEXT NOT NULL,
        enrolled_ms BIGINT NOT NULL,
        revoked_ms BIGINT
    );
    CREATE TABLE IF NOT EXISTS rollups (
        child TEXT NOT NULL,
        date TEXT NOT NULL,
        body TEXT NOT NULL,
        received_ms BIGINT NOT NULL,
        PRIMARY KEY (child, date)
    );
    CREATE TABLE IF NOT EXISTS designations (
        community TEXT PRIMARY KEY,
        version BIGINT NOT NULL,
        signed TEXT NOT NULL
    );
    CREATE TABLE IF NOT EXISTS problems (
        key TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        unit TEXT NOT NULL,
        date TEXT NOT NULL,
        detail TEXT NOT NULL,
        opened_ms BIGINT NOT NULL,
        closed_ms BIGINT,
        closed_by TEXT,
        note TEXT
    );";

fn pg(e: postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => format!("postgres: {}: {}", d.code().code(), d.message()),
        None => format!("postgres: {e}"),
    }
}

fn lite(e: rusqlite::Error) -> String {
    e.to_string()
}

impl OfficeDb {
    /// Open (creating the tables) the database.
    pub fn open(database: &Database) -> Result<OfficeDb, String> {
        match database {
            Database::Sqlite(path) => OfficeDb::open_sqlite(path),
            Database::Postgres(url) => {
                let mut client = postgres::Client::connect(url, postgres::NoTls)
                    .map_err(|e| format!("cannot connect to {}: {}", database.describe(), pg(e)))?;
                // Office processes starting at once on one server: one of them creates the tables at a time (two
                // concurrent `CREATE TABLE IF NOT EXISTS` can both try to create the type and one fails).
                let mut tx = client.transaction().map_err(pg)?;
                tx.execute("SELECT pg_advisory_xact_lock(7410)", &[]).map_err(pg)?;
                tx.batch_execute(POSTGRES_SCHEMA).map_err(pg)?;
                tx.commit().map_err(pg)?;
                Ok(OfficeDb { backend: Backend::Postgres(Box::new(client)), prepared: Default::default() })
            }
        }
    }

    /// Connect to a database whose tables [`OfficeDb::open`] has made (the pool's further connections: no DDL, so
    /// a connection opened under load takes no table lock).
    pub fn connect(database: &Database) -> Result<OfficeDb, String> {
        match database {
            Database::Sqlite(path) => OfficeDb::open_sqlite(path),
            Database::Postgres(url) => {
                let client = postgres::Client::connect(url, postgres::NoTls)
                    .map_err(|e| format!("cannot connect to {}: {}", database.describe(), pg(e)))?;
                Ok(OfficeDb { backend: Backend::Postgres(Box::new(client)), prepared: Default::default() })
            }
        }
    }

    /// Whether the connection still answers.
    pub fn ping(&mut self) -> Result<(), String> {
        match &mut self.backend {
            Backend::Sqlite(conn) => conn.query_row("SELECT 1", [], |_| Ok(())).map_err(lite),
            Backend::Postgres(client) => client.simple_query("SELECT 1").map(drop).map_err(pg),
        }
    }

    /// Whether the connection is known to be closed (the server went away).
    pub fn is_closed(&self) -> bool {
        match &self.backend {
            Backend::Sqlite(_) => false,
            Backend::Postgres(client) => client.is_closed(),
        }
    }

    fn open_sqlite(path: &Path) -> Result<OfficeDb, String> {
        if let Some(d) = path.parent() {
            let _ = std::fs::create_dir_all(d);
        }
        let e = |e: rusqlite::Error| format!("{}: {e}", path.display());
        let conn = Connection::open(path).map_err(e)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(e)?;
        conn.pragma_update(None, "synchronous", "FULL").map_err(e)?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(e)?;
        conn.execute_batch(SQLITE_SCHEMA).map_err(e)?;
        // Offices created before gates reported their backlog.
        let has_backlog: bool = conn
            .query_row("SELECT COUNT(*) FROM pragma_table_info('gates') WHERE name = 'backlog'", [], |r| r.get(0))
            .map_err(e)?;
        if !has_backlog {
            conn.execute_batch("ALTER TABLE gates ADD COLUMN backlog INTEGER NOT NULL DEFAULT 0").map_err(e)?;
        }
        // Offices created before the gates table kept each gate's count of entries held.
        let has_held: bool = conn
            .query_row("SELECT COUNT(*) FROM pragma_table_info('gates') WHERE name = 'held'", [], |r| r.get(0))
            .map_err(e)?;
        if !has_held {
            conn.execute_batch(
                "ALTER TABLE gates ADD COLUMN held INTEGER NOT NULL DEFAULT 0;
                 UPDATE gates SET held = (SELECT COUNT(*) FROM entries e WHERE e.gate_id = gates.gate_id);",
            )
            .map_err(e)?;
        }
        Ok(OfficeDb { backend: Backend::Sqlite(conn), prepared: Default::default() })
    }

    /// Store a verified batch; returns the highest sequence number now held for the gate.
    pub fn ingest(&mut self, gate: &str, rows: &[serde_json::Value], now: Timestamp) -> Result<i64, String> {
        self.ingest_signed(gate, None, None, rows, now, None).map(|r| r.unwrap_or(0))
    }

    /// Store a batch signed under `counter` by `key` (hex; `None`: a signer of office.toml, not in the database),
    /// with the backlog the gate reported after it; returns the highest sequence number now held. The counter is
    /// taken, and the enrolment with that key checked, in the same transaction (`Err(why)` inside: nothing stored).
    pub fn ingest_signed(
        &mut self,
        gate: &str,
        counter: Option<u64>,
        key: Option<&str>,
        rows: &[serde_json::Value],
        now: Timestamp,
        backlog: Option<i64>,
    ) -> Result<Result<i64, Taken>, String> {
        let int = |row: &serde_json::Value, k: &str| row.get(k).and_then(serde_json::Value::as_i64).unwrap_or(0);
        let text =
            |row: &serde_json::Value, k: &str| row.get(k).and_then(serde_json::Value::as_str).unwrap_or("").to_string();
        let max = rows.iter().map(|r| int(r, "seq")).max().unwrap_or(0);
        match &mut self.backend {
            Backend::Sqlite(conn) => {
                let tx = conn.transaction().map_err(lite)?;
                if let Some(c) = counter {
                    let taken = take_lite(&tx, gate, c, key)?;
                    if taken != Taken::Yes {
                        return Ok(Err(taken));
                    }
                }
                let mut inserted = 0usize;
                {
                    let mut insert = tx
                        .prepare_cached(
                            "INSERT OR IGNORE INTO entries (gate_id, seq, at_ms, verdict, rule, category, body, \
                             received_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                        )
                        .map_err(lite)?;
                    for row in rows {
                        inserted += insert
                            .execute(params![
                                gate,
                                int(row, "seq"),
                                int(row, "at_ms"),
                                text(row, "verdict"),
                                text(row, "rule"),
                                text(row, "category"),
                                row.to_string(),
                                now.0
                            ])
                            .map_err(lite)?;
                    }
                }
                tx.execute(
                    "INSERT INTO gates (gate_id, last_contact_ms, acked_seq, held) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT(gate_id) DO UPDATE SET last_contact_ms = ?2, acked_seq = MAX(acked_seq, ?3),
                       held = held + ?4",
                    params![gate, now.0, max, inserted as i64],
                )
                .map_err(lite)?;
                if let Some(b) = backlog {
                    tx.execute("UPDATE gates SET backlog = ?2 WHERE gate_id = ?1", params![gate, b.max(0)])
                        .map_err(lite)?;
                }
                let acked: i64 = tx
                    .query_row("SELECT acked_seq FROM gates WHERE gate_id = ?1", [gate], |r| r.get(0))
                    .map_err(lite)?;
                tx.commit().map_err(lite)?;
                Ok(Ok(acked))
            }
            Backend::Postgres(client) => {
                // One statement per batch: the columns travel as arrays and UNNEST turns them back into rows.
                let col = |k: &str| rows.iter().map(|r| text(r, k)).collect::<Vec<String>>();
                let seqs: Vec<i64> = rows.iter().map(|r| int(r, "seq")).collect();
                let ats: Vec<i64> = rows.iter().map(|r| int(r, "at_ms")).collect();
                let bodies: Vec<String> = rows.iter().map(|r| r.to_string()).collect();
                let (verdicts, rules, categories) = (col("verdict"), col("rule"), col("category"));
                let take = prepared(client, &mut self.prepared, PG_TAKE_COUNTER)?;
                let insert = prepared(client, &mut self.prepared, PG_INGEST_ENTRIES)?;
                let upsert = prepared(client, &mut self.prepared, PG_INGEST_GATE)?;
                let mut tx = client.transaction().map_err(pg)?;
                if let Some(c) = counter {
                    let n = i64::try_from(c).map_err(|_| format!("request counter {c} is out of range"))?;
                    if tx.execute(&take, &[&gate, &n, &key]).map_err(pg)? != 1 {
                        return Ok(Err(why_not_taken_pg(&mut tx, gate, key)?));
                    }
                }
                let inserted = tx
                    .execute(&insert, &[&gate, &seqs, &ats, &verdicts, &rules, &categories, &bodies, &now.0])
                    .map_err(pg)? as i64;
                let row = tx
                    .query_one(
                        &upsert,
                        &[&gate, &now.0, &max, &backlog.unwrap_or(0).max(0), &backlog.map(|b| b.max(0)), &inserted],
                    )
                    .map_err(pg)?;
                tx.commit().map_err(pg)?;
                Ok(Ok(row.get(0)))
            }
        }
    }

    /// Take `counter` as `signer`'s latest request counter if it is above the last one taken and `signer` is
    /// enrolled with `key` (hex; `None`: a signer of office.toml, not in the database) — in one statement, so
    /// concurrent office processes on one database never both take the same, and a revocation is in force at once.
    pub fn take_counter(&mut self, signer: &str, counter: u64, key: Option<&str>) -> Result<Taken, String> {
        match &mut self.backend {
            Backend::Sqlite(conn) => take_lite(conn, signer, counter, key),
            Backend::Postgres(client) => take_pg(&mut **client, signer, counter, key),
        }
    }

    /// A heartbeat signed by `key` (as for [`OfficeDb::take_counter`]): the counter taken and the gate's contact and
    /// backlog recorded, in one transaction (one statement on PostgreSQL); anything but [`Taken::Yes`] changed nothing.
    pub fn heartbeat_signed(
        &mut self,
        gate: &str,
        counter: u64,
        key: Option<&str>,
        backlog: i64,
        now: Timestamp,
    ) -> Result<Taken, String> {
        let backlog = backlog.max(0);
        match &mut self.backend {
            Backend::Sqlite(conn) => {
                let tx = conn.transaction().map_err(lite)?;
                let taken = take_lite(&tx, gate, counter, key)?;
                if taken != Taken::Yes {
                    return Ok(taken);
                }
                tx.execute(
                    "INSERT INTO gates (gate_id, last_contact_ms, backlog) VALUES (?1, ?2, ?3)
                     ON CONFLICT(gate_id) DO UPDATE SET last_contact_ms = ?2, backlog = ?3",
                    params![gate, now.0, backlog],
                )
                .map_err(lite)?;
                tx.commit().map_err(lite)?;
                Ok(Taken::Yes)
            }
            Backend::Postgres(client) => {
                let n = i64::try_from(counter).map_err(|_| format!("request counter {counter} is out of range"))?;
                let st = prepared(client, &mut self.prepared, PG_HEARTBEAT_SIGNED)?;
                let done = client.execute(&st, &[&gate, &now.0, &backlog, &n, &key]).map_err(pg)?;
                if done == 1 { Ok(Taken::Yes) } else { why_not_taken_pg(&mut **client, gate, key) }
            }
        }
    }

    /// Signed heartbeats of distinct signers, each as [`OfficeDb::heartbeat_signed`], in one transaction (one
    /// statement on PostgreSQL, the rows in signer order so that concurrent office processes lock them in one order):
    /// what became of each, in the order given.
    pub fn heartbeats_signed(&mut self, beats: &[SignedBeat], now: Timestamp) -> Result<Vec<Taken>, String> {
        match &mut self.backend {
            Backend::Sqlite(conn) => {
                let tx = conn.transaction().map_err(lite)?;
                let mut out = Vec::with_capacity(beats.len());
                for b in beats {
                    let taken = take_lite(&tx, &b.signer, b.counter, b.key.as_deref())?;
                    if taken == Taken::Yes {
                        tx.execute(
                            "INSERT INTO gates (gate_id, last_contact_ms, backlog) VALUES (?1, ?2, ?3)
                             ON CONFLICT(gate_id) DO UPDATE SET last_contact_ms = ?2, backlog = ?3",
                            params![b.signer, now.0, b.backlog.max(0)],
                        )
                        .map_err(lite)?;
                    }
                    out.push(taken);
                }
                tx.commit().map_err(lite)?;
                Ok(out)
            }
            Backend::Postgres(client) => {
                let mut order: Vec<usize> = (0..beats.len()).collect();
                order.sort_by(|a, b| beats[*a].signer.cmp(&beats[*b].signer));
                let signers: Vec<&str> = order.iter().map(|i| beats[*i].signer.as_str()).collect();
                let counters = order
                    .iter()
                    .map(|i| i64::try_from(beats[*i].counter).map_err(|_| "request counter out of range".to_string()))
                    .collect::<Result<Vec<i64>, String>>()?;
                let backlogs: Vec<i64> = order.iter().map(|i| beats[*i].backlog.max(0)).collect();
                let keys: Vec<Option<&str>> = order.iter().map(|i| beats[*i].key.as_deref()).collect();
                let st = prepared(client, &mut self.prepared, PG_HEARTBEATS_SIGNED)?;
                let mut tx = client.transaction().map_err(pg)?;
                let done: std::collections::HashSet<String> = tx
                    .query(&st, &[&signers, &counters, &backlogs, &keys, &now.0])
                    .map_err(pg)?
                    .iter()
                    .map(|r| r.get(0))
                    .collect();
                let mut out = Vec::with_capacity(beats.len());
                for b in beats {
                    out.push(if done.contains(&b.signer) {
                        Taken::Yes
                    } else {
                        why_not_taken_pg(&mut tx, &b.signer, b.key.as_deref())?
                    });
                }
                tx.commit().map_err(pg)?;
                Ok(out)
            }
        }
    }

    /// Enrol `rows` in one transaction: all of them or, on any error, none. A row for an id already enrolled with the
    /// same key changes nothing (an import can be run again); a revoked id is enrolled afresh.
    pub fn enroll(&mut self, rows: &[Enrollment]) -> Result<usize, String> {
        const SQLITE: &str = "INSERT INTO enrolled (id, kind, name, community, public_key, enrolled_ms, revoked_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, NULL)
             ON CONFLICT(id) DO UPDATE SET kind = ?2, name = ?3, community = ?4, public_key = ?5, enrolled_ms = ?6,
               revoked_ms = NULL
             WHERE revoked_ms IS NOT NULL OR public_key <> ?5 OR name <> ?3 OR community <> ?4 OR kind <> ?2";
        const PG: &str = "INSERT INTO enrolled (id, kind, name, community, public_key, enrolled_ms, revoked_ms)
             VALUES ($1, $2, $3, $4, $5, $6, NULL)
             ON CONFLICT (id) DO UPDATE SET kind = $2, name = $3, community = $4, public_key = $5, enrolled_ms = $6,
               revoked_ms = NULL
             WHERE enrolled.revoked_ms IS NOT NULL OR enrolled.public_key <> $5 OR enrolled.name <> $3
               OR enrolled.community <> $4 OR enrolled.kind <> $2";
        let mut changed = 0;
        match &mut self.backend {
            Backend::Sqlite(conn) => {
                let tx = conn.transaction().map_err(lite)?;
                {
                    let mut stmt = tx.prepare_cached(SQLITE).map_err(lite)?;
                    for r in rows {
                        changed += stmt
                            .execute(params![r.id, r.kind, r.name, r.community, r.public_key, r.enrolled_ms])
                            .map_err(lite)?;
                    }
                }
                tx.commit().map_err(lite)?;
            }
            Backend::Postgres(client) => {
                let mut tx = client.transaction().map_err(pg)?;
                let stmt = tx.prepare(PG).map_err(pg)?;
                for r in rows {
                    changed += tx
                        .execute(&stmt, &[&r.id, &r.kind, &r.name, &r.community, &r.public_key, &r.enrolled_ms])
                        .map_err(pg)? as usize;
                }
                tx.commit().map_err(pg)?;
            }
        }
        Ok(changed)
    }

    /// Every enrolment, revoked ones included, by id.
    pub fn enrollments(&mut self) -> Result<Vec<Enrollment>, String> {
        self.enrollments_where("1 = 1", None)
    }

    /// The enrolment of `id`, if it is enrolled and not revoked.
    pub fn enrolled(&mut self, id: &str) -> Result<Option<Enrollment>, String> {
        if let Backend::Postgres(client) = &mut self.backend {
            let st = prepared(client, &mut self.prepared, PG_ENROLLED)?;
            return Ok(client.query_opt(&st, &[&id]).map_err(pg)?.as_ref().map(enrollment_pg));
        }
        Ok(self.enrollments_where("revoked_ms IS NULL AND id = ", Some(id))?.pop())
    }

    fn enrollments_where(&mut self, filter: &str, id: Option<&str>) -> Result<Vec<Enrollment>, String> {
        let cols = "SELECT id, kind, name, community, public_key, enrolled_ms, revoked_ms FROM enrolled WHERE";
        match &mut self.backend {
            Backend::Sqlite(conn) => {
                let sql = format!("{cols} {filter}{} ORDER BY id", if id.is_some() { "?1" } else { "" });
                let mut stmt = conn.prepare_cached(&sql).map_err(lite)?;
                let map = |r: &rusqlite::Row| {
                    Ok(Enrollment {
                        id: r.get(0)?,
                        kind: r.get(1)?,
                        name: r.get(2)?,
                        community: r.get(3)?,
                        public_key: r.get(4)?,
                        enrolled_ms: r.get(5)?,
                        revoked_ms: r.get(6)?,
                    })
                };
                let rows = match id {
                    Some(id) => stmt.query_map([id], map),
                    None => stmt.query_map([], map),
                }
                .map_err(lite)?;
                rows.collect::<Result<Vec<_>, _>>().map_err(lite)
            }
            Backend::Postgres(client) => {
                let sql = format!("{cols} {filter}{} ORDER BY id", if id.is_some() { "$1" } else { "" });
                let rows = match id {
                    Some(id) => client.query(&sql, &[&id]),
                    None => client.query(&sql, &[]),
                }
                .map_err(pg)?;
                Ok(rows.iter().map(enrollment_pg).collect())
            }
        }
    }

    /// Revoke `id`'s enrolment at `now`: its requests are refused from then on. False when it was not enrolled (or
    /// already revoked).
    pub fn revoke_enrollment(&mut self, id: &str, now: Timestamp) -> Result<bool, String> {
        let n = match &mut self.backend {
            Backend::Sqlite(conn) => conn
                .execute("UPDATE enrolled SET revoked_ms = ?2 WHERE id = ?1 AND revoked_ms IS NULL", params![id, now.0])
                .map_err(lite)?,
            Backend::Postgres(client) => client
                .execute("UPDATE enrolled SET revoked_ms = $2 WHERE id = $1 AND revoked_ms IS NULL", &[&id, &now.0])
                .map_err(pg)? as usize,
        };
        Ok(n == 1)
    }

    /// The designation held for `community`: its version and signed text.
    pub fn designation(&mut self, community: &str) -> Result<Option<(u64, String)>, String> {
        let row: Option<(i64, String)> = match &mut self.backend {
            Backend::Sqlite(conn) => conn
                .query_row("SELECT version, signed FROM designations WHERE community = ?1", [community], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()
                .map_err(lite)?,
            Backend::Postgres(client) => client
                .query_opt("SELECT version, signed FROM designations WHERE community = $1", &[&community])
                .map_err(pg)?
                .map(|r| (r.get(0), r.get(1))),
        };
        Ok(row.map(|(v, t)| (u64::try_from(v).unwrap_or(0), t)))
    }

    /// Every designation held, signed, by community.
    pub fn designations(&mut self) -> Result<Vec<String>, String> {
        match &mut self.backend {
            Backend::Sqlite(conn) => {
                let mut stmt =
                    conn.prepare_cached("SELECT signed FROM designations ORDER BY community").map_err(lite)?;
                let rows = stmt.query_map([], |r| r.get(0)).map_err(lite)?;
                rows.collect::<Result<_, _>>().map_err(lite)
            }
            Backend::Postgres(client) => Ok(client
                .query("SELECT signed FROM designations ORDER BY community", &[])
                .map_err(pg)?
                .iter()
                .map(|r| r.get(0))
                .collect()),
        }
    }

    /// Keep this office's own designation `version` for `community` if `version` is the next one (false: another
    /// process took it first).
    pub fn insert_designation(&mut self, community: &str, version: u64, signed: &str) -> Result<bool, String> {
        let v = i64::try_from(version).map_err(|_| "designation version out of range".to_string())?;
        let n = match &mut self.backend {
            Backend::Sqlite(conn) => conn
                .execute(
                    "INSERT INTO designations (community, version, signed) VALUES (?1, ?2, ?3)
                     ON CONFLICT(community) DO UPDATE SET version = ?2, signed = ?3 WHERE version = ?2 - 1",
                    params![community, v, signed],
                )
                .map_err(lite)?,
            Backend::Postgres(client) => client
                .execute(
                    "INSERT INTO designations (community, version, signed) VALUES ($1, $2, $3)
                     ON CONFLICT (community) DO UPDATE SET version = EXCLUDED.version, signed = EXCLUDED.signed
                       WHERE designations.version = EXCLUDED.version - 1",
                    &[&community, &v, &signed],
                )
                .map_err(pg)? as usize,
        };
        Ok(n == 1)
    }

    /// Keep a designation applied from above if it is newer than the one held.
    pub fn replace_designation(&mut self, community: &str, version: u64, signed: &str) -> Result<(), String> {
        let v = i64::try_from(version).map_err(|_| "designation version out of range".to_string())?;
        match &mut self.backend {
            Backend::Sqlite(conn) => conn
                .execute(
                    "INSERT INTO designations (community, version, signed) VALUES (?1, ?2, ?3)
                     ON CONFLICT(community) DO UPDATE SET version = ?2, signed = ?3 WHERE version < ?2",
                    params![community, v, signed],
                )
                .map(drop)
                .map_err(lite),
            Backend::Postgres(client) => client
                .execute(
                    "INSERT INTO designations (community, version, signed) VALUES ($1, $2, $3)
                     ON CONFLICT (community) DO UPDATE SET version = EXCLUDED.version, signed = EXCLUDED.signed
                       WHERE designations.version < EXCLUDED.version",
                    &[&community, &v, &signed],
                )
                .map(drop)
                .map_err(pg),
        }
    }

    /// Open each of `found` unless a problem with its key is held already (open or closed), in one transaction;
    /// returns how many were opened now.
    pub fn open_problems(&mut self, found: &[super::rollup::Problem]) -> Result<usize, String> {
        let mut opened = 0;
        match &mut self.backend {
            Backend::Sqlite(conn) => {
                let tx = conn.transaction().map_err(lite)?;
                {
                    let mut stmt = tx
                        .prepare_cached(
                            "INSERT INTO problems (key, kind, unit, date, detail, opened_ms)
                             VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT(key) DO NOTHING",
                        )
                        .map_err(lite)?;
                    for p in found {
                        opened += stmt
                            .execute(params![p.key, p.kind, p.unit, p.date, p.detail, p.opened_ms])
                            .map_err(lite)?;
                    }
                }
                tx.commit().map_err(lite)?;
            }
            Backend::Postgres(client) => {
                let mut tx = client.transaction().map_err(pg)?;
                let stmt = tx
                    .prepare(
                        "INSERT INTO problems (key, kind, unit, date, detail, opened_ms)
                         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (key) DO NOTHING",
                    )
                    .map_err(pg)?;
                for p in found {
                    opened += tx
                        .execute(&stmt, &[&p.key, &p.kind, &p.unit, &p.date, &p.detail, &p.opened_ms])
                        .map_err(pg)? as usize;
                }
                tx.commit().map_err(pg)?;
            }
        }
        Ok(opened)
    }

    /// Open `p` unless a problem with its key is held already (open or closed); true when it was opened now.
    pub fn open_problem(&mut self, p: &super::rollup::Problem) -> Result<bool, String> {
        Ok(self.open_problems(std::slice::from_ref(p))? == 1)
    }

    /// The problems held, open ones only unless `all`, oldest first.
    pub fn problems(&mut self, all: bool) -> Result<Vec<super::rollup::Problem>, String> {
        let sql = if all {
            "SELECT key, kind, unit, date, detail, opened_ms, closed_ms, closed_by, note FROM problems ORDER BY opened_ms, key"
        } else {
            "SELECT key, kind, unit, date, detail, opened_ms, closed_ms, closed_by, note FROM problems
             WHERE closed_ms IS NULL ORDER BY opened_ms, key"
        };
        match &mut self.backend {
            Backend::Sqlite(conn) => {
                let mut stmt = conn.prepare_cached(sql).map_err(lite)?;
                let rows = stmt
                    .query_map([], |r| {
                        Ok(super::rollup::Problem {
                            key: r.get(0)?,
                            kind: r.get(1)?,
                            unit: r.get(2)?,
                            date: r.get(3)?,
                            detail: r.get(4)?,
                            opened_ms: r.get(5)?,
                            closed_ms: r.get(6)?,
                            closed_by: r.get(7)?,
                            note: r.get(8)?,
                        })
                    })
                    .map_err(lite)?;
                rows.collect::<Result<_, _>>().map_err(lite)
            }
            Backend::Postgres(client) => Ok(client
                .query(sql, &[])
                .map_err(pg)?
                .iter()
                .map(|r| super::rollup::Problem {
                    key: r.get(0),
                    kind: r.get(1),
                    unit: r.get(2),
                    date: r.get(3),
                    detail: r.get(4),
                    opened_ms: r.get(5),
                    closed_ms: r.get(6),
                    closed_by: r.get(7),
                    note: r.get(8),
                })
                .collect()),
        }
    }

    /// Close the open problem `key`, with who closed it and the note on what was done; false when no such problem
    /// is open.
    pub fn close_problem(&mut self, key: &str, by: &str, note: &str, now: Timestamp) -> Result<bool, String> {
        let n = match &mut self.backend {
            Backend::Sqlite(conn) => conn
                .execute(
                    "UPDATE problems SET closed_ms = ?2, closed_by = ?3, note = ?4 WHERE key = ?1 AND closed_ms IS NULL",
                    params![key, now.0, by, note],
                )
                .map_err(lite)?,
            Backend::Postgres(client) => client
                .execute(
                    "UPDATE problems SET closed_ms = $2, closed_by = $3, note = $4 WHERE key = $1 AND closed_ms IS NULL",
                    &[&key, &now.0, &by, &note],
                )
                .map_err(pg)? as usize,
        };
        Ok(n == 1)
    }

    /// Keep a child office's roll-up for `date` (the latest one it sent replaces the one before).
    pub fn store_rollup(&mut self, child: &str, date: &str, body: &str, now: Timestamp) -> Result<(), String> {
        match &mut self.backend {
            Backend::Sqlite(conn) => conn
                .execute(
                    "INSERT INTO rollups (child, date, body, received_ms) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT(child, date) DO UPDATE SET body = ?3, received_ms = ?4",
                    params![child, date, body, now.0],
                )
                .map(drop)
                .map_err(lite),
            Backend::Postgres(client) => client
                .execute(
                    "INSERT INTO rollups (child, date, body, received_ms) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (child, date) DO UPDATE SET body = EXCLUDED.body, received_ms = EXCLUDED.received_ms",
                    &[&child, &date, &body, &now.0],
                )
                .map(drop)
                .map_err(pg),
        }
    }

    /// Every child office's roll-up for `date`: body and when it arrived, by child.
    pub fn rollups_on(&mut self, date: &str) -> Result<std::collections::HashMap<String, (String, i64)>, String> {
        match &mut self.backend {
            Backend::Sqlite(conn) => {
                let mut stmt = conn
                    .prepare_cached("SELECT child, body, received_ms FROM rollups WHERE date = ?1")
                    .map_err(lite)?;
                let rows = stmt.query_map([date], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?)))).map_err(lite)?;
                rows.collect::<Result<_, _>>().map_err(lite)
            }
            Backend::Postgres(client) => Ok(client
                .query("SELECT child, body, received_ms FROM rollups WHERE date = $1", &[&date])
                .map_err(pg)?
                .iter()
                .map(|r| (r.get(0), (r.get(1), r.get(2))))
                .collect()),
        }
    }

    /// The counter for this office's next signed request to its parent: above every one before, at least `now` in
    /// ms (shared by every process on the database).
    pub fn next_own_counter(&mut self, now: Timestamp) -> Result<u64, String> {
        let n: i64 = match &mut self.backend {
            Backend::Sqlite(conn) => conn
                .query_row(
                    "INSERT INTO request_counters (signer, counter) VALUES ('(this office)', ?1)
                     ON CONFLICT(signer) DO UPDATE SET counter = MAX(counter + 1, ?1) RETURNING counter",
                    [now.0],
                    |r| r.get(0),
                )
                .map_err(lite)?,
            Backend::Postgres(client) => client
                .query_one(
                    "INSERT INTO request_counters (signer, counter) VALUES ('(this office)', $1)
                     ON CONFLICT (signer) DO UPDATE SET counter = GREATEST(request_counters.counter + 1, $1)
                     RETURNING counter",
                    &[&now.0],
                )
                .map_err(pg)?
                .get(0),
        };
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// A gate called (a signed batch or heartbeat) and still had `backlog` entries to send.
    pub fn heartbeat(&mut self, gate: &str, backlog: i64, now: Timestamp) -> Result<(), String> {
        let backlog = backlog.max(0);
        match &mut self.backend {
            Backend::Sqlite(conn) => conn
                .execute(
                    "INSERT INTO gates (gate_id, last_contact_ms, backlog) VALUES (?1, ?2, ?3)
                     ON CONFLICT(gate_id) DO UPDATE SET last_contact_ms = ?2, backlog = ?3",
                    params![gate, now.0, backlog],
                )
                .map(drop)
                .map_err(lite),
            Backend::Postgres(client) => client
                .execute(
                    "INSERT INTO gates (gate_id, last_contact_ms, backlog) VALUES ($1, $2, $3)
                     ON CONFLICT (gate_id) DO UPDATE SET last_contact_ms = EXCLUDED.last_contact_ms,
                       backlog = EXCLUDED.backlog",
                    &[&gate, &now.0, &backlog],
                )
                .map(drop)
                .map_err(pg),
        }
    }

    /// Store a gate's daily report: idempotent per (gate, date), the latest version kept, the first arrival time
    /// (which decides on time or late) kept too.
    pub fn store_report(&mut self, gate: &str, date: &str, body: &str, now: Timestamp) -> Result<(), String> {
        match &mut self.backend {
            Backend::Sqlite(conn) => conn
                .execute(
                    "INSERT INTO reports (gate_id, date, body, first_received_ms, received_ms)
                     VALUES (?1, ?2, ?3, ?4, ?4)
                     ON CONFLICT(gate_id, date) DO UPDATE SET body = ?3, received_ms = ?4",
                    params![gate, date, body, now.0],
                )
                .map(drop)
                .map_err(lite),
            Backend::Postgres(client) => client
                .execute(
                    "INSERT INTO reports (gate_id, date, body, first_received_ms, received_ms)
                     VALUES ($1, $2, $3, $4, $4)
                     ON CONFLICT (gate_id, date) DO UPDATE SET body = EXCLUDED.body, received_ms = EXCLUDED.received_ms",
                    &[&gate, &date, &body, &now.0],
                )
                .map(drop)
                .map_err(pg),
        }
    }

    /// The latest signed bundle for `community`.
    pub fn latest_bundle(&mut self, community: &str) -> Result<Option<String>, String> {
        match &mut self.backend {
            Backend::Sqlite(conn) => conn
                .query_row(
                    "SELECT signed FROM bundles WHERE community = ?1 ORDER BY version DESC LIMIT 1",
                    [community],
                    |r| r.get(0),
                )
                .optional()
                .map_err(lite),
            Backend::Postgres(client) => client
                .query_opt(
                    "SELECT signed FROM bundles WHERE community = $1 ORDER BY version DESC LIMIT 1",
                    &[&community],
                )
                .map(|r| r.map(|r| r.get(0)))
                .map_err(pg),
        }
    }

    /// Every community's latest bundle as signed, in one query (for the pages).
    pub fn latest_bundles(&mut self) -> Result<std::collections::HashMap<String, String>, String> {
        const SQL: &str = "SELECT b.community, b.signed FROM bundles b
             JOIN (SELECT community, MAX(version) AS v FROM bundles GROUP BY community) m
               ON m.community = b.community AND m.v = b.version";
        match &mut self.backend {
            Backend::Sqlite(conn) => {
                let mut stmt = conn.prepare_cached(SQL).map_err(lite)?;
                let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).map_err(lite)?;
                rows.collect::<Result<_, _>>().map_err(lite)
            }
            Backend::Postgres(client) => {
                Ok(client.query(SQL, &[]).map_err(pg)?.iter().map(|r| (r.get(0), r.get(1))).collect())
            }
        }
    }

    /// Keep a newly signed bundle; a version already held for the community is an error.
    pub fn insert_bundle(&mut self, community: &str, version: u64, signed: &str) -> Result<(), String> {
        if self.try_insert_bundle(community, version, signed)? {
            Ok(())
        } else {
            Err(format!("bundle version {version} for `{community}` is already published"))
        }
    }

    /// Insert a bundle unless its version is taken: false when it is (another publish got there first).
    fn try_insert_bundle(&mut self, community: &str, version: u64, signed: &str) -> Result<bool, String> {
        let version = i64::try_from(version).map_err(|_| format!("bundle version {version} is out of range"))?;
        let n = match &mut self.backend {
            Backend::Sqlite(conn) => conn
                .execute(
                    "INSERT INTO bundles (community, version, signed) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
                    params![community, version, signed],
                )
                .map_err(lite)?,
            Backend::Postgres(client) => client
                .execute(
                    "INSERT INTO bundles (community, version, signed) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                    &[&community, &version, &signed],
                )
                .map_err(pg)? as usize,
        };
        Ok(n == 1)
    }

    /// Publish the next bundle for `community`: the previous one with `changes` applied, signed with `key`.
    pub fn publish(
        &mut self,
        key: &ed25519_dalek::SigningKey,
        community: &str,
        changes: &crate::bundle::Changes,
        now: Timestamp,
    ) -> Result<crate::bundle::Bundle, String> {
        // The version is allocated by the database: a publish whose version another process took in the meantime
        // (two office instances, two operators) applies its changes again on top of that one.
        for _ in 0..50 {
            let previous = match self.latest_bundle(community)? {
                Some(text) => {
                    crate::bundle::verify(&text, &key.verifying_key(), community, 0).map_err(|e| e.to_string())?
                }
                None => crate::bundle::Bundle::empty(community),
            };
            let b = changes.apply(previous, now)?;
            let signed = serde_json::to_string(&b.sign(key)).map_err(|e| e.to_string())?;
            if self.try_insert_bundle(community, b.version, &signed)? {
                return Ok(b);
            }
        }
        Err(format!("`{community}`: 50 publishes in a row took the next version first; try again"))
    }

    /// When a gate's report for `date` first arrived, if it has.
    pub fn report_received(&mut self, gate: &str, date: &str) -> Result<Option<i64>, String> {
        match &mut self.backend {
            Backend::Sqlite(conn) => conn
                .query_row(
                    "SELECT first_received_ms FROM reports WHERE gate_id = ?1 AND date = ?2",
                    params![gate, date],
                    |r| r.get(0),
                )
                .optional()
                .map_err(lite),
            Backend::Postgres(client) => client
                .query_opt("SELECT first_received_ms FROM reports WHERE gate_id = $1 AND date = $2", &[&gate, &date])
                .map(|r| r.map(|r| r.get(0)))
                .map_err(pg),
        }
    }

    /// When each gate's report for `date` first arrived, for every gate that sent one (one query, for the pages).
    pub fn reports_received_on(&mut self, date: &str) -> Result<std::collections::HashMap<String, i64>, String> {
        match &mut self.backend {
            Backend::Sqlite(conn) => {
                let mut stmt = conn
                    .prepare_cached("SELECT gate_id, first_received_ms FROM reports WHERE date = ?1")
                    .map_err(lite)?;
                let rows = stmt.query_map([date], |r| Ok((r.get(0)?, r.get(1)?))).map_err(lite)?;
                rows.collect::<Result<_, _>>().map_err(lite)
            }
            Backend::Postgres(client) => Ok(client
                .query("SELECT gate_id, first_received_ms FROM reports WHERE date = $1", &[&date])
                .map_err(pg)?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect()),
        }
    }

    /// Every gate that has sent anything.
    pub fn gates(&mut self) -> Result<Vec<GateState>, String> {
        const SQL: &str = "SELECT g.gate_id, g.last_contact_ms, g.acked_seq, g.held, g.backlog
             FROM gates g ORDER BY g.gate_id";
        match &mut self.backend {
            Backend::Sqlite(conn) => {
                let mut stmt = conn.prepare(SQL).map_err(lite)?;
                let rows = stmt
                    .query_map([], |r| {
                        Ok(GateState {
                            gate: r.get(0)?,
                            last_contact_ms: r.get(1)?,
                            acked_seq: r.get(2)?,
                            entries: r.get(3)?,
                            backlog: r.get(4)?,
                        })
                    })
                    .map_err(lite)?;
                rows.collect::<Result<Vec<_>, _>>().map_err(lite)
            }
            Backend::Postgres(client) => Ok(client
                .query(SQL, &[])
                .map_err(pg)?
                .iter()
                .map(|r| GateState {
                    gate: r.get(0),
                    last_contact_ms: r.get(1),
                    acked_seq: r.get(2),
                    entries: r.get(3),
                    backlog: r.get(4),
                })
                .collect()),
        }
    }

    /// How many entries the office holds, from every gate.
    pub fn entries_count(&mut self) -> Result<i64, String> {
        match &mut self.backend {
            Backend::Sqlite(conn) => conn.query_row("SELECT COUNT(*) FROM entries", [], |r| r.get(0)).map_err(lite),
            Backend::Postgres(client) => {
                client.query_one("SELECT COUNT(*) FROM entries", &[]).map(|r| r.get(0)).map_err(pg)
            }
        }
    }

    /// A gate's entries as received, in order.
    pub fn entries(&mut self, gate: &str) -> Result<Vec<serde_json::Value>, String> {
        let bodies: Vec<String> = match &mut self.backend {
            Backend::Sqlite(conn) => {
                let mut stmt =
                    conn.prepare("SELECT body FROM entries WHERE gate_id = ?1 ORDER BY seq").map_err(lite)?;
                let rows = stmt.query_map([gate], |r| r.get::<_, String>(0)).map_err(lite)?;
                rows.collect::<Result<Vec<_>, _>>().map_err(lite)?
            }
            Backend::Postgres(client) => client
                .query("SELECT body FROM entries WHERE gate_id = $1 ORDER BY seq", &[&gate])
                .map_err(pg)?
                .iter()
                .map(|r| r.get(0))
                .collect(),
        };
        bodies.iter().map(|t| serde_json::from_str(t).map_err(|e| e.to_string())).collect()
    }

    /// Every gate's entries whose decision time is in `[from, to)`, by time.
    pub fn entries_between(&mut self, from: Timestamp, to: Timestamp) -> Result<Vec<serde_json::Value>, String> {
        let bodies: Vec<String> = match &mut self.backend {
            Backend::Sqlite(conn) => {
                let mut stmt = conn
                    .prepare("SELECT body FROM entries WHERE at_ms >= ?1 AND at_ms < ?2 ORDER BY at_ms, gate_id, seq")
                    .map_err(lite)?;
                let rows = stmt.query_map([from.0, to.0], |r| r.get::<_, String>(0)).map_err(lite)?;
                rows.collect::<Result<Vec<_>, _>>().map_err(lite)?
            }
            Backend::Postgres(client) => client
                .query(
                    "SELECT body FROM entries WHERE at_ms >= $1 AND at_ms < $2 ORDER BY at_ms, gate_id, seq",
                    &[&from.0, &to.0],
                )
                .map_err(pg)?
                .iter()
                .map(|r| r.get(0))
                .collect(),
        };
        bodies.iter().map(|t| serde_json::from_str(t).map_err(|e| e.to_string())).collect()
    }

    /// Every daily report for a day in `[from, to]` (YYYY-MM-DD), by date and gate.
    pub fn reports_between(&mut self, from: &str, to: &str) -> Result<Vec<StoredReport>, String> {
        const SQLITE: &str = "SELECT gate_id, date, body, first_received_ms FROM reports
            WHERE date >= ?1 AND date <= ?2 ORDER BY date, gate_id";
        const POSTGRES: &str = "SELECT gate_id, date, body, first_received_ms FROM reports
            WHERE date >= $1 AND date <= $2 ORDER BY date, gate_id";
        match &mut self.backend {
            Backend::Sqlite(conn) => {
                let mut stmt = conn.prepare(SQLITE).map_err(lite)?;
                let rows = stmt
                    .query_map([from, to], |r| {
                        Ok(StoredReport {
                            gate: r.get(0)?,
                            date: r.get(1)?,
                            body: r.get(2)?,
                            first_received_ms: r.get(3)?,
                        })
                    })
                    .map_err(lite)?;
                rows.collect::<Result<Vec<_>, _>>().map_err(lite)
            }
            Backend::Postgres(client) => Ok(client
                .query(POSTGRES, &[&from, &to])
                .map_err(pg)?
                .iter()
                .map(|r| StoredReport { gate: r.get(0), date: r.get(1), body: r.get(2), first_received_ms: r.get(3) })
                .collect()),
        }
    }
}

/// The enrolment check every signed change makes in the statement that takes its counter: `$3` (or `$5`) is the key
/// that signed, NULL for a signer of office.toml.
macro_rules! enrolled_with_key {
    ($key:literal) => {
        concat!(
            "(",
            $key,
            "::text IS NULL OR EXISTS (SELECT 1 FROM enrolled WHERE id = $1 AND public_key = ",
            $key,
            " AND revoked_ms IS NULL))"
        )
    };
}

const PG_HEARTBEAT_SIGNED: &str = concat!(
    "WITH taken AS (
       INSERT INTO request_counters (signer, counter) SELECT $1, $4 WHERE ",
    enrolled_with_key!("$5"),
    "
       ON CONFLICT (signer) DO UPDATE SET counter = EXCLUDED.counter
         WHERE request_counters.counter < EXCLUDED.counter
       RETURNING 1)
     INSERT INTO gates (gate_id, last_contact_ms, backlog)
     SELECT $1, $2, $3 WHERE EXISTS (SELECT 1 FROM taken)
     ON CONFLICT (gate_id) DO UPDATE SET last_contact_ms = EXCLUDED.last_contact_ms, backlog = EXCLUDED.backlog"
);

const PG_HEARTBEATS_SIGNED: &str = "WITH beat AS (
       SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::bigint[], $4::text[]) AS t(signer, counter, backlog, key)),
     taken AS (
       INSERT INTO request_counters (signer, counter)
       SELECT signer, counter FROM beat
       WHERE key IS NULL
         OR EXISTS (SELECT 1 FROM enrolled e WHERE e.id = beat.signer AND e.public_key = beat.key AND e.revoked_ms IS NULL)
       ORDER BY signer
       ON CONFLICT (signer) DO UPDATE SET counter = EXCLUDED.counter WHERE request_counters.counter < EXCLUDED.counter
       RETURNING signer)
     INSERT INTO gates (gate_id, last_contact_ms, backlog)
     SELECT beat.signer, $5, beat.backlog FROM beat JOIN taken ON taken.signer = beat.signer ORDER BY beat.signer
     ON CONFLICT (gate_id) DO UPDATE SET last_contact_ms = EXCLUDED.last_contact_ms, backlog = EXCLUDED.backlog
     RETURNING gate_id";

const PG_TAKE_COUNTER: &str = concat!(
    "INSERT INTO request_counters (signer, counter) SELECT $1, $2 WHERE ",
    enrolled_with_key!("$3"),
    " ON CONFLICT (signer) DO UPDATE SET counter = EXCLUDED.counter WHERE request_counters.counter < EXCLUDED.counter"
);

const PG_INGEST_ENTRIES: &str = "INSERT INTO entries (gate_id, seq, at_ms, verdict, rule, category, body, received_ms)
     SELECT $1, s, a, v, r, c, b, $8
     FROM UNNEST($2::bigint[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[]) AS t(s, a, v, r, c, b)
     ON CONFLICT (gate_id, seq) DO NOTHING";

const PG_INGEST_GATE: &str = "INSERT INTO gates (gate_id, last_contact_ms, acked_seq, backlog, held)
     VALUES ($1, $2, $3, $4, $6)
     ON CONFLICT (gate_id) DO UPDATE SET last_contact_ms = EXCLUDED.last_contact_ms,
       acked_seq = GREATEST(gates.acked_seq, EXCLUDED.acked_seq), backlog = COALESCE($5, gates.backlog),
       held = gates.held + $6
     RETURNING acked_seq";

const PG_ENROLLED: &str = "SELECT id, kind, name, community, public_key, enrolled_ms, revoked_ms FROM enrolled
     WHERE revoked_ms IS NULL AND id = $1";

/// An `enrolled` row (its columns in table order) from PostgreSQL.
fn enrollment_pg(r: &postgres::Row) -> Enrollment {
    Enrollment {
        id: r.get(0),
        kind: r.get(1),
        name: r.get(2),
        community: r.get(3),
        public_key: r.get(4),
        enrolled_ms: r.get(5),
        revoked_ms: r.get(6),
    }
}

/// [`OfficeDb::take_counter`] on an SQLite connection (or a transaction).
fn take_lite(conn: &Connection, signer: &str, counter: u64, key: Option<&str>) -> Result<Taken, String> {
    let counter = i64::try_from(counter).map_err(|_| format!("request counter {counter} is out of range"))?;
    let taken = conn
        .execute(
            concat!(
                "INSERT INTO request_counters (signer, counter) SELECT ?1, ?2 WHERE ",
                "(?3 IS NULL OR EXISTS (SELECT 1 FROM enrolled WHERE id = ?1 AND public_key = ?3 AND revoked_ms IS NULL))",
                " ON CONFLICT(signer) DO UPDATE SET counter = ?2 WHERE counter < ?2"
            ),
            params![signer, counter, key],
        )
        .map_err(lite)?;
    if taken == 1 {
        return Ok(Taken::Yes);
    }
    if let Some(key) = key {
        let enrolled: bool = conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM enrolled WHERE id = ?1 AND public_key = ?2 AND revoked_ms IS NULL)",
                params![signer, key],
                |r| r.get(0),
            )
            .map_err(lite)?;
        if !enrolled {
            return Ok(Taken::NotEnrolled);
        }
    }
    let last: i64 = conn
        .query_row("SELECT counter FROM request_counters WHERE signer = ?1", [signer], |r| r.get(0))
        .map_err(lite)?;
    Ok(Taken::Replay(u64::try_from(last).unwrap_or(0)))
}

/// [`OfficeDb::take_counter`] on a PostgreSQL client (or a transaction).
fn take_pg(
    client: &mut impl postgres::GenericClient,
    signer: &str,
    counter: u64,
    key: Option<&str>,
) -> Result<Taken, String> {
    let n = i64::try_from(counter).map_err(|_| format!("request counter {counter} is out of range"))?;
    if client.execute(PG_TAKE_COUNTER, &[&signer, &n, &key]).map_err(pg)? == 1 {
        return Ok(Taken::Yes);
    }
    why_not_taken_pg(client, signer, key)
}

/// Why a signed change's counter was not taken on PostgreSQL: the signer is not enrolled with `key`, or a replay.
fn why_not_taken_pg(
    client: &mut impl postgres::GenericClient,
    signer: &str,
    key: Option<&str>,
) -> Result<Taken, String> {
    if let Some(key) = key {
        let enrolled: bool = client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM enrolled WHERE id = $1 AND public_key = $2 AND revoked_ms IS NULL)",
                &[&signer, &key],
            )
            .map_err(pg)?
            .get(0);
        if !enrolled {
            return Ok(Taken::NotEnrolled);
        }
    }
    let last: i64 =
        client.query_one("SELECT counter FROM request_counters WHERE signer = $1", &[&signer]).map_err(pg)?.get(0);
    Ok(Taken::Replay(u64::try_from(last).unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An office database made before gates reported their backlog opens, gains the column, and keeps its gates.
    #[test]
    fn an_older_office_database_gains_the_backlog_column() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("office.db");
        let old = Connection::open(&path).unwrap();
        old.execute_batch(
            "CREATE TABLE gates (gate_id TEXT PRIMARY KEY, last_contact_ms INTEGER,
                acked_seq INTEGER NOT NULL DEFAULT 0);
             INSERT INTO gates VALUES ('g1', 5, 9);",
        )
        .unwrap();
        drop(old);
        let mut db = OfficeDb::open(&Database::Sqlite(path.clone())).unwrap();
        assert_eq!(db.gates().unwrap()[0].acked_seq, 9);
        db.heartbeat("g1", 3, Timestamp(6)).unwrap();
        let g = &OfficeDb::open(&Database::Sqlite(path)).unwrap().gates().unwrap()[0];
        assert_eq!((g.backlog, g.acked_seq, g.last_contact_ms), (3, 9, Some(6)));
    }
}

//! The local record: SQLite (bundled) in WAL mode with `synchronous=FULL`, versioned migrations, and an `entries`
//! table whose `seq` is device-monotonic (AUTOINCREMENT never reuses a number, even after rows are purged).
//!
//! Invariants:
//! - an entry is committed (fsync'd) before `insert_entry` returns, so an entry that opens the gate is durable before
//!   the relay moves; the row then records what the gate actually did (`gate_action`);
//! - only masked forms of names are stored here (sealing of full personal data arrives with sync);
//! - writing the row is what makes the fourth must, 信息必录, hold: `musts.recorded` is set by the store.
//!
//! The database lives on a thread of its own; [`StoreHandle`] sends it requests and awaits replies.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::{mpsc, oneshot};

use crate::checkpoint::{CloseNote, EmergencyKind, Outcome};
use crate::domain::{Timestamp, Verdict, mask_id_number, mask_name, mask_phone};

/// What went wrong in the store, with the database path.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite refused.
    #[error("database `{path}`: {source}")]
    Sqlite {
        /// The file.
        path: PathBuf,
        /// Why.
        source: rusqlite::Error,
    },
    /// The store thread is gone (the daemon is stopping).
    #[error("the store has stopped")]
    Stopped,
    /// Personal data could not be sealed (so it was not written).
    #[error("cannot seal personal data: {0}")]
    Seal(String),
}

/// What the gate did for an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateAction {
    /// Recorded before the relay was told to open; replaced once the gate answers.
    OpenPending,
    /// The relay opened.
    Opened,
    /// The relay was told to open and failed.
    OpenFailed,
    /// Deny or refer: the gate stayed closed.
    KeptClosed,
}

impl GateAction {
    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            GateAction::OpenPending => "open_pending",
            GateAction::Opened => "opened",
            GateAction::OpenFailed => "open_failed",
            GateAction::KeptClosed => "kept_closed",
        }
    }
}

/// The sync position, for the operator and the log.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SyncStatus {
    /// Everything up to here is at the office.
    pub acked_seq: i64,
    /// Entries not yet acknowledged: the newest sequence number less the acknowledged one (unsent entries are never
    /// purged, so they are all there), read without scanning the backlog.
    pub backlog: i64,
    /// Last acknowledged round (ms).
    pub last_success_ms: Option<i64>,
    /// Last attempt (ms).
    pub last_attempt_ms: Option<i64>,
    /// Why the last attempt failed, if it did.
    pub last_error: Option<String>,
}

/// An entry as read back.
#[derive(Debug, Clone, PartialEq)]
pub struct EntryRow {
    /// Device-monotonic sequence number.
    pub seq: i64,
    /// Presentation id.
    pub presentation: i64,
    /// Ends its presentation.
    pub is_final: bool,
    /// When (ms).
    pub at_ms: i64,
    /// Tier applied.
    pub tier: String,
    /// Category.
    pub category: String,
    /// Identity kind.
    pub identity: String,
    /// Masked holder.
    pub holder_masked: Option<String>,
    /// Code status.
    pub code: String,
    /// Temperature in hundredths.
    pub temperature_centi: Option<i64>,
    /// Mask.
    pub mask: String,
    /// Verdict.
    pub verdict: String,
    /// Rule id.
    pub rule: String,
    /// Chinese message.
    pub message_zh: String,
    /// Close note.
    pub note: Option<String>,
    /// Gate action.
    pub gate_action: String,
}

const MIGRATIONS: &[&str] = &[
    // 1: entries and the journal.
    "CREATE TABLE entries (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        gate_id TEXT NOT NULL,
        presentation INTEGER NOT NULL,
        is_final INTEGER NOT NULL,
        at_ms INTEGER NOT NULL,
        at TEXT NOT NULL,
        tier TEXT NOT NULL,
        policy_version TEXT NOT NULL,
        direction TEXT NOT NULL,
        category TEXT NOT NULL,
        identity TEXT NOT NULL,
        credential_ref TEXT,
        holder_masked TEXT,
        code TEXT NOT NULL,
        colour_by_operator INTEGER NOT NULL,
        temperature_centi INTEGER,
        retest INTEGER NOT NULL,
        mask TEXT NOT NULL,
        verdict TEXT NOT NULL,
        rule TEXT NOT NULL,
        reasons TEXT NOT NULL,
        actions TEXT NOT NULL,
        musts TEXT NOT NULL,
        message_zh TEXT NOT NULL,
        note TEXT,
        approval_reason TEXT,
        emergency TEXT,
        flagged INTEGER NOT NULL,
        gate_action TEXT NOT NULL
    );
    CREATE INDEX entries_at ON entries(at_ms);
    CREATE INDEX entries_presentation ON entries(presentation);
    CREATE TABLE journal (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at_ms INTEGER NOT NULL,
        kind TEXT NOT NULL,
        detail TEXT NOT NULL
    );",
    // 2: the sync outbox's position (one row).
    "CREATE TABLE sync_state (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        acked_seq INTEGER NOT NULL,
        last_success_ms INTEGER,
        last_attempt_ms INTEGER,
        last_error TEXT
    );
    INSERT INTO sync_state (id, acked_seq) VALUES (1, 0);",
    // 3: registrations: identifiers sealed to the office, masked forms for the console.
    "ALTER TABLE entries ADD COLUMN personal_sealed TEXT;
    ALTER TABLE entries ADD COLUMN phone_masked TEXT;
    ALTER TABLE entries ADD COLUMN id_masked TEXT;
    ALTER TABLE entries ADD COLUMN destination TEXT;
    ALTER TABLE entries ADD COLUMN visit_reason TEXT;",
    // 4: daily reports waiting for the office.
    "CREATE TABLE reports (
        date TEXT PRIMARY KEY,
        body TEXT NOT NULL,
        made_ms INTEGER NOT NULL,
        sent_ms INTEGER
    );",
    // 5: the last policy bundle applied (as received, signature included).
    "CREATE TABLE bundle (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        version INTEGER NOT NULL,
        signed TEXT NOT NULL,
        applied_ms INTEGER NOT NULL
    );",
    // 6: vehicles: the plate on the vehicle's row and on each occupant's.
    "ALTER TABLE entries ADD COLUMN plate TEXT;",
    // 7: how the mask must was met: `detected` (the camera, with its score) or `operator`; NULL while unchecked.
    "ALTER TABLE entries ADD COLUMN mask_by TEXT;
    ALTER TABLE entries ADD COLUMN mask_score REAL;",
    // 8: the counter of the signed requests to the office (it refuses a counter it has seen: no replays).
    "ALTER TABLE sync_state ADD COLUMN request_counter INTEGER NOT NULL DEFAULT 0;",
];

/// The database.
pub struct Store {
    conn: Connection,
    path: PathBuf,
    gate_id: String,
    /// The office's sealing key: without it, names, phones and ID numbers are not kept at all (only masked).
    seal: Option<crypto_box::PublicKey>,
}

impl Store {
    /// Open (creating if needed), set WAL and `synchronous=FULL`, and migrate.
    pub fn open(path: &Path, gate_id: &str) -> Result<Store, StoreError> {
        let e = |source| StoreError::Sqlite { path: path.to_path_buf(), source };
        if let Some(dir) = path.parent() {
            // A missing directory surfaces as SQLite's "unable to open" below, with the path.
            let _ = std::fs::create_dir_all(dir);
        }
        let mut conn = Connection::open(path).map_err(e)?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(e)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(e)?;
        conn.pragma_update(None, "synchronous", "FULL").map_err(e)?;
        conn.pragma_update(None, "foreign_keys", "ON").map_err(e)?;
        // Migrate under a write lock, reading the version inside it: another process (a report command, a second
        // start) may be opening the same file at the same moment.
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(e)?;
        let version: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(e)?;
        for sql in MIGRATIONS.iter().skip(version as usize) {
            tx.execute_batch(sql).map_err(e)?;
        }
        if (version as usize) < MIGRATIONS.len() {
            tx.pragma_update(None, "user_version", MIGRATIONS.len() as i64).map_err(e)?;
        }
        tx.commit().map_err(e)?;
        Ok(Store { conn, path: path.to_path_buf(), gate_id: gate_id.to_string(), seal: None })
    }

    /// Seal registrations' names, phones and ID numbers to the office's key from now on.
    pub fn with_seal_key(mut self, key: Option<crypto_box::PublicKey>) -> Store {
        self.seal = key;
        self
    }

    fn err(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite { path: self.path.clone(), source }
    }

    /// Insert an outcome and commit it durably. Returns its sequence number.
    pub fn insert_entry(&mut self, o: &Outcome) -> Result<i64, StoreError> {
        let d = &o.decision;
        let pd = d.people.first();
        let reg = o.registration.as_ref();
        let sealed = match (reg.and_then(crate::privacy::Personal::of), &self.seal) {
            (Some(p), Some(key)) => Some(crate::privacy::seal(key, &p).map_err(StoreError::Seal)?),
            _ => None,
        };
        let holder_masked = o
            .credential
            .as_ref()
            .map(|c| c.holder.clone())
            .filter(|h| !h.is_empty())
            .or_else(|| reg.map(|r| mask_name(&r.name)).filter(|h| !h.is_empty()));
        // An occupant's pass opens nothing: only the vehicle's verdict moves the gate.
        let occupant = o.vehicle.as_ref().is_some_and(|v| v.occupant);
        let gate_action =
            if d.verdict == Verdict::Pass && !occupant { GateAction::OpenPending } else { GateAction::KeptClosed };
        let identity =
            if o.vehicle.as_ref().is_some_and(|v| !v.occupant) { "vehicle" } else { o.person.identity.as_str() };
        let reasons = pd.map(|p| p.reasons.iter().map(|r| r.id()).collect::<Vec<_>>()).unwrap_or_default();
        let actions = serde_json::to_string(&d.actions).unwrap_or_else(|_| "[]".into());
        let musts = pd.map_or(serde_json::Value::Null, |p| {
            let mut m = serde_json::to_value(p.musts).unwrap_or(serde_json::Value::Null);
            if let Some(obj) = m.as_object_mut() {
                obj.insert("recorded".into(), serde_json::Value::Bool(true));
            }
            m
        });
        let cred = o.credential.as_ref();
        let res = self.conn.execute(
            "INSERT INTO entries (gate_id, presentation, is_final, at_ms, at, tier, policy_version, direction,
                category, identity, credential_ref, holder_masked, code, colour_by_operator, temperature_centi, retest,
                mask, verdict, rule, reasons, actions, musts, message_zh, note, approval_reason, emergency, flagged,
                gate_action, personal_sealed, phone_masked, id_masked, destination, visit_reason, plate, mask_by,
                mask_score)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21,
                ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29, ?30, ?31, ?32, ?33, ?34, ?35, ?36)",
            params![
                self.gate_id,
                o.presentation as i64,
                o.is_final,
                o.at.0,
                o.at.to_rfc3339(),
                d.tier.as_str(),
                d.policy_version,
                d.direction.as_str(),
                o.person.category.as_str(),
                identity,
                cred.map(|c| c.key.as_str()),
                holder_masked,
                o.person.code.as_str(),
                o.colour_by_operator,
                o.person.temperature.map(|t| i64::from(t.celsius.centi())),
                o.person.retest,
                o.person.mask.as_str(),
                d.verdict.as_str(),
                d.rule.id(),
                serde_json::to_string(&reasons).unwrap_or_else(|_| "[]".into()),
                actions,
                musts.to_string(),
                d.message_zh,
                o.note.map(CloseNote::as_str),
                o.approval_reason,
                o.emergency.map(EmergencyKind::as_str),
                d.flagged,
                gate_action.as_str(),
                sealed,
                reg.and_then(|r| r.phone.as_deref()).map(mask_phone),
                reg.and_then(|r| r.id_number.as_deref()).map(mask_id_number),
                reg.and_then(|r| r.destination.as_deref()),
                reg.and_then(|r| r.reason.as_deref()),
                o.vehicle.as_ref().map(|v| v.plate.as_str()),
                o.mask_by.map(crate::domain::MaskBy::as_str),
                o.mask_by.and_then(crate::domain::MaskBy::score).map(|s| (f64::from(s) * 10_000.0).round() / 10_000.0),
            ],
        );
        res.map_err(|e| self.err(e))?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Record what the gate did for an entry.
    pub fn set_gate_action(&mut self, seq: i64, action: GateAction) -> Result<(), StoreError> {
        self.conn
            .execute("UPDATE entries SET gate_action = ?1 WHERE seq = ?2", params![action.as_str(), seq])
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Append to the journal (start, stop, device faults, policy changes).
    pub fn journal(&mut self, at: Timestamp, kind: &str, detail: &str) -> Result<(), StoreError> {
        self.conn
            .execute("INSERT INTO journal (at_ms, kind, detail) VALUES (?1, ?2, ?3)", params![at.0, kind, detail])
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The next presentation id: one past the highest recorded.
    pub fn next_presentation_id(&self) -> Result<u64, StoreError> {
        let max: Option<i64> = self
            .conn
            .query_row("SELECT MAX(presentation) FROM entries", [], |r| r.get(0))
            .optional()
            .map_err(|e| self.err(e))?
            .flatten();
        Ok(max.map_or(1, |m| m as u64 + 1))
    }

    /// All entries in sequence order.
    pub fn entries(&self) -> Result<Vec<EntryRow>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT seq, presentation, is_final, at_ms, tier, category, identity, holder_masked, code,
                    temperature_centi, mask, verdict, rule, message_zh, note, gate_action
                 FROM entries ORDER BY seq",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(EntryRow {
                    seq: r.get(0)?,
                    presentation: r.get(1)?,
                    is_final: r.get(2)?,
                    at_ms: r.get(3)?,
                    tier: r.get(4)?,
                    category: r.get(5)?,
                    identity: r.get(6)?,
                    holder_masked: r.get(7)?,
                    code: r.get(8)?,
                    temperature_centi: r.get(9)?,
                    mask: r.get(10)?,
                    verdict: r.get(11)?,
                    rule: r.get(12)?,
                    message_zh: r.get(13)?,
                    note: r.get(14)?,
                    gate_action: r.get(15)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }

    /// The next batch for the office: every column of up to `limit` entries after the acknowledged sequence number,
    /// as JSON objects, in order. It stops before an entry whose gate action is still being decided (a pass recorded
    /// less than `settle_ms` before `now`), so the office receives each entry once, complete.
    pub fn outbox_batch(
        &self,
        limit: usize,
        now: Timestamp,
        settle_ms: i64,
    ) -> Result<Vec<serde_json::Map<String, serde_json::Value>>, StoreError> {
        let acked = self.acked_seq()?;
        let bound: Option<i64> = self
            .conn
            .query_row(
                "SELECT MIN(seq) FROM entries WHERE seq > ?1 AND seq <= ?1 + ?3
                    AND gate_action = 'open_pending' AND at_ms > ?2",
                params![acked, now.0 - settle_ms, limit as i64],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))?;
        let mut stmt = self
            .conn
            .prepare_cached("SELECT * FROM entries WHERE seq > ?1 AND seq < ?2 ORDER BY seq LIMIT ?3")
            .map_err(|e| self.err(e))?;
        let names: Vec<String> = stmt.column_names().map(String::from).collect();
        let rows = stmt
            .query_map(params![acked, bound.unwrap_or(i64::MAX), limit as i64], |r| {
                let mut m = serde_json::Map::new();
                for (i, name) in names.iter().enumerate() {
                    use rusqlite::types::ValueRef;
                    let v = match r.get_ref(i)? {
                        ValueRef::Null => serde_json::Value::Null,
                        ValueRef::Integer(n) => n.into(),
                        ValueRef::Real(f) => f.into(),
                        ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned().into(),
                        ValueRef::Blob(b) => crate::keys::hex(b).into(),
                    };
                    m.insert(name.clone(), v);
                }
                Ok(m)
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }

    /// The newest entry's sequence number (0 when there is none). Unsent entries are never purged, so everything
    /// between the acknowledged number and this one is still to be sent.
    pub fn head_seq(&self) -> Result<i64, StoreError> {
        self.conn.query_row("SELECT COALESCE(MAX(seq), 0) FROM entries", [], |r| r.get(0)).map_err(|e| self.err(e))
    }

    /// Everything up to this sequence number is at the office.
    pub fn acked_seq(&self) -> Result<i64, StoreError> {
        self.conn.query_row("SELECT acked_seq FROM sync_state WHERE id = 1", [], |r| r.get(0)).map_err(|e| self.err(e))
    }

    /// Where sync stands.
    pub fn sync_status(&self) -> Result<SyncStatus, StoreError> {
        self.conn
            .query_row(
                "SELECT acked_seq, last_success_ms, last_attempt_ms, last_error,
                    MAX((SELECT COALESCE(MAX(seq), 0) FROM entries) - acked_seq, 0)
                 FROM sync_state WHERE id = 1",
                [],
                |r| {
                    Ok(SyncStatus {
                        acked_seq: r.get(0)?,
                        last_success_ms: r.get(1)?,
                        last_attempt_ms: r.get(2)?,
                        last_error: r.get(3)?,
                        backlog: r.get(4)?,
                    })
                },
            )
            .map_err(|e| self.err(e))
    }

    /// The counter for the next signed request to the office, committed before it is used: above every counter
    /// used before, and at least `now` in ms (so a gate whose database was replaced still starts above what the
    /// office has seen, and a clock set back after a power cut cannot make it repeat one).
    pub fn next_request_counter(&mut self, now: Timestamp) -> Result<u64, StoreError> {
        let counter: i64 = self
            .conn
            .query_row(
                "UPDATE sync_state SET request_counter = MAX(request_counter + 1, ?1) WHERE id = 1
                 RETURNING request_counter",
                [now.0],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))?;
        Ok(u64::try_from(counter).unwrap_or(0))
    }

    /// The office acknowledged everything up to `seq` (never moves backwards).
    pub fn sync_acked(&mut self, seq: i64, at: Timestamp) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE sync_state SET acked_seq = MAX(acked_seq, ?1), last_success_ms = ?2, last_attempt_ms = ?2,
                    last_error = NULL WHERE id = 1",
                params![seq, at.0],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// A sync attempt failed.
    pub fn sync_failed(&mut self, error: &str, at: Timestamp) -> Result<(), StoreError> {
        self.conn
            .execute("UPDATE sync_state SET last_attempt_ms = ?1, last_error = ?2 WHERE id = 1", params![at.0, error])
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Record `n` synthetic passages (residents with a pass, normal temperature, mask on), one second apart from
    /// `start`, in one transaction: the backlog for sync tests and benchmarks. Names are obviously synthetic.
    pub fn fill_synthetic(&mut self, n: usize, start: Timestamp) -> Result<(), StoreError> {
        use crate::checkpoint::{Button, Checkpoint, CredentialRead, Effect, Event};
        use crate::domain::{Category, Celsius, CodeStatus, Direction, IdentityKind};
        let first = self.next_presentation_id()?;
        let mut k = Checkpoint::new(Default::default(), Default::default(), Direction::In, first);
        self.conn.execute_batch("BEGIN").map_err(|e| self.err(e))?;
        for i in 0..n {
            let at = start.plus_ms(i as i64 * 1000);
            let card = CredentialRead::new(
                format!("SYN-{i}"),
                IdentityKind::Pass,
                Category::Resident,
                CodeStatus::None,
                "测试人员",
            );
            let mut effects = k.handle(Event::Credential(card), at);
            effects.extend(k.handle(Event::Temperature(Celsius::from_centi(3600 + (i % 80) as i32)), at));
            effects.extend(k.handle(Event::Button(Button::MaskConfirmed), at));
            for e in effects {
                if let Effect::Decided(o) = e {
                    let seq = self.insert_entry(&o)?;
                    self.set_gate_action(seq, GateAction::Opened)?;
                }
            }
        }
        self.conn.execute_batch("COMMIT").map_err(|e| self.err(e))
    }

    /// Delete entries the office has acknowledged that are older than `retention_ms`, and journal the purge.
    /// Returns how many were deleted. Entries not yet at the office are never purged, however old.
    pub fn purge_synced(&mut self, now: Timestamp, retention_ms: i64) -> Result<usize, StoreError> {
        let acked = self.acked_seq()?;
        let cutoff = now.0 - retention_ms;
        let tx = self.conn.transaction().map_err(|e| StoreError::Sqlite { path: self.path.clone(), source: e })?;
        let (n, max): (i64, Option<i64>) = tx
            .query_row(
                "SELECT COUNT(*), MAX(seq) FROM entries WHERE seq <= ?1 AND at_ms < ?2
                    AND seq < (SELECT MAX(seq) FROM entries)",
                params![acked, cutoff],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(|e| StoreError::Sqlite { path: self.path.clone(), source: e })?;
        if n > 0 {
            // The newest entry always stays: presentation ids continue from it after a restart.
            tx.execute(
                "DELETE FROM entries WHERE seq <= ?1 AND at_ms < ?2 AND seq < (SELECT MAX(seq) FROM entries)",
                params![acked, cutoff],
            )
            .and_then(|_| {
                tx.execute(
                    "INSERT INTO journal (at_ms, kind, detail) VALUES (?1, 'purge', ?2)",
                    params![
                        now.0,
                        format!(
                            "{n} synced entries up to #{} older than {} days deleted",
                            max.unwrap_or(0),
                            retention_ms / 86_400_000
                        )
                    ],
                )
            })
            .map_err(|e| StoreError::Sqlite { path: self.path.clone(), source: e })?;
        }
        tx.commit().map_err(|e| StoreError::Sqlite { path: self.path.clone(), source: e })?;
        Ok(n as usize)
    }

    /// The final entries in `[from, to)`: (verdict, category, rule, direction, identity, code, emergency).
    pub fn final_rows_between(&self, from: Timestamp, to: Timestamp) -> Result<Vec<[Option<String>; 9]>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT verdict, category, rule, direction, identity, code, emergency, mask, mask_by FROM entries
                 WHERE is_final = 1 AND at_ms >= ?1 AND at_ms < ?2 ORDER BY seq",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![from.0, to.0], |r| {
                Ok([r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?, r.get(8)?])
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }

    /// Final decisions in `[from, to)` by verdict (occupants of a vehicle are counted with the vehicle, not apart).
    pub fn verdict_counts(
        &self,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<std::collections::BTreeMap<String, i64>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT verdict, COUNT(*) FROM entries WHERE is_final = 1 AND at_ms >= ?1 AND at_ms < ?2
                 AND NOT (plate IS NOT NULL AND identity != 'vehicle') GROUP BY verdict",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt.query_map(params![from.0, to.0], |r| Ok((r.get(0)?, r.get(1)?))).map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// Journal lines (at, kind, detail) in `[from, to)`.
    pub fn journal_between(&self, from: Timestamp, to: Timestamp) -> Result<Vec<(i64, String, String)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT at_ms, kind, detail FROM journal WHERE at_ms >= ?1 AND at_ms < ?2 ORDER BY id")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![from.0, to.0], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }

    /// Queue the report for `date` (replacing an unsent or sent earlier version: the office keeps the latest).
    pub fn queue_report(&mut self, date: &str, body: &str, now: Timestamp) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO reports (date, body, made_ms, sent_ms) VALUES (?1, ?2, ?3, NULL)
                 ON CONFLICT(date) DO UPDATE SET body = ?2, made_ms = ?3, sent_ms = NULL",
                params![date, body, now.0],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Reports not yet acknowledged by the office: (date, body), oldest first.
    pub fn unsent_reports(&self) -> Result<Vec<(String, String)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT date, body FROM reports WHERE sent_ms IS NULL ORDER BY date")
            .map_err(|e| self.err(e))?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }

    /// The office has the report for `date`.
    pub fn report_sent(&mut self, date: &str, now: Timestamp) -> Result<(), StoreError> {
        self.conn
            .execute("UPDATE reports SET sent_ms = ?2 WHERE date = ?1", params![date, now.0])
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Is there a report for `date` already?
    pub fn has_report(&self, date: &str) -> Result<bool, StoreError> {
        self.conn
            .query_row("SELECT COUNT(*) FROM reports WHERE date = ?1", [date], |r| r.get::<_, i64>(0))
            .map(|n| n > 0)
            .map_err(|e| self.err(e))
    }

    /// The last applied bundle: (version, signed text).
    pub fn applied_bundle(&self) -> Result<Option<(u64, String)>, StoreError> {
        self.conn
            .query_row("SELECT version, signed FROM bundle WHERE id = 1", [], |r| {
                Ok((r.get::<_, i64>(0)? as u64, r.get(1)?))
            })
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Keep `signed` as the applied bundle and journal `summary`.
    pub fn save_bundle(&mut self, version: u64, signed: &str, summary: &str, now: Timestamp) -> Result<(), StoreError> {
        let tx = self.conn.transaction().map_err(|e| StoreError::Sqlite { path: self.path.clone(), source: e })?;
        tx.execute(
            "INSERT INTO bundle (id, version, signed, applied_ms) VALUES (1, ?1, ?2, ?3)
             ON CONFLICT(id) DO UPDATE SET version = ?1, signed = ?2, applied_ms = ?3",
            params![version as i64, signed, now.0],
        )
        .and_then(|_| {
            tx.execute(
                "INSERT INTO journal (at_ms, kind, detail) VALUES (?1, 'policy_bundle', ?2)",
                params![now.0, summary],
            )
        })
        .map_err(|e| StoreError::Sqlite { path: self.path.clone(), source: e })?;
        tx.commit().map_err(|e| StoreError::Sqlite { path: self.path.clone(), source: e })
    }

    /// Journal lines (kind, detail) in order.
    pub fn journal_lines(&self) -> Result<Vec<(String, String)>, StoreError> {
        let mut stmt = self.conn.prepare("SELECT kind, detail FROM journal ORDER BY id").map_err(|e| self.err(e))?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }
}

enum Request {
    Insert(Box<Outcome>, oneshot::Sender<Result<i64, StoreError>>),
    GateAction(i64, GateAction, oneshot::Sender<Result<(), StoreError>>),
    Journal(Timestamp, String, String),
}

/// An async handle on the store thread. Dropping every handle lets the thread drain its queue and exit.
#[derive(Clone)]
pub struct StoreHandle {
    tx: mpsc::Sender<Request>,
}

impl StoreHandle {
    /// Move `store` onto a thread of its own.
    pub fn spawn(mut store: Store) -> std::io::Result<(StoreHandle, std::thread::JoinHandle<()>)> {
        let (tx, mut rx) = mpsc::channel::<Request>(256);
        let join = std::thread::Builder::new().name("store".into()).spawn(move || {
            while let Some(req) = rx.blocking_recv() {
                match req {
                    Request::Insert(o, reply) => {
                        let _ = reply.send(store.insert_entry(&o));
                    }
                    Request::GateAction(seq, a, reply) => {
                        let _ = reply.send(store.set_gate_action(seq, a));
                    }
                    Request::Journal(at, kind, detail) => {
                        if let Err(e) = store.journal(at, &kind, &detail) {
                            tracing::error!(error = %e, "journal write failed");
                        }
                    }
                }
            }
        })?;
        Ok((StoreHandle { tx }, join))
    }

    /// Insert and commit durably.
    pub async fn insert(&self, o: Outcome) -> Result<i64, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Request::Insert(Box::new(o), reply)).await.map_err(|_| StoreError::Stopped)?;
        rx.await.map_err(|_| StoreError::Stopped)?
    }

    /// Record what the gate did.
    pub async fn set_gate_action(&self, seq: i64, a: GateAction) -> Result<(), StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Request::GateAction(seq, a, reply)).await.map_err(|_| StoreError::Stopped)?;
        rx.await.map_err(|_| StoreError::Stopped)?
    }

    /// Append to the journal (fire and forget).
    pub async fn journal(&self, at: Timestamp, kind: &str, detail: impl Into<String>) {
        let _ = self.tx.send(Request::Journal(at, kind.to_string(), detail.into())).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_counters_only_rise_across_reopening_and_a_clock_set_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gate.db");
        let mut store = Store::open(&path, "g").unwrap();
        let now = Timestamp(1_764_547_200_000);
        let first = store.next_request_counter(now).unwrap();
        assert_eq!(first, 1_764_547_200_000, "a new database starts at the clock");
        assert_eq!(store.next_request_counter(now).unwrap(), first + 1, "the same millisecond: one above");
        drop(store);
        let mut store = Store::open(&path, "g").unwrap();
        let back = store.next_request_counter(Timestamp(1_000)).unwrap();
        assert_eq!(back, first + 2, "reopened, with the clock set back an age: still rising");
        assert_eq!(store.next_request_counter(now.plus_ms(60_000)).unwrap(), first + 60_000);
    }
}

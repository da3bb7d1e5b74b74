//! The office on PostgreSQL (`database_url`), against a real server the test starts: the gate's backlog synced over
//! HTTP arrives exactly once, resent batches change nothing, reports keep their first arrival, bundles and exports
//! work — and the answers are the same as on SQLite.

use std::collections::BTreeMap;

use ed25519_dalek::SigningKey;
use sibi::domain::Timestamp;
use sibi::office::{Database, Enrolled, Office, OfficeConfig, OfficeDb};
use sibi::store::Store;
use sibi::sync::{SyncClient, SyncSettings};

use crate::pg::Pg;

const T0: Timestamp = Timestamp(1_790_000_000_000);

fn gate_rows(store: &Store) -> Vec<serde_json::Value> {
    store
        .outbox_batch(100_000, T0.plus_ms(i64::MAX / 4), 0)
        .unwrap()
        .into_iter()
        .map(serde_json::Value::Object)
        .collect()
}

/// The same calls on both backends give the same answers.
fn exercise(db: &mut OfficeDb, rows: &[serde_json::Value]) -> serde_json::Value {
    let key = SigningKey::from_bytes(&[5; 32]);
    let mut acks = Vec::new();
    for chunk in rows.chunks(100) {
        acks.push(db.ingest("g1", chunk, T0).unwrap());
    }
    // A resent batch (the acknowledgement was lost) changes nothing.
    acks.push(db.ingest("g1", &rows[..100], T0.plus_ms(5)).unwrap());
    // Heartbeats: a known gate's backlog and contact, and a gate seen first by its heartbeat.
    db.heartbeat("g1", 42, T0.plus_ms(7)).unwrap();
    db.heartbeat("g2", 0, T0.plus_ms(8)).unwrap();
    db.store_report("g1", "2026-09-21", "{\"v\":1}", T0.plus_ms(10)).unwrap();
    db.store_report("g1", "2026-09-21", "{\"v\":2}", T0.plus_ms(20)).unwrap();
    let changes = sibi::bundle::Changes {
        tier: Some(sibi::bundle::BundleTier { tier: sibi::domain::Tier::High, effective: T0.to_rfc3339() }),
        quarantine: vec!["P-1".into()],
        ..Default::default()
    };
    let b1 = db.publish(&key, "c1", &changes, T0).unwrap();
    let b2 = db.publish(&key, "c1", &sibi::bundle::Changes { revoke: vec!["P-2".into()], ..Default::default() }, T0);
    let (from, to) = (Timestamp(rows[10]["at_ms"].as_i64().unwrap()), Timestamp(rows[20]["at_ms"].as_i64().unwrap()));
    let between: Vec<i64> = db.entries_between(from, to).unwrap().iter().map(|r| r["seq"].as_i64().unwrap()).collect();
    // Request counters: each signer's only rising; a counter seen (or below one seen) is a replay.
    let counters: Vec<Option<u64>> = [("g1", 5), ("g1", 9), ("g1", 9), ("g1", 7), ("g2", 1), ("g1", 10)]
        .iter()
        .map(|(signer, n)| db.take_counter(signer, *n).unwrap())
        .collect();
    // Enrolment: all of a file or none, revocation, enrolling afresh.
    let enrol = |id: &str, key: &str| sibi::office::Enrollment {
        id: id.into(),
        kind: "gate".into(),
        name: format!("{id} 门"),
        community: "c1".into(),
        public_key: key.into(),
        enrolled_ms: T0.0,
        revoked_ms: None,
    };
    let enrolled = [
        db.enroll(&[enrol("e1", "aa"), enrol("e2", "bb")]).unwrap(),
        db.enroll(&[enrol("e1", "aa"), enrol("e2", "bb")]).unwrap(),
        usize::from(db.revoke_enrollment("e2", T0.plus_ms(1)).unwrap()),
        usize::from(db.revoke_enrollment("e2", T0.plus_ms(2)).unwrap()),
        usize::from(db.enrolled("e2").unwrap().is_none()),
        db.enroll(&[enrol("e2", "cc")]).unwrap(),
    ];
    serde_json::json!({
        "enrolled": enrolled,
        "enrollments": db.enrollments().unwrap(),
        "counters": counters,
        "acks": acks,
        "gates": db.gates().unwrap(),
        "entries": db.entries("g1").unwrap(),
        "report_first": db.report_received("g1", "2026-09-21").unwrap(),
        "reports": db.reports_between("2026-09-01", "2026-09-30").unwrap().iter().map(|r| r.body.clone()).collect::<Vec<_>>(),
        "bundle_versions": [b1.version, b2.unwrap().version],
        "latest_has_both": db.latest_bundle("c1").unwrap().is_some_and(|t| t.contains("P-1") && t.contains("P-2")),
        "between": between,
    })
}

#[test]
fn postgresql_and_sqlite_give_the_same_answers() {
    let pg = Pg::start(false);
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("gate.db"), "g1").unwrap();
    store.fill_synthetic(500, T0).unwrap();
    let rows = gate_rows(&store);
    let on_pg = exercise(&mut OfficeDb::open(&Database::Postgres(pg.url.clone())).unwrap(), &rows);
    let on_sqlite = exercise(&mut OfficeDb::open(&Database::Sqlite(dir.path().join("office.db"))).unwrap(), &rows);
    assert_eq!(on_pg, on_sqlite);
    assert_eq!(on_pg["entries"].as_array().unwrap().len(), 500);
    assert_eq!(on_pg["acks"].as_array().unwrap().last(), Some(&serde_json::json!(500)));
    assert_eq!(on_pg["report_first"], serde_json::json!(T0.0 + 10), "the first arrival decides on time or late");
    assert_eq!(on_pg["reports"], serde_json::json!(["{\"v\":2}"]), "the latest version is kept");
    assert_eq!(on_pg["between"].as_array().unwrap().len(), 10);
    assert_eq!(on_pg["latest_has_both"], true);
    assert_eq!(
        on_pg["counters"],
        serde_json::json!([null, null, 9, 9, null, null]),
        "replays refused with the last taken"
    );
    let gates = on_pg["gates"].as_array().unwrap();
    assert_eq!((gates[0]["gate"].as_str(), gates[0]["backlog"].as_i64()), (Some("g1"), Some(42)), "{gates:?}");
    assert_eq!((gates[0]["acked_seq"].as_i64(), gates[0]["last_contact_ms"].as_i64()), (Some(500), Some(T0.0 + 7)));
    assert_eq!((gates[1]["gate"].as_str(), gates[1]["entries"].as_i64()), (Some("g2"), Some(0)));
    // Reopening finds the tables and the data.
    let mut again = OfficeDb::open(&Database::Postgres(pg.url.clone())).unwrap();
    assert_eq!(again.entries("g1").unwrap().len(), 500);
}

#[test]
fn a_gate_syncs_to_an_office_on_postgresql_and_the_office_exports_from_it() {
    let pg = Pg::start(false);
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::from_bytes(&[7; 32]);
    let gates = BTreeMap::from([(
        "pg-gate".to_string(),
        Enrolled { key: key.verifying_key(), name: "东门".into(), community: "c1".into() },
    )]);
    let office = Office::open(OfficeConfig::new(Database::Postgres(pg.url.clone()), gates)).unwrap();
    let addr = sibi::office::serve_in_background(office.clone()).unwrap();
    let mut store = Store::open(&dir.path().join("gate.db"), "pg-gate").unwrap();
    store.fill_synthetic(3000, T0).unwrap();
    let expected = gate_rows(&store);
    let settings = SyncSettings { max_backoff_secs: 1.0, ..SyncSettings::for_office(format!("http://{addr}")) };
    assert_eq!(SyncClient::new(&settings, "pg-gate", key).drain(&mut store).unwrap(), 3000);
    assert_eq!(office.entries("pg-gate").unwrap(), expected, "exactly the gate's rows, in order");
    let page = ureq::get(&format!("http://{addr}/")).call().unwrap().body_mut().read_to_string().unwrap();
    assert!(page.contains("<td>3000</td>"), "{page}");

    // The command line reads the same server through `database_url`.
    let toml = dir.path().join("office.toml");
    std::fs::write(&toml, format!("[office]\nlisten = \"127.0.0.1:0\"\ndatabase_url = \"{}\"\n", pg.url)).unwrap();
    let date = Timestamp(expected[0]["at_ms"].as_i64().unwrap()).to_rfc3339()[..10].to_string();
    let last = Timestamp(expected[2999]["at_ms"].as_i64().unwrap()).to_rfc3339()[..10].to_string();
    let csv = dir.path().join("entries.csv");
    let out = crate::util::run(&[
        "office",
        "export",
        "--config",
        toml.to_str().unwrap(),
        "--from",
        &date,
        "--to",
        &last,
        "--out",
        csv.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read_to_string(&csv).unwrap().lines().count(), 3001, "a header and every entry");
    // A server that is not there is a clear error, not a panic.
    std::fs::write(&toml, "[office]\nlisten = \"127.0.0.1:0\"\ndatabase_url = \"postgres://sibi@127.0.0.1:1/x\"\n")
        .unwrap();
    let out =
        crate::util::run(&["office", "export", "--config", toml.to_str().unwrap(), "--from", &date, "--out", "x.csv"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("cannot connect to postgres://…@127.0.0.1:1/x"), "{err}");
}

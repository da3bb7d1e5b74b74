//! The office on PostgreSQL (`database_url`), against a real server the test starts: the gate's backlog synced over
//! HTTP arrives exactly once, resent batches change nothing, reports keep their first arrival, bundles and exports
//! work — and the answers are the same as on SQLite.

use std::collections::BTreeMap;

use ed25519_dalek::SigningKey;
use sibi::domain::Timestamp;
use sibi::office::{Database, Enrolled, Office, OfficeConfig, OfficeDb, SignedBeat, Taken};
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
    let counters: Vec<Taken> = [("g1", 5), ("g1", 9), ("g1", 9), ("g1", 7), ("g2", 1), ("g1", 10)]
        .iter()
        .map(|(signer, n)| db.take_counter(signer, *n, None).unwrap())
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
    // A signed heartbeat and a signed batch take their counter in the same transaction as their change.
    let fused = serde_json::json!([
        db.heartbeat_signed("g3", 100, None, 4, T0.plus_ms(30)).unwrap(),
        db.heartbeat_signed("g3", 100, None, 9, T0.plus_ms(31)).unwrap(),
        db.ingest_signed("g3", Some(101), None, &rows[..10], T0.plus_ms(32), Some(3)).unwrap().ok(),
        db.ingest_signed("g3", Some(10), None, &rows[..10], T0.plus_ms(33), Some(99)).unwrap().err(),
    ]);
    let gates = db.gates().unwrap();
    // Each signed change checks, in its own transaction, that the signer is still enrolled with the key that signed:
    // e1 with its key; e2 revoked and enrolled afresh with "cc", so its old key "bb" changes nothing.
    let keyed = serde_json::json!([
        db.heartbeat_signed("e1", 1, Some("aa"), 1, T0.plus_ms(40)).unwrap(),
        db.heartbeat_signed("e1", 2, Some("zz"), 1, T0.plus_ms(41)).unwrap(),
        db.heartbeat_signed("e2", 1, Some("bb"), 1, T0.plus_ms(42)).unwrap(),
        db.ingest_signed("e2", Some(2), Some("bb"), &[], T0.plus_ms(43), None).unwrap().err(),
        db.take_counter("e2", 3, Some("bb")).unwrap(),
        db.take_counter("e2", 3, Some("cc")).unwrap(),
        db.take_counter("e2", 3, Some("cc")).unwrap(),
    ]);
    // Heartbeats committed as a group: each answered as it would be alone, in the order given.
    let beat = |signer: &str, counter: u64, key: Option<&str>| SignedBeat {
        signer: signer.into(),
        counter,
        key: key.map(str::to_string),
        backlog: 7,
    };
    let group = db
        .heartbeats_signed(
            &[beat("e2", 4, Some("cc")), beat("g3", 100, None), beat("e1", 9, Some("aa")), beat("e9", 1, Some("aa"))],
            T0.plus_ms(50),
        )
        .unwrap();
    serde_json::json!({
        "fused": fused,
        "keyed": keyed,
        "group": group,
        "group_gates": db.gates().unwrap().iter().filter(|g| g.backlog == 7).map(|g| g.gate.clone()).collect::<Vec<_>>(),
        "enrolled": enrolled,
        "enrollments": db.enrollments().unwrap(),
        "counters": counters,
        "acks": acks,
        "gates": gates,
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
        serde_json::json!(["yes", "yes", {"replay": 9}, {"replay": 9}, "yes", "yes"]),
        "replays refused with the last taken"
    );
    assert_eq!(
        on_pg["keyed"],
        serde_json::json!(["yes", "not_enrolled", "not_enrolled", "not_enrolled", "not_enrolled", "yes", {"replay": 3}]),
        "a change signed with a key no longer enrolled is refused in its own transaction"
    );
    assert_eq!(on_pg["group"], serde_json::json!(["yes", {"replay": 101}, "yes", "not_enrolled"]));
    assert_eq!(on_pg["group_gates"], serde_json::json!(["e1", "e2"]), "only the heartbeats taken change a gate");
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

/// #15: concurrent publishes (two office processes, two operators) never share a bundle version, and none loses
/// its changes: the database allocates the versions.
#[test]
fn concurrent_publishes_on_postgresql_take_distinct_versions_and_keep_every_change() {
    let pg = Pg::start(false);
    let key = SigningKey::from_bytes(&[9; 32]);
    let first = sibi::bundle::Changes {
        tier: Some(sibi::bundle::BundleTier { tier: sibi::domain::Tier::Low, effective: T0.to_rfc3339() }),
        ..Default::default()
    };
    OfficeDb::open(&Database::Postgres(pg.url.clone())).unwrap().publish(&key, "c1", &first, T0).unwrap();
    let workers: Vec<_> = (0..2)
        .map(|w| {
            let (url, key) = (pg.url.clone(), key.clone());
            std::thread::spawn(move || {
                let mut db = OfficeDb::open(&Database::Postgres(url)).unwrap();
                (0..10)
                    .map(|i| {
                        let changes =
                            sibi::bundle::Changes { revoke: vec![format!("P-{w}-{i}")], ..Default::default() };
                        db.publish(&key, "c1", &changes, T0).unwrap().version
                    })
                    .collect::<Vec<u64>>()
            })
        })
        .collect();
    let mut versions: Vec<u64> = workers.into_iter().flat_map(|w| w.join().unwrap()).collect();
    versions.sort_unstable();
    assert_eq!(versions, (2..=21).collect::<Vec<u64>>(), "twenty publishes, twenty versions");
    let latest = OfficeDb::open(&Database::Postgres(pg.url.clone())).unwrap().latest_bundle("c1").unwrap().unwrap();
    let bundle = sibi::bundle::verify(&latest, &key.verifying_key(), "c1", 0).unwrap();
    assert_eq!(bundle.revoked_passes.len(), 20, "every change is in the latest bundle: {:?}", bundle.revoked_passes);
}

/// A round-robin TCP balancer over `upstreams` that skips one it cannot connect to (as any HTTP balancer does).
fn balancer(upstreams: Vec<std::net::SocketAddr>) -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for (n, client) in listener.incoming().enumerate() {
            let Ok(client) = client else { continue };
            let server = (0..upstreams.len())
                .find_map(|k| std::net::TcpStream::connect(upstreams[(n + k) % upstreams.len()]).ok());
            let Some(server) = server else { continue };
            let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            let (mut c1, mut s1) = (client, server);
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut c1, &mut s1);
                let _ = s1.shutdown(std::net::Shutdown::Both);
            });
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut s2, &mut c2);
                let _ = c2.shutdown(std::net::Shutdown::Both);
            });
        }
    });
    addr
}

/// #15: two office processes serve one PostgreSQL behind a balancer; twenty gates sync through it; one instance is
/// killed mid-load; the other carries the load and every gate's every row is at the office exactly once.
#[test]
fn two_office_instances_on_one_postgresql_lose_nothing_when_one_is_killed_mid_load() {
    let pg = Pg::start(false);
    let dir = tempfile::tempdir().unwrap();
    let gates: Vec<(String, SigningKey)> =
        (0..20).map(|i| (format!("gate-{i:02}"), SigningKey::from_bytes(&[i as u8 + 40; 32]))).collect();
    // Enrolled once, in the database both instances read.
    let csv = dir.path().join("gates.csv");
    let mut text = String::from("id,name,community,public_key\n");
    for (id, k) in &gates {
        text.push_str(&format!("{id},{id} 门,c1,{}\n", sibi::keys::hex(k.verifying_key().as_bytes())));
    }
    std::fs::write(&csv, text).unwrap();
    let mut ports = Vec::new();
    let mut configs = Vec::new();
    for n in 0..2 {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let toml = dir.path().join(format!("office-{n}.toml"));
        std::fs::write(
            &toml,
            format!("[office]\nlisten = \"127.0.0.1:{port}\"\ndatabase_url = \"{}\"\npool_size = 4\n", pg.url),
        )
        .unwrap();
        ports.push(port);
        configs.push(toml);
    }
    let o = crate::util::run(&[
        "office",
        "enroll",
        "--config",
        configs[0].to_str().unwrap(),
        "--csv",
        csv.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let mut instances: Vec<Option<crate::util::Killed>> = configs
        .iter()
        .map(|c| {
            Some(crate::util::Killed(
                crate::util::sibi()
                    .args(["office", "serve", "--config", c.to_str().unwrap()])
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .unwrap(),
            ))
        })
        .collect();
    for p in &ports {
        crate::util::wait_for_port(*p);
    }
    let front = balancer(ports.iter().map(|p| format!("127.0.0.1:{p}").parse().unwrap()).collect());

    let per_gate = 400;
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let workers: Vec<_> = gates
        .iter()
        .map(|(id, key)| {
            let (id, key, sent) = (id.clone(), key.clone(), sent.clone());
            let db = dir.path().join(format!("{id}.db"));
            std::thread::spawn(move || {
                let mut store = Store::open(&db, &id).unwrap();
                store.fill_synthetic(per_gate, T0).unwrap();
                let expected = gate_rows(&store);
                let settings =
                    SyncSettings { batch: 20, timeout_ms: 2000, ..SyncSettings::for_office(format!("http://{front}")) };
                let client = SyncClient::new(&settings, &id, key);
                let end = std::time::Instant::now() + std::time::Duration::from_secs(120);
                let mut failures = 0;
                while store.sync_status().unwrap().backlog > 0 && std::time::Instant::now() < end {
                    match client.round(&mut store, sibi::hw::now()) {
                        Ok(n) => {
                            sent.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                        }
                        Err(_) => {
                            failures += 1;
                            std::thread::sleep(std::time::Duration::from_millis(50));
                        }
                    }
                }
                (id, store.sync_status().unwrap().backlog, failures, expected)
            })
        })
        .collect();
    // Kill one instance once about a quarter of the load is in.
    let total = gates.len() * per_gate;
    while sent.load(std::sync::atomic::Ordering::Relaxed) < total / 4 {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let at_kill = sent.load(std::sync::atomic::Ordering::Relaxed);
    instances[0] = None;
    let results: Vec<_> = workers.into_iter().map(|w| w.join().unwrap()).collect();
    let failures: usize = results.iter().map(|r| r.2).sum();
    eprintln!(
        "two instances: {total} entries from {} gates, instance 0 killed after {at_kill}; {failures} failed rounds retried",
        gates.len()
    );
    let mut db = OfficeDb::open(&Database::Postgres(pg.url.clone())).unwrap();
    for (id, backlog, _, rows) in &results {
        assert_eq!(*backlog, 0, "{id} sent everything");
        let held = db.entries(id).unwrap();
        assert_eq!(held.len(), rows.len(), "{id}: every row, once");
        assert!(held == *rows, "{id}: exactly its rows, in order");
    }
    assert!(instances[1].is_some());
}

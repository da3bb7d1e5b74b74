//! Sync figures: the time to sync a 100,000-entry backlog to the office over loopback HTTP, and the office's ingest
//! throughput (entries/s) into SQLite and into PostgreSQL (a real server this benchmark starts), with 500-entry batches.
//!
//! Run: `cargo bench --bench sync` (optionally `-- N` entries, default 100000). Databases live under
//! `target/bench-sync/`.

use std::collections::BTreeMap;
use std::time::Instant;

use ed25519_dalek::SigningKey;
use sibi::domain::Timestamp;
use sibi::office::{Database, Enrolled, Office, OfficeConfig, OfficeDb};
use sibi::store::Store;
use sibi::sync::{SyncClient, SyncSettings};

#[path = "../tests/support/pg.rs"]
mod pg;

fn main() {
    let n: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(100_000);
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-sync");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let t0 = Timestamp(1_790_000_000_000);
    let key = SigningKey::from_bytes(&[9u8; 32]);

    let t = Instant::now();
    let mut store = Store::open(&dir.join("gate.db"), "bench-gate").unwrap();
    store.fill_synthetic(n, t0).unwrap();
    println!("backlog: {n} entries recorded in {:.1} s", t.elapsed().as_secs_f64());

    // 1. The whole path: outbox read, JSON, signature, HTTP, verify, office commit, acknowledgement.
    let gates = BTreeMap::from([(
        "bench-gate".to_string(),
        Enrolled { key: key.verifying_key(), name: "bench".into(), community: "c".into() },
    )]);
    let config = OfficeConfig::new(Database::Sqlite(dir.join("office.db")), gates);
    let addr = sibi::office::serve_in_background(Office::open(config).unwrap()).unwrap();
    let settings = SyncSettings { timeout_ms: 30_000, ..SyncSettings::for_office(format!("http://{addr}")) };
    let client = SyncClient::new(&settings, "bench-gate", key.clone());
    let t = Instant::now();
    let sent = client.drain(&mut store).unwrap();
    let sync_s = t.elapsed().as_secs_f64();
    assert_eq!(sent, n);

    // 2. Office ingest alone: the same rows, 500 per transaction, into a fresh office database. The rows are read
    // from a copy of the gate database taken before it synced, through the outbox query as the client reads them.
    let mut copy = Store::open(&dir.join("gate-copy.db"), "bench-gate").unwrap();
    copy.fill_synthetic(n, t0).unwrap();
    let mut rows: Vec<serde_json::Value> = Vec::with_capacity(n);
    loop {
        let page = copy.outbox_batch(5000, t0.plus_ms(i64::MAX / 4), 0).unwrap();
        let Some(last) = page.last().and_then(|r| r["seq"].as_i64()) else { break };
        rows.extend(page.into_iter().map(serde_json::Value::Object));
        copy.sync_acked(last, t0).unwrap();
    }
    let mut db = OfficeDb::open(&Database::Sqlite(dir.join("office-ingest.db"))).unwrap();
    let t = Instant::now();
    for chunk in rows.chunks(500) {
        db.ingest("bench-gate", chunk, t0).unwrap();
    }
    let ingest_s = t.elapsed().as_secs_f64();

    // 3. The same into PostgreSQL: a real server started here, fsync on, one transaction per 500-entry batch.
    let server = pg::Pg::start(true);
    let mut db = OfficeDb::open(&Database::Postgres(server.url.clone())).unwrap();
    let t = Instant::now();
    for chunk in rows.chunks(500) {
        db.ingest("bench-gate", chunk, t0).unwrap();
    }
    let pg_s = t.elapsed().as_secs_f64();
    assert_eq!(db.entries("bench-gate").unwrap().len(), n);

    println!();
    println!("| figure | value | goal |");
    println!("|---|---|---|");
    println!(
        "| sync {n} entries gate → office over loopback HTTP | {sync_s:.2} s ({:.0} entries/s) | ≤ 10 s for 100,000 |",
        n as f64 / sync_s
    );
    println!(
        "| office ingest into SQLite (500 per transaction, fsync each) | {:.0} entries/s | ≥ 20,000/s |",
        n as f64 / ingest_s
    );
    println!(
        "| office ingest into PostgreSQL (same batches, fsync on) | {:.0} entries/s | ≥ 20,000/s |",
        n as f64 / pg_s
    );
}

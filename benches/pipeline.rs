//! Presentations per second through checkpoint → policy → durable record (fsync) → gate command, and the latency
//! from the last needed event (the mask confirmation) to the relay command.
//!
//! Run: `cargo bench --bench pipeline` (optionally `-- N` presentations, default 2000). The database lives under
//! `target/bench-pipeline/` so the figure is for the disk the project sits on; the benchmark prints which one.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use sibi::app::{GateHandle, Pipeline};
use sibi::checkpoint::CheckpointConfig;
use sibi::checkpoint::{Button, Checkpoint, CredentialRead, Event};
use sibi::domain::{Category, Celsius, CodeStatus, Direction, IdentityKind, Timestamp};
use sibi::hw::{DeviceFault, GateCommand, GateOutput};
use sibi::policy::Policy;
use sibi::store::{Store, StoreHandle};

/// A gate that notes when each relay command arrived.
struct TimingGate(Arc<Mutex<Vec<(i64, Instant)>>>);

impl GateOutput for TimingGate {
    fn apply(&mut self, cmd: &GateCommand) -> Result<(), DeviceFault> {
        if let GateCommand::RelayOpen { seq } = cmd {
            self.0.lock().unwrap().push((*seq, Instant::now()));
        }
        Ok(())
    }
}

fn mount_of(path: &std::path::Path) -> String {
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let mut best = ("?".to_string(), "?".to_string(), 0);
    for line in mounts.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() > 2 && path.starts_with(f[1]) && f[1].len() >= best.2 {
            best = (f[0].to_string(), f[2].to_string(), f[1].len());
        }
    }
    format!("{} ({})", best.0, best.1)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let n: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(2000);
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-pipeline");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("bench.db");

    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let opens = Arc::new(Mutex::new(Vec::new()));
    let (latencies, elapsed) = rt.block_on(async {
        let store = Store::open(&db, "bench-gate").unwrap();
        let (store, store_thread) = StoreHandle::spawn(store).unwrap();
        let (gate, gate_task) =
            GateHandle::spawn(Box::new(TimingGate(opens.clone())), std::time::Duration::from_secs(3));
        let checkpoint = Checkpoint::new(CheckpointConfig::default(), Policy::default(), Direction::In, 1);
        let mut pipeline = Pipeline::new(checkpoint, store.clone(), gate.clone());
        let mut t = Timestamp(1_790_000_000_000);
        let mut latencies = Vec::with_capacity(n);
        let start = Instant::now();
        for i in 0..n {
            let cred = CredentialRead::new(
                format!("BENCH-{i}"),
                IdentityKind::Pass,
                Category::Resident,
                CodeStatus::None,
                "测试",
            );
            pipeline.handle(Event::Credential(cred), t).await;
            pipeline.handle(Event::Temperature(Celsius::from_centi(3650)), t.plus_ms(300)).await;
            let last = Instant::now();
            let done = pipeline.handle(Event::Button(Button::MaskConfirmed), t.plus_ms(600)).await;
            let seq = done[0].seq.expect("recorded");
            let opened_at = opens.lock().unwrap().iter().find(|(s, _)| *s == seq).map(|(_, at)| *at).expect("opened");
            latencies.push(opened_at.duration_since(last).as_secs_f64() * 1000.0);
            t = t.plus_ms(20_000);
        }
        let elapsed = start.elapsed();
        drop(pipeline);
        drop(gate);
        gate_task.await.unwrap();
        drop(store);
        store_thread.join().unwrap();
        (latencies, elapsed)
    });
    let mut sorted = latencies.clone();
    sorted.sort_by(f64::total_cmp);
    let rows = Store::open(&db, "bench-gate").unwrap().entries().unwrap().len();
    assert_eq!(rows, n, "every presentation recorded");
    println!("pipeline benchmark: {n} presentations (credential + reading + mask each), SQLite WAL synchronous=FULL");
    println!("database: {} on {}", db.display(), mount_of(&dir));
    println!("| figure | value | target |");
    println!("|---|---|---|");
    println!("| presentations/s | {:.0} | >= 200 |", n as f64 / elapsed.as_secs_f64());
    println!("| p50 last event -> relay command (ms) | {:.2} | |", pct(&sorted, 0.50));
    println!("| p99 last event -> relay command (ms) | {:.2} | <= 10 |", pct(&sorted, 0.99));
    println!("| max (ms) | {:.2} | |", sorted[sorted.len() - 1]);
}

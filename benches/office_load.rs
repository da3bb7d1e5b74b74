//! The office under a city's load (#15): gates sending signed heartbeats at the 5 s cadence plus entry batches at a
//! morning-peak rate, against `sibi office serve` processes on one real PostgreSQL server (fsync on) that this
//! benchmark starts. For each row of the table: heartbeats/s and entries/s served, p50/p99 request latency, failed
//! requests, and rows lost (generated and acknowledged, but not in the database: must be 0).
//!
//! Run: `cargo bench --bench office_load` (all rows), or `-- 1000x1 20000x2 20000x2kill` for some.
//! `20000x2kill` kills one of the two instances halfway through the measured period.
//!
//! The load model: every gate sends a heartbeat every 5 s, and a batch of 5 entries every 30 s (10 people a minute
//! at every gate at once: a morning peak), each gate's schedule offset evenly across the period. Latency is the time
//! from sending a request to its answer; `lag p99` is how late requests were sent against their schedule (the
//! generator falling behind). The generator, the office processes and PostgreSQL share this machine's cores. The
//! client balances by gate across the instances and, when one does not answer, sends to another (as a balancer
//! with health checks does).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use sibi::domain::Timestamp;
use sibi::office::{Database, Enrollment, OfficeDb};
use sibi::store::Store;

#[path = "../tests/support/pg.rs"]
mod pg;

const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);
const BATCH_EVERY: Duration = Duration::from_secs(30);
const BATCH: usize = 5;
/// Connections (each the gates of a share, one request at a time), from one generator thread.
const WORKERS: usize = 400;

struct Run {
    gates: usize,
    instances: usize,
    kill: bool,
}

#[derive(Default)]
struct Tally {
    heartbeats: u64,
    batches: u64,
    entries: u64,
    failed: u64,
    failovers: u64,
    latency_us: Vec<u32>,
    lag_us: Vec<u32>,
}

fn key_of(gate: usize) -> SigningKey {
    let mut seed = [7u8; 32];
    seed[..8].copy_from_slice(&(gate as u64).to_le_bytes());
    SigningKey::from_bytes(&seed)
}

fn percentile(v: &mut [u32], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_unstable();
    f64::from(v[((v.len() - 1) as f64 * p).round() as usize]) / 1000.0
}

enum Kind {
    Heartbeat,
    Batch,
}

/// One HTTP/1.1 keep-alive connection to an office instance.
struct Conn(tokio::io::BufReader<tokio::net::TcpStream>);

impl Conn {
    /// POST `body` to `path` with the gate's headers; the answer's status.
    async fn post(&mut self, path: &str, headers: &[(&str, &str)], body: &[u8]) -> std::io::Result<u16> {
        use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
        let mut head = format!(
            "POST {path} HTTP/1.1\r\nhost: office\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
            body.len()
        );
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        let mut request = head.into_bytes();
        request.extend_from_slice(body);
        self.0.get_mut().write_all(&request).await?;
        let mut line = String::new();
        self.0.read_line(&mut line).await?;
        let status: u16 = line.split(' ').nth(1).and_then(|c| c.parse().ok()).ok_or(std::io::ErrorKind::InvalidData)?;
        let mut length = None;
        loop {
            line.clear();
            if self.0.read_line(&mut line).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse::<usize>().ok();
            }
        }
        let mut answer = vec![0; length.ok_or(std::io::ErrorKind::InvalidData)?];
        self.0.read_exact(&mut answer).await?;
        Ok(status)
    }
}

/// The gates `mine` of `gates`, each on its schedule from `start`, until the measured period ends (then each
/// pending batch is sent until acknowledged).
#[allow(clippy::too_many_arguments)]
async fn gate_task(
    mine: Vec<usize>,
    gates: usize,
    addrs: Arc<Vec<String>>,
    down: Arc<Vec<AtomicU64>>,
    stop: Arc<AtomicBool>,
    generated: Arc<AtomicU64>,
    template: serde_json::Value,
    start: Instant,
    measure_from: Instant,
    measure_to: Instant,
) -> Tally {
    let keys: Vec<SigningKey> = mine.iter().map(|g| key_of(*g)).collect();
    let mut conns: Vec<Option<Conn>> = addrs.iter().map(|_| None).collect();
    let mut seq = vec![0i64; mine.len()];
    let mut pending: Vec<Option<Vec<u8>>> = vec![None; mine.len()];
    let mut heap = BinaryHeap::new();
    for (k, g) in mine.iter().enumerate() {
        heap.push(Reverse((start + HEARTBEAT_EVERY.mul_f64(*g as f64 / gates as f64), k, 0u8)));
        heap.push(Reverse((start + BATCH_EVERY.mul_f64(*g as f64 / gates as f64), k, 1u8)));
    }
    let mut tally = Tally::default();
    let mut calls = 0u64;
    while let Some(Reverse((due, k, kind))) = heap.pop() {
        let draining = Instant::now() >= measure_to || stop.load(Ordering::Relaxed);
        if draining && pending.iter().all(Option::is_none) {
            break;
        }
        if draining && kind == 0 {
            continue;
        }
        tokio::time::sleep_until(due.into()).await;
        let g = mine[k];
        let id = format!("g{g:05}");
        let kind = if kind == 0 { Kind::Heartbeat } else { Kind::Batch };
        let (path, body) = match kind {
            Kind::Heartbeat => ("/v1/heartbeat", format!("{{\"gate\":\"{id}\",\"backlog\":0}}").into_bytes()),
            Kind::Batch => {
                if pending[k].is_none() && !draining {
                    let entries: Vec<serde_json::Value> = (0..BATCH)
                        .map(|_| {
                            seq[k] += 1;
                            let mut row = template.clone();
                            row["gate_id"] = id.clone().into();
                            row["seq"] = seq[k].into();
                            row
                        })
                        .collect();
                    generated.fetch_add(BATCH as u64, Ordering::Relaxed);
                    pending[k] = Some(
                        serde_json::to_vec(&serde_json::json!({"gate": id, "entries": entries, "backlog": 0})).unwrap(),
                    );
                }
                match &pending[k] {
                    Some(b) => ("/v1/ingest", b.clone()),
                    None => continue,
                }
            }
        };
        let measured = (measure_from..measure_to).contains(&due);
        let now_ms = u64::try_from(sibi::hw::now().0).unwrap_or(0);
        let mut ok = false;
        for attempt in 0..addrs.len() {
            let i = (g + attempt) % addrs.len();
            if attempt == 0 && down[i].load(Ordering::Relaxed) > now_ms && addrs.len() > 1 {
                continue;
            }
            calls += 1;
            let counter = (now_ms * 1000 + calls).to_string();
            let signature = sibi::keys::sign_request(&keys[k], now_ms * 1000 + calls, &body);
            let sent = Instant::now();
            let headers = [
                ("x-sibi-gate", id.as_str()),
                (sibi::keys::COUNTER_HEADER, &counter),
                ("x-sibi-signature", &signature),
            ];
            let answer = async {
                if conns[i].is_none() {
                    let host = addrs[i].trim_start_matches("http://");
                    conns[i] = Some(Conn(tokio::io::BufReader::new(tokio::net::TcpStream::connect(host).await?)));
                }
                conns[i].as_mut().unwrap().post(path, &headers, &body).await
            };
            let answer = tokio::time::timeout(Duration::from_secs(10), answer)
                .await
                .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()));
            let took = sent.elapsed();
            match answer {
                Ok(200) => {
                    if measured {
                        tally.latency_us.push(took.as_micros().min(u32::MAX as u128) as u32);
                        tally.lag_us.push(sent.saturating_duration_since(due).as_micros().min(u32::MAX as u128) as u32);
                    }
                    ok = true;
                    break;
                }
                Ok(_) => break,
                Err(_) => {
                    conns[i] = None;
                    down[i].store(now_ms + 1000, Ordering::Relaxed);
                    tally.failovers += 1;
                }
            }
        }
        match kind {
            Kind::Heartbeat => {
                if ok && measured {
                    tally.heartbeats += 1;
                }
                heap.push(Reverse((due + HEARTBEAT_EVERY, k, 0)));
            }
            Kind::Batch => {
                if ok {
                    pending[k] = None;
                    if measured {
                        tally.batches += 1;
                        tally.entries += BATCH as u64;
                    }
                    heap.push(Reverse((due + BATCH_EVERY, k, 1)));
                } else {
                    // Resent a moment later, as a gate retries: the same rows, a new counter.
                    heap.push(Reverse((Instant::now() + Duration::from_millis(200), k, 1)));
                }
            }
        }
        if !ok && measured {
            tally.failed += 1;
        }
    }
    tally
}

fn main() {
    let wanted: Vec<String> = std::env::args().skip(1).filter(|a| a.contains('x')).collect();
    let all = ["1000x1", "1000x2", "5000x1", "5000x2", "20000x1", "20000x2", "20000x2kill"];
    let runs: Vec<Run> = (if wanted.is_empty() { all.iter().map(|s| s.to_string()).collect() } else { wanted })
        .iter()
        .map(|s| {
            let kill = s.ends_with("kill");
            let (g, i) = s.trim_end_matches("kill").split_once('x').expect("rows look like 20000x2");
            Run { gates: g.parse().unwrap(), instances: i.parse().unwrap(), kill }
        })
        .collect();
    let secs: u64 = std::env::var("SIBI_LOAD_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(30);
    let server = pg::Pg::start(true);
    let dir = tempfile::tempdir().unwrap();

    // A real gate row as the template of every entry (its size is what the office stores).
    let mut store = Store::open(&dir.path().join("template.db"), "template").unwrap();
    store.fill_synthetic(1, Timestamp(1_790_000_000_000)).unwrap();
    let template = serde_json::Value::Object(
        store.outbox_batch(1, Timestamp(i64::MAX / 4), 0).unwrap().pop().expect("a synthetic row"),
    );
    println!("office load: heartbeat every 5 s and {BATCH} entries every 30 s per gate; {secs} s measured per row");
    println!(
        "| gates | instances | heartbeats/s | entries/s | p50 ms | p99 ms | lag p99 ms | failed | failovers | rows lost |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let mut pages = Vec::new();
    for (n, run) in runs.iter().enumerate() {
        let db_name = format!("load{n}");
        postgres::Client::connect(&server.url, postgres::NoTls)
            .unwrap()
            .batch_execute(&format!("CREATE DATABASE {db_name}"))
            .unwrap();
        let url = format!("{}{db_name}", server.url.trim_end_matches("postgres"));
        let mut db = OfficeDb::open(&Database::Postgres(url.clone())).unwrap();
        let rows: Vec<Enrollment> = (0..run.gates)
            .map(|g| Enrollment {
                id: format!("g{g:05}"),
                kind: "gate".into(),
                name: format!("门 {g}"),
                community: format!("c{}", g / 4),
                public_key: sibi::keys::hex(key_of(g).verifying_key().as_bytes()),
                enrolled_ms: 0,
                revoked_ms: None,
            })
            .collect();
        db.enroll(&rows).unwrap();
        let mut children = Vec::new();
        let mut addrs = Vec::new();
        for i in 0..run.instances {
            let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let toml = dir.path().join(format!("office-{n}-{i}.toml"));
            std::fs::write(
                &toml,
                format!("[office]\nlisten = \"127.0.0.1:{port}\"\ndatabase_url = \"{url}\"\npool_size = 8\n"),
            )
            .unwrap();
            children.push(Some(
                std::process::Command::new(env!("CARGO_BIN_EXE_sibi"))
                    .args(["office", "serve", "--config"])
                    .arg(&toml)
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .unwrap(),
            ));
            let t = Instant::now();
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(t.elapsed() < Duration::from_secs(30), "office instance did not start");
                std::thread::sleep(Duration::from_millis(50));
            }
            addrs.push(format!("http://127.0.0.1:{port}"));
        }
        let addrs = Arc::new(addrs);
        let down: Arc<Vec<AtomicU64>> = Arc::new((0..run.instances).map(|_| AtomicU64::new(0)).collect());
        let warmup = Duration::from_secs(5);
        let start = Instant::now() + Duration::from_millis(200);
        let measure_from = start + warmup;
        let measure_to = measure_from + Duration::from_secs(secs);
        let stop = Arc::new(AtomicBool::new(false));
        let generated = Arc::new(AtomicU64::new(0));
        // The gates: one thread of the generator's own, many keep-alive connections (a light client, so that the
        // cores go to the offices and PostgreSQL, as they would with the gates elsewhere).
        let generator = {
            let (addrs, down, stop, generated, template) =
                (addrs.clone(), down.clone(), stop.clone(), generated.clone(), template.clone());
            let gates = run.gates;
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                rt.block_on(async move {
                    let mut set = tokio::task::JoinSet::new();
                    for w in 0..WORKERS {
                        let (addrs, down, stop, generated, template) =
                            (addrs.clone(), down.clone(), stop.clone(), generated.clone(), template.clone());
                        set.spawn(async move {
                            let mine: Vec<usize> = (w..gates).step_by(WORKERS).collect();
                            gate_task(
                                mine,
                                gates,
                                addrs,
                                down,
                                stop,
                                generated,
                                template,
                                start,
                                measure_from,
                                measure_to,
                            )
                            .await
                        });
                    }
                    let mut total = Tally::default();
                    while let Some(t) = set.join_next().await {
                        let t = t.unwrap();
                        total.heartbeats += t.heartbeats;
                        total.batches += t.batches;
                        total.entries += t.entries;
                        total.failed += t.failed;
                        total.failovers += t.failovers;
                        total.latency_us.extend(t.latency_us);
                        total.lag_us.extend(t.lag_us);
                    }
                    total
                })
            })
        };
        if run.kill {
            let at = measure_from + Duration::from_secs(secs / 2);
            std::thread::sleep(at.saturating_duration_since(Instant::now()));
            if let Some(mut c) = children[0].take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        std::thread::sleep(measure_to.saturating_duration_since(Instant::now()));
        let deadline = Instant::now() + Duration::from_secs(120);
        while !generator.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        stop.store(true, Ordering::Relaxed);
        let mut total = generator.join().unwrap();
        if !run.kill {
            // The status pages at this size, from the instance still serving.
            let agent = ureq::Agent::config_builder().http_status_as_error(false).build().new_agent();
            for (what, q) in [("communities (first page)", "/"), ("one community's gates", "/?community=c123")] {
                let mut times = Vec::new();
                let mut size = 0;
                for _ in 0..5 {
                    let t = Instant::now();
                    let body = agent.get(&format!("{}{q}", addrs[0])).call().unwrap().body_mut().read_to_string();
                    times.push(t.elapsed().as_secs_f64() * 1000.0);
                    size = body.map(|b| b.len()).unwrap_or(0);
                }
                times.sort_by(f64::total_cmp);
                pages.push(format!("| {} | {what} | {:.1} KB | {:.0} ms |", run.gates, size as f64 / 1024.0, times[2]));
            }
        }
        let held: i64 = db.entries_count().unwrap();
        let lost = generated.load(Ordering::Relaxed) as i64 - held;
        for c in children.iter_mut().flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
        println!(
            "| {} | {}{} | {:.0} | {:.0} | {:.1} | {:.1} | {:.1} | {} | {} | {} |",
            run.gates,
            run.instances,
            if run.kill { " (one killed at half time)" } else { "" },
            total.heartbeats as f64 / secs as f64,
            total.entries as f64 / secs as f64,
            percentile(&mut total.latency_us, 0.5),
            percentile(&mut total.latency_us, 0.99),
            percentile(&mut total.lag_us, 0.99),
            total.failed,
            total.failovers,
            lost
        );
    }
    println!("\nstatus page (median of 5 requests, after each run's load):");
    println!("| gates | page | size | time |");
    println!("|---|---|---|---|");
    for p in pages {
        println!("{p}");
    }
}

//! Sync to the street office over real HTTP on loopback: a chaos proxy between gate and office, refused batches, and
//! the `sibi sync` / `sibi office serve` commands end to end.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use sibi::domain::Timestamp;
use sibi::office::{Enrolled, Office, OfficeConfig};
use sibi::store::Store;
use sibi::sync::{SyncClient, SyncSettings};

use crate::util::Killed;

const T0: Timestamp = Timestamp(1_790_000_000_000);

/// An office on a loopback port, served by its own runtime thread. Returns its address and the office.
pub(crate) fn office(dir: &std::path::Path, gates: &[(&str, &SigningKey)]) -> (SocketAddr, Arc<Office>) {
    let gates = gates
        .iter()
        .map(|(id, k)| {
            (id.to_string(), Enrolled { key: k.verifying_key(), name: format!("{id} 东门"), community: "c1".into() })
        })
        .collect::<BTreeMap<_, _>>();
    let config = OfficeConfig {
        name: "测试街道办".into(),
        ..OfficeConfig::new(sibi::office::Database::Sqlite(dir.join("office.db")), gates)
    };
    let office = Office::open(config).unwrap();
    (sibi::office::serve_in_background(office.clone()).unwrap(), office)
}

pub(crate) fn settings(url: String) -> SyncSettings {
    SyncSettings { timeout_ms: 2000, max_backoff_secs: 5.0, ..SyncSettings::for_office(url) }
}

/// What the proxy did to each connection.
#[derive(Default)]
struct Chaos {
    dropped: AtomicUsize,
    reset_mid_response: AtomicUsize,
    delayed: AtomicUsize,
    injected_5xx: AtomicUsize,
    passed: AtomicUsize,
}

/// One HTTP/1.1 message (headers and a content-length body), or `None` at end of stream.
fn read_message(stream: &mut impl Read) -> Option<Vec<u8>> {
    let mut msg = Vec::new();
    let mut byte = [0u8; 1];
    while !msg.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => msg.push(byte[0]),
            _ => return None,
        }
    }
    let head = String::from_utf8_lossy(&msg).to_ascii_lowercase();
    let len = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).ok()?;
    msg.extend(body);
    Some(msg)
}

/// A TCP proxy to `upstream` that, request by request, drops the connection, resets it mid-response (after the
/// office has committed), delays, answers 503 itself, or passes the request through.
fn chaos_proxy(upstream: SocketAddr, chaos: Arc<Chaos>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let counter = Arc::new(AtomicUsize::new(0));
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(mut client) = client else { continue };
            let (chaos, counter) = (chaos.clone(), counter.clone());
            std::thread::spawn(move || {
                while let Some(request) = read_message(&mut client) {
                    let forward = || {
                        let mut server = TcpStream::connect(upstream).ok()?;
                        server.write_all(&request).ok()?;
                        read_message(&mut server)
                    };
                    match counter.fetch_add(1, Ordering::Relaxed) % 6 {
                        0 => {
                            chaos.dropped.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                        1 => {
                            chaos.injected_5xx.fetch_add(1, Ordering::Relaxed);
                            let _ =
                                client.write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\n\r\nbusy");
                        }
                        3 => {
                            chaos.reset_mid_response.fetch_add(1, Ordering::Relaxed);
                            if let Some(answer) = forward() {
                                let _ = client.write_all(&answer[..answer.len().min(20)]);
                            }
                            return;
                        }
                        k => {
                            if k == 2 {
                                chaos.delayed.fetch_add(1, Ordering::Relaxed);
                                std::thread::sleep(Duration::from_millis(40));
                            } else {
                                chaos.passed.fetch_add(1, Ordering::Relaxed);
                            }
                            let Some(answer) = forward() else { return };
                            if client.write_all(&answer).is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}

#[test]
fn ten_thousand_entries_through_a_chaos_proxy_arrive_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::from_bytes(&[7u8; 32]);
    let (addr, office) = office(dir.path(), &[("gate-1", &key)]);
    let chaos = Arc::new(Chaos::default());
    let proxy = chaos_proxy(addr, chaos.clone());

    let mut store = Store::open(&dir.path().join("gate.db"), "gate-1").unwrap();
    store.fill_synthetic(10_000, T0).unwrap();
    let expected = store.outbox_batch(20_000, T0.plus_ms(20_000_000), 0).unwrap();
    assert_eq!(expected.len(), 10_000);

    let client = SyncClient::new(&settings(format!("http://{proxy}")), "gate-1", key);
    let started = Instant::now();
    let mut failures = 0;
    while store.sync_status().unwrap().backlog > 0 {
        assert!(started.elapsed() < Duration::from_secs(90), "bounded in time");
        if client.round(&mut store, T0.plus_ms(20_000_000)).is_err() {
            failures += 1;
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let held = office_entries(&office, "gate-1");
    assert_eq!(held.len(), 10_000, "count");
    let expected: Vec<serde_json::Value> = expected.into_iter().map(serde_json::Value::Object).collect();
    assert!(held == expected, "content: every column of every entry, in order, none twice");
    let c = |a: &AtomicUsize| a.load(Ordering::Relaxed);
    eprintln!(
        "chaos: {} dropped, {} reset mid-response, {} delayed, {} 5xx, {} passed; {failures} failed rounds; {:?}",
        c(&chaos.dropped),
        c(&chaos.reset_mid_response),
        c(&chaos.delayed),
        c(&chaos.injected_5xx),
        c(&chaos.passed),
        started.elapsed()
    );
    assert!(c(&chaos.dropped) > 0 && c(&chaos.reset_mid_response) > 0 && c(&chaos.injected_5xx) > 0);
    assert!(failures >= 3, "the chaos was felt: {failures}");
    let status = store.sync_status().unwrap();
    assert_eq!((status.acked_seq, status.backlog, status.last_error), (10_000, 0, None));
}

fn office_entries(office: &Arc<Office>, gate: &str) -> Vec<serde_json::Value> {
    office.entries(gate).unwrap()
}

/// A request as a gate signs it: its counter and the signature over the counter and the body.
#[derive(Clone)]
struct Signed {
    counter: u64,
    signature: String,
}

/// Signs `body` under the next counter of this test process: each call above the last, and above the counters a
/// real gate's store hands out (the clock in ms) so the test's requests and a `SyncClient`'s can share a gate.
fn sign(key: &SigningKey, body: &[u8]) -> Signed {
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let counter = sibi::hw::now().0.unsigned_abs() * 1000 + CALLS.fetch_add(1, Ordering::Relaxed);
    Signed { counter, signature: sibi::keys::sign_request(key, counter, body) }
}

#[test]
fn the_office_refuses_unenrolled_tampered_and_foreign_batches() {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::from_bytes(&[1u8; 32]);
    let stranger = SigningKey::from_bytes(&[2u8; 32]);
    let (addr, office) = office(dir.path(), &[("gate-1", &key)]);
    let row = |gate: &str, seq: i64| serde_json::json!({"gate_id": gate, "seq": seq, "at_ms": 1, "verdict": "pass"});
    let body = serde_json::json!({"gate": "gate-1", "entries": [row("gate-1", 1)]}).to_string().into_bytes();

    // An unenrolled gate.
    let (status, text) = post_to(addr, "/v1/ingest", "gate-9", &body, &sign(&stranger, &body));
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("not enrolled"));
    // Enrolled id, somebody else's key.
    let (status, text) = post_to(addr, "/v1/ingest", "gate-1", &body, &sign(&stranger, &body));
    assert_eq!((status, text.contains("does not verify")), (401, true), "{text}");
    // Tampered in flight: a byte changed after signing.
    let signature = sign(&key, &body);
    let tampered = String::from_utf8(body.clone()).unwrap().replace("pass", "deny").into_bytes();
    assert_eq!(post_to(addr, "/v1/ingest", "gate-1", &tampered, &signature).0, 401);
    // No signature at all; or signed over the body alone, without a counter.
    let unsigned = Signed { signature: String::new(), ..sign(&key, &body) };
    assert_eq!(post_to(addr, "/v1/ingest", "gate-1", &body, &unsigned).0, 401);
    let old_style = sibi::keys::sign_hex(&key, &body);
    let agent = ureq::Agent::config_builder().http_status_as_error(false).build().new_agent();
    let r = agent
        .post(&format!("http://{addr}/v1/ingest"))
        .header("x-sibi-gate", "gate-1")
        .header("x-sibi-signature", &old_style)
        .send(&body[..])
        .unwrap();
    assert_eq!(r.status().as_u16(), 401, "a request without its counter");
    // Signed, but rows of another gate, or malformed.
    let foreign = serde_json::json!({"gate": "gate-1", "entries": [row("gate-2", 1)]}).to_string().into_bytes();
    assert_eq!(post_to(addr, "/v1/ingest", "gate-1", &foreign, &sign(&key, &foreign)).0, 400);
    let junk = b"{\"gate\": \"gate-1\", \"entries\": 5}".to_vec();
    assert_eq!(post_to(addr, "/v1/ingest", "gate-1", &junk, &sign(&key, &junk)).0, 400);
    assert!(office.entries("gate-1").unwrap().is_empty(), "nothing refused was stored");
    // The genuine batch, twice (as a gate resends it after a lost answer: a new counter each time): stored once,
    // acknowledged both times.
    let first = sign(&key, &body);
    for signed in [first.clone(), sign(&key, &body)] {
        let (status, text) = post_to(addr, "/v1/ingest", "gate-1", &body, &signed);
        assert_eq!((status, text.as_str()), (200, r#"{"acked":1}"#));
    }
    assert_eq!(office.entries("gate-1").unwrap().len(), 1);
    // The very same request again is a replay: refused, whichever it was.
    let (status, text) = post_to(addr, "/v1/ingest", "gate-1", &body, &first);
    assert_eq!((status, text.contains("a replay")), (401, true), "{text}");
}

#[test]
fn sync_now_and_office_serve_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let out = crate::util::run(&["keygen", "--out", keys.to_str().unwrap(), "--name", "gate"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let office_toml = dir.path().join("office.toml");
    std::fs::write(
        &office_toml,
        format!(
            "[office]\nlisten = \"127.0.0.1:{port}\"\ndatabase = \"office.db\"\nname = \"幸福街道办\"\n\n\
             [[gate]]\nid = \"test-gate\"\nkey = \"keys/gate.pub\"\nname = \"幸福里东门\"\ncommunity = \"xingfuli\"\n"
        ),
    )
    .unwrap();
    let _server = Killed(
        crate::util::sibi().args(["office", "serve", "--config", office_toml.to_str().unwrap()]).spawn().unwrap(),
    );

    let gate = crate::util::Gate::new(
        "[[event]]\nat = 0.0\ntemperature = 36.5\n",
        &format!(
            "\n[sync]\noffice = \"http://127.0.0.1:{port}\"\ngate_key = {:?}\nsettle_ms = 0\n",
            keys.join("gate.key").display().to_string()
        ),
        "",
    );
    Store::open(&gate.db(), "test-gate").unwrap().fill_synthetic(1234, T0).unwrap();
    let config = gate.config();
    let config = config.to_str().unwrap();
    // Status only: nothing sent yet.
    let out = crate::util::run(&["sync", "--config", config]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("backlog 1234"), "{}", String::from_utf8_lossy(&out.stdout));
    // The office may still be starting: the first attempts can fail.
    let end = Instant::now() + Duration::from_secs(20);
    let text = loop {
        let out = crate::util::run(&["sync", "--now", "--config", config]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.code() == Some(0) {
            break text;
        }
        assert!(Instant::now() < end, "{text}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(text.contains("sent 1234 entries") && text.contains("backlog 0"), "{text}");
    let page = ureq::get(&format!("http://127.0.0.1:{port}/")).call().unwrap().body_mut().read_to_string().unwrap();
    assert!(page.contains("幸福街道办") && page.contains("幸福里东门") && page.contains("<td>1234</td>"), "{page}");
    assert!(
        page.contains("<td class=\"backlog\">0</td>"),
        "the heartbeat after the round says nothing is left: {page}"
    );
}

/// The office sees what a gate still has to send while it catches up, a quiet gate as alive (its heartbeat), and a
/// silent one as out of contact (失联); a heartbeat from a stranger or with a forged signature changes nothing.
#[test]
fn the_dashboard_shows_each_gates_backlog_and_flags_a_silent_gate() {
    let dir = tempfile::tempdir().unwrap();
    let (ka, kb) = (SigningKey::from_bytes(&[7u8; 32]), SigningKey::from_bytes(&[8u8; 32]));
    let (addr, office) = office(dir.path(), &[("gate-a", &ka), ("gate-b", &kb)]);
    let mut a = Store::open(&dir.path().join("a.db"), "gate-a").unwrap();
    a.fill_synthetic(1200, T0).unwrap();
    let client =
        SyncClient::new(&SyncSettings { batch: 500, ..settings(format!("http://{addr}")) }, "gate-a", ka.clone());
    let backlog = |gate: &str| office.gates().unwrap().iter().find(|g| g.gate == gate).map(|g| g.backlog);
    assert_eq!(client.round(&mut a, sibi::hw::now()).unwrap(), 500);
    assert_eq!(backlog("gate-a"), Some(700), "after the first batch");
    assert_eq!(client.round(&mut a, sibi::hw::now()).unwrap(), 500);
    assert_eq!(backlog("gate-a"), Some(200));
    // New entries arrive while it catches up; the whole exchange ends with a heartbeat saying nothing is left.
    a.fill_synthetic(30, T0.plus_ms(3_600_000)).unwrap();
    assert_eq!(client.exchange(&mut a).unwrap(), (230, 0));
    assert_eq!(backlog("gate-a"), Some(0));
    assert_eq!(office.entries("gate-a").unwrap().len(), 1230);
    // A quiet gate's heartbeat: in contact, with nothing sent.
    client.heartbeat(&mut a).unwrap();
    let mut b = Store::open(&dir.path().join("b.db"), "gate-b").unwrap();
    SyncClient::new(&settings(format!("http://{addr}")), "gate-b", kb.clone()).heartbeat(&mut b).unwrap();
    assert_eq!(backlog("gate-b"), Some(0));

    // Forged or foreign heartbeats are refused and change nothing.
    let body = br#"{"gate":"gate-b","backlog":99}"#.to_vec();
    assert_eq!(post_to(addr, "/v1/heartbeat", "gate-b", &body, &sign(&ka, &body)).0, 401);
    assert_eq!(post_to(addr, "/v1/heartbeat", "gate-9", &body, &sign(&kb, &body)).0, 403);
    assert_eq!(post_to(addr, "/v1/heartbeat", "gate-a", &body, &sign(&ka, &body)).0, 400, "gate-a speaking for gate-b");
    let junk = br#"{"gate":"gate-b"}"#.to_vec();
    assert_eq!(post_to(addr, "/v1/heartbeat", "gate-b", &junk, &sign(&kb, &junk)).0, 400);
    assert_eq!(backlog("gate-b"), Some(0));

    let page_at = |at: Timestamp| {
        let url = format!("http://{addr}/?at={}", at.to_rfc3339().replace('+', "%2B"));
        ureq::get(&url).call().unwrap().body_mut().read_to_string().unwrap()
    };
    let row = |page: &str, name: &str| page.split("<tr").find(|r| r.contains(name)).unwrap_or("").to_string();
    let now = sibi::hw::now();
    let page = page_at(now);
    assert!(page.contains("<th>待上传</th>"), "{page}");
    assert!(row(&page, "gate-a 东门").contains("<td class=\"backlog\">0</td>"), "{page}");
    assert!(!row(&page, "gate-a 东门").contains("失联"), "{page}");
    // An hour later without a call: both flagged.
    let later = page_at(now.plus_ms(3_600_000));
    assert!(row(&later, "gate-a 东门").contains("<td class=\"stale\">") && later.contains("（失联）"), "{later}");
}

#[test]
fn only_acknowledged_entries_past_retention_are_purged_and_the_purge_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::from_bytes(&[3u8; 32]);
    let (addr, _office) = office(dir.path(), &[("gate-1", &key)]);
    let mut store = Store::open(&dir.path().join("gate.db"), "gate-1").unwrap();
    store.fill_synthetic(100, T0).unwrap();
    let client = SyncClient::new(&settings(format!("http://{addr}")), "gate-1", key);
    assert_eq!(client.drain(&mut store).unwrap(), 100);
    store.fill_synthetic(10, T0.plus_ms(200_000)).unwrap(); // not yet at the office
    let day = 86_400_000;
    assert_eq!(store.purge_synced(T0.plus_ms(27 * day), 28 * day).unwrap(), 0, "not yet past retention");
    assert_eq!(store.purge_synced(T0.plus_ms(40 * day), 28 * day).unwrap(), 100, "all acknowledged ones");
    let left: Vec<i64> = store.entries().unwrap().iter().map(|e| e.seq).collect();
    assert_eq!(left, (101..=110).collect::<Vec<_>>(), "unsynced entries are never purged");
    assert_eq!(store.sync_status().unwrap().backlog, 10, "the backlog still counts them after the purge");
    assert!(store.journal_lines().unwrap().iter().any(|(k, d)| k == "purge" && d.starts_with("100 synced entries")));
    // Everything synced and old: the newest entry stays, so presentation ids continue.
    client.drain(&mut store).unwrap();
    assert_eq!(store.purge_synced(T0.plus_ms(80 * day), 28 * day).unwrap(), 9);
    assert_eq!(store.sync_status().unwrap().backlog, 0, "only the newest entry is left, and it is at the office");
    assert_eq!(store.next_presentation_id().unwrap(), 111);
}

#[test]
fn daily_reports_reach_the_office_and_a_gate_that_missed_its_report_is_flagged() {
    let dir = tempfile::tempdir().unwrap();
    let (ka, kb) = (SigningKey::from_bytes(&[4u8; 32]), SigningKey::from_bytes(&[5u8; 32]));
    let (addr, office) = office(dir.path(), &[("gate-a", &ka), ("gate-b", &kb)]);
    let date = T0.to_rfc3339()[..10].to_string();
    let mut a = Store::open(&dir.path().join("a.db"), "gate-a").unwrap();
    a.fill_synthetic(20, T0).unwrap();
    sibi::sync::queue_report(&mut a, "gate-a", "c1", &date).unwrap();
    let client = SyncClient::new(&settings(format!("http://{addr}")), "gate-a", ka);
    assert_eq!(client.send_reports(&mut a).unwrap(), 1);
    assert_eq!(client.send_reports(&mut a).unwrap(), 0, "sent once");
    // Queued again (remade): the office keeps one per (gate, date), the latest.
    sibi::sync::queue_report(&mut a, "gate-a", "c1", &date).unwrap();
    assert_eq!(client.send_reports(&mut a).unwrap(), 1);

    let (start, _) = sibi::report::day_bounds(&date).unwrap();
    let next_morning = start.plus_ms(34 * 3_600_000);
    let status = |gate: &str, at| office.report_status(gate, &date, at).unwrap();
    assert_eq!(status("gate-b", start.plus_ms(3_600_000)), sibi::office::ReportStatus::Pending);
    assert_eq!(status("gate-b", next_morning), sibi::office::ReportStatus::Missing);
    // (gate-a's report arrived now, long after T0's day: late.)
    assert_eq!(status("gate-a", next_morning), sibi::office::ReportStatus::Late);

    // The page, as at the next morning: gate-b flagged 漏报 for that day.
    let url = format!("http://{addr}/?at={}", next_morning.to_rfc3339().replace('+', "%2B"));
    let page = ureq::get(&url).call().unwrap().body_mut().read_to_string().unwrap();
    let row = |name: &str| page.split("<tr").find(|r| r.contains(name)).unwrap_or("").to_string();
    assert!(row("gate-b 东门").contains("<td class=\"missing\">漏报</td>"), "{page}");
    assert!(row("gate-a 东门").contains("<td class=\"late\">迟报</td>"), "{page}");

    // A report signed by gate-a but claiming gate-b's day is refused.
    let body = serde_json::json!({"gate": "gate-b", "date": date}).to_string().into_bytes();
    assert_eq!(post_to(addr, "/v1/report", "gate-a", &body, &sign(&SigningKey::from_bytes(&[4u8; 32]), &body)).0, 400);
    let body = serde_json::json!({"gate": "gate-a", "date": "yesterday"}).to_string().into_bytes();
    assert_eq!(post_to(addr, "/v1/report", "gate-a", &body, &sign(&SigningKey::from_bytes(&[4u8; 32]), &body)).0, 400);
}

fn post_to(addr: SocketAddr, path: &str, gate: &str, body: &[u8], signed: &Signed) -> (u16, String) {
    let agent = ureq::Agent::config_builder().http_status_as_error(false).build().new_agent();
    let mut r = agent
        .post(&format!("http://{addr}{path}"))
        .header("x-sibi-gate", gate)
        .header(sibi::keys::COUNTER_HEADER, signed.counter.to_string())
        .header("x-sibi-signature", &signed.signature)
        .send(body)
        .unwrap();
    (r.status().as_u16(), r.body_mut().read_to_string().unwrap())
}

/// The office publishes a signed tier change; a running gate fetches, verifies and applies it before the next person;
/// a bundle signed with another key is refused and journaled, and the gate keeps its last good one across restarts.
#[test]
fn a_signed_tier_change_from_the_office_reaches_the_gate_and_a_forged_one_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    for name in ["gate", "office", "impostor"] {
        let out = crate::util::run(&["keygen", "--out", keys.to_str().unwrap(), "--name", name]);
        assert_eq!(out.status.code(), Some(0));
    }
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let office_toml = |signer: &str| {
        let p = dir.path().join(format!("office-{signer}.toml"));
        std::fs::write(
            &p,
            format!(
                "[office]\nlisten = \"127.0.0.1:{port}\"\ndatabase = \"office.db\"\nsigning_key = \"keys/{signer}.key\"\n\n\
                 [[gate]]\nid = \"test-gate\"\nkey = \"keys/gate.pub\"\n"
            ),
        )
        .unwrap();
        p.to_str().unwrap().to_string()
    };
    let genuine = office_toml("office");
    let publish = |config: &str, tier: &str| {
        let out = crate::util::run(&[
            "office",
            "publish",
            "--config",
            config,
            "--community",
            "test-community",
            "--tier",
            tier,
            "--effective",
            "2020-01-01T00:00:00+08:00",
        ]);
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    };
    publish(&genuine, "high");
    let _server = Killed(crate::util::sibi().args(["office", "serve", "--config", &genuine]).spawn().unwrap());

    let scenario = r#"
[[event]]
at = 3.0
credential = { key = "P1", identity = "pass", category = "resident", holder = "王小华" }
[[event]]
at = 3.2
temperature = 36.5
[[event]]
at = 3.4
button = "mask_confirmed"
"#;
    let sync = format!(
        "exit_when_done = true\n\n[sync]\noffice = \"http://127.0.0.1:{port}\"\ngate_key = {:?}\noffice_key = {:?}\n\
         interval_secs = 0.3\nsettle_ms = 0\n",
        keys.join("gate.key").display().to_string(),
        keys.join("office.pub").display().to_string()
    );
    let gate = crate::util::Gate::new(scenario, &sync, "session_timeout_secs = 5");
    let rules = |gate: &crate::util::Gate| -> Vec<String> {
        Store::open(&gate.db(), "test-gate").unwrap().entries().unwrap().into_iter().map(|e| e.rule).collect()
    };
    let out = crate::util::run(&["run", "--config", gate.config().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    // Low tier in the config; high from the office: a resident coming in is referred to register the return.
    assert_eq!(rules(&gate), vec!["tier.high.resident.in"; 2], "the refer, then its close when they walk away");
    let journal = Store::open(&gate.db(), "test-gate").unwrap().journal_lines().unwrap();
    assert!(journal.iter().any(|(k, d)| k == "policy_bundle" && d.starts_with("applied version 1:")), "{journal:?}");

    // An impostor's bundle (version 2, low) lands in the office database (a tampered server, or a man in the
    // middle); the gate refuses it, says why, and stays high.
    let forged = sibi::bundle::Bundle {
        version: 2,
        issued_at: "2026-11-25T08:00:00+08:00".into(),
        tiers: vec![sibi::bundle::BundleTier {
            tier: sibi::domain::Tier::Low,
            effective: "2020-01-01T00:00:00+08:00".into(),
        }],
        ..sibi::bundle::Bundle::empty("test-community")
    };
    let impostor_key = sibi::credential::pass::read_signing_key(&keys.join("impostor.key")).unwrap();
    rusqlite::Connection::open(dir.path().join("office.db"))
        .unwrap()
        .execute(
            "INSERT INTO bundles (community, version, signed) VALUES ('test-community', 2, ?1)",
            [serde_json::to_string(&forged.sign(&impostor_key)).unwrap()],
        )
        .unwrap();
    let out = crate::util::run(&["run", "--config", gate.config().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(rules(&gate), vec!["tier.high.resident.in"; 4]);
    let journal = Store::open(&gate.db(), "test-gate").unwrap().journal_lines().unwrap();
    assert!(
        journal.iter().any(|(k, d)| k == "policy_bundle_refused" && d.contains("signature does not verify")),
        "{journal:?}"
    );
}

/// A TLS front for the office (as nginx would be): a certificate for `localhost` signed by a private CA. Returns the
/// port and the CA's PEM.
fn tls_front(upstream: SocketAddr) -> (u16, String) {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "测试街道办 CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &rcgen::Issuer::from_params(&ca_params, &ca_key))
        .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(leaf.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
        )
        .unwrap();
    let config = Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let config = config.clone();
            std::thread::spawn(move || {
                let Ok(conn) = rustls::ServerConnection::new(config) else { return };
                let mut tls = rustls::StreamOwned::new(conn, client);
                while let Some(request) = read_message(&mut tls) {
                    let Ok(mut server) = TcpStream::connect(upstream) else { return };
                    let Some(answer) = server.write_all(&request).ok().and_then(|_| read_message(&mut server)) else {
                        return;
                    };
                    if tls.write_all(&answer).and_then(|_| tls.flush()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, ca.pem())
}

/// Between boxes the gate speaks TLS (rustls): it trusts the office's CA given in `sync.ca_file`, and refuses a
/// certificate it cannot verify without losing a record.
#[test]
fn over_tls_the_gate_verifies_the_offices_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::from_bytes(&[8u8; 32]);
    let (addr, office) = office(dir.path(), &[("gate-1", &key)]);
    let (port, ca_pem) = tls_front(addr);
    let ca_file = dir.path().join("office-ca.pem");
    std::fs::write(&ca_file, ca_pem).unwrap();
    let mut store = Store::open(&dir.path().join("gate.db"), "gate-1").unwrap();
    store.fill_synthetic(700, T0).unwrap();
    let settings = SyncSettings { office: format!("https://localhost:{port}"), ..settings(String::new()) };
    assert!(settings.problems().is_empty(), "https is allowed to any host");

    // Without the CA the certificate does not verify: nothing is sent, nothing is lost.
    let err = SyncClient::new(&settings, "gate-1", key.clone()).drain(&mut store).unwrap_err().to_string();
    assert!(err.to_lowercase().contains("certificate") || err.contains("UnknownIssuer"), "{err}");
    assert_eq!(store.sync_status().unwrap().backlog, 700);
    assert!(office.entries("gate-1").unwrap().is_empty());

    let trusted = SyncSettings { ca_file: Some(ca_file.clone()), ..settings };
    assert_eq!(SyncClient::new(&trusted, "gate-1", key).drain(&mut store).unwrap(), 700);
    assert_eq!(office.entries("gate-1").unwrap().len(), 700);
    assert_eq!(store.sync_status().unwrap().backlog, 0);

    // A CA file that holds no certificate is a config error.
    std::fs::write(&ca_file, "not a certificate").unwrap();
    let err = sibi::sync::tls_trusting(&ca_file).unwrap_err();
    assert!(err.contains("no CERTIFICATE"), "{err}");
}

/// A pass-through proxy that keeps every request it forwards, byte for byte (what an eavesdropper on the gate's
/// line would record).
fn recording_proxy(upstream: SocketAddr) -> (SocketAddr, Arc<std::sync::Mutex<Vec<Vec<u8>>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let recorded = Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = recorded.clone();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(mut client) = client else { continue };
            let keep = keep.clone();
            std::thread::spawn(move || {
                while let Some(request) = read_message(&mut client) {
                    keep.lock().unwrap().push(request.clone());
                    let Ok(mut server) = TcpStream::connect(upstream) else { return };
                    let _ = server.write_all(&request);
                    let Some(answer) = read_message(&mut server) else { return };
                    if client.write_all(&answer).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, recorded)
}

/// #16.7: a heartbeat recorded on the line and sent again later (to make a dead gate look alive) is refused with
/// 401 and logged by the office, and the gate's last contact does not move; the gate's own next heartbeat, under a
/// new counter, is taken.
#[test]
fn a_recorded_heartbeat_sent_again_is_refused_logged_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let out = crate::util::run(&["keygen", "--out", keys.to_str().unwrap(), "--name", "gate"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let key = sibi::credential::pass::read_signing_key(&keys.join("gate.key")).unwrap();
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let office_toml = dir.path().join("office.toml");
    std::fs::write(
        &office_toml,
        format!(
            "[office]\nlisten = \"127.0.0.1:{port}\"\ndatabase = \"office.db\"\nname = \"幸福街道办\"\n\n\
             [[gate]]\nid = \"gate-r\"\nkey = \"keys/gate.pub\"\nname = \"东门\"\ncommunity = \"xingfuli\"\n"
        ),
    )
    .unwrap();
    let mut server = Killed(
        crate::util::sibi()
            .args(["office", "serve", "--config", office_toml.to_str().unwrap()])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    crate::util::wait_for_port(port);
    let office: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let (proxy, recorded) = recording_proxy(office);

    let mut store = Store::open(&dir.path().join("gate.db"), "gate-r").unwrap();
    let client = SyncClient::new(&settings(format!("http://{proxy}")), "gate-r", key);
    client.heartbeat(&mut store).unwrap();
    let contact = || {
        let gates: serde_json::Value =
            ureq::get(&format!("http://{office}/v1/gates")).call().unwrap().body_mut().read_json().unwrap();
        gates[0]["last_contact_ms"].as_i64().unwrap()
    };
    let first_contact = contact();
    let heartbeat = recorded.lock().unwrap()[0].clone();
    let head = String::from_utf8_lossy(&heartbeat).to_ascii_lowercase();
    assert!(head.contains("x-sibi-counter:") && head.contains("/v1/heartbeat"), "{head}");

    // Later, the gate is dead; the recording is sent again, as it was.
    std::thread::sleep(Duration::from_millis(50));
    let mut line = TcpStream::connect(office).unwrap();
    line.write_all(&heartbeat).unwrap();
    let answer = String::from_utf8_lossy(&read_message(&mut line).unwrap()).into_owned();
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(answer.contains("a replay"), "{answer}");
    assert_eq!(contact(), first_contact, "the replay did not make the gate look alive");

    // The gate itself calls again: a new counter, taken.
    std::thread::sleep(Duration::from_millis(5));
    client.heartbeat(&mut store).unwrap();
    assert!(contact() > first_contact);

    let _ = server.0.kill();
    let _ = server.0.wait();
    let mut log = String::new();
    server.0.stderr.take().unwrap().read_to_string(&mut log).unwrap();
    assert!(log.contains("replayed or out-of-order request refused") && log.contains("gate-r"), "{log}");
}

//! The ID card reader over real pseudo-terminal pairs: the driver the daemon uses opens the slave side by a stable
//! symlink (as it would `/dev/serial/by-id/...`), and a fake GA 467 reader on the master side answers its frames:
//! the documented frames, split writes, garbage, bad checksums, every status, a lifted card, an unplug; then
//! `sibi idcard read` (DESIGN.md §6) on all four card types, and the daemon's whole path from a tap to the gate.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serialport::{SerialPort, TTYPort};
use sibi::hw::idcard::frame::{Parsed, Parser, cmd, frame};
use sibi::hw::idcard::machine::status_text;
use sibi::hw::idcard::{CardItem, CardKind, IdCardReader, IdCardSettings, SerialIdCard, TextBuilder};
use sibi::hw::{DeviceFault, Polled};

use crate::util::run;

/// How the fake answers a read.
#[derive(Clone, Debug, PartialEq)]
pub enum ReadMode {
    /// The whole answer in one write.
    Whole,
    /// The answer in three writes with garbage before it.
    Split,
    /// The first answer with a broken checksum, then whole ones.
    BadChecksumOnce,
    /// This status instead of the text.
    Status(u8),
    /// Half an answer, then the card is gone.
    LiftMidRead,
}

/// The fake reader's state, shared with the test.
#[derive(Clone)]
pub struct Fake {
    /// The card in the field, if any.
    pub card: Arc<Mutex<Option<[u8; 256]>>>,
    /// How reads are answered.
    pub mode: Arc<Mutex<ReadMode>>,
    /// When the fake last answered "find ok" (the latency measurement starts here).
    pub found_at: Arc<Mutex<Option<Instant>>>,
    /// Commands seen (CMD, PARA).
    pub seen: Arc<Mutex<Vec<(u8, u8)>>>,
    stop: Arc<AtomicBool>,
}

impl Fake {
    /// Stop answering (the thread ends; the pty closes: an unplug).
    pub fn unplug(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn answer(sw3: u8, data: &[u8]) -> Vec<u8> {
    let mut body = vec![0, 0, sw3];
    body.extend_from_slice(data);
    frame(&body)
}

fn read_answer(text: &[u8; 256]) -> Vec<u8> {
    let mut d = vec![0x01, 0x00, 0x04, 0x00];
    d.extend_from_slice(text);
    d.extend((0..1024).map(|i| (i * 7) as u8)); // the "photo": never decoded
    answer(0x90, &d)
}

/// Plug a fake reader in behind `link`.
pub fn plug(link: &Path) -> Fake {
    let (mut master, slave) = TTYPort::pair().expect("a pseudo-terminal pair");
    let _ = std::fs::remove_file(link);
    std::os::unix::fs::symlink(slave.name().unwrap(), link).unwrap();
    let fake = Fake {
        card: Default::default(),
        mode: Arc::new(Mutex::new(ReadMode::Whole)),
        found_at: Default::default(),
        seen: Default::default(),
        stop: Default::default(),
    };
    let f = fake.clone();
    master.set_timeout(Duration::from_millis(10)).unwrap();
    std::thread::spawn(move || {
        let _slave = slave;
        let (mut parser, mut out, mut buf) = (Parser::new(), Vec::new(), [0u8; 256]);
        let mut bad_sent = false;
        while !f.stop.load(Ordering::SeqCst) {
            if let Ok(n) = master.read(&mut buf) {
                parser.feed(&buf[..n], &mut out);
            }
            for p in out.drain(..) {
                let Parsed::Frame(body) = p else { continue };
                let c = (body[0], body[1]);
                f.seen.lock().unwrap().push(c);
                let card = *f.card.lock().unwrap();
                let mode = f.mode.lock().unwrap().clone();
                let reply: Vec<Vec<u8>> = match c {
                    cmd::FIND if card.is_some() => {
                        *f.found_at.lock().unwrap() = Some(Instant::now());
                        vec![answer(0x9F, &[0; 4])]
                    }
                    cmd::FIND => vec![answer(0x80, &[])],
                    cmd::SELECT if card.is_some() => vec![answer(0x90, &[0; 8])],
                    cmd::SELECT => vec![answer(0x81, &[])],
                    cmd::READ => match (card, mode) {
                        (None, _) => vec![answer(0x41, &[])],
                        (Some(t), ReadMode::Whole) => vec![read_answer(&t)],
                        (Some(t), ReadMode::Split) => {
                            let a = read_answer(&t);
                            let mut first = vec![0x00, 0xAA, 0x13, 0xAA, 0xAA];
                            first.extend_from_slice(&a[..3]);
                            vec![first, a[3..600].to_vec(), a[600..].to_vec()]
                        }
                        (Some(t), ReadMode::BadChecksumOnce) => {
                            let mut a = read_answer(&t);
                            if !bad_sent {
                                bad_sent = true;
                                let n = a.len();
                                a[n - 1] ^= 0x5A;
                            }
                            vec![a]
                        }
                        (Some(_), ReadMode::Status(s)) => vec![answer(s, &[])],
                        (Some(t), ReadMode::LiftMidRead) => {
                            *f.card.lock().unwrap() = None;
                            vec![read_answer(&t)[..640].to_vec()]
                        }
                    },
                    cmd::SAM_STATUS | cmd::RESET_SAM => vec![answer(0x90, &[])],
                    cmd::SAM_ID => vec![answer(0x90, &[0x05; 16])],
                    _ => vec![answer(0x21, &[])],
                };
                for chunk in reply {
                    let _ = master.write_all(&chunk);
                    let _ = master.flush();
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        }
    });
    fake
}

/// A resident card: 王秀英, female, 汉, born 1946-03-07.
pub fn resident(id: &str, to: &str) -> [u8; 256] {
    TextBuilder::resident("王秀英", "2", "01", "19460307", "示范市示范区示范路1号3栋201", id, "20100101", to).build()
}

fn settings(link: &Path) -> IdCardSettings {
    IdCardSettings { port: link.to_path_buf(), baud: 115_200 }
}

/// What the driver reports within `d`.
fn drain(r: &mut SerialIdCard, d: Duration) -> Vec<Result<CardItem, DeviceFault>> {
    let end = Instant::now() + d;
    let mut out = Vec::new();
    while Instant::now() < end {
        match r.poll(Duration::from_millis(50)) {
            Ok(Polled::Item(i)) => out.push(Ok(i)),
            Ok(_) => {}
            Err(e) => out.push(Err(e)),
        }
    }
    out
}

fn cards(items: &[Result<CardItem, DeviceFault>]) -> Vec<String> {
    items
        .iter()
        .filter_map(|i| match i {
            Ok(CardItem::Card(c)) => Some(c.masked_id()),
            _ => None,
        })
        .collect()
}

fn prompts(items: &[Result<CardItem, DeviceFault>]) -> Vec<String> {
    items
        .iter()
        .filter_map(|i| match i {
            Ok(CardItem::Prompt { message_zh, .. }) => Some(message_zh.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_card_is_read_once_through_split_writes_garbage_and_a_bad_checksum() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("idcard");
    for mode in [ReadMode::Whole, ReadMode::Split, ReadMode::BadChecksumOnce] {
        let fake = plug(&link);
        *fake.mode.lock().unwrap() = mode.clone();
        let mut reader = SerialIdCard::start(&settings(&link)).unwrap();
        // No card: nothing but finds.
        assert!(cards(&drain(&mut reader, Duration::from_millis(400))).is_empty());
        *fake.card.lock().unwrap() = Some(resident("110101194603070020", "长期"));
        let items = drain(&mut reader, Duration::from_millis(1500));
        assert_eq!(
            cards(&items),
            vec!["1101**********0020".to_string()],
            "{mode:?}: read once while it stays: {items:?}"
        );
        if mode == ReadMode::BadChecksumOnce {
            assert_eq!(prompts(&items), vec!["读卡失败，请重新放卡".to_string()]);
        }
        let seen = fake.seen.lock().unwrap().clone();
        let first_select = seen.iter().position(|c| *c == cmd::SELECT).unwrap();
        assert_eq!(seen[first_select - 1..first_select + 2], [cmd::FIND, cmd::SELECT, cmd::READ], "{mode:?}");
        // Taken away and put back: read again.
        *fake.card.lock().unwrap() = None;
        drain(&mut reader, Duration::from_millis(300));
        *fake.card.lock().unwrap() = Some(resident("110101194603070020", "长期"));
        assert_eq!(cards(&drain(&mut reader, Duration::from_millis(800))).len(), 1, "{mode:?}");
        fake.unplug();
        drop(reader);
    }
}

#[test]
fn every_status_becomes_its_prompt_and_sam_errors_ask_the_sam() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("idcard");
    let fake = plug(&link);
    *fake.card.lock().unwrap() = Some(resident("110101194603070020", "长期"));
    let mut reader = SerialIdCard::start(&settings(&link)).unwrap();
    for sw3 in [0x41u8, 0x10, 0x11, 0x21, 0x23, 0x24, 0x31, 0x32, 0x33, 0x40, 0x47, 0x60, 0x66, 0x91] {
        *fake.mode.lock().unwrap() = ReadMode::Status(sw3);
        let items = drain(&mut reader, Duration::from_millis(300));
        let want = status_text(sw3).unwrap().1.to_string();
        assert!(prompts(&items).contains(&want), "SW3 {sw3:02X}: {items:?}");
        assert!(cards(&items).is_empty());
    }
    let seen = fake.seen.lock().unwrap().clone();
    assert!(seen.contains(&cmd::SAM_STATUS), "a SAM error asks the SAM's status");
    // The card still there and answering again: it is read.
    *fake.mode.lock().unwrap() = ReadMode::Whole;
    assert_eq!(cards(&drain(&mut reader, Duration::from_millis(600))).len(), 1);
    // An unstable card (select fails) is told to hold still.
    *fake.card.lock().unwrap() = None;
    drain(&mut reader, Duration::from_millis(300));
    fake.unplug();
}

#[test]
fn a_card_lifted_mid_read_is_a_prompt_and_the_next_tap_reads() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("idcard");
    let fake = plug(&link);
    *fake.mode.lock().unwrap() = ReadMode::LiftMidRead;
    *fake.card.lock().unwrap() = Some(resident("110101194603070020", "长期"));
    let mut reader = SerialIdCard::start(&settings(&link)).unwrap();
    let items = drain(&mut reader, Duration::from_millis(4500));
    assert!(cards(&items).is_empty());
    assert!(prompts(&items).contains(&"读卡失败，请重新放卡".to_string()), "{items:?}");
    *fake.mode.lock().unwrap() = ReadMode::Whole;
    *fake.card.lock().unwrap() = Some(resident("110101194603070020", "长期"));
    assert_eq!(cards(&drain(&mut reader, Duration::from_millis(800))).len(), 1);
    fake.unplug();
}

#[test]
fn an_unplugged_reader_is_one_fault_and_recovers_within_two_seconds_of_replugging() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("idcard");
    let fake = plug(&link);
    let mut reader = SerialIdCard::start(&settings(&link)).unwrap();
    drain(&mut reader, Duration::from_millis(300));
    fake.unplug();
    std::fs::remove_file(&link).unwrap();
    let items = drain(&mut reader, Duration::from_millis(1500));
    let faults = items.iter().filter(|i| i.is_err()).count();
    assert_eq!(faults, 1, "one fault, not a flood: {items:?}");
    let fake = plug(&link);
    *fake.card.lock().unwrap() = Some(resident("110101194603070020", "长期"));
    let replugged = Instant::now();
    let mut seen = Vec::new();
    while replugged.elapsed() < Duration::from_secs(3) && cards(&seen).is_empty() {
        seen.extend(drain(&mut reader, Duration::from_millis(50)));
    }
    let recovered = replugged.elapsed();
    assert!(recovered < Duration::from_secs(2), "recovered after {recovered:?}");
    assert!(
        seen.iter().any(|i| matches!(i, Ok(CardItem::Restored(g)) if *g >= Duration::from_millis(1000))),
        "{seen:?}"
    );
    fake.unplug();
}

fn idcard_read(link: &Path, at: &str, timeout: &str) -> (Option<i32>, serde_json::Value, String) {
    let out = run(&["idcard", "read", "--port", link.to_str().unwrap(), "--timeout", timeout, "--at", at]);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let json = serde_json::from_str(stdout.trim()).unwrap_or(serde_json::Value::Null);
    (out.status.code(), json, String::from_utf8_lossy(&out.stderr).to_string())
}

#[test]
fn idcard_read_prints_all_four_card_types_masked_and_exits_as_the_contract_says() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("idcard");
    let at = "2026-12-01T09:00:00+08:00";
    let j = TextBuilder::new(CardKind::HkMoTw)
        .put(0, 30, "陈大文")
        .put(30, 2, "1")
        .put(36, 16, "19850505")
        .put(52, 70, "广东省深圳市福田区示范路2号")
        .put(122, 36, "81000019850505001X")
        .put(158, 30, "深圳市公安局")
        .put(188, 16, "20220101")
        .put(204, 16, "20270101")
        .put(220, 18, "H12345678")
        .build();
    let i = TextBuilder::new(CardKind::Foreign2017)
        .put(0, 120, "SMITH JOHN PAUL")
        .put(120, 2, "1")
        .put(122, 30, "CAN110090010016")
        .put(152, 6, "CAN")
        .put(188, 16, "20200101")
        .put(204, 16, "20300101")
        .put(220, 16, "19900101")
        .build();
    let y = TextBuilder::new(CardKind::Foreign2023)
        .put(0, 30, "玛丽亚")
        .put(30, 2, "2")
        .put(36, 16, "19920202")
        .put(52, 70, "GARCIA MARIA")
        .put(122, 36, "932000199202020028")
        .put(188, 16, "20240101")
        .put(204, 16, "20340101")
        .put(242, 6, "ESP")
        .build();
    let cases: Vec<([u8; 256], serde_json::Value)> = vec![
        (
            resident("110101194603070020", "长期"),
            serde_json::json!({"card": "resident", "name": "王*英", "sex": "女", "nation": "汉", "birth": "1946-03-07",
                "id": "1101**********0020", "id_check": true, "valid_from": "2010-01-01", "valid_to": "长期",
                "expired": false}),
        ),
        (
            resident("110101199003070038", "20261130"),
            serde_json::json!({"card": "resident", "name": "王*英", "sex": "女", "nation": "汉", "birth": "1946-03-07",
                "id": "1101**********0038", "id_check": true, "valid_from": "2010-01-01", "valid_to": "2026-11-30",
                "expired": true}),
        ),
        (
            resident("110101199003070037", "20301130"),
            serde_json::json!({"card": "resident", "name": "王*英", "sex": "女", "nation": "汉", "birth": "1946-03-07",
                "id": "1101**********0037", "id_check": false, "valid_from": "2010-01-01", "valid_to": "2030-11-30",
                "expired": false}),
        ),
        (
            j,
            serde_json::json!({"card": "hk_mo_tw", "name": "陈*文", "sex": "男", "nation": null, "birth": "1985-05-05",
                "id": "8100**********001X", "id_check": sibi::hw::idcard::text::id_number_ok("81000019850505001X"),
                "valid_from": "2022-01-01", "valid_to": "2027-01-01", "expired": false}),
        ),
        (
            i,
            serde_json::json!({"card": "foreign_2017", "name": "S*************L", "sex": "男", "nation": null,
                "birth": "1990-01-01", "id": "CAN1*******0016", "id_check": true, "valid_from": "2020-01-01",
                "valid_to": "2030-01-01", "expired": false}),
        ),
        (
            y,
            serde_json::json!({"card": "foreign_2023", "name": "玛*亚", "sex": "女", "nation": null, "birth": "1992-02-02",
                "id": "9320**********0028", "id_check": sibi::hw::idcard::text::id_number_ok("932000199202020028"),
                "valid_from": "2024-01-01", "valid_to": "2034-01-01", "expired": false}),
        ),
    ];
    for (text, want) in cases {
        let fake = plug(&link);
        *fake.card.lock().unwrap() = Some(text);
        let (code, json, err) = idcard_read(&link, at, "5");
        assert_eq!(code, Some(0), "{err}");
        assert_eq!(json, want);
        let printed = json.to_string();
        for clear in ["王秀英", "110101194603070020", "示范路", "SMITH JOHN"] {
            assert!(!printed.contains(clear), "{clear} in {printed}");
        }
        fake.unplug();
        std::thread::sleep(Duration::from_millis(30));
    }
    // No card within the timeout: exit 1 with the reason.
    let fake = plug(&link);
    let started = Instant::now();
    let (code, _, err) = idcard_read(&link, at, "0.5");
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("no card"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(3));
    fake.unplug();
    // An unusable port: exit 2.
    let (code, _, err) = idcard_read(&dir.path().join("nowhere"), at, "1");
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("cannot open"), "{err}");
}

/// The synthetic numbers of the daemon test's people.
pub const RESIDENT_ID: &str = "110101194603070020";
/// A visitor not on the roster.
pub const VISITOR_ID: &str = "110101199003070038";

/// A path helper for other tests.
pub fn link_in(dir: &Path) -> PathBuf {
    dir.join("idcard")
}

/// A provincial platform on loopback answering ID queries by number: `answers` maps an ID number to a status.
fn province(answers: Vec<(&'static str, &'static str)>) -> (String, Arc<Mutex<Vec<serde_json::Value>>>) {
    use std::io::{BufRead, BufReader};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let (mut line, mut len) = (String::new(), 0usize);
            loop {
                line.clear();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0; len];
            let _ = reader.read_exact(&mut body);
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            log.lock().unwrap().push(v.clone());
            let status = answers.iter().find(|(id, _)| v["code"] == *id).map_or("not_found", |(_, s)| s);
            let text = format!(r#"{{"status":"{status}"}}"#);
            let mut out = stream;
            let _ = write!(
                out,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                text.len()
            );
        }
    });
    (url, seen)
}

/// The street office's real gateway (`sibi office serve`'s server, in this process) with gate `card-gate` enrolled:
/// drill numbers answered from its roster, Beijing (110000) numbers relayed to `province`. Returns its base URL.
fn office_gateway(dir: &Path, province: &str, drill: &[(&str, &str)]) -> String {
    let out = run(&["keygen", "--out", dir.join("office-keys").to_str().unwrap(), "--name", "gate"]);
    assert_eq!(out.status.code(), Some(0));
    let rows: String = drill.iter().map(|(id, status)| format!("{id},{status}\n")).collect();
    std::fs::write(dir.join("drill.csv"), format!("code,status\n{rows}")).unwrap();
    let toml = dir.join("office.toml");
    std::fs::write(
        &toml,
        format!(
            "[office]\nlisten = \"127.0.0.1:0\"\ndatabase = \"office.db\"\n\n[[gate]]\nid = \"card-gate\"\n\
             key = \"office-keys/gate.pub\"\n\n[health_code]\ntimeout_ms = 600\n\n[[health_code.provincial]]\n\
             region = \"110000\"\nurl = \"{province}/v1/health-code/verify\"\n\n[health_code.drill]\nroster = \"drill.csv\"\n"
        ),
    )
    .unwrap();
    let office = sibi::office::Office::open(sibi::office::load(&toml).unwrap()).unwrap();
    format!("http://{}", sibi::office::serve_in_background(office).unwrap())
}

/// One person taps `card` at the gate (the real daemon, the serial reader over a pty, the roster by keyed hash, the
/// gateway at `gateway`); the scripted thermometer reads 36.5 and the operator confirms the mask. Returns the final
/// row (verdict, category, identity, code, holder_masked, gate_action, personal_sealed is set) and the state folder.
type Row = (String, String, String, String, String, String, bool);

fn tap_at_the_gate(card: [u8; 256], gateway: &str) -> (Option<Row>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let link = link_in(dir.path());
    let key = dir.path().join("roster.key");
    sibi::hw::idcard::cli::roster_key(&key).unwrap();
    std::fs::write(dir.path().join("clear.csv"), format!("building,room,name,id_number\n3,201,王秀英,{RESIDENT_ID}\n"))
        .unwrap();
    let mut roster = Vec::new();
    sibi::hw::idcard::cli::roster(&key, &dir.path().join("clear.csv"), &mut roster).unwrap();
    let roster = String::from_utf8(roster).unwrap();
    assert!(!roster.contains(RESIDENT_ID) && !roster.contains("王秀英"), "{roster}");
    std::fs::write(dir.path().join("roster.csv"), roster).unwrap();
    sibi::privacy::write_key_pair(dir.path(), "office-seal").unwrap();
    std::fs::write(
        dir.path().join("scenario.toml"),
        "[[event]]\nat = 0.6\ntemperature = 36.5\n[[event]]\nat = 0.8\noperator = { mask = \"worn\" }\n[[event]]\nat = 2.5\ntemperature = 36.6\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("gate.toml"),
        format!(
            r#"
[gate]
id = "card-gate"
community = "test-community"
state_dir = "state"
[checkpoint]
session_timeout_secs = 5
[health_code]
gateway = "{gateway}"
timeout_ms = 800
[idcard]
roster = "roster.csv"
roster_key = "roster.key"
[privacy]
office_key = "office-seal.pub"
[devices.credentials]
backend = "script"
[devices.idcard]
backend = "serial"
port = "{}"
[devices.thermometer]
backend = "script"
[devices.operator]
backend = "script"
[devices.gate]
backend = "sim"
pulse_ms = 200
[script]
file = "scenario.toml"
exit_when_done = true
"#,
            link.display()
        ),
    )
    .unwrap();
    let fake = plug(&link);
    let card_fake = fake.clone();
    let tapper = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        *card_fake.card.lock().unwrap() = Some(card);
        std::thread::sleep(Duration::from_millis(1500));
        *card_fake.card.lock().unwrap() = None;
    });
    crate::util::run_to_end(&dir.path().join("gate.toml"), Duration::from_secs(30));
    tapper.join().unwrap();
    fake.unplug();
    let db = rusqlite::Connection::open(dir.path().join("state/sibi.db")).unwrap();
    let row = db
        .query_row(
            "SELECT verdict, category, identity, code, COALESCE(holder_masked, ''), COALESCE(gate_action, ''),
                personal_sealed IS NOT NULL FROM entries WHERE is_final = 1 ORDER BY seq LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?)),
        )
        .ok();
    (row, dir)
}

/// Everything the box wrote, as bytes.
fn all_bytes(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(all_bytes(&p));
        } else if p.file_name().is_some_and(|n| n != "clear.csv") {
            out.extend(std::fs::read(&p).unwrap_or_default());
        }
    }
    out
}

#[test]
fn a_card_tap_goes_through_the_daemon_to_a_sealed_row_and_the_gate() {
    // The resident's number is on the office's drill roster (green); the visitor's is relayed to the province (red).
    let (province, seen) = province(vec![(VISITOR_ID, "red")]);
    let office = tempfile::tempdir().unwrap();
    let url = office_gateway(office.path(), &province, &[(RESIDENT_ID, "green")]);
    // On the roster, gateway green: a resident passes with one tap.
    let (row, dir) = tap_at_the_gate(resident(RESIDENT_ID, "长期"), &url);
    let row = row.expect("a final row");
    assert_eq!(
        (row.0.as_str(), row.1.as_str(), row.2.as_str(), row.3.as_str(), row.4.as_str(), row.5.as_str(), row.6),
        ("pass", "resident", "id_card", "green", "王*英", "opened", true)
    );
    assert!(seen.lock().unwrap().is_empty(), "a drill number stays at the office");
    // Only the office opens what the card said (信息必录): name, number and address, and its export shows the address.
    let db = rusqlite::Connection::open(dir.path().join("state/sibi.db")).unwrap();
    let sealed: String =
        db.query_row("SELECT personal_sealed FROM entries WHERE is_final = 1", [], |r| r.get(0)).unwrap();
    let secret = sibi::privacy::read_secret(&dir.path().join("office-seal.key")).unwrap();
    let p = sibi::privacy::unseal(&secret, &sealed).unwrap();
    let address = "示范市示范区示范路1号3栋201";
    assert_eq!(
        (p.name.as_str(), p.id_number.as_deref(), p.address.as_deref()),
        ("王秀英", Some(RESIDENT_ID), Some(address))
    );
    let table = sibi::office::export::entries_table(&[serde_json::json!({ "personal_sealed": sealed })], Some(&secret));
    assert!(format!("{:?}", table.rows).contains(address), "the export's 住址");
    // The stolen-box check: no name, ID number or address in clear anywhere the box wrote.
    let bytes = all_bytes(dir.path());
    for clear in ["王秀英", RESIDENT_ID, "示范路1号"] {
        assert!(!bytes.windows(clear.len()).any(|w| w == clear.as_bytes()), "{clear} in clear on the box");
    }
    // Not on the roster, gateway red: a visitor, denied (and recorded, sealed).
    let visitor =
        TextBuilder::resident("李四", "1", "01", "19900307", "外地市某路9号", VISITOR_ID, "20200101", "长期").build();
    let (row, dir) = tap_at_the_gate(visitor, &url);
    let row = row.expect("a final row");
    assert_eq!(
        (row.0.as_str(), row.1.as_str(), row.3.as_str(), row.5.as_str(), row.6),
        ("deny", "visitor", "red", "kept_closed", true)
    );
    let bytes = all_bytes(dir.path());
    assert!(!bytes.windows(VISITOR_ID.len()).any(|w| w == VISITOR_ID.as_bytes()));
    // The office asked the province by ID number (卡码合一), for the gate, in the card's province.
    assert!(
        seen.lock().unwrap().iter().any(|v| v["code"] == VISITOR_ID
            && v["issuer"] == "身份证"
            && v["region"] == "110000"
            && v["gate"] == "card-gate"),
        "{:?}",
        seen.lock().unwrap()
    );
    // The gateway unreachable: unverified, the operator's refer; no gate.
    let (row, _dir) = tap_at_the_gate(resident(RESIDENT_ID, "长期"), "http://127.0.0.1:9");
    let row = row.expect("a final row");
    assert_eq!(
        (row.0.as_str(), row.1.as_str(), row.3.as_str(), row.5.as_str()),
        ("refer", "resident", "unverified", "kept_closed")
    );
    // An expired card is a prompt, not an identity: no row with identity id_card.
    let (row, _dir) = tap_at_the_gate(resident(RESIDENT_ID, "20200101"), &url);
    assert!(row.as_ref().is_none_or(|r| r.2 != "id_card"), "{row:?}");
}

/// `sibi probe idcard` on the configured reader: the security module's status and id, then one masked read.
#[test]
fn probe_idcard_asks_the_sam_and_reads_one_card_masked() {
    let dir = tempfile::tempdir().unwrap();
    let link = link_in(dir.path());
    let section = format!("\n[devices.idcard]\nbackend = \"serial\"\nport = \"{}\"\n", link.display());
    let gate = crate::util::Gate::new("", &section, "");
    let fake = plug(&link);
    *fake.card.lock().unwrap() = Some(resident(RESIDENT_ID, "长期"));
    let out = run(&["probe", "idcard", "--config", gate.config().to_str().unwrap(), "--timeout", "5"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(0), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("SAM status: SW3 90"), "{text}");
    assert!(text.contains(&format!("SAM id: {}", "05".repeat(16))), "{text}");
    assert!(text.contains("\"id\":\"1101**********0020\"") && !text.contains(RESIDENT_ID), "{text}");
    let seen = fake.seen.lock().unwrap().clone();
    assert_eq!(seen[..2], [cmd::SAM_STATUS, cmd::SAM_ID]);
    fake.unplug();
    // A config without a serial reader is a usage error.
    let plain = crate::util::Gate::new("", "", "");
    let out = run(&["probe", "idcard", "--config", plain.config().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
}

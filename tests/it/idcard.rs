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

impl Drop for Fake {
    fn drop(&mut self) {
        if Arc::strong_count(&self.stop) <= 2 {
            self.stop.store(true, Ordering::SeqCst);
        }
    }
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
        assert_eq!(cards(&items), vec!["1101**********0020".to_string()], "{mode:?}: read once while it stays: {items:?}");
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
    assert!(seen.iter().any(|i| matches!(i, Ok(CardItem::Restored(g)) if *g >= Duration::from_millis(1000))), "{seen:?}");
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

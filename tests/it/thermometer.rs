//! The serial thermometer over real pseudo-terminal pairs (no mock of the serial layer): the same reader thread the
//! daemon uses opens the slave side by a stable symlink, as it would `/dev/serial/by-id/...`, and the test plays the
//! module on the master side.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serialport::{SerialPort, TTYPort};
use sibi::domain::Celsius;
use sibi::hw::serial::{Reader, ReaderMsg, SerialSettings, SerialThermometer};
use sibi::hw::thermo::{GyMode, ModbusSettings, ProtocolName, modbus_crc};
use sibi::hw::{Polled, ThermoItem, Thermometer};

/// A module on a pty pair; `link` points at the slave side.
struct Module {
    master: TTYPort,
    _slave: TTYPort,
}

fn plug(link: &Path) -> Module {
    let (master, slave) = TTYPort::pair().expect("a pseudo-terminal pair");
    let _ = std::fs::remove_file(link);
    std::os::unix::fs::symlink(slave.name().expect("slave name"), link).unwrap();
    Module { master, _slave: slave }
}

fn settings(link: PathBuf, protocol: ProtocolName) -> SerialSettings {
    SerialSettings {
        port: link,
        baud: 9600,
        protocol,
        mode: GyMode::Continuous,
        modbus: None,
        poll_ms: 100,
        silence_ms: 600,
        settle_readings: None,
        calibration: Default::default(),
        drift: Default::default(),
    }
}

fn gy_frame(object_centi: i16, ambient_centi: i16) -> Vec<u8> {
    let mut f = vec![0x5A, 0x5A, 0x45, 0x04];
    f.extend(object_centi.to_be_bytes());
    f.extend(ambient_centi.to_be_bytes());
    let sum = f.iter().fold(0u8, |a, &b| a.wrapping_add(b));
    f.push(sum);
    f
}

/// Collect what the reader reports for `d`.
fn drain(r: &Reader, d: Duration) -> Vec<ReaderMsg> {
    let end = Instant::now() + d;
    let mut out = Vec::new();
    while let Ok(m) = r.rx.recv_timeout(end.saturating_duration_since(Instant::now())) {
        out.push(m);
    }
    out
}

fn objects(msgs: &[ReaderMsg]) -> Vec<i32> {
    msgs.iter()
        .filter_map(|m| match m {
            ReaderMsg::Reading(r) => Some(r.object.centi()),
            _ => None,
        })
        .collect()
}

/// The first body temperature within 3 s, calling `feed` (the module's output) before each poll.
fn first_reading(t: &mut SerialThermometer, mut feed: impl FnMut()) -> Option<Celsius> {
    let end = Instant::now() + Duration::from_secs(3);
    while Instant::now() < end {
        feed();
        if let Polled::Item(ThermoItem::Reading(c)) = t.poll(Duration::from_millis(100)).unwrap() {
            return Some(c);
        }
    }
    None
}

/// Stream a marker frame until the reader has it: the port is open and the module is "streaming".
fn wait_open(m: &mut Module, r: &Reader) {
    let end = Instant::now() + Duration::from_secs(5);
    while Instant::now() < end {
        m.master.write_all(&gy_frame(2000, 2000)).unwrap();
        if objects(&drain(r, Duration::from_millis(100))).contains(&2000) {
            return;
        }
    }
    panic!("the reader never opened the port");
}

#[test]
fn gy_mcu_frames_split_corrupted_and_between_garbage_over_a_pty() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("thermometer");
    let mut m = plug(&link);
    let reader = Reader::start(&settings(link, ProtocolName::GyMcu90614)).unwrap();
    wait_open(&mut m, &reader);
    // The reader asked the module for continuous output: A5 45 EA.
    let mut cmd = [0u8; 3];
    m.master.set_timeout(Duration::from_secs(1)).unwrap();
    m.master.read_exact(&mut cmd).unwrap();
    assert_eq!(cmd, [0xA5, 0x45, 0xEA]);

    let good = gy_frame(3655, 2512);
    assert_eq!(good, vec![0x5A, 0x5A, 0x45, 0x04, 0x0E, 0x47, 0x09, 0xD0, 0x2B], "the datasheet example");
    let mut bad = gy_frame(3700, 2500);
    bad[8] ^= 0xFF;
    let mut stream = Vec::new();
    stream.extend(&good);
    stream.extend([0x13, 0x5A, 0x00, 0xFF, 0x5A]); // garbage, with false starts
    stream.extend(&bad);
    stream.extend(&gy_frame(3610, 2400));
    stream.extend(b"\x5A\x5A\x45"); // a torn header
    stream.extend(&gy_frame(3620, 2400));
    // Written in awkward pieces: a frame split across writes.
    for chunk in stream.chunks(4) {
        m.master.write_all(chunk).unwrap();
        std::thread::sleep(Duration::from_millis(3));
    }
    let msgs = drain(&reader, Duration::from_millis(300));
    assert_eq!(objects(&msgs), vec![3655, 3610, 3620], "{msgs:?}");
}

#[test]
fn only_garbage_is_a_fault_that_names_the_baud_rate() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("thermometer");
    let mut m = plug(&link);
    let reader = Reader::start(&settings(link, ProtocolName::GyMcu90614)).unwrap();
    wait_open(&mut m, &reader);
    // What a module at 115200 looks like to a port at 9600: bytes, never a frame.
    let end = Instant::now() + Duration::from_millis(1200);
    let mut x = 0x1234_5678u32;
    while Instant::now() < end {
        let noise: Vec<u8> = (0..32)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x as u8) & 0x7F // never 0x5A's header pair by construction? still fine: sums would not match
            })
            .collect();
        m.master.write_all(&noise).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    let msgs = drain(&reader, Duration::from_millis(200));
    assert!(
        msgs.iter().any(|m| matches!(m, ReaderMsg::Fault(w) if w.contains("baud rate"))),
        "garbage must be reported: {msgs:?}"
    );
    // Right data again: restored.
    m.master.write_all(&gy_frame(3640, 2400)).unwrap();
    let msgs = drain(&reader, Duration::from_millis(300));
    assert!(matches!(msgs.first(), Some(ReaderMsg::Restored(_))), "{msgs:?}");
    assert_eq!(objects(&msgs), vec![3640]);
}

#[test]
fn a_pulled_cable_is_a_fault_and_the_reader_recovers_within_two_seconds_of_replugging() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("thermometer");
    let mut m = plug(&link);
    let reader = Reader::start(&settings(link.clone(), ProtocolName::GyMcu90614)).unwrap();
    wait_open(&mut m, &reader);
    // Unplug mid-stream: half a frame, then the device vanishes.
    m.master.write_all(&gy_frame(3650, 2400)[..5]).unwrap();
    drop(m);
    std::fs::remove_file(&link).unwrap();
    let msgs = drain(&reader, Duration::from_millis(800));
    assert!(msgs.iter().any(|m| matches!(m, ReaderMsg::Fault(_))), "{msgs:?}");
    // Plug it back in (a new pty behind the same stable name) and stream as a module does.
    let mut m = plug(&link);
    let replugged = Instant::now();
    let mut seen = Vec::new();
    while replugged.elapsed() < Duration::from_secs(3) && objects(&seen).is_empty() {
        m.master.write_all(&gy_frame(3660, 2400)).unwrap();
        seen.extend(drain(&reader, Duration::from_millis(50)));
    }
    let recovered = replugged.elapsed();
    assert!(recovered < Duration::from_secs(2), "recovered after {recovered:?}");
    let gap = seen.iter().find_map(|m| match m {
        ReaderMsg::Restored(gap) => Some(*gap),
        _ => None,
    });
    assert!(gap.is_some_and(|g| g >= Duration::from_millis(800)), "the gap is reported: {seen:?}");
    assert_eq!(objects(&seen)[0], 3660);
}

#[test]
fn modbus_rtu_requests_answers_and_exceptions_over_a_pty() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("thermometer");
    let mut m = plug(&link);
    let mut s = settings(link, ProtocolName::ModbusRtu);
    s.modbus = Some(ModbusSettings { slave: 1, function: 3, register: 0x12, scale: 0.1, signed: true });
    let mut thermometer = SerialThermometer::start(&s, Celsius::from_centi(3730)).unwrap();
    m.master.set_timeout(Duration::from_secs(2)).unwrap();
    // The Calex PyroUSB example: read holding register 0x12.
    let mut req = [0u8; 8];
    let mut answer = |m: &mut Module, value: i16, exception: bool| {
        m.master.read_exact(&mut req).unwrap();
        assert_eq!(req, [0x01, 0x03, 0x00, 0x12, 0x00, 0x01, 0x24, 0x0F]);
        let mut f = if exception { vec![0x01, 0x83, 0x02] } else { vec![0x01, 0x03, 0x02] };
        if !exception {
            f.extend(value.to_be_bytes());
        }
        f.extend(modbus_crc(&f).to_le_bytes());
        m.master.write_all(&f).unwrap();
    };
    answer(&mut m, 0, true);
    answer(&mut m, 220, false); // 22.0 ℃: nobody there
    for _ in 0..3 {
        answer(&mut m, 366, false);
    }
    let got = first_reading(&mut thermometer, || {});
    assert_eq!(got, Some(Celsius::from_centi(3660)), "three agreeing readings make one body temperature");
}

#[test]
fn ascii_bridge_lines_give_one_reading_each() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("thermometer");
    let mut m = plug(&link);
    let mut s = settings(link, ProtocolName::Ascii);
    s.calibration.offset = 0.5;
    let mut thermometer = SerialThermometer::start(&s, Celsius::from_centi(3730)).unwrap();
    let got = first_reading(&mut thermometer, || m.master.write_all(b"boot v1.2\r\nT=36.12\r\n").unwrap());
    assert_eq!(got, Some(Celsius::from_centi(3662)), "36.12 + 0.5 calibration offset");
}

#[test]
fn a_drifting_thermometer_raises_a_notice_for_the_operator() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("thermometer");
    let mut m = plug(&link);
    let mut s = settings(link, ProtocolName::Ascii);
    s.drift.window = 5;
    let mut thermometer = SerialThermometer::start(&s, Celsius::from_centi(3730)).unwrap();
    let mut readings = 0;
    let mut notice = None;
    let end = Instant::now() + Duration::from_secs(5);
    // Five people in a row read 35.0 ℃ (the room, or a dirty lens): below the 35.5 ℃ floor of the drift band.
    while Instant::now() < end && notice.is_none() {
        if readings < 5 {
            m.master.write_all(b"T=20.0\nT=35.00\n").unwrap(); // nobody, then a person
        }
        match thermometer.poll(Duration::from_millis(100)).unwrap() {
            Polled::Item(ThermoItem::Reading(t)) => {
                assert_eq!(t, Celsius::from_centi(3500));
                readings += 1;
            }
            Polled::Item(ThermoItem::Notice { message_zh, .. }) => notice = Some(message_zh),
            _ => {}
        }
    }
    assert_eq!(readings, 5);
    let notice = notice.expect("a drift notice after the fifth reading");
    assert!(notice.contains("漂移") && notice.contains("35.00℃"), "{notice}");
}

/// `sibi probe thermometer` over a pty: raw frames printed, and the daily self-check recorded in the gate's journal.
#[test]
fn probe_prints_raw_frames_and_records_the_self_check() {
    let gate = crate::util::Gate::new("[[event]]\nat = 0.0\ntemperature = 36.5\n", "", "");
    let link = gate.dir.path().join("thermometer");
    let config = std::fs::read_to_string(gate.config()).unwrap().replace(
        "[devices.thermometer]\nbackend = \"script\"",
        &format!(
            "[devices.thermometer]\nbackend = \"serial\"\nport = {:?}\nprotocol = \"gy-mcu90614\"",
            link.display().to_string()
        ),
    );
    std::fs::write(gate.config(), config).unwrap();
    for (reference, want) in [("36.6", 0), ("37.5", 1)] {
        let mut m = plug(&link);
        let mut child = crate::util::sibi()
            .args(["probe", "thermometer", "--config", gate.config().to_str().unwrap(), "--count", "5"])
            .args(["--reference", reference])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // The module streams until the probe has what it needs.
        let end = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < end, "the probe never finished");
            let _ = m.master.write_all(&gy_frame(3655, 2100));
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut out = String::new();
        child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
        assert_eq!(status.code(), Some(want), "{out}");
        assert!(out.contains("[5A 5A 45 04 0E 47 08 34"), "raw frames printed: {out}");
        assert!(out.contains("surface 36.55℃ ambient 21.00℃ → body 36.55℃"), "{out}");
    }
    let store = sibi::store::Store::open(&gate.db(), "test-gate").unwrap();
    let checks: Vec<String> = store
        .journal_lines()
        .unwrap()
        .into_iter()
        .filter(|(k, _)| k == "thermometer_self_check")
        .map(|(_, d)| d)
        .collect();
    assert_eq!(checks.len(), 2, "{checks:?}");
    assert!(checks[0].contains("reference 36.60℃") && checks[0].ends_with("pass"), "{checks:?}");
    assert!(checks[1].ends_with("FAIL"), "{checks:?}");
}

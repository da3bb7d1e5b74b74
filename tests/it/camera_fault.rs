//! A camera unplugged and plugged back in: through the same source runner thread the daemon uses, the fault is reported
//! once, the restoration is reported, and credentials flow again — no restart. Also: the daemon configured with a V4L2
//! camera that is absent starts, reports the fault, and still stops cleanly.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use image::GrayImage;
use sibi::checkpoint::{DeviceKind, Event};
use sibi::credential::Trust;
use sibi::credential::pass::{Pass, PassVerifier, generate_key};
use sibi::credential::qr::DecoderKind;
use sibi::credential::reader::CameraCredentials;
use sibi::domain::Category;
use sibi::hw::frames::FrameSource;
use sibi::hw::{self, CredentialSource, DeviceFault, Polled, SourceMsg, StopFlag};

/// Shows `frame` except while `unplugged` is set.
struct Flaky {
    frame: GrayImage,
    unplugged: Arc<Mutex<bool>>,
}

impl FrameSource for Flaky {
    fn next_frame(&mut self, wait: Duration) -> Result<Polled<GrayImage>, DeviceFault> {
        std::thread::sleep(wait.min(Duration::from_millis(20)));
        if *self.unplugged.lock().unwrap() {
            return Err(DeviceFault("camera /dev/video0: No such device".into()));
        }
        Ok(Polled::Item(self.frame.clone()))
    }
}

#[test]
fn an_unplugged_camera_is_reported_once_and_resumes_by_itself() {
    let key = generate_key().unwrap();
    let text = Pass {
        community: "c".into(),
        id: "P-9".into(),
        category: Category::Resident,
        holder: "王*".into(),
        valid_from: 0,
        valid_until: 4_000_000_000,
    }
    .encode(&key);
    let frame = sibi::credential::qr::render(&text, 4).unwrap();
    let unplugged = Arc::new(Mutex::new(false));
    let trust = Trust {
        pass: PassVerifier { keys: vec![key.verifying_key()], community: Some("c".into()), ..Default::default() },
        ..Default::default()
    };
    let mut reader = CameraCredentials::new(
        Box::new(Flaky { frame, unplugged: unplugged.clone() }),
        DecoderKind::Zxing.decoder(),
        trust,
    );
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let stop = StopFlag::default();
    let thread =
        hw::spawn_source(DeviceKind::Credentials, move |w| reader.poll(w), Event::Credential, tx, stop.clone())
            .unwrap();
    let next = |rx: &mut tokio::sync::mpsc::Receiver<SourceMsg>, what: &str| {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            assert!(Instant::now() < deadline, "waiting for {what}");
            match rx.try_recv() {
                Ok(SourceMsg::Event(s)) => return s.event,
                Ok(SourceMsg::Done(_)) => panic!("source ended"),
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    };
    assert!(matches!(next(&mut rx, "a credential"), Event::Credential(c) if c.key == "pass:P-9"));
    *unplugged.lock().unwrap() = true;
    // Drain credentials already in flight, then exactly one fault.
    let mut ev = next(&mut rx, "the fault");
    while matches!(ev, Event::Credential(_)) {
        ev = next(&mut rx, "the fault");
    }
    assert!(
        matches!(&ev, Event::Fault { device: DeviceKind::Credentials, detail } if detail.contains("No such device"))
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(rx.try_recv().is_err(), "the fault is reported once, not once per frame");
    *unplugged.lock().unwrap() = false;
    assert_eq!(next(&mut rx, "the restoration"), Event::Restored(DeviceKind::Credentials));
    assert!(matches!(next(&mut rx, "a credential again"), Event::Credential(_)));
    stop.stop();
    drop(rx);
    thread.join().unwrap();
}

#[test]
fn the_daemon_with_an_absent_v4l2_camera_reports_it_and_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("s.toml"), "[[event]]\nat = 0.0\ntemperature = 36.5\n").unwrap();
    std::fs::write(
        dir.path().join("gate.toml"),
        r#"
[gate]
id = "g"
community = "c"
state_dir = "state"
[devices.credentials]
backend = "v4l2"
device = "/dev/v4l/by-id/usb-absent-camera-video-index0"
[devices.thermometer]
backend = "script"
[devices.operator]
backend = "script"
[devices.gate]
backend = "sim"
[script]
file = "s.toml"
"#,
    )
    .unwrap();
    let config = sibi::config::load(&dir.path().join("gate.toml")).expect("config loads");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let summary = rt
        .block_on(sibi::app::run(config, async { tokio::time::sleep(Duration::from_millis(1500)).await }))
        .expect("runs without a camera");
    assert!(summary.clean);
    let journal = sibi::store::Store::open(&dir.path().join("state/sibi.db"), "g").unwrap().journal_lines().unwrap();
    assert!(journal.iter().any(|(k, d)| k == "device_fault" && d.contains("not present")), "{journal:?}");
}

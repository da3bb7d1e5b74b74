//! The daemon under a notify-socket harness, as systemd runs it (`Type=notify`, `WatchdogSec=`): READY once it is up,
//! WATCHDOG pings from its main loop at half the period, STOPPING on SIGTERM, then a clean exit 0.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use crate::util::{Gate, Killed, sibi};

#[test]
fn ready_watchdog_pings_and_a_clean_stop_over_the_notify_socket() {
    let gate = Gate::new("[[event]]\nat = 0.2\ntemperature = 36.5\n", "", "");
    let socket_path = gate.dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let mut daemon = Killed(
        sibi()
            .args(["run", "--config", gate.config().to_str().unwrap()])
            .env("NOTIFY_SOCKET", &socket_path)
            .env("WATCHDOG_USEC", "400000")
            .spawn()
            .unwrap(),
    );
    let mut messages: Vec<(Duration, String)> = Vec::new();
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    while start.elapsed() < Duration::from_secs(3) {
        if let Ok(n) = socket.recv(&mut buf) {
            messages.push((start.elapsed(), String::from_utf8_lossy(&buf[..n]).into_owned()));
        }
    }
    let ready = messages.iter().position(|(_, m)| m.lines().any(|l| l == "READY=1"));
    let ready = ready.unwrap_or_else(|| panic!("no READY=1: {messages:?}"));
    assert!(messages[ready].1.contains("STATUS=test-gate"), "{messages:?}");
    let pings: Vec<Duration> = messages.iter().filter(|(_, m)| m.trim() == "WATCHDOG=1").map(|(t, _)| *t).collect();
    // 0.4 s period: a ping at least every 0.2 s (plus a tick), so well over five in the ~2.5 s after startup.
    assert!(pings.len() >= 8, "{} pings: {messages:?}", pings.len());
    let longest = pings.windows(2).map(|w| w[1] - w[0]).max().unwrap();
    assert!(longest < Duration::from_millis(400), "a gap of {longest:?} would trip the watchdog");

    let status = std::process::Command::new("kill").args(["-TERM", &daemon.0.id().to_string()]).status().unwrap();
    assert!(status.success());
    let mut stopping = false;
    let end = Instant::now() + Duration::from_secs(10);
    let code = loop {
        if let Ok(n) = socket.recv(&mut buf) {
            stopping |= String::from_utf8_lossy(&buf[..n]).lines().any(|l| l == "STOPPING=1");
        }
        if let Some(s) = daemon.0.try_wait().unwrap() {
            break s.code();
        }
        assert!(Instant::now() < end, "no exit after SIGTERM");
    };
    assert!(stopping, "no STOPPING=1");
    assert_eq!(code, Some(0), "a clean stop");
    eprintln!(
        "notify harness: READY after {:?}, {} WATCHDOG pings in {:?} (longest gap {longest:?}), STOPPING, exit 0",
        messages[ready].0,
        pings.len(),
        start.elapsed()
    );
}

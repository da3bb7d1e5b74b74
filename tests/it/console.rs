//! The operator console: the end-to-end browser run (playwright-core driving Debian's Chromium) against the daemon
//! on the demo config with its scenario switched off, then what the run left in the store and on the gate.

use std::net::TcpListener;
use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::Connection;

use crate::browser::{node, screenshot};
use crate::util::{Killed, sibi, wait_for_port};

/// config/demo.toml with absolute paths, a temporary state folder, an empty scenario and the console on `port`.
fn demo_config(dir: &Path, port: u16) -> std::path::PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let demo = std::fs::read_to_string(repo.join("demo.toml")).unwrap();
    std::fs::write(dir.join("quiet.toml"), "# no events: the console's simulator drives the devices\n").unwrap();
    let replace = |text: String, from: &str, to: String| {
        assert!(text.contains(from), "config/demo.toml no longer has {from}");
        text.replace(from, &to)
    };
    let text = replace(demo, "state_dir = \"../state/demo\"", format!("state_dir = {:?}", dir.join("state")));
    let text = replace(text, "file = \"demo-morning.toml\"", format!("file = {:?}", dir.join("quiet.toml")));
    let text = replace(text, "listen = \"127.0.0.1:8080\"", format!("listen = \"127.0.0.1:{port}\""));
    let text = replace(text, "roster = \"demo-roster.csv\"", format!("roster = {:?}", repo.join("demo-roster.csv")));
    let text = replace(
        text,
        "roster_key = \"demo-keys/roster.key\"",
        format!("roster_key = {:?}", repo.join("demo-keys/roster.key")),
    );
    let text = replace(
        text,
        "office_key = \"demo-keys/office-seal.pub\"",
        format!("office_key = {:?}", repo.join("demo-keys/office-seal.pub")),
    );
    let path = dir.join("demo.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn the_operator_console_end_to_end_in_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = demo_config(dir.path(), port);
    let mut daemon = Killed(sibi().args(["run", "--config", config.to_str().unwrap()]).spawn().unwrap());
    wait_for_port(port);
    let shots = screenshot("console");
    std::fs::create_dir_all(&shots).unwrap();
    let out = node("console.mjs", &[&format!("http://127.0.0.1:{port}"), shots.to_str().unwrap()]);
    let latency = out.lines().find(|l| l.starts_with("panel latency")).unwrap_or("").to_string();
    eprintln!("{latency}");
    for name in ["01-resident-pass", "03-fever-red", "05-visitor-registered", "07-vehicle-denied", "08-emergency"] {
        let png = std::fs::read(shots.join(format!("{name}.png"))).unwrap();
        assert!(png.starts_with(b"\x89PNG"), "{name}");
    }

    // A clean stop, then the record.
    let status = std::process::Command::new("kill").args(["-TERM", &daemon.0.id().to_string()]).status().unwrap();
    assert!(status.success());
    let end = Instant::now() + Duration::from_secs(10);
    while daemon.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < end, "the daemon did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
    let db = Connection::open(dir.path().join("state/sibi.db")).unwrap();
    let journal: Vec<(String, String)> = db
        .prepare("SELECT kind, detail FROM journal ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let actions: Vec<&str> = journal.iter().filter(|(k, _)| k == "operator_action").map(|(_, d)| d.as_str()).collect();
    assert!(actions.iter().all(|a| a.starts_with("demo: ")), "every action carries the operator: {actions:?}");
    for a in
        ["demo: mask worn", "demo: remeasure", "demo: vehicle start 鄂A12345 resident x2", "demo: emergency ambulance"]
    {
        assert!(actions.contains(&a), "{a} in {actions:?}");
    }
    assert_eq!(
        actions.iter().filter(|a| a.contains("register")).count(),
        3,
        "the refused form never got through (two by hand, one after a card tap)"
    );
    assert_eq!(journal.iter().filter(|(k, _)| k == "operator_login_refused").count(), 6);
    let rows: Vec<(String, String, Option<String>, String, i64)> = db
        .prepare("SELECT identity, verdict, plate, gate_action, is_final FROM entries ORDER BY seq")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let vehicle: Vec<_> = rows.iter().filter(|r| r.2.as_deref() == Some("鄂A12345")).collect();
    assert_eq!(vehicle.len(), 3, "two occupants and the vehicle: {rows:?}");
    assert!(vehicle.iter().all(|r| r.3 == "kept_closed"), "no occupant moves the gate: {vehicle:?}");
    assert_eq!((vehicle[2].0.as_str(), vehicle[2].1.as_str()), ("vehicle", "deny"));
    assert_eq!((vehicle[0].1.as_str(), vehicle[1].1.as_str()), ("pass", "deny"), "one green, one red occupant");
    // The relay opened for the resident, the registered visitor, the roster resident, the two card holders and the
    // ambulance only.
    let gate_log = std::fs::read_to_string(dir.path().join("state/gate-sim.log")).unwrap();
    assert_eq!(gate_log.matches("\"relay_open\"").count(), 6, "{gate_log}");
    // The card taps: the resident known by the roster's keyed hash, the visitor registered over his card's data.
    type CardRow = (String, String, String, Option<String>, bool, Option<String>);
    let cards: Vec<CardRow> = db
        .prepare(
            "SELECT category, verdict, holder_masked, destination, personal_sealed IS NOT NULL, note FROM entries
             WHERE identity = 'id_card' AND is_final = 1 ORDER BY seq",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        cards,
        vec![
            ("resident".into(), "pass".into(), "赵*兰".into(), Some("6栋102".into()), true, None),
            ("visitor".into(), "pass".into(), "周*国".into(), Some("3栋201".into()), true, None),
        ],
        "{rows:?}"
    );
    // The visitor's identifiers are sealed, never in clear.
    let bytes = std::fs::read(dir.path().join("state/sibi.db")).unwrap();
    assert!(!bytes.windows("13000000001".len()).any(|w| w == b"13000000001"), "the phone number in clear");
}

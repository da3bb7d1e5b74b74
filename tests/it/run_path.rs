//! The real `run` path with simulated devices and a temporary database: a scripted sequence of presentations, then
//! each resulting row and gate command, in order. And a clean stop on SIGTERM.

use std::time::{Duration, Instant};

use sibi::store::Store;

use crate::util::{Gate, gate_commands, sibi};

pub(crate) const SCENARIO: &str = r#"
[[event]]
at = 0.0
credential = { key = "P1", identity = "pass", category = "resident", holder = "王小华", frames = 30 }
[[event]]
at = 0.5
temperature = 36.5
[[event]]
at = 1.0
button = "mask_confirmed"

[[event]]
at = 2.0
credential = { key = "HC-red", identity = "health_code", category = "visitor", code = "red", holder = "周某某" }

[[event]]
at = 3.0
credential = { key = "P3", identity = "pass", category = "resident", holder = "陈伟" }
[[event]]
at = 3.5
temperature = 37.6
[[event]]
at = 4.0
operator = { mask = "worn" }
[[event]]
at = 5.0
temperature = 37.9

[[event]]
at = 6.0
credential = { key = "P4", identity = "pass", category = "resident", holder = "孙丽" }
[[event]]
at = 6.5
temperature = 36.4
[[event]]
at = 7.0
operator = { mask = "not_worn" }
[[event]]
at = 7.5
operator = { mask = "worn" }

[[event]]
at = 8.0
thermometer_fault = 0.2
[[event]]
at = 8.4
temperature = 36.6
[[event]]
at = 8.6
credential = { key = "P5", identity = "pass", category = "resident", holder = "郑某" }
"#;

#[test]
fn a_scripted_morning_gives_these_rows_and_gate_commands_in_order() {
    let gate = Gate::new(SCENARIO, "speed = 5\nexit_when_done = true", "session_timeout_secs = 1.0");
    let started = Instant::now();
    let summary = crate::util::run_to_end(&gate.config(), Duration::from_secs(30));
    assert!(summary.clean);
    assert!(started.elapsed() < Duration::from_secs(10));

    let store = Store::open(&gate.db(), "test-gate").unwrap();
    let rows = store.entries().unwrap();
    let got: Vec<(i64, &str, &str, bool, &str)> =
        rows.iter().map(|r| (r.seq, r.verdict.as_str(), r.rule.as_str(), r.is_final, r.gate_action.as_str())).collect();
    assert_eq!(
        got,
        vec![
            (1, "pass", "tier.resident", true, "opened"),
            (2, "deny", "code.red", true, "kept_closed"),
            (3, "refer", "temperature.fever", false, "kept_closed"),
            (4, "deny", "temperature.fever_confirmed", true, "kept_closed"),
            (5, "refer", "mask.not_worn", false, "kept_closed"),
            (6, "pass", "tier.resident", true, "opened"),
            (7, "refer", "mask.unchecked", true, "kept_closed"),
        ]
    );
    // One presentation per person; the 30 frames of P1 are one.
    let presentations: Vec<i64> = rows.iter().map(|r| r.presentation).collect();
    assert_eq!(presentations, vec![1, 2, 3, 3, 4, 4, 5]);
    assert_eq!(rows[0].holder_masked.as_deref(), Some("王*华"));
    assert_eq!(rows[3].temperature_centi, Some(3790));
    assert!(rows[3].message_zh.contains("发热门诊"));
    // P5's reading came before the code, during... after the thermometer came back; they walked away.
    assert_eq!(rows[6].temperature_centi, Some(3660));
    assert_eq!(rows[6].note.as_deref(), Some("walked_away"));

    // The gate commands that carry each verdict, in order: open on pass, red on deny, amber on refer.
    let cmds = gate_commands(&gate.gate_log());
    let text = std::fs::read_to_string(gate.gate_log()).unwrap();
    let decisive: Vec<String> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["command"].clone())
        .filter_map(|c| match c["cmd"].as_str() {
            Some("relay_open") => Some(format!("open {}", c["seq"])),
            Some("lights") if c["red"] == true => Some("red".into()),
            Some("lights") if c["amber"] == true => Some("amber".into()),
            _ => None,
        })
        .collect();
    assert_eq!(decisive, vec!["open 1", "red", "amber", "red", "amber", "open 6", "amber"]);
    // What the gate said, in order (the simulated voice logs each prompt it would play).
    let voice: Vec<String> = std::fs::read_to_string(gate.voice_log())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["voice"].as_str().unwrap().to_string())
        .collect();
    // Each person hears what to do next, then their verdict; the same words are not repeated to the same person,
    // and nothing is said to someone who has walked away (P5).
    assert_eq!(
        voice,
        vec![
            "measure",
            "wear_mask",
            "pass_normal", // P1
            "denied",      // red code
            "measure",
            "remeasure",
            "denied", // P3: fever, confirmed
            "measure",
            "wear_mask",
            "pass_normal",    // P4 (no mask, then mask)
            "wait_for_staff", // thermometer fault
            "wear_mask",      // P5, who then walks away
        ]
    );
    // Every opening closes after its pulse, and the gate ends safe.
    let opens = cmds.iter().filter(|(c, _)| c == "relay_open").count();
    let closes = cmds.iter().filter(|(c, _)| c == "relay_close").count();
    assert_eq!((opens, closes), (2, 2));
    assert_eq!(cmds.last().map(|(c, _)| c.as_str()), Some("safe"));

    let journal = store.journal_lines().unwrap();
    let kinds: Vec<&str> = journal.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(kinds.first(), Some(&"start"));
    assert!(kinds.contains(&"device_fault") && kinds.contains(&"device_restored"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"stop"));
}

#[test]
fn sigterm_closes_the_open_presentation_puts_the_gate_safe_and_exits_0() {
    // A code is shown and nothing else happens: the presentation is open when the stop comes.
    let scenario = "[[event]]\nat = 0.0\ncredential = { key = \"P1\", identity = \"pass\", category = \"resident\" }\n\
                    [[event]]\nat = 100.0\nbutton = \"call_help\"\n";
    let gate = Gate::new(scenario, "speed = 1", "session_timeout_secs = 60");
    let mut child = sibi()
        .args(["run", "--config", gate.config().to_str().unwrap()])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until it has started (the journal has its start line).
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY;
        if let Ok(db) = rusqlite::Connection::open_with_flags(gate.db(), flags) {
            let started: rusqlite::Result<i64> = db.query_row("SELECT COUNT(*) FROM journal", [], |r| r.get(0));
            if started.unwrap_or(0) > 0 {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    let status = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let code = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s.code();
        }
        assert!(t.elapsed() < Duration::from_secs(6), "stopped within the grace period");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(code, Some(0));
    let store = Store::open(&gate.db(), "t").unwrap();
    let rows = store.entries().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].verdict.as_str(), rows[0].note.as_deref()), ("refer", Some("shutdown")));
    assert_eq!(gate_commands(&gate.gate_log()).last().map(|(c, _)| c.clone()), Some("safe".into()));
    assert_eq!(store.journal_lines().unwrap().last().map(|(k, _)| k.clone()), Some("stop".into()));
}

//! The daily report over a real run: counts, fevers, codes, faults, and the zero report.

use crate::util::{Gate, run};

fn day_of_first_entry(gate: &Gate) -> String {
    let store = sibi::store::Store::open(&gate.db(), "test-gate").unwrap();
    sibi::domain::Timestamp(store.entries().unwrap()[0].at_ms).to_rfc3339()[..10].to_string()
}

#[test]
fn the_morning_is_counted_and_is_not_a_zero_report() {
    let gate = Gate::new(crate::run_path::SCENARIO, "speed = 5\nexit_when_done = true", "session_timeout_secs = 1.0");
    assert_eq!(run(&["run", "--config", gate.config().to_str().unwrap()]).status.code(), Some(0));
    let date = day_of_first_entry(&gate);
    let csv = gate.dir.path().join("report.csv");
    let out = run(&[
        "report",
        "--config",
        gate.config().to_str().unwrap(),
        "--date",
        &date,
        "--json",
        "--csv",
        csv.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["total"], 5, "{r}");
    assert_eq!(r["by_verdict"], serde_json::json!({"deny": 2, "pass": 2, "refer": 1}));
    assert_eq!((r["fevers"].as_i64(), r["red_codes"].as_i64()), (Some(1), Some(1)));
    assert_eq!(r["by_reason"]["code.red"], 1);
    assert_eq!(r["device_faults"].as_array().unwrap().len(), 1, "the thermometer fault");
    assert_eq!(r["zero_report"], false);
    let csv = std::fs::read_to_string(csv).unwrap();
    assert!(csv.starts_with("\u{feff}gate,date,section,key,count\n"));
    assert!(csv.contains(&format!("test-gate,{date},verdict,deny,2\n")), "{csv}");
    // The same as a workbook.
    let xlsx = gate.dir.path().join("report.xlsx");
    let config = gate.config();
    let args = ["report", "--config", config.to_str().unwrap(), "--date", &date, "--out", xlsx.to_str().unwrap()];
    assert_eq!(run(&args).status.code(), Some(0));
    let strings = crate::util::xlsx_strings(&xlsx);
    for s in ["gate", "test-gate", "verdict", "deny", "fevers"] {
        assert!(strings.iter().any(|x| x == s), "{s} in {strings:?}");
    }
    // Text, in Chinese, for the office.
    let out = run(&["report", "--config", gate.config().to_str().unwrap(), "--date", &date]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("日报告") && text.contains("发热 1") && !text.contains("零报告"), "{text}");
    // A bad date is a usage error.
    let out = run(&["report", "--config", gate.config().to_str().unwrap(), "--date", "2026-13-01"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_day_of_ordinary_passes_is_a_zero_report() {
    let scenario = r#"
[[event]]
at = 0.0
credential = { key = "P1", identity = "pass", category = "resident", holder = "王小华" }
[[event]]
at = 0.2
temperature = 36.5
[[event]]
at = 0.3
button = "mask_confirmed"
"#;
    let gate = Gate::new(scenario, "speed = 5\nexit_when_done = true", "session_timeout_secs = 1.0");
    assert_eq!(run(&["run", "--config", gate.config().to_str().unwrap()]).status.code(), Some(0));
    let date = day_of_first_entry(&gate);
    let out = run(&["report", "--config", gate.config().to_str().unwrap(), "--date", &date]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("零报告（无异常）") && text.contains("通行记录 1 条"), "{text}");
}

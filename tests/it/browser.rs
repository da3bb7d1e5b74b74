//! Pages in a real browser: playwright-core driving Debian's Chromium (installed by `scripts/setup`), scripts under
//! `tests/browser/`. Screenshots land in `target/screenshots/`.

use std::path::{Path, PathBuf};
use std::process::Command;

use ed25519_dalek::SigningKey;
use sibi::store::Store;
use sibi::sync::SyncClient;

use crate::sync_office::{office, settings};

/// Run `tests/browser/<script>` with `args`; panics with its output if it fails. Returns what it printed.
pub(crate) fn node(script: &str, args: &[&str]) -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    assert!(
        dir.join("node_modules/playwright-core").exists(),
        "playwright-core is not installed in tests/browser: run scripts/setup"
    );
    let out = Command::new("node").arg(dir.join(script)).args(args).output().expect("node (run scripts/setup)");
    assert!(
        out.status.success(),
        "{script}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Where a test's screenshot goes.
pub(crate) fn screenshot(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_dir_all(&path);
    path
}

#[test]
fn the_dashboard_in_a_browser_flags_the_gate_that_missed_its_report() {
    let dir = tempfile::tempdir().unwrap();
    let (ka, kb) = (SigningKey::from_bytes(&[4u8; 32]), SigningKey::from_bytes(&[5u8; 32]));
    let (addr, office) = office(dir.path(), &[("gate-a", &ka), ("gate-b", &kb)]);
    let t0 = sibi::domain::Timestamp(1_790_000_000_000);
    let date = t0.to_rfc3339()[..10].to_string();
    // gate-a sends its entries and (late) its report; gate-b sends nothing.
    let mut a = Store::open(&dir.path().join("a.db"), "gate-a").unwrap();
    a.fill_synthetic(20, t0).unwrap();
    sibi::sync::queue_report(&mut a, "gate-a", "c1", &date).unwrap();
    let client = SyncClient::new(&settings(format!("http://{addr}")), "gate-a", ka);
    client.drain(&mut a).unwrap();
    assert_eq!(client.send_reports(&mut a).unwrap(), 1);
    // The office raised the community to high.
    let changes = sibi::bundle::Changes {
        tier: Some(sibi::bundle::BundleTier { tier: sibi::domain::Tier::High, effective: t0.to_rfc3339() }),
        ..Default::default()
    };
    office.with_db(|db| db.publish(&SigningKey::from_bytes(&[6u8; 32]), "c1", &changes, t0)).unwrap();

    let (start, _) = sibi::report::day_bounds(&date).unwrap();
    let next_morning = start.plus_ms(34 * 3_600_000);
    let url = format!("http://{addr}/?at={}", next_morning.to_rfc3339().replace('+', "%2B"));
    let shot = screenshot("office-dashboard-missing-report.png");
    node("dashboard.mjs", &[&url, "gate-b 东门", "gate-a 东门", shot.to_str().unwrap()]);
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "a real screenshot");
}

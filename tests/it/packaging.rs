//! What goes onto the box: the systemd units' security exposure (≤ 2.0 by `systemd-analyze security --offline`), the
//! package's file list against the repository, the udev names against the example config, and the maintainer
//! scripts' syntax. (Building the .deb and installing it into a Debian root is `scripts/package` and
//! `scripts/deb-chroot-check`, run by hand: see README.)

use std::process::Command;

use crate::util::repo;

#[test]
fn both_units_score_at_most_2_0_and_parse_cleanly() {
    for unit in ["sibi.service", "sibi-office.service"] {
        let path = repo().join("systemd").join(unit);
        let out = Command::new("systemd-analyze")
            .args(["security", "--offline=true", "--no-pager"])
            .arg(&path)
            .output()
            .expect("systemd-analyze (scripts/setup installs systemd)");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(!text.contains("Unknown key") && !text.contains("Failed to parse"), "{unit}: {text}");
        let score: f64 = text
            .lines()
            .find_map(|l| l.split("Overall exposure level for ").nth(1))
            .and_then(|rest| rest.split(':').nth(1))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{unit}: no score in {text}"));
        eprintln!("{unit}: exposure {score}");
        assert!(score <= 2.0, "{unit}: exposure {score} > 2.0");
        let unit_text = std::fs::read_to_string(&path).unwrap();
        for key in ["Type=notify", "WatchdogSec=", "Restart=always", "DevicePolicy=closed", "ProtectSystem=strict"] {
            assert!(unit_text.contains(key), "{unit}: {key}");
        }
    }
    let gate = std::fs::read_to_string(repo().join("systemd/sibi.service")).unwrap();
    assert!(gate.contains("SupplementaryGroups=video dialout gpio audio"));
    // The stop timeout outlasts the daemon's own shutdown grace.
    let stop: u64 = gate.lines().find_map(|l| l.strip_prefix("TimeoutStopSec=")).unwrap().parse().unwrap();
    let config = sibi::config::load(&repo().join("config/gate.example.toml")).unwrap();
    assert!(std::time::Duration::from_secs(stop) > config.gate.shutdown_grace);
}

#[test]
fn the_package_ships_what_the_box_needs() {
    let manifest: toml::Value = toml::from_str(&std::fs::read_to_string(repo().join("Cargo.toml")).unwrap()).unwrap();
    let deb = &manifest["package"]["metadata"]["deb"];
    let assets: Vec<(String, String)> = deb["assets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a[0].as_str().unwrap().to_string(), a[1].as_str().unwrap().to_string()))
        .collect();
    for dest in [
        "usr/bin/",
        "etc/sibi/gate.toml",
        "lib/systemd/system/",
        "lib/udev/rules.d/",
        "usr/share/sibi/voice/",
        "usr/share/sibi/models/",
        "usr/share/doc/sibi/examples/office.toml",
    ] {
        assert!(assets.iter().any(|(_, d)| d == dest), "{dest} not packaged");
    }
    for (src, _) in &assets {
        if src.starts_with("target/") {
            continue; // built by scripts/package
        }
        let matches = if let Some(dir) = src.strip_suffix("/*.wav") {
            std::fs::read_dir(repo().join(dir)).unwrap().count()
        } else {
            usize::from(repo().join(src).exists())
        };
        assert!(matches > 0, "{src} missing");
    }
    assert_eq!(deb["conf-files"].as_array().unwrap()[0].as_str(), Some("/etc/sibi/gate.toml"));
    // The udev names are the ones the example config uses.
    let rules = std::fs::read_to_string(repo().join("hardware/99-sibi.rules")).unwrap();
    let example = std::fs::read_to_string(repo().join("config/gate.example.toml")).unwrap();
    for name in ["sibi-thermometer", "sibi-camera"] {
        assert!(rules.contains(&format!("SYMLINK+=\"{name}\"")), "{name} rule");
        assert!(example.contains(&format!("/dev/{name}")), "{name} in the example config");
    }
    for script in ["postinst", "prerm", "postrm"] {
        let status = Command::new("sh").arg("-n").arg(repo().join("debian").join(script)).status().unwrap();
        assert!(status.success(), "{script} does not parse");
    }
}

/// The pure core (`domain`, `policy`, `checkpoint`) imports only the core: nothing of config, privacy, store, hw,
/// sync, console, app or office, so no import circle runs through it.
#[test]
fn the_core_imports_only_the_core() {
    let src = repo().join("src");
    let mut files = vec![src.join("domain.rs"), src.join("checkpoint.rs")];
    for e in std::fs::read_dir(src.join("policy")).unwrap().flatten() {
        files.push(e.path());
    }
    let outside = ["config", "privacy", "store", "hw", "sync", "console", "app", "office", "credential", "mask"];
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for m in outside {
                assert!(
                    !code.contains(&format!("crate::{m}::")) && !code.contains(&format!("crate::{m};")),
                    "{}:{}: the core uses crate::{m}: {line}",
                    f.display(),
                    n + 1
                );
            }
        }
    }
    assert!(files.len() >= 4);
}

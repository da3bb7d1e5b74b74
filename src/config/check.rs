//! `sibi check-config`: load a config and say, line by line, what the gate would run.

use std::path::Path;

use crate::cli::{Failure, Outcome};

/// What `check-config` prints for a usable config: one line per part, the gate first.
pub fn describe(path: &Path, c: &super::Config, now: crate::domain::Timestamp) -> Vec<String> {
    let mut out = Vec::new();
    let tier = c.policy.tier_at(now);
    out.push(format!("ok: {}", path.display()));
    out.push(format!("  gate        {} ({}), community {}", c.gate.id, c.gate.name, c.gate.community));
    out.push(format!("  state       {}", c.gate.state_dir.display()));
    out.push(format!("  database    {}", c.db_path.display()));
    out.push(format!(
        "  policy      {}; threshold {}; tier now {} since {}",
        c.policy.version,
        c.policy.fever_threshold,
        tier.tier.as_str(),
        tier.effective
    ));
    for line in c.devices.describe() {
        out.push(format!("  {line}"));
    }
    out.push(match &c.mask {
        None => "  mask        by the operator (no [mask] section)".to_string(),
        Some(m) => match crate::mask::Models::locate(m.models.as_deref()) {
            Ok(dir) => format!("  mask        by the camera, models in {}", dir.display()),
            Err(e) => format!("  mask        by the operator for now: {e}"),
        },
    });
    if c.devices.idcard.is_some() {
        let health = if c.credentials.gateway.is_some() { "by ID through the gateway" } else { "unverified" };
        out.push(format!(
            "  id cards    {} residents on the roster by keyed hash; health status {health}",
            c.idcard.roster.len()
        ));
    }
    out.push(match &c.sync {
        Some(s) => format!(
            "  sync        {} every {} s, report at {}:00, policy bundles {}; personal data {}, kept {} days",
            s.settings.office,
            s.settings.interval_secs,
            s.settings.report_hour,
            if s.office_key.is_some() { "verified with the office key" } else { "not fetched (no office_key)" },
            if c.seal_key.is_some() { "sealed to the office" } else { "not kept (masks only)" },
            c.retention_ms / 86_400_000
        ),
        None => "  sync        none: records stay on this gate".to_string(),
    });
    if let Some(s) = &c.script {
        out.push(format!("  script      {} ({} events, speed {})", s.file.display(), s.script.events.len(), s.speed));
    }
    if let Some(console) = &c.console {
        out.push(format!(
            "  console     http://{}/ ({} operator(s), lock after {} wrong PINs for {} s, {} roster entries{})",
            console.listen,
            console.operators.len(),
            console.lockout_failures,
            console.lockout.as_secs(),
            console.roster.len(),
            if console.simulator { ", simulator on" } else { "" }
        ));
    }
    out
}

/// `sibi check-config FILE`: exit 0 with the description, or 2 with every problem.
pub fn command(path: &Path) -> Outcome {
    let c = super::load(path).map_err(|e| Failure::Usage(e.to_string()))?;
    for line in describe(path, &c, crate::hw::now()) {
        println!("{line}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_config_is_described_part_by_part() {
        let path = Path::new("config/demo.toml");
        let c = super::super::load(path).expect("the demo config loads");
        let lines = describe(path, &c, crate::domain::Timestamp(1_764_547_200_000));
        assert_eq!(lines[0], "ok: config/demo.toml");
        for part in ["gate", "database", "policy", "mask", "sync", "console"] {
            assert!(lines.iter().any(|l| l.trim_start().starts_with(part)), "no `{part}` line in {lines:#?}");
        }
    }

    #[test]
    fn a_missing_config_is_a_usage_failure() {
        assert_eq!(command(Path::new("config/no-such.toml")).unwrap_err().status(), 2);
    }
}

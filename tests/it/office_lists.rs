//! The office's lists reach the gate: a bundle published with revoked passes, the home-quarantine list, the courier
//! registry, a health-code issuer and a DCC signer is fetched by the running daemon, verified, journaled and applied
//! to the credential checks; a later bundle releases someone from quarantine. The dashboard shows the tier.

use std::net::TcpListener;
use std::path::Path;

use base64::Engine;
use serde_json::Value;
use sibi::credential::pass::Pass;
use sibi::domain::Category;
use sibi::store::Store;

use crate::util::{Gate, Killed, run, sibi};

fn pass(key: &ed25519_dalek::SigningKey, id: &str, category: Category) -> String {
    Pass {
        community: "test-community".into(),
        id: id.into(),
        category,
        holder: "王五".into(),
        valid_from: 0,
        valid_until: 4_000_000_000,
    }
    .encode(key)
}

fn verify(config: &Path, text: &str, at: Option<&str>) -> Value {
    let mut args = vec!["code", "verify", "--config", config.to_str().unwrap(), "--text", text];
    if let Some(at) = at {
        args.extend(["--at", at]);
    }
    serde_json::from_slice(&run(&args).stdout).unwrap_or(Value::Null)
}

#[test]
fn the_offices_lists_reach_the_gates_credential_checks() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    for name in ["gate", "office", "community"] {
        assert_eq!(run(&["keygen", "--out", keys.to_str().unwrap(), "--name", name]).status.code(), Some(0));
    }
    let community = sibi::credential::pass::read_signing_key(&keys.join("community.key")).unwrap();
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let office_toml = dir.path().join("office.toml");
    std::fs::write(
        &office_toml,
        format!(
            "[office]\nlisten = \"127.0.0.1:{port}\"\ndatabase = \"office.db\"\nsigning_key = \"keys/office.key\"\n\n\
             [[gate]]\nid = \"test-gate\"\nkey = \"keys/gate.pub\"\ncommunity = \"test-community\"\n"
        ),
    )
    .unwrap();
    // `sibi office publish` for this office and community, with `changes`.
    let publish = |changes: &[&str]| {
        let mut args =
            vec!["office", "publish", "--config", office_toml.to_str().unwrap(), "--community", "test-community"];
        args.extend_from_slice(changes);
        run(&args)
    };
    // A DCC signer from the public test vectors, delivered by the office instead of the gate's config.
    let vector: Option<Value> = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/testdata/dcc/AT/2DCode/raw/1.json"),
    )
    .ok()
    .map(|t| serde_json::from_str(&t).unwrap());
    let mut first = vec![
        "--tier",
        "medium",
        "--effective",
        "2020-01-01T00:00:00+08:00",
        "--revoke",
        "XFL-2",
        "--quarantine",
        "XFL-3",
        "--courier",
        "XFL-4",
        "--issuer",
        "测试健康码,000000,HCT:",
    ];
    let signer = dir.path().join("signer.der");
    if let Some(v) = &vector {
        let der =
            base64::engine::general_purpose::STANDARD.decode(v["TESTCTX"]["CERTIFICATE"].as_str().unwrap()).unwrap();
        std::fs::write(&signer, der).unwrap();
        first.extend(["--dcc-signer", signer.to_str().unwrap()]);
    }
    let out = publish(&first);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let _server = Killed(sibi().args(["office", "serve", "--config", office_toml.to_str().unwrap()]).spawn().unwrap());
    crate::util::wait_for_port(port);

    let sync = format!(
        "exit_when_done = true\n\n[sync]\noffice = \"http://127.0.0.1:{port}\"\ngate_key = {:?}\noffice_key = {:?}\n\
         interval_secs = 0.3\nsettle_ms = 0\n\n[credentials]\npass_keys = [{:?}]\n",
        keys.join("gate.key").display().to_string(),
        keys.join("office.pub").display().to_string(),
        keys.join("community.pub").display().to_string(),
    );
    let gate = Gate::new("[[event]]\nat = 2.0\ntemperature = 36.5\n", &sync, "session_timeout_secs = 5");
    let config = gate.config();
    // Before the office has spoken: only the config's trust.
    assert_eq!(verify(&config, &pass(&community, "XFL-2", Category::Resident), None)["valid"], true);
    assert_eq!(verify(&config, "HCT:abc", None)["format"], "unknown");

    let out = run(&["run", "--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let journal = Store::open(&gate.db(), "test-gate").unwrap().journal_lines().unwrap();
    let signers = usize::from(vector.is_some());
    let applied = format!(
        "applied version 1: 1 tier change(s), 1 revoked, 1 quarantined, 1 courier(s), 1 issuer(s), {signers} DCC signer(s)"
    );
    assert!(journal.iter().any(|(k, d)| k == "policy_bundle" && *d == applied), "{journal:?}");

    // `code verify --config` checks as the gate now does, with the office's lists.
    let revoked = verify(&config, &pass(&community, "XFL-2", Category::Resident), None);
    assert_eq!((revoked["valid"].as_bool(), revoked["stage"].as_str()), (Some(false), Some("revoked")), "{revoked}");
    let quarantined = verify(&config, &pass(&community, "XFL-3", Category::Resident), None);
    assert_eq!((quarantined["valid"].as_bool(), quarantined["quarantined"].as_bool()), (Some(true), Some(true)));
    let courier = verify(&config, &pass(&community, "XFL-4", Category::Courier), None);
    assert_eq!(courier["courier_registered"], true, "{courier}");
    let plain = verify(&config, &pass(&community, "XFL-5", Category::Resident), None);
    assert!(plain["quarantined"].is_null() && plain["courier_registered"].is_null(), "{plain}");
    assert_eq!(verify(&config, "HCT:abc", None)["format"], "health_code", "the office's issuer is known now");
    if let Some(v) = &vector {
        let dcc = verify(&config, v["PREFIX"].as_str().unwrap(), Some("2021-06-01T00:00:00Z"));
        assert_eq!((dcc["format"].as_str(), dcc["valid"].as_bool()), (Some("dcc"), Some(true)), "{dcc}");
    }

    // The dashboard shows the community's tier as published.
    let page = ureq::get(&format!("http://127.0.0.1:{port}/")).call().unwrap().body_mut().read_to_string().unwrap();
    assert!(page.contains("<td class=\"tier-medium\">中风险</td>"), "{page}");

    // Released from quarantine in the next bundle; the gate follows.
    let out = publish(&["--release", "XFL-3"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(run(&["run", "--config", config.to_str().unwrap()]).status.code(), Some(0));
    let released = verify(&config, &pass(&community, "XFL-3", Category::Resident), None);
    assert!(released["valid"] == true && released["quarantined"].is_null(), "{released}");
    let still = verify(&config, &pass(&community, "XFL-2", Category::Resident), None);
    assert_eq!(still["stage"], "revoked", "revocations stay");

    // The health authority's list, uploaded as a CSV with a header: it replaces the quarantine list as a whole.
    let list = dir.path().join("quarantine.csv");
    std::fs::write(&list, "\u{feff}通行证编号,楼栋\nXFL-6,3栋\n\n# 新增\nXFL-7,5栋\nXFL-6,3栋\n").unwrap();
    let upload = |file: &Path| publish(&["--quarantine-list", file.to_str().unwrap()]);
    let out = upload(&list);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("2 quarantined"), "{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(run(&["run", "--config", config.to_str().unwrap()]).status.code(), Some(0));
    for (id, expected) in [("XFL-6", Some(true)), ("XFL-7", Some(true)), ("XFL-5", None)] {
        let v = verify(&config, &pass(&community, id, Category::Resident), None);
        assert_eq!(v["quarantined"].as_bool(), expected, "{id}: {v}");
    }
    // A garbled list is refused, naming the line, and nothing is published.
    std::fs::write(&list, "XFL-6\nXFL 8 楼\n").unwrap();
    let out = upload(&list);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 2"), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(run(&["run", "--config", config.to_str().unwrap()]).status.code(), Some(0));
    let v = verify(&config, &pass(&community, "XFL-7", Category::Resident), None);
    assert_eq!(v["quarantined"], true, "the last good list stays: {v}");
    // Nothing to publish is a usage error.
    assert_eq!(publish(&[]).status.code(), Some(2));
}

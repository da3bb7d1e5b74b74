//! `sibi decide` exactly as DESIGN.md §6 says: input schema, output object, exit codes.

use serde_json::Value;

use crate::util::{repo, run};

fn decide(case: &str, extra: &[&str]) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("case.json");
    std::fs::write(&input, case).unwrap();
    let config = repo().join("config/demo.toml");
    let mut args = vec!["decide", "--config", config.to_str().unwrap(), "--input", input.to_str().unwrap()];
    args.extend_from_slice(extra);
    run(&args)
}

fn ok(case: &str) -> Value {
    let out = decide(case, &[]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.trim().lines().count(), 1, "one JSON object on one line: {text}");
    serde_json::from_str(&text).unwrap()
}

#[test]
fn the_output_object_has_the_contract_fields() {
    let v = ok(r#"{ "tier": "low", "direction": "in", "vehicle": null,
        "people": [ { "category": "resident", "identity": "pass", "code": "none", "temperature": 36.6,
        "retest": false, "mask": "worn", "quarantined": false, "from_risk_area": false, "inbound": false,
        "courier_registered": false, "visitor_registered": false } ] }"#);
    assert_eq!(v["verdict"], "pass");
    assert_eq!(v["rule"], "tier.resident");
    let p = &v["people"][0];
    assert_eq!(p["verdict"], "pass");
    assert_eq!(p["rule"], "tier.resident");
    assert_eq!(p["reasons"], serde_json::json!(["tier.resident"]));
    assert_eq!(p["musts"], serde_json::json!({"identity": "asked", "temperature": "normal", "mask": "worn"}));
    assert!(p["actions"].as_array().unwrap().is_empty());
    assert_eq!(p["message_zh"], "居民：体温正常，请通行");
}

#[test]
fn verdicts_follow_the_tier_and_the_tier_defaults_to_the_configured_one() {
    let case = |tier: &str| {
        format!(
            r#"{{ {tier} "direction": "in", "people": [ {{ "category": "visitor", "identity": "health_code",
            "code": "green", "temperature": 36.5, "mask": "worn", "visitor_registered": true }} ] }}"#
        )
    };
    assert_eq!(ok(&case(""))["verdict"], "pass", "demo.toml is low tier");
    assert_eq!(ok(&case(r#""tier": "medium","#))["rule"], "tier.medium.visitor");
    assert_eq!(ok(&case(r#""tier": "high","#))["verdict"], "deny");
    let fever = ok(r#"{"direction":"in","people":[{"category":"resident","identity":"pass","temperature":37.3,
        "retest":true,"mask":"worn"}]}"#);
    assert_eq!(fever["verdict"], "deny");
    assert_eq!(fever["people"][0]["actions"], serde_json::json!(["fever_clinic", "notify_community_doctor"]));
    assert_eq!(fever["people"][0]["musts"]["temperature"], "fever");
}

#[test]
fn a_vehicle_with_a_red_code_occupant_is_denied() {
    let v = ok(r#"{"tier":"low","direction":"in","vehicle":{"plate":"鄂A12345","category":"resident"},
        "people":[{"category":"resident","identity":"pass","temperature":36.5,"mask":"worn"},
                  {"category":"visitor","identity":"health_code","code":"red","temperature":36.5,"mask":"worn"}]}"#);
    assert_eq!((v["verdict"].as_str(), v["rule"].as_str()), (Some("deny"), Some("vehicle.occupant_denied")));
    assert_eq!(v["people"][1]["rule"], "code.red");
}

#[test]
fn pretty_output_is_the_same_object() {
    let case = r#"{"direction":"out","people":[{"category":"visitor","identity":"dcc","code":"green","temperature":36.5,"mask":"worn"}]}"#;
    let compact = ok(case);
    let out = decide(case, &["--pretty"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.lines().count() > 5);
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), compact);
}

#[test]
fn bad_input_exits_2_naming_the_field() {
    let cases = [
        ("{ not json", "input"),
        (r#"{"direction":"in","people":[{"category":"resident","code":"purple"}]}"#, "people[0].code"),
        (r#"{"direction":"sideways","people":[{"category":"resident"}]}"#, "direction"),
        (r#"{"direction":"in","people":[{"category":"resident","temperature":-36.5}]}"#, "people[0].temperature"),
        (r#"{"direction":"in","people":[]}"#, "people"),
        (r#"{"direction":"in","people":[{"category":"resident","mask":"maybe"}]}"#, "people[0].mask"),
        (r#"{"tier":"extreme","direction":"in","people":[{"category":"resident"}]}"#, "tier"),
    ];
    for (case, field) in cases {
        let out = decide(case, &[]);
        assert_eq!(out.status.code(), Some(2), "{case}");
        assert!(out.stdout.is_empty(), "{case}: nothing on stdout");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&format!("{field}:")), "{case}: {err}");
    }
}

#[test]
fn a_missing_input_file_or_a_bad_config_exits_2() {
    let out = run(&["decide", "--config", "config/demo.toml", "--input", "/nonexistent/case.json"]);
    assert_eq!(out.status.code(), Some(2));
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "[policy]\nfever_threshold = 36.0\n").unwrap();
    let input = dir.path().join("c.json");
    std::fs::write(&input, r#"{"direction":"in","people":[{"category":"resident"}]}"#).unwrap();
    let out = run(&["decide", "--config", cfg.to_str().unwrap(), "--input", input.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("below 37.0"));
}

/// `identity: "id_card"` (DESIGN.md §6): a resident who tapped their card, with the status the gateway gave; and `--at`
/// in the ISO 8601 forms of public test data.
#[test]
fn an_id_card_is_an_identity_and_at_takes_the_iso_forms() {
    let case = |code: &str| {
        format!(
            r#"{{ "tier": "low", "direction": "in", "people": [ {{ "category": "resident", "identity": "id_card",
            "code": "{code}", "temperature": 36.5, "mask": "worn" }} ] }}"#
        )
    };
    let v = ok(&case("green"));
    assert_eq!((v["verdict"].as_str(), v["people"][0]["musts"]["identity"].as_str()), (Some("pass"), Some("asked")));
    assert_eq!(ok(&case("unverified"))["rule"], "code.unverified", "offline: the operator looks");
    assert_eq!(ok(&case("red"))["verdict"], "deny");
    for at in ["2026-11-25T08:00:00+0800", "2026-11-25T00:00:00", "2026-11-25T00:00:00.5Z"] {
        let out = decide(&case("green"), &["--at", at]);
        assert_eq!(out.status.code(), Some(0), "--at {at}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let out = decide(&case("green"), &["--at", "25/11/2026"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("RFC 3339"));
}

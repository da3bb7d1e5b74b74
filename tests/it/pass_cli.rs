//! The offline lane for residents without a smartphone: `sibi keygen`, `sibi pass issue`, and the printed card's QR
//! code read back and verified by `sibi code verify`.

use serde_json::Value;

use crate::util::run;

fn verify(png: &str, key: &str, at: &str) -> (Option<i32>, Value) {
    let out = run(&["code", "verify", "--image", png, "--trust", key, "--at", at]);
    (out.status.code(), serde_json::from_slice(&out.stdout).unwrap_or(Value::Null))
}

#[test]
fn a_printed_pass_is_read_back_and_verified_and_forgeries_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = |p: &str| dir.path().join(p).to_str().unwrap().to_string();
    assert_eq!(run(&["keygen", "--out", &d("keys")]).status.code(), Some(0));
    assert_eq!(run(&["keygen", "--out", &d("keys")]).status.code(), Some(2), "never overwrites a key");
    assert_eq!(run(&["keygen", "--out", &d("forger"), "--name", "community"]).status.code(), Some(0));
    let issue = |key: &str, out: &str| {
        run(&[
            "pass",
            "issue",
            "--key",
            key,
            "--community",
            "xingfuli",
            "--community-name",
            "幸福里小区",
            "--id",
            "XFL-0007",
            "--holder",
            "李建国",
            "--from",
            "2026-11-01",
            "--until",
            "2027-10-31",
            "--out",
            out,
        ])
    };
    let out = issue(&d("keys/community.key"), &d("card.svg"));
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let svg = std::fs::read_to_string(d("card.svg")).unwrap();
    assert!(svg.contains("居民通行证") && svg.contains("李*国") && !svg.contains("李建国"));

    let (code, v) = verify(&d("card.png"), &d("keys/community.pub"), "2026-12-01T08:00:00+08:00");
    assert_eq!((code, v["format"].as_str(), v["valid"].as_bool()), (Some(0), Some("pass"), Some(true)), "{v}");
    assert_eq!((v["holder"].as_str(), v["category"].as_str()), (Some("李*国"), Some("resident")));
    let (code, v) = verify(&d("card.png"), &d("keys/community.pub"), "2027-11-01T08:00:00+08:00");
    assert_eq!((code, v["stage"].as_str()), (Some(1), Some("expired")));
    // A card signed with another key is a forgery.
    issue(&d("forger/community.key"), &d("forged.svg"));
    let (code, v) = verify(&d("forged.png"), &d("keys/community.pub"), "2026-12-01T08:00:00+08:00");
    assert_eq!((code, v["stage"].as_str()), (Some(1), Some("signature")));
    // Bad arguments.
    assert_eq!(issue(&d("keys/community.pub"), &d("x.svg")).status.code(), Some(2), "a public key cannot sign");
    let out = run(&[
        "pass",
        "issue",
        "--key",
        &d("keys/community.key"),
        "--community",
        "c",
        "--id",
        "1",
        "--holder",
        "王五",
        "--until",
        "someday",
        "--out",
        &d("y.svg"),
    ]);
    assert_eq!(out.status.code(), Some(2));
}

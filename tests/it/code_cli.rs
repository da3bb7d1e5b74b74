//! `sibi code scan` and `sibi code verify`, exactly as DESIGN.md §6 says.

use std::path::Path;

use base64::Engine;
use serde_json::Value;

use crate::util::run;

fn qr_png(dir: &Path, name: &str, text: &str) -> String {
    let gray = sibi::credential::qr::render(text, 4).unwrap();
    let path = dir.join(name);
    gray.save(&path).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn scan_prints_one_json_line_per_image_and_exits_2_on_an_unreadable_file() {
    let dir = tempfile::tempdir().unwrap();
    let a = qr_png(dir.path(), "a.png", "HC-TOKEN-ABC123");
    let blank = dir.path().join("blank.png");
    image::GrayImage::from_pixel(80, 60, image::Luma([255])).save(&blank).unwrap();
    let junk = dir.path().join("junk.png");
    std::fs::write(&junk, b"not an image").unwrap();
    for decoder in ["zxing", "rqrr"] {
        let out = run(&["code", "scan", "--decoder", decoder, &a, blank.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(0), "{decoder}");
        let lines: Vec<Value> =
            String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["file"], a.as_str());
        assert_eq!(lines[0]["codes"], serde_json::json!(["HC-TOKEN-ABC123"]));
        assert!(lines[0]["ms"].as_f64().unwrap() >= 0.0);
        assert_eq!(lines[1]["codes"], serde_json::json!([]));
    }
    let out = run(&["code", "scan", &a, junk.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 2, "a line for every image, the bad one with an error");
    assert!(text.lines().nth(1).unwrap().contains("\"error\""));
    assert_eq!(run(&["code", "scan", "--decoder", "magic", &a]).status.code(), Some(2));
}

fn vector(rel: &str) -> Option<Value> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/testdata/dcc").join(rel);
    match std::fs::read_to_string(&p) {
        Ok(t) => Some(serde_json::from_str(&t).unwrap()),
        Err(_) => {
            eprintln!("skipped: {} is absent (CI has ../shared)", p.display());
            None
        }
    }
}

fn verify(v: &Value, dir: &Path, at: &str) -> (Option<i32>, Value) {
    let der = base64::engine::general_purpose::STANDARD.decode(v["TESTCTX"]["CERTIFICATE"].as_str().unwrap()).unwrap();
    let cert = dir.join("signer.der");
    std::fs::write(&cert, der).unwrap();
    verify_with(v, &cert, at)
}

/// `sibi code verify` of a vector's text against the trust file `trust` at `at`: (exit code, JSON).
fn verify_with(v: &Value, trust: &Path, at: &str) -> (Option<i32>, Value) {
    let text = v["PREFIX"].as_str().unwrap();
    let out = run(&["code", "verify", "--text", text, "--trust", trust.to_str().unwrap(), "--at", at]);
    let json = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.code(), json)
}

#[test]
fn verify_reports_the_format_validity_and_failing_stage() {
    let dir = tempfile::tempdir().unwrap();
    let Some(ok) = vector("AT/2DCode/raw/1.json") else {
        return;
    };
    let (code, v) = verify(&ok, dir.path(), "2021-06-01T00:00:00Z");
    assert_eq!(
        (code, v["format"].as_str(), v["valid"].as_bool(), v["stage"].as_str()),
        (Some(0), Some("dcc"), Some(true), Some("ok"))
    );
    assert!(!v["holder"].as_str().unwrap().contains("MUSTERFRAU"), "the holder is masked");
    let (code, v) = verify(&ok, dir.path(), "2030-01-01T00:00:00Z");
    assert_eq!((code, v["stage"].as_str()), (Some(1), Some("expired")));
    let (code, v) = verify(&ok, dir.path(), "2020-01-01T00:00:00Z");
    assert_eq!((code, v["stage"].as_str()), (Some(1), Some("not_yet_valid")));
    // The clock as the DCC test data itself writes it: an offset without a colon, no offset (UTC), a fraction.
    for at in ["2021-06-01T02:00:00+0200", "2021-06-01T00:00:00", "2021-06-01T00:00:00.589470"] {
        let (code, v) = verify(&ok, dir.path(), at);
        assert_eq!((code, v["stage"].as_str()), (Some(0), Some("ok")), "--at {at}");
    }
    let (code, v) = verify(&ok, dir.path(), "2030-01-01T00:00:00+0000");
    assert_eq!((code, v["stage"].as_str()), (Some(1), Some("expired")));
    if let Some(bad_sig) = vector("common/2DCode/raw/CO5.json") {
        let at = bad_sig["TESTCTX"]["VALIDATIONCLOCK"].as_str().unwrap().to_string();
        let (code, v) = verify(&bad_sig, dir.path(), &at);
        assert_eq!((code, v["stage"].as_str()), (Some(1), Some("signature")), "{v}");
    }
    if let Some(wrong_kid) = vector("common/2DCode/raw/CO22.json") {
        let at = wrong_kid["TESTCTX"]["VALIDATIONCLOCK"].as_str().unwrap().to_string();
        let (code, v) = verify(&wrong_kid, dir.path(), &at);
        assert_eq!((code, v["stage"].as_str()), (Some(1), Some("kid")), "{v}");
    }
    // Without the signer in the trust list, nothing verifies.
    let out = run(&["code", "verify", "--text", ok["PREFIX"].as_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn verify_handles_garbage_images_and_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&["code", "verify", "--text", "https://example.invalid/qr?t=1"]);
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((v["format"].as_str(), v["valid"].as_bool()), (Some("unknown"), Some(false)));
    let img = qr_png(dir.path(), "g.png", "HC1:NOT-BASE45-@@@");
    let out = run(&["code", "verify", "--image", &img]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((out.status.code(), v["stage"].as_str()), (Some(1), Some("base45")));
    assert_eq!(run(&["code", "verify", "--text", "x", "--trust", "/nonexistent.der"]).status.code(), Some(2));
    let out = run(&["code", "verify", "--text", "x", "--at", "tomorrow"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("RFC 3339") && err.contains("+0800"), "the error names the accepted forms: {err}");
    assert_eq!(run(&["code", "verify"]).status.code(), Some(2));
}

#[test]
fn trust_lists_in_json_and_multi_certificate_pem_verify_each_signer() {
    let dir = tempfile::tempdir().unwrap();
    let (Some(at), Some(de)) = (vector("AT/2DCode/raw/1.json"), vector("DE/2DCode/raw/1.json")) else {
        return;
    };
    let b64 = |v: &Value| v["TESTCTX"]["CERTIFICATE"].as_str().unwrap().to_string();
    let json = dir.path().join("dsc.json");
    let list = serde_json::json!({"certificates": [{"kid": "x", "rawData": b64(&at)}, {"rawData": b64(&de)}]});
    std::fs::write(&json, list.to_string()).unwrap();
    let pem = dir.path().join("dsc.pem");
    let block = |s: String| format!("-----BEGIN CERTIFICATE-----\n{s}\n-----END CERTIFICATE-----\n");
    std::fs::write(&pem, block(b64(&at)) + &block(b64(&de))).unwrap();
    for list in [&json, &pem] {
        for v in [&at, &de] {
            let (code, r) = verify_with(v, list, v["TESTCTX"]["VALIDATIONCLOCK"].as_str().unwrap());
            assert_eq!((code, r["stage"].as_str()), (Some(0), Some("ok")), "{} {r}", list.display());
        }
    }
    // A trust list with a broken entry is a usage error that says which entry.
    std::fs::write(&json, r#"[{"rawData": "@@@"}]"#).unwrap();
    let out = run(&["code", "verify", "--text", "x", "--trust", json.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("entry 0"), "{}", String::from_utf8_lossy(&out.stderr));
}

/// A payload is what the symbol holds: control characters come back as themselves (JSON-escaped), not as the
/// `<SOH><DLE>` of a display mode, and the Chinese text after them intact.
#[test]
fn scan_returns_the_payload_with_its_control_characters() {
    let dir = tempfile::tempdir().unwrap();
    let text = "\u{1}\u{10}AD:SUB:阿;;";
    let img = qr_png(dir.path(), "ctl.png", text);
    for decoder in ["zxing", "rqrr"] {
        let out = run(&["code", "scan", &img, "--decoder", decoder]);
        assert_eq!(out.status.code(), Some(0), "{decoder}");
        let line = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(!line.contains("<SOH>"), "{decoder}: {line}");
        let v: Value = serde_json::from_str(line.trim()).unwrap();
        assert_eq!(v["codes"], serde_json::json!([text]), "{decoder}");
    }
}

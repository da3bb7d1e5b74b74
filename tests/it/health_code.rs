//! The health-code client against a real HTTP server on loopback (no mock of the client): every gateway answer, a
//! slow gateway (timeout), a failing one and an unreachable one map to the status the policy expects.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sibi::credential::health_code::{HealthCodeClient, Issuer};
use sibi::domain::CodeStatus;

/// A one-route HTTP/1.1 server: answers by the `code` in the JSON body. Returns its base URL and the bodies seen.
fn gateway() -> (String, Arc<Mutex<Vec<serde_json::Value>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let log = log.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                let mut len = 0usize;
                let mut first = true;
                let mut path = String::new();
                loop {
                    line.clear();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    if first {
                        path = line.split_whitespace().nth(1).unwrap_or("").to_string();
                        first = false;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                    if line == "\r\n" {
                        break;
                    }
                }
                let mut body = vec![0; len];
                reader.read_exact(&mut body).unwrap();
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                log.lock().unwrap().push(v.clone());
                let code = v["code"].as_str().unwrap_or("");
                let (status, text) = match (path.as_str(), code) {
                    (p, _) if p != "/v1/health-code/verify" => ("404 Not Found", String::new()),
                    (_, "HCT:slow") => {
                        std::thread::sleep(Duration::from_millis(1500));
                        ("200 OK", r#"{"status":"green"}"#.into())
                    }
                    (_, "HCT:boom") => ("500 Internal Server Error", "oops".into()),
                    (_, "HCT:junk") => ("200 OK", "not json".into()),
                    (_, "HCT:gone") => ("404 Not Found", String::new()),
                    (_, c) => ("200 OK", format!(r#"{{"status":"{}"}}"#, c.trim_start_matches("HCT:"))),
                };
                let mut out = stream;
                let _ = write!(
                    out,
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                    text.len()
                );
            });
        }
    });
    (url, seen)
}

#[test]
fn every_gateway_answer_maps_to_a_status_and_a_slow_gateway_times_out() {
    let (url, seen) = gateway();
    let client = HealthCodeClient::new(&url, Duration::from_millis(400), "gate-7");
    let issuer = Issuer { name: "测试健康码".into(), region: "420000".into(), prefixes: vec!["HCT:".into()] };
    for (code, want) in [
        ("HCT:green", CodeStatus::Green),
        ("HCT:yellow", CodeStatus::Yellow),
        ("HCT:red", CodeStatus::Red),
        ("HCT:expired", CodeStatus::Expired),
        ("HCT:not_found", CodeStatus::NotFound),
        ("HCT:failed", CodeStatus::Failed),
        ("HCT:purple", CodeStatus::Unverified),
        ("HCT:boom", CodeStatus::Unverified),
        ("HCT:junk", CodeStatus::Unverified),
        ("HCT:gone", CodeStatus::NotFound),
    ] {
        assert_eq!(client.verify(&issuer, code), want, "{code}");
    }
    let t = Instant::now();
    assert_eq!(client.verify(&issuer, "HCT:slow"), CodeStatus::Timeout);
    assert!(t.elapsed() < Duration::from_millis(1200), "bounded by the timeout: {:?}", t.elapsed());
    let first = seen.lock().unwrap()[0].clone();
    assert_eq!(
        (first["issuer"].as_str(), first["region"].as_str(), first["gate"].as_str()),
        (Some("测试健康码"), Some("420000"), Some("gate-7"))
    );
}

#[test]
fn an_unreachable_gateway_means_unverified_at_once() {
    // A port nobody listens on.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let client = HealthCodeClient::new(&format!("http://127.0.0.1:{port}"), Duration::from_secs(3), "g");
    let issuer = Issuer { name: "x".into(), region: "0".into(), prefixes: vec!["HCT:".into()] };
    let t = Instant::now();
    assert_eq!(client.verify(&issuer, "HCT:green"), CodeStatus::Unverified);
    assert!(t.elapsed() < Duration::from_secs(2));
}

/// A gate config whose `[health_code]` points at `gateway`.
fn gate_with_gateway(gateway: &str) -> crate::util::Gate {
    crate::util::Gate::new(
        "[[event]]\nat = 0.0\ntemperature = 36.5\n",
        &format!(
            r#"
[health_code]
gateway = "{gateway}"
timeout_ms = 500
[[health_code.issuer]]
name = "测试健康码"
region = "420000"
prefixes = ["HCT:"]
"#
        ),
        "",
    )
}

#[test]
fn code_verify_with_a_config_asks_the_gateway_named_there() {
    let (url, seen) = gateway();
    let gate = gate_with_gateway(&url);
    let config = gate.config();
    let config = config.to_str().unwrap();
    let verify = |code: &str| {
        let out = crate::util::run(&["code", "verify", "--config", config, "--text", code]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON line");
        (out.status.code(), v["format"].as_str().map(String::from), v["status"].as_str().map(String::from))
    };
    let hc = || Some("health_code".to_string());
    assert_eq!(verify("HCT:green"), (Some(0), hc(), Some("green".into())));
    assert_eq!(verify("HCT:red"), (Some(1), hc(), Some("red".into())));
    assert_eq!(verify("HCT:slow"), (Some(1), hc(), Some("timeout".into())));
    assert_eq!(seen.lock().unwrap()[0]["gate"].as_str(), Some("test-gate"));
    // Without the config the issuer is unknown: nothing to ask.
    let out = crate::util::run(&["code", "verify", "--text", "HCT:green"]);
    assert_eq!(out.status.code(), Some(1));
    // The gateway gone: unverified, which the policy turns into the operator's colour check.
    drop(gate);
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let gate = gate_with_gateway(&format!("http://127.0.0.1:{port}"));
    let out = crate::util::run(&["code", "verify", "--config", gate.config().to_str().unwrap(), "--text", "HCT:green"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((out.status.code(), v["status"].as_str()), (Some(1), Some("unverified")));
    // A broken config is a usage error naming the file.
    std::fs::write(gate.config(), "[gate\n").unwrap();
    let out = crate::util::run(&["code", "verify", "--config", gate.config().to_str().unwrap(), "--text", "HCT:green"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("gate.toml"), "{}", String::from_utf8_lossy(&out.stderr));
}

/// The office's gateway between the gate and the province: colours relayed, a slow or failing province and an unknown
/// region give no colour (the gate falls back to the operator's look), drill codes are answered from the roster
/// without reaching the province, and a gate that is not enrolled is refused.
#[test]
fn the_office_gateway_relays_the_province_and_answers_drills_from_its_roster() {
    let (province, seen) = gateway();
    let dir = tempfile::tempdir().unwrap();
    let out = crate::util::run(&["keygen", "--out", dir.path().join("keys").to_str().unwrap(), "--name", "gate"]);
    assert_eq!(out.status.code(), Some(0));
    std::fs::write(dir.path().join("drill.csv"), "code,status\nHCT:drill-red,red\nHCT:drill-green,green\n").unwrap();
    let toml = dir.path().join("office.toml");
    std::fs::write(
        &toml,
        format!(
            "[office]\nlisten = \"127.0.0.1:0\"\ndatabase = \"office.db\"\n\n[[gate]]\nid = \"gate-7\"\n\
             key = \"keys/gate.pub\"\n\n[health_code]\ntimeout_ms = 400\n\n[[health_code.provincial]]\n\
             region = \"420000\"\nurl = \"{province}/v1/health-code/verify\"\n\n[health_code.drill]\nroster = \"drill.csv\"\n"
        ),
    )
    .unwrap();
    let office = sibi::office::Office::open(sibi::office::load(&toml).unwrap()).unwrap();
    let addr = sibi::office::serve_in_background(office).unwrap();
    let client = HealthCodeClient::new(&format!("http://{addr}"), Duration::from_secs(3), "gate-7");
    let hubei = Issuer { name: "测试健康码".into(), region: "420000".into(), prefixes: vec!["HCT:".into()] };
    for (code, want) in [
        ("HCT:green", CodeStatus::Green),
        ("HCT:red", CodeStatus::Red),
        ("HCT:yellow", CodeStatus::Yellow),
        ("HCT:gone", CodeStatus::NotFound),
        ("HCT:slow", CodeStatus::Unverified),
        ("HCT:boom", CodeStatus::Unverified),
        ("HCT:junk", CodeStatus::Unverified),
        ("HCT:drill-red", CodeStatus::Red),
        ("HCT:drill-green", CodeStatus::Green),
    ] {
        assert_eq!(client.verify(&hubei, code), want, "{code}");
    }
    let forwarded: Vec<String> =
        seen.lock().unwrap().iter().map(|v| v["code"].as_str().unwrap_or("").to_string()).collect();
    assert!(forwarded.iter().all(|c| !c.contains("drill")), "drill codes stay at the office: {forwarded:?}");
    assert!(forwarded.contains(&"HCT:green".to_string()) && forwarded.len() == 7, "{forwarded:?}");
    assert!(seen.lock().unwrap().iter().all(|v| v["gate"] == "gate-7" && v["region"] == "420000"));
    // No endpoint for this region: no colour.
    let beijing = Issuer { region: "110000".into(), ..hubei.clone() };
    assert_eq!(client.verify(&beijing, "HCT:green"), CodeStatus::Unverified);
    // A box the office does not know gets nothing.
    let stranger = HealthCodeClient::new(&format!("http://{addr}"), Duration::from_secs(3), "stranger");
    assert_eq!(stranger.verify(&hubei, "HCT:green"), CodeStatus::Unverified);
    assert_eq!(seen.lock().unwrap().len(), 7, "neither reached the province");
    // A roster with a colour the gateway does not know is a config error naming the line.
    std::fs::write(dir.path().join("drill.csv"), "HCT:x,purple\n").unwrap();
    let err = sibi::office::load(&toml).unwrap_err();
    assert!(err.contains("drill.csv line 1") && err.contains("purple"), "{err}");
}

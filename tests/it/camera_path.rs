//! The credential path inside the running daemon: frames (a folder standing in for the camera) → change detection →
//! QR decode → pass verification → checkpoint → record and gate. A valid printed pass opens the gate; a forged one is
//! referred with its reason and recorded.

use std::time::Duration;

use image::GrayImage;
use sibi::credential::pass::{Pass, generate_key, write_key_pair};
use sibi::domain::Category;
use sibi::store::Store;

fn frame_with(text: Option<&str>) -> GrayImage {
    let mut canvas = GrayImage::from_pixel(640, 480, image::Luma([140]));
    if let Some(text) = text {
        let qr = sibi::credential::qr::render(text, 4).unwrap();
        image::imageops::overlay(&mut canvas, &qr, 200, 100);
    }
    canvas
}

#[test]
fn a_valid_printed_pass_opens_the_gate_and_a_forged_one_is_referred() {
    let dir = tempfile::tempdir().unwrap();
    let key = generate_key().unwrap();
    write_key_pair(&dir.path().join("keys"), "community", &key).unwrap();
    let pass = |id: &str| Pass {
        community: "test-community".into(),
        id: id.into(),
        category: Category::Resident,
        holder: "李*国".into(),
        valid_from: 0,
        valid_until: 4_000_000_000,
    };
    let valid = pass("P-1").encode(&key);
    let forged = pass("P-2").encode(&generate_key().unwrap());
    let frames = dir.path().join("frames");
    std::fs::create_dir_all(&frames).unwrap();
    let plan = [None, Some(&valid), Some(&valid), None, None, Some(&forged), Some(&forged), None, None];
    for (i, t) in plan.iter().enumerate() {
        frame_with(t.map(String::as_str)).save(frames.join(format!("{i:03}.png"))).unwrap();
    }
    // Thermometer and mask confirmation come from the script; the reading and mask precede each card.
    std::fs::write(
        dir.path().join("scenario.toml"),
        "[[event]]\nat = 0.05\ntemperature = 36.5\n[[event]]\nat = 0.08\nbutton = \"mask_confirmed\"\n\
         [[event]]\nat = 1.1\ntemperature = 36.6\n[[event]]\nat = 1.15\nbutton = \"mask_confirmed\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("gate.toml"),
        r#"
[gate]
id = "cam-gate"
community = "test-community"
state_dir = "state"
[checkpoint]
session_timeout_secs = 0.6
[credentials]
pass_keys = ["keys/community.pub"]
[devices.credentials]
backend = "frames"
folder = "frames"
fps = 5
[devices.thermometer]
backend = "script"
[devices.operator]
backend = "script"
[devices.gate]
backend = "sim"
pulse_ms = 200
[script]
file = "scenario.toml"
exit_when_done = true
"#,
    )
    .unwrap();
    let config = sibi::config::load(&dir.path().join("gate.toml")).expect("config loads");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let summary = rt
        .block_on(async {
            tokio::time::timeout(Duration::from_secs(20), sibi::app::run(config, std::future::pending())).await
        })
        .expect("ends by itself")
        .expect("runs");
    assert!(summary.clean);
    let rows = Store::open(&dir.path().join("state/sibi.db"), "cam-gate").unwrap().entries().unwrap();
    let got: Vec<(&str, &str, &str, bool)> =
        rows.iter().map(|r| (r.identity.as_str(), r.verdict.as_str(), r.rule.as_str(), r.is_final)).collect();
    assert_eq!(
        got,
        vec![
            ("pass", "pass", "tier.resident", true),
            ("pass", "refer", "code.failed", false),
            ("pass", "refer", "code.failed", true),
        ],
        "{rows:#?}"
    );
    assert_eq!(rows[0].holder_masked.as_deref(), Some("李*国"));
    assert_eq!(rows[0].gate_action, "opened");
    assert_eq!(rows[2].note.as_deref(), Some("walked_away"));
}

/// The real frame path with the mask judge: frames holding a pass and a masked face (colour, from a folder standing in
/// for the camera) → QR decode → the mask tap → the mask thread → checkpoint. With the reading from the script and no
/// operator input, the resident passes and the row says the camera met the mask must.
#[test]
fn a_pass_and_a_masked_face_in_the_frames_pass_with_no_tap() {
    let dir = tempfile::tempdir().unwrap();
    let key = generate_key().unwrap();
    write_key_pair(&dir.path().join("keys"), "community", &key).unwrap();
    let text = Pass {
        community: "test-community".into(),
        id: "P-M".into(),
        category: Category::Resident,
        holder: "李*国".into(),
        valid_from: 0,
        valid_until: 4_000_000_000,
    }
    .encode(&key);
    let face = image::open(crate::util::repo().join("tests/data/faces/masked.jpg")).unwrap().into_rgb8();
    let frames = dir.path().join("frames");
    std::fs::create_dir_all(&frames).unwrap();
    for i in 0..12 {
        let mut canvas = image::RgbImage::from_pixel(640, 480, image::Rgb([140, 140, 140]));
        if (1..10).contains(&i) {
            let qr = image::DynamicImage::ImageLuma8(sibi::credential::qr::render(&text, 4).unwrap()).into_rgb8();
            image::imageops::overlay(&mut canvas, &qr, 10, 60);
            image::imageops::overlay(&mut canvas, &face, 310, 80);
        }
        canvas.save(frames.join(format!("{i:03}.png"))).unwrap();
    }
    std::fs::write(dir.path().join("scenario.toml"), "[[event]]\nat = 0.05\ntemperature = 36.5\n").unwrap();
    std::fs::write(
        dir.path().join("gate.toml"),
        r#"
[gate]
id = "cam-gate"
community = "test-community"
state_dir = "state"
[checkpoint]
session_timeout_secs = 1
[credentials]
pass_keys = ["keys/community.pub"]
[mask]
enabled = true
[devices.credentials]
backend = "frames"
folder = "frames"
fps = 5
[devices.thermometer]
backend = "script"
[devices.operator]
backend = "script"
[devices.gate]
backend = "sim"
pulse_ms = 200
[script]
file = "scenario.toml"
exit_when_done = true
"#,
    )
    .unwrap();
    let config = sibi::config::load(&dir.path().join("gate.toml")).expect("config loads");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let summary = rt
        .block_on(async {
            tokio::time::timeout(Duration::from_secs(30), sibi::app::run(config, std::future::pending())).await
        })
        .expect("ends by itself")
        .expect("runs");
    assert!(summary.clean);
    let db = rusqlite::Connection::open(dir.path().join("state/sibi.db")).unwrap();
    let (verdict, mask, by, gate): (String, String, String, String) = db
        .query_row("SELECT verdict, mask, mask_by, gate_action FROM entries WHERE is_final = 1", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .unwrap();
    assert_eq!((verdict.as_str(), mask.as_str(), by.as_str(), gate.as_str()), ("pass", "worn", "detected", "opened"));
}

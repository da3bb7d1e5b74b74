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
session_timeout_secs = 5
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
    crate::util::run_to_end(&dir.path().join("gate.toml"), Duration::from_secs(20));
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

/// What the frames hold, frame by frame.
#[derive(Clone, Copy, PartialEq)]
enum Shot {
    /// The grey wall.
    Empty,
    /// The resident's pass.
    Code,
    /// A masked face.
    Face,
    /// Both.
    CodeAndFace,
}

/// Runs the daemon on QR camera frames `qr` (and, if given, face camera frames `face`), with a scripted reading and no
/// operator input; returns the final row's verdict, mask, mask_by and gate action.
fn run_masked(qr: &[Shot], face: Option<&[Shot]>) -> (String, String, String, String) {
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
    let masked = image::open(crate::util::repo().join("tests/data/faces/masked.jpg")).unwrap().into_rgb8();
    let write = |name: &str, shots: &[Shot]| {
        let folder = dir.path().join(name);
        std::fs::create_dir_all(&folder).unwrap();
        for (i, shot) in shots.iter().enumerate() {
            let mut canvas = image::RgbImage::from_pixel(640, 480, image::Rgb([140, 140, 140]));
            if matches!(shot, Shot::Code | Shot::CodeAndFace) {
                let qr = image::DynamicImage::ImageLuma8(sibi::credential::qr::render(&text, 4).unwrap()).into_rgb8();
                image::imageops::overlay(&mut canvas, &qr, 10, 60);
            }
            if matches!(shot, Shot::Face | Shot::CodeAndFace) {
                image::imageops::overlay(&mut canvas, &masked, 310, 80);
            }
            canvas.save(folder.join(format!("{i:03}.png"))).unwrap();
        }
    };
    write("frames", qr);
    let face_camera = face.map_or(String::new(), |shots| {
        write("faces", shots);
        "[devices.face_camera]\nbackend = \"frames\"\nfolder = \"faces\"\nfps = 5\n".to_string()
    });
    // The reading comes when the code does (a reading older than a presentation is dropped after a while).
    let first_code = qr.iter().position(|s| matches!(s, Shot::Code | Shot::CodeAndFace)).unwrap_or(0);
    let at = first_code as f64 * 0.2 + 0.05;
    // A presentation nobody acts on ends this long after the code was last seen. Natively a judgement takes tens of
    // milliseconds; under qemu (scripts/cross-check) about 6 s, so the one early look at the face would land after
    // the presentation had already closed as walked away (seen there on 2026-12-07, with the suite running beside).
    // A pass ends the run the moment the verdict arrives, so the long wait costs only the control test below, which
    // runs to the timeout: off x86-64 (the aarch64 suite under qemu, or natively on a Pi) it waits 30 s, here 5 s.
    let session_timeout = if cfg!(target_arch = "x86_64") { 5 } else { 30 };
    std::fs::write(dir.path().join("scenario.toml"), format!("[[event]]\nat = {at}\ntemperature = 36.5\n")).unwrap();
    std::fs::write(
        dir.path().join("gate.toml"),
        format!(
            r#"
[gate]
id = "cam-gate"
community = "test-community"
state_dir = "state"
# A debug build judging frames beside the rest of the suite may be mid-inference at the stop.
shutdown_grace_ms = 30000
[checkpoint]
session_timeout_secs = {session_timeout}
[credentials]
pass_keys = ["keys/community.pub"]
[mask]
enabled = true
[devices.credentials]
backend = "frames"
folder = "frames"
fps = 5
{face_camera}
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
"#
        ),
    )
    .unwrap();
    crate::util::run_to_end(&dir.path().join("gate.toml"), Duration::from_secs(30 + 2 * session_timeout));
    let db = rusqlite::Connection::open(dir.path().join("state/sibi.db")).unwrap();
    let sql = "SELECT verdict, mask, COALESCE(mask_by, ''), COALESCE(gate_action, '') FROM entries WHERE is_final = 1";
    db.query_row(sql, [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))).unwrap()
}

fn strs(row: &(String, String, String, String)) -> (&str, &str, &str, &str) {
    (row.0.as_str(), row.1.as_str(), row.2.as_str(), row.3.as_str())
}

/// The real frame path with the mask judge: frames holding a pass and a masked face (colour, from a folder standing in
/// for the camera) → QR decode → the mask tap → the mask thread → checkpoint. With the reading from the script and no
/// operator input, the resident passes and the row says the camera met the mask must.
#[test]
fn a_pass_and_a_masked_face_in_the_frames_pass_with_no_tap() {
    let mut shots = vec![Shot::Empty];
    shots.extend([Shot::CodeAndFace; 9]);
    shots.extend([Shot::Empty; 2]);
    let row = run_masked(&shots, None);
    assert_eq!(strs(&row), ("pass", "worn", "detected", "opened"));
}

/// "Only while a presentation is open or a face appears": the face steps up before any code is shown (the scene
/// changed with no presentation open, so one frame is judged), then the code is shown with no face in that frame. The
/// verdict seen before the code carries over, and the resident passes with no tap; the code frames alone hold no face,
/// so only the early look could have met the must.
#[test]
fn a_face_seen_before_the_code_meets_the_mask_must() {
    let mut shots = vec![Shot::Empty];
    shots.extend([Shot::Face; 3]);
    shots.extend([Shot::Code; 6]);
    shots.extend([Shot::Empty; 2]);
    let row = run_masked(&shots, None);
    assert_eq!(strs(&row), ("pass", "worn", "detected", "opened"));
}

/// The same code frames with no face anywhere: the must waits for the volunteer, and nobody taps, so no pass. (The
/// control for the test above.)
#[test]
fn code_frames_without_a_face_wait_for_the_volunteer() {
    let mut shots = vec![Shot::Empty; 4];
    shots.extend([Shot::Code; 6]);
    shots.extend([Shot::Empty; 2]);
    let row = run_masked(&shots, None);
    assert_ne!(row.2, "detected", "{row:?}");
    assert_ne!(row.3, "opened", "{row:?}");
}

/// `[devices.face_camera]`: the QR camera sees only the code, a second camera sees the masked face; the judge reads the
/// second one, and the resident passes with no tap.
#[test]
fn a_face_camera_of_its_own_meets_the_mask_must() {
    let mut qr = vec![Shot::Empty];
    qr.extend([Shot::Code; 9]);
    qr.extend([Shot::Empty; 2]);
    let mut face = vec![Shot::Empty];
    face.extend([Shot::Face; 20]);
    let row = run_masked(&qr, Some(&face));
    assert_eq!(strs(&row), ("pass", "worn", "detected", "opened"));
}

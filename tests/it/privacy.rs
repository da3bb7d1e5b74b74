//! The stolen-box test: a registration's name, phone and ID number are sealed to the office's key before they are
//! written. Reading the gate's files directly finds none of them in clear; the office's secret key opens them.

use rusqlite::Connection;

use crate::util::{Gate, run};

// Obviously synthetic: the GB 11643 specimen ID number and an unassigned phone number.
const NAME: &str = "样例访客";
const PHONE: &str = "13000000001";
const ID: &str = "11010519491231002X";

const SCENARIO: &str = r#"
[[event]]
at = 0.0
credential = { key = "HC-1", identity = "health_code", category = "visitor", code = "green", holder = "" }
[[event]]
at = 0.2
temperature = 36.4
[[event]]
at = 0.3
button = "mask_confirmed"
[[event]]
at = 0.5
operator = { register = { name = "样例访客", phone = "13000000001", id_number = "11010519491231002X", destination = "3栋201", reason = "探亲" } }
"#;

fn files_under(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push((p.display().to_string(), std::fs::read(&p).unwrap()));
        }
    }
    out
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[test]
fn a_stolen_box_leaks_no_name_phone_or_id_number() {
    let keys = tempfile::tempdir().unwrap();
    let out = run(&["keygen", "--out", keys.path().to_str().unwrap(), "--name", "office-seal", "--kind", "seal"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let public = keys.path().join("office-seal.pub").display().to_string();
    let gate = Gate::new(
        SCENARIO,
        &format!("speed = 4\nexit_when_done = true\n\n[privacy]\noffice_key = {public:?}\n"),
        "session_timeout_secs = 2",
    );
    let out = run(&["run", "--config", gate.config().to_str().unwrap()]);
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{log}");

    // Everything the box wrote: database, WAL, logs.
    let files = files_under(&gate.dir.path().join("state"));
    assert!(files.iter().any(|(p, _)| p.ends_with("sibi.db")));
    for (path, bytes) in &files {
        for secret in [NAME, PHONE, ID] {
            assert!(!contains(bytes, secret), "{secret} in clear in {path}");
        }
    }
    for secret in [NAME, PHONE, ID] {
        assert!(!log.contains(secret), "{secret} in the log");
    }

    // What the console has: masked forms. What the office has: the sealed originals.
    let db = Connection::open(gate.db()).unwrap();
    let (verdict, holder, phone, id, destination, sealed): (String, String, String, String, String, String) = db
        .query_row(
            "SELECT verdict, holder_masked, phone_masked, id_masked, destination, personal_sealed FROM entries
             WHERE personal_sealed IS NOT NULL",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)),
        )
        .unwrap();
    assert_eq!(verdict, "pass", "a registered visitor in low tier passes");
    assert_eq!((holder.as_str(), phone.as_str(), destination.as_str()), ("样**客", "130****0001", "3栋201"));
    assert!(id.starts_with("1101") && id.ends_with("002X") && id.contains('*'), "{id}");
    let secret = sibi::privacy::read_secret(&keys.path().join("office-seal.key")).unwrap();
    let p = sibi::privacy::unseal(&secret, &sealed).unwrap();
    assert_eq!((p.name.as_str(), p.phone.as_deref(), p.id_number.as_deref()), (NAME, Some(PHONE), Some(ID)));

    // At the office: the rows as the sync client sends them, ingested; `sibi office export` opens them only with the
    // office's secret key.
    let office_dir = tempfile::tempdir().unwrap();
    let store = sibi::store::Store::open(&gate.db(), "test-gate").unwrap();
    let rows: Vec<serde_json::Value> = store
        .outbox_batch(1000, sibi::domain::Timestamp(i64::MAX / 4), 0)
        .unwrap()
        .into_iter()
        .map(serde_json::Value::Object)
        .collect();
    let db = sibi::office::Database::Sqlite(office_dir.path().join("office.db"));
    sibi::office::OfficeDb::open(&db).unwrap().ingest("test-gate", &rows, sibi::hw::now()).unwrap();
    let date = sibi::domain::Timestamp(rows[0]["at_ms"].as_i64().unwrap()).to_rfc3339()[..10].to_string();
    let export = |seal_key: &str, out: &str| {
        let toml = office_dir.path().join("office.toml");
        std::fs::write(&toml, format!("[office]\nlisten = \"127.0.0.1:0\"\ndatabase = \"office.db\"\n{seal_key}"))
            .unwrap();
        let out_path = office_dir.path().join(out);
        let args = [
            "office",
            "export",
            "--config",
            toml.to_str().unwrap(),
            "--from",
            &date,
            "--out",
            out_path.to_str().unwrap(),
        ];
        let out = run(&args);
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
        out_path
    };
    let with_key = export(
        &format!("seal_key = {:?}\n", keys.path().join("office-seal.key").display().to_string()),
        "entries.xlsx",
    );
    let strings = crate::util::xlsx_strings(&with_key);
    for s in [NAME, PHONE, ID, "3栋201", "探亲", "已解密", "通行"] {
        assert!(strings.iter().any(|x| x == s), "{s} in {strings:?}");
    }
    let without = std::fs::read_to_string(export("", "entries.csv")).unwrap();
    assert!(
        without.contains("样**客") && without.contains("130****0001") && without.contains("未解密（无私钥）"),
        "{without}"
    );
    for secret in [NAME, PHONE, ID] {
        assert!(!without.contains(secret), "{secret} exported without the key");
    }
}

#[test]
fn without_the_office_key_only_masked_forms_are_kept() {
    let gate = Gate::new(SCENARIO, "speed = 4\nexit_when_done = true", "session_timeout_secs = 2");
    let out = run(&["run", "--config", gate.config().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    for (path, bytes) in files_under(&gate.dir.path().join("state")) {
        for secret in [NAME, PHONE, ID] {
            assert!(!contains(&bytes, secret), "{secret} in clear in {path}");
        }
    }
    let db = Connection::open(gate.db()).unwrap();
    let (phone, sealed): (Option<String>, Option<String>) = db
        .query_row("SELECT phone_masked, personal_sealed FROM entries WHERE phone_masked IS NOT NULL", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!((phone.as_deref(), sealed), (Some("130****0001"), None));
}

/// PIPL: a face is sensitive personal information. The camera's picture of a face is judged and dropped: the box keeps
/// the verdict, the score and how the must was met, and nothing of the picture — no image file, no image bytes, no
/// crop, no feature vector (no long value anywhere in the database), not in the journal or the log.
#[test]
fn a_stolen_box_holds_no_face_the_mask_judge_saw() {
    let face = crate::util::repo().join("tests/data/faces/masked.jpg");
    let scenario = format!(
        "[[event]]\nat = 0.0\ncredential = {{ key = \"PASS-F\", identity = \"pass\", category = \"resident\", holder = \"\" }}\n\
         [[event]]\nat = 0.2\nface = {:?}\n[[event]]\nat = 0.4\ntemperature = 36.4\n",
        face.display().to_string()
    );
    let gate = Gate::new(
        &scenario,
        "speed = 2\nexit_when_done = true\n\n[mask]\nenabled = true\n",
        // The presentation passes the moment the judge's verdict arrives (natively well under a second); the long
        // deadline is for emulation (scripts/cross-check runs this under qemu, where one judgement takes 3–6 s).
        "session_timeout_secs = 60",
    );
    let out = run(&["run", "--config", gate.config().to_str().unwrap()]);
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{log}");

    let db = Connection::open(gate.db()).unwrap();
    let (verdict, mask, by, score): (String, String, String, f64) = db
        .query_row("SELECT verdict, mask, mask_by, mask_score FROM entries WHERE is_final = 1", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .unwrap();
    assert_eq!((verdict.as_str(), mask.as_str(), by.as_str()), ("pass", "worn", "detected"), "{log}");
    assert!(score > 0.9 && score <= 1.0);

    let picture = image::open(&face).unwrap().into_rgb8();
    let raw = picture.as_raw();
    for (path, bytes) in files_under(&gate.dir.path().join("state")) {
        for magic in [&b"\xFF\xD8\xFF"[..], &b"\x89PNG"[..]] {
            assert!(!bytes.windows(magic.len()).any(|w| w == magic), "an image in {path}");
        }
        // Rows of the face's own pixels (any 48-byte run from its middle rows) appear nowhere.
        for row in [120u32, 160, 200] {
            let start = (row * picture.width() * 3 + 100 * 3) as usize;
            let needle = &raw[start..start + 48];
            assert!(!bytes.windows(48).any(|w| w == needle), "face pixels in {path}");
        }
    }
    // No long values (a crop, an embedding) in any column of any table.
    let tables: Vec<String> = db
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    for t in tables {
        let mut stmt = db.prepare(&format!("SELECT * FROM \"{t}\"")).unwrap();
        let cols = stmt.column_count();
        let mut rows = stmt.query([]).unwrap();
        while let Some(r) = rows.next().unwrap() {
            for c in 0..cols {
                let len = match r.get_ref(c).unwrap() {
                    rusqlite::types::ValueRef::Blob(b) => b.len(),
                    rusqlite::types::ValueRef::Text(s) => s.len(),
                    _ => 0,
                };
                assert!(len < 1500, "a {len}-byte value in {t} column {c}");
            }
        }
    }
    // Nor in the log, raw or as base64 (a JPEG starts "/9j/", a PNG "iVBOR").
    for marker in ["/9j/", "iVBOR", "\u{FFFD}\u{FFFD}\u{FFFD}"] {
        assert!(!log.contains(marker), "{marker} in the log");
    }
}

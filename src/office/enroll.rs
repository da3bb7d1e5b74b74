//! Enrolment at scale: gates (and child offices) enrolled in the office's database from a CSV file, listed and
//! revoked from the command line (`sibi office enroll | gates | revoke`). Every office process reads enrolments from
//! the database, so one enrolled at one instance signs in at all of them.

use std::collections::BTreeSet;

use super::Enrollment;

/// The CSV's columns, in order (a header row is required; a fifth `kind` column, `gate` or `office`, is optional).
pub const COLUMNS: [&str; 4] = ["id", "name", "community", "public_key"];

/// Whether `id` can name a signer: 1–64 of `A–Z a–z 0–9 . _ -`.
pub fn id_ok(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// The enrolments of a CSV file, checked line by line: every problem is listed with its line number, and any problem
/// means nothing is imported. `taken(id)` says whether `id` is already enrolled with a key (office.toml or the
/// database) and which; a row for an id enrolled with another key is refused (revoke it first).
pub fn parse_csv(
    text: &str,
    now_ms: i64,
    taken: &mut dyn FnMut(&str) -> Result<Option<String>, String>,
) -> Result<Vec<Enrollment>, Vec<String>> {
    let mut reader = csv::ReaderBuilder::new().has_headers(true).flexible(true).from_reader(text.as_bytes());
    let mut problems = Vec::new();
    match reader.headers() {
        Ok(h) if h.iter().take(4).map(str::trim).eq(COLUMNS) => {}
        Ok(h) => problems.push(format!(
            "line 1: the header is `{}`; expected `{}` (and optionally `kind`)",
            h.iter().collect::<Vec<_>>().join(","),
            COLUMNS.join(",")
        )),
        Err(e) => problems.push(format!("line 1: {e}")),
    }
    let (mut rows, mut seen) = (Vec::new(), BTreeSet::new());
    for (i, record) in reader.records().enumerate() {
        let line = i + 2;
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                problems.push(format!("line {line}: {e}"));
                continue;
            }
        };
        let field = |n: usize| record.get(n).map(str::trim).unwrap_or("");
        let (id, name, community, key) = (field(0), field(1), field(2), field(3));
        let kind = if field(4).is_empty() { "gate" } else { field(4) };
        let mut bad = |why: String| problems.push(format!("line {line} (`{id}`): {why}"));
        if record.len() < 4 || record.len() > 5 {
            bad(format!("{} fields; expected id,name,community,public_key[,kind]", record.len()));
            continue;
        }
        if !id_ok(id) {
            bad("the id must be 1–64 letters, digits, `.`, `_` or `-`".into());
            continue;
        }
        if name.is_empty() || community.is_empty() {
            bad("name and community must not be empty".into());
            continue;
        }
        if !["gate", "office"].contains(&kind) {
            bad(format!("kind `{kind}`: use gate or office"));
            continue;
        }
        let text = if key.starts_with("sibi-ed25519-public:") {
            key.to_string()
        } else {
            format!("sibi-ed25519-public:{key}")
        };
        let Some(parsed) = crate::credential::pass::parse_verifying_key(&text) else {
            bad("the public key is not a gate key (`sibi-ed25519-public:` and 64 hex digits, from `sibi keygen`)"
                .into());
            continue;
        };
        let hex = crate::keys::hex(parsed.as_bytes());
        if !seen.insert(id.to_string()) {
            bad("the id appears twice in the file".into());
            continue;
        }
        match taken(id) {
            Ok(Some(existing)) if existing != hex => {
                bad("already enrolled with another key: revoke it first (`sibi office revoke`)".into());
                continue;
            }
            Ok(_) => {}
            Err(e) => {
                bad(e);
                continue;
            }
        }
        rows.push(Enrollment {
            id: id.into(),
            kind: kind.into(),
            name: name.into(),
            community: community.into(),
            public_key: hex,
            enrolled_ms: now_ms,
            revoked_ms: None,
        });
    }
    if problems.is_empty() { Ok(rows) } else { Err(problems) }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
    const KEY_B: &str = "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c";

    fn none(_: &str) -> Result<Option<String>, String> {
        Ok(None)
    }

    #[test]
    fn a_good_file_is_enrolled_whole() {
        let text = format!(
            "id,name,community,public_key\ngate-1,东门,xingfuli,{KEY_A}\ngate-2,西门,xingfuli,sibi-ed25519-public:{KEY_B}\n"
        );
        let rows = parse_csv(&text, 7, &mut none).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(
            (rows[0].id.as_str(), rows[0].kind.as_str(), rows[0].public_key.as_str()),
            ("gate-1", "gate", KEY_A)
        );
        assert_eq!((rows[1].name.as_str(), rows[1].enrolled_ms), ("西门", 7));
    }

    #[test]
    fn bad_rows_are_refused_by_line_and_nothing_is_imported() {
        let text = format!(
            "id,name,community,public_key\n\
             gate-1,东门,xingfuli,{KEY_A}\n\
             gate 2,西门,xingfuli,{KEY_B}\n\
             gate-3,,xingfuli,{KEY_B}\n\
             gate-4,北门,xingfuli,not-a-key\n\
             gate-1,东门,xingfuli,{KEY_A}\n\
             gate-5,南门,xingfuli,{KEY_B},district\n\
             gate-6,南门\n\
             gate-7,南门,xingfuli,{KEY_B}\n"
        );
        let mut taken = |id: &str| Ok((id == "gate-7").then(|| KEY_A.to_string()));
        let problems = parse_csv(&text, 0, &mut taken).unwrap_err();
        let lines: Vec<&str> = problems.iter().map(|p| p.split(' ').nth(1).unwrap()).collect();
        assert_eq!(lines, ["3", "4", "5", "6", "7", "8", "9"], "{problems:#?}");
        assert!(problems[3].contains("twice") && problems[6].contains("another key"), "{problems:#?}");
        assert!(parse_csv("gate,key\n", 0, &mut none).unwrap_err()[0].starts_with("line 1: the header"));
    }
}

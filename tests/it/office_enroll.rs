//! #15 enrolment at scale: gates enrolled in the office's database from a CSV file (all rows or none), listed and
//! revoked from the command line, and taken by the running office at once.

use std::net::TcpListener;

use sibi::store::Store;
use sibi::sync::SyncClient;

use crate::util::{Killed, run};

fn out_text(o: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn gates_enrolled_from_a_csv_sign_in_at_the_running_office_and_a_revoked_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let mut pubs = Vec::new();
    for name in ["g1", "g2", "g3"] {
        let o = run(&["keygen", "--out", keys.to_str().unwrap(), "--name", name]);
        assert_eq!(o.status.code(), Some(0), "{}", out_text(&o));
        pubs.push(std::fs::read_to_string(keys.join(format!("{name}.pub"))).unwrap().trim().to_string());
    }
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let toml = dir.path().join("office.toml");
    std::fs::write(&toml, format!("[office]\nlisten = \"127.0.0.1:{port}\"\ndatabase = \"office.db\"\n")).unwrap();
    let config = toml.to_str().unwrap();

    // One bad row (a key that is not one) and nothing is enrolled; the error names the line.
    let csv = dir.path().join("gates.csv");
    std::fs::write(
        &csv,
        format!(
            "id,name,community,public_key\ngate-1,幸福里东门,xingfuli,{}\ngate-2,幸福里西门,xingfuli,sibi-ed25519-public:00\n",
            pubs[0]
        ),
    )
    .unwrap();
    let o = run(&["office", "enroll", "--config", config, "--csv", csv.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", out_text(&o));
    assert!(out_text(&o).contains("1 bad row(s), nothing enrolled") && out_text(&o).contains("line 3 (`gate-2`)"));
    let listed = run(&["office", "gates", "--config", config]);
    assert_eq!(String::from_utf8_lossy(&listed.stdout), "", "nothing half-imported");

    // The good file: the key as in the .pub file, or bare hex.
    let bare = pubs[2].trim_start_matches("sibi-ed25519-public:");
    std::fs::write(
        &csv,
        format!(
            "id,name,community,public_key\ngate-1,幸福里东门,xingfuli,{}\ngate-2,幸福里西门,xingfuli,{}\ngate-3,和平里北门,hepingli,{bare}\n",
            pubs[0], pubs[1]
        ),
    )
    .unwrap();
    let o = run(&["office", "enroll", "--config", config, "--csv", csv.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", out_text(&o));
    assert!(out_text(&o).contains("enrolled 3 new or changed"), "{}", out_text(&o));
    let o = run(&["office", "enroll", "--config", config, "--csv", csv.to_str().unwrap()]);
    assert!(out_text(&o).contains("enrolled 0 new or changed, 3 already as given"), "run again: {}", out_text(&o));
    let listed = String::from_utf8_lossy(&run(&["office", "gates", "--config", config]).stdout).into_owned();
    assert_eq!(listed.lines().count(), 3, "{listed}");
    assert!(listed.lines().all(|l| l.contains("\tgate\t") && l.contains("enrolled 20")), "{listed}");

    // The office, serving; each enrolled gate signs in.
    let _server = Killed(crate::util::sibi().args(["office", "serve", "--config", config]).spawn().unwrap());
    crate::util::wait_for_port(port);
    let url = format!("http://127.0.0.1:{port}");
    let mut stores = Vec::new();
    for (i, id) in ["gate-1", "gate-2", "gate-3"].iter().enumerate() {
        let key = sibi::credential::pass::read_signing_key(&keys.join(format!("g{}.key", i + 1))).unwrap();
        let mut store = Store::open(&dir.path().join(format!("{id}.db")), id).unwrap();
        store.fill_synthetic(10, sibi::domain::Timestamp(1_764_547_200_000)).unwrap();
        let client = SyncClient::new(&crate::sync_office::settings(url.clone()), id, key);
        assert_eq!(client.drain(&mut store).unwrap(), 10, "{id}");
        stores.push((client, store));
    }
    let page = ureq::get(&format!("{url}/")).call().unwrap().body_mut().read_to_string().unwrap();
    assert!(page.contains("幸福里西门") && page.contains("和平里北门") && page.contains("hepingli"), "{page}");

    // gate-2's box is lost: revoked at the office, its next call is refused while the others go on.
    let o = run(&["office", "revoke", "--config", config, "--id", "gate-2"]);
    assert_eq!(o.status.code(), Some(0), "{}", out_text(&o));
    // In force at once at every office process: each signed change checks the enrolment in its own transaction.
    let (client, store) = &mut stores[1];
    let e = client.heartbeat(store).unwrap_err().to_string();
    assert!(e.contains("403") && e.contains("not enrolled"), "{e}");
    let (client, store) = &mut stores[0];
    client.heartbeat(store).unwrap();
    let o = run(&["office", "revoke", "--config", config, "--id", "gate-2"]);
    assert_eq!(o.status.code(), Some(2), "revoked twice: {}", out_text(&o));
    let listed = String::from_utf8_lossy(&run(&["office", "gates", "--config", config]).stdout).into_owned();
    assert!(listed.lines().any(|l| l.starts_with("gate-2\t") && l.contains("revoked 20")), "{listed}");

    // A new box for gate-2 has a new key: the file with the old key is refused for it, then enrolled afresh.
    let o = run(&["keygen", "--out", keys.to_str().unwrap(), "--name", "g2new"]);
    assert_eq!(o.status.code(), Some(0));
    let new_pub = std::fs::read_to_string(keys.join("g2new.pub")).unwrap();
    let one = dir.path().join("one.csv");
    std::fs::write(&one, format!("id,name,community,public_key\ngate-2,幸福里西门,xingfuli,{}\n", new_pub.trim()))
        .unwrap();
    let o = run(&["office", "enroll", "--config", config, "--csv", one.to_str().unwrap()]);
    assert!(out_text(&o).contains("enrolled 1 new or changed"), "{}", out_text(&o));
    let o = run(&["office", "enroll", "--config", config, "--csv", csv.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "the old key again: {}", out_text(&o));
    assert!(out_text(&o).contains("line 3 (`gate-2`): already enrolled with another key"), "{}", out_text(&o));
}

/// #15: above 200 gates the status page opens on the communities (the ones with problems first, 100 to a page),
/// drilling down to one community's gates; each page stays small.
#[test]
fn a_street_with_many_gates_gets_a_page_of_communities_that_drills_down_to_gates() {
    use sibi::office::{Database, Enrollment, Office, OfficeConfig, OfficeDb};
    let dir = tempfile::tempdir().unwrap();
    let database = Database::Sqlite(dir.path().join("office.db"));
    let mut db = OfficeDb::open(&database).unwrap();
    let key = sibi::keys::hex(ed25519_dalek::SigningKey::from_bytes(&[3; 32]).verifying_key().as_bytes());
    let rows: Vec<Enrollment> = (0..500)
        .map(|g| Enrollment {
            id: format!("g{g:03}"),
            kind: "gate".into(),
            name: format!("门{g}"),
            community: format!("c{:03}", g / 2),
            public_key: key.clone(),
            enrolled_ms: 0,
            revoked_ms: None,
        })
        .collect();
    assert_eq!(db.enroll(&rows).unwrap(), 500);
    let now = sibi::hw::now();
    // Every gate has called just now, but community c123's two gates (never), and c124's (an hour ago).
    for r in rows.iter().filter(|r| r.community != "c123") {
        let at = if r.community == "c124" { now.plus_ms(-3_600_000) } else { now };
        db.heartbeat(&r.id, 0, at).unwrap();
    }
    let office = Office::open(OfficeConfig::new(database, Default::default())).unwrap();
    // 问题清单: a gate that called and fell silent is a problem; one never seen is shown as 从未联系 instead.
    office.detect_problems(now).unwrap();
    let silent: Vec<String> = office
        .with_db(|db| db.problems(false))
        .unwrap()
        .into_iter()
        .filter(|p| p.kind == "gate_silent")
        .map(|p| p.unit)
        .collect();
    assert_eq!(silent, ["g248", "g249"], "c124's gates");
    let addr = sibi::office::serve_in_background(office).unwrap();
    let get = |q: &str| ureq::get(&format!("http://{addr}/{q}")).call().unwrap().body_mut().read_to_string().unwrap();
    let first = get("");
    assert!(!first.contains("data-gate="), "no gate rows on the office's first page");
    let communities: Vec<&str> = first.split("data-community-gates=\"").skip(1).map(|r| &r[..4]).collect();
    assert_eq!(communities.len(), 100, "100 to a page");
    assert_eq!(communities[0], "c123", "the community whose gates are silent comes first");
    assert!(first.contains("第 1/3 页") && first.contains("?page=2"), "{first}");
    assert!(first.contains("250 个小区，500 个闸口"));
    let last = get("?page=3");
    assert_eq!(last.matches("data-community-gates=").count(), 50);
    let silent_page = get("?community=c124");
    let keys: Vec<&str> = silent_page.split("data-problem=\"").skip(1).map(|r| &r[..r.find('"').unwrap()]).collect();
    assert_eq!(keys.len(), 4, "its two gates' silence and yesterday's missing reports: {keys:?}");
    assert!(keys.iter().all(|k| k.contains(":g248:") || k.contains(":g249:")), "its own problems only: {keys:?}");
    let one = get("?community=c123");
    assert_eq!(one.matches("data-gate=").count(), 2);
    assert_eq!(one.matches("（失联）").count() + one.matches("从未联系").count(), 2, "{one}");
    assert!(first.len() < 200_000 && one.len() < 20_000, "{} and {} bytes", first.len(), one.len());
}

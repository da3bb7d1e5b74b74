//! #15 四级联动: two streets × two gates → one district → the city. Each level sends its roll-up of the day (counts
//! only, signed) to the level above; a gate's missing report shows as 漏报 at the district and at the city; nothing
//! personal leaves the street.

use std::net::TcpListener;
use std::path::Path;

use sibi::store::Store;
use sibi::sync::SyncClient;

use crate::util::{Killed, run};

fn port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn keygen(keys: &Path, name: &str) -> String {
    let o = run(&["keygen", "--out", keys.to_str().unwrap(), "--name", name]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::read_to_string(keys.join(format!("{name}.pub"))).unwrap().trim().to_string()
}

fn ok(args: &[&str]) -> String {
    let o = run(args);
    assert_eq!(o.status.code(), Some(0), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn serve(config: &Path, port: u16) -> Killed {
    let k = Killed(
        crate::util::sibi()
            .args(["office", "serve", "--config", config.to_str().unwrap()])
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    crate::util::wait_for_port(port);
    k
}

fn page(port: u16) -> String {
    ureq::get(&format!("http://127.0.0.1:{port}/")).call().unwrap().body_mut().read_to_string().unwrap()
}

/// `text` written to `name` in `dir`; its path.
fn written(dir: &Path, name: &str, text: String) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn get(port: u16, path: &str) -> (u16, String) {
    let mut r = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent()
        .get(&format!("http://127.0.0.1:{port}{path}"))
        .call()
        .unwrap();
    (r.status().as_u16(), r.body_mut().read_to_string().unwrap())
}

fn row(page: &str, unit: &str) -> String {
    page.split("<tr").find(|r| r.contains(&format!("data-unit=\"{unit}\""))).unwrap_or("").to_string()
}

#[test]
fn a_gates_missing_report_shows_at_the_district_and_the_city_and_nothing_personal_leaves_the_street() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let (pc, pd, ps1, ps2) = (port(), port(), port(), port());
    let d1_pub = keygen(&keys, "d1");
    let s_pub = [keygen(&keys, "s1"), keygen(&keys, "s2")];
    let gates = [("s1", "ga1"), ("s1", "ga2"), ("s2", "gb1"), ("s2", "gb2")];
    let mut gate_pubs = Vec::new();
    for (_, g) in gates {
        gate_pubs.push(keygen(&keys, g));
    }
    let w = |name: &str, text: String| written(dir.path(), name, text);
    let city = w(
        "city.toml",
        format!(
            "[office]\nid = \"wuhan\"\nlevel = \"city\"\nname = \"武汉市\"\nlisten = \"127.0.0.1:{pc}\"\ndatabase = \"city.db\"\n"
        ),
    );
    let district = w(
        "district.toml",
        format!(
            "[office]\nid = \"d1\"\nlevel = \"district\"\nname = \"江岸区\"\nlisten = \"127.0.0.1:{pd}\"\ndatabase = \"district.db\"\n\n\
             [upstream]\nurl = \"http://127.0.0.1:{pc}\"\nkey = \"keys/d1.key\"\n"
        ),
    );
    let mut streets = Vec::new();
    for (i, (s, p)) in [("s1", ps1), ("s2", ps2)].into_iter().enumerate() {
        let mut text = format!(
            "[office]\nid = \"{s}\"\nname = \"{s} 街道\"\nlisten = \"127.0.0.1:{p}\"\ndatabase = \"{s}.db\"\n\n\
             [upstream]\nurl = \"http://127.0.0.1:{pd}\"\nkey = \"keys/{s}.key\"\n"
        );
        for (k, (street, g)) in gates.iter().enumerate() {
            if *street == s {
                text.push_str(&format!(
                    "\n[[gate]]\nid = \"{g}\"\nkey = \"{}\"\nname = \"{g} 门\"\ncommunity = \"c{i}\"\n",
                    gate_pubs[k]
                ));
            }
        }
        streets.push(w(&format!("{s}.toml"), text));
    }
    // Each level enrols the offices below it.
    let csv = w("d1.csv", format!("id,name,community,public_key,kind\nd1,江岸区,江岸,{d1_pub},office\n"));
    ok(&["office", "enroll", "--config", city.to_str().unwrap(), "--csv", csv.to_str().unwrap()]);
    let csv = w(
        "streets.csv",
        format!(
            "id,name,community,public_key,kind\ns1,一元街道,一元,{},office\ns2,二七街道,二七,{},office\n",
            s_pub[0], s_pub[1]
        ),
    );
    ok(&["office", "enroll", "--config", district.to_str().unwrap(), "--csv", csv.to_str().unwrap()]);
    let _servers = [serve(&city, pc), serve(&district, pd), serve(&streets[0], ps1), serve(&streets[1], ps2)];

    // Yesterday at the gates: five passages each; every gate but gb2 sends its daily report.
    let now = sibi::hw::now();
    let yesterday = now.plus_ms(-86_400_000).to_rfc3339()[..10].to_string();
    let (noon, _) = sibi::report::day_bounds(&yesterday).unwrap();
    for (k, (s, g)) in gates.iter().enumerate() {
        let key = sibi::credential::pass::read_signing_key(&keys.join(format!("{g}.key"))).unwrap();
        let mut store = Store::open(&dir.path().join(format!("{g}.db")), g).unwrap();
        store.fill_synthetic(5, noon.plus_ms(12 * 3_600_000)).unwrap();
        if *g != "gb2" {
            sibi::sync::queue_report(&mut store, g, &format!("c{}", k / 2), &yesterday).unwrap();
        }
        let p = if *s == "s1" { ps1 } else { ps2 };
        SyncClient::new(&crate::sync_office::settings(format!("http://127.0.0.1:{p}")), g, key)
            .exchange(&mut store)
            .unwrap();
    }

    // The streets roll up to the district, the district to the city (the daemons do it every `every_secs`; the
    // command sends now).
    for s in &streets {
        ok(&["office", "rollup", "--config", s.to_str().unwrap(), "--date", &yesterday, "--send"]);
    }
    let up: serde_json::Value = serde_json::from_str(&ok(&[
        "office",
        "rollup",
        "--config",
        district.to_str().unwrap(),
        "--date",
        &yesterday,
        "--send",
    ]))
    .unwrap();
    assert_eq!((up["total"]["gates"].as_i64(), up["total"]["missing"].as_i64()), (Some(4), Some(1)), "{up:#}");
    assert_eq!(up["total"]["total"].as_i64(), Some(15), "the three reports' passages: {up:#}");
    let at_city: serde_json::Value =
        serde_json::from_str(&ok(&["office", "rollup", "--config", city.to_str().unwrap(), "--date", &yesterday]))
            .unwrap();
    assert_eq!(at_city["units"][0]["id"], "d1");
    assert_eq!(at_city["total"]["missing"].as_i64(), Some(1), "漏报 reaches the city: {at_city:#}");

    // The pages: the street with the missing report is flagged at the district, and the district at the city.
    let d = page(pd);
    assert!(d.contains("江岸区（区）· 各街道日报汇总"), "{d}");
    assert!(row(&d, "s2").contains("<td class=\"missing\">1</td>"), "{d}");
    assert!(!row(&d, "s1").contains("class=\"missing\">1"), "{d}");
    let c = page(pc);
    assert!(row(&c, "d1").contains("<td class=\"missing\">1</td>"), "{c}");
    // The reports came today for yesterday: 迟报 at every level.
    assert!(row(&c, "d1").contains("<td class=\"missing\">1</td><td>3</td>"), "{c}");

    // Exports at every level: the city's sheet of its districts for the day.
    let csv = dir.path().join("city.csv");
    ok(&[
        "office",
        "export",
        "--config",
        city.to_str().unwrap(),
        "--what",
        "rollups",
        "--from",
        &yesterday,
        "--out",
        csv.to_str().unwrap(),
    ]);
    let sheet = std::fs::read_to_string(&csv).unwrap();
    let d1_row = sheet.lines().find(|l| l.contains(",d1,")).unwrap_or_default().to_string();
    assert!(sheet.contains("漏报") && d1_row.starts_with(&yesterday), "{sheet}");
    let cells: Vec<&str> = d1_row.split(',').collect();
    assert_eq!((cells[4], cells[5], cells[11]), ("4", "15", "1"), "gates, passages, missing: {d1_row}");

    // 问题清单: gb2's missing report is an open problem at s2, counted at the district.
    let listed = ok(&["office", "problems", "--config", streets[1].to_str().unwrap()]);
    let key = format!("missing_report:gb2:{yesterday}");
    assert!(listed.lines().any(|l| l.starts_with(&key) && l.ends_with("\topen")), "{listed}");
    assert!(d.contains("待办问题"));
    // 问题不过夜: a problem s1 raised yesterday and has not closed is red at the district and the city.
    {
        let mut db = sibi::office::OfficeDb::open(&sibi::office::Database::Sqlite(dir.path().join("s1.db"))).unwrap();
        db.open_problem(&sibi::office::rollup::Problem {
            key: format!("fever_follow_up:ga1:{yesterday}"),
            kind: "fever_follow_up".into(),
            unit: "ga1".into(),
            date: yesterday.clone(),
            detail: "1 人发热，待记录随访".into(),
            opened_ms: noon.0,
            closed_ms: None,
            closed_by: None,
            note: None,
        })
        .unwrap();
    }
    let today = now.to_rfc3339()[..10].to_string();
    let roll_up_all = || {
        for s in &streets {
            ok(&["office", "rollup", "--config", s.to_str().unwrap(), "--date", &today, "--send"]);
        }
        ok(&["office", "rollup", "--config", district.to_str().unwrap(), "--date", &today, "--send"]);
    };
    roll_up_all();
    let c = page(pc);
    assert!(row(&c, "d1").contains("<td class=\"overnight\">1</td>"), "overnight at the city: {c}");
    assert!(row(&page(pd), "s1").contains("<td class=\"overnight\">1</td>"), "and at the district");
    assert!(c.contains("发热待随访"), "the city sees the problem's kind: {c}");
    // Drilling down one level at a time: the city's district opens on its streets, the district's street on its
    // communities, each with its figures and its problems.
    assert!(row(&c, "d1").contains("<a href=\"?unit=d1\">江岸区</a>"), "{c}");
    let (status, c_d1) = get(pc, "/?unit=d1");
    assert_eq!(status, 200, "{c_d1}");
    assert!(c_d1.contains("武汉市 · 江岸区（区）· 各街道") && c_d1.contains("<a href=\"./\">返回武汉市</a>"), "{c_d1}");
    assert!(row(&c_d1, "s1").contains("<td class=\"overnight\">1</td>"), "{c_d1}");
    assert!(row(&c_d1, "s2").contains("<td class=\"missing\">1</td>"), "s2's 漏报 of yesterday: {c_d1}");
    assert!(c_d1.contains("发热待随访"), "{c_d1}");
    let (_, d_s1) = get(pd, "/?unit=s1");
    assert!(d_s1.contains("江岸区 · 一元街道（街道）· 各社区"), "{d_s1}");
    assert!(row(&d_s1, "c0").contains("<td class=\"overnight\">1</td>"), "ga1's fever in c0: {d_s1}");
    assert!(row(&d_s1, "c0").starts_with(" data-unit=\"c0\"><td>c0</td><td>2</td>"), "its two gates: {d_s1}");
    let (_, d_s2) = get(pd, "/?unit=s2");
    assert!(row(&d_s2, "c1").contains("<td class=\"missing\">1</td>"), "gb2's 漏报 in c1: {d_s2}");
    assert!(!d_s2.contains("发热待随访"), "s1's problem is not s2's: {d_s2}");
    assert_eq!(get(pd, "/?unit=ga1").0, 404, "a gate is not a child office");
    // Closed at the street, with who and what; cleared above at the next roll-up.
    let fever = format!("fever_follow_up:ga1:{yesterday}");
    let o = run(&[
        "office",
        "close-problem",
        "--config",
        streets[0].to_str().unwrap(),
        "--key",
        &fever,
        "--by",
        "王主任",
        "--note",
        "",
    ]);
    assert_eq!(o.status.code(), Some(2), "a close without a note");
    ok(&[
        "office",
        "close-problem",
        "--config",
        streets[0].to_str().unwrap(),
        "--key",
        &fever,
        "--by",
        "王主任",
        "--note",
        "已电话随访，体温正常",
    ]);
    let all = ok(&["office", "problems", "--config", streets[0].to_str().unwrap(), "--all"]);
    assert!(all.lines().any(|l| l.starts_with(&fever) && l.contains("by 王主任: 已电话随访")), "{all}");
    roll_up_all();
    let c = page(pc);
    assert!(!row(&c, "d1").contains("class=\"overnight\""), "cleared at the city: {c}");
    assert!(!c.contains("发热待随访"));

    // A roll-up from a street the district did not enrol, or a gate's key posing as an office, is refused.
    let bogus = dir.path().join("bogus.toml");
    std::fs::write(
        &bogus,
        format!(
            "[office]\nid = \"ga1\"\nlisten = \"127.0.0.1:0\"\ndatabase = \"bogus.db\"\n\n[upstream]\nurl = \"http://127.0.0.1:{ps1}\"\nkey = \"keys/ga1.key\"\n"
        ),
    )
    .unwrap();
    let o = run(&["office", "rollup", "--config", bogus.to_str().unwrap(), "--date", &yesterday, "--send"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("HTTP 403"), "{}", String::from_utf8_lossy(&o.stderr));

    // Nothing personal at the district or the city: no entry rows, no holder, no credential reference.
    for db in ["district.db", "city.db"] {
        let mut bytes = std::fs::read(dir.path().join(db)).unwrap();
        bytes.extend(std::fs::read(dir.path().join(format!("{db}-wal"))).unwrap_or_default());
        let text = String::from_utf8_lossy(&bytes);
        for personal in ["测**员", "SYN-", "holder"] {
            assert!(!text.contains(personal), "{db} holds `{personal}`");
        }
    }
    let street_db = String::from_utf8_lossy(&std::fs::read(dir.path().join("s1.db-wal")).unwrap_or_default())
        .into_owned()
        + &String::from_utf8_lossy(&std::fs::read(dir.path().join("s1.db")).unwrap());
    assert!(street_db.contains("SYN-"), "the street holds the entries (the check above can fail)");
}

#[test]
fn an_office_config_with_a_level_that_does_not_exist_or_a_city_with_a_parent_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    keygen(&keys, "up");
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[office]\nid = \"p\"\nlevel = \"province\"\nlisten = \"127.0.0.1:0\"\ndatabase = \"x.db\"\n\n\
         [upstream]\nurl = \"http://office.example\"\nkey = \"keys/up.key\"\n",
    )
    .unwrap();
    let o = run(&["office", "rollup", "--config", bad.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("`office.level` = `province`: use street, district or city"), "{err}");
    assert!(err.contains("plain http only to a loopback address"), "{err}");
    std::fs::write(
        &bad,
        "[office]\nlevel = \"city\"\nlisten = \"127.0.0.1:0\"\ndatabase = \"x.db\"\n\n\
         [upstream]\nurl = \"https://above.example\"\nkey = \"keys/up.key\"\n",
    )
    .unwrap();
    let err =
        String::from_utf8_lossy(&run(&["office", "rollup", "--config", bad.to_str().unwrap()]).stderr).into_owned();
    assert!(err.contains("a city office has no office above it"), "{err}");
}

/// #15: the district designates a community's tier; its street verifies and republishes it to the gates as the
/// community's next bundle; the street may then publish neither a stricter nor a looser tier (不得层层加码); a
/// designation signed by another key is not taken.
#[test]
fn a_district_designates_a_tier_the_street_republishes_it_and_cannot_publish_over_it() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let (pd, ps) = (port(), port());
    keygen(&keys, "district-sign");
    let s_pub = keygen(&keys, "s1");
    keygen(&keys, "s1-sign");
    keygen(&keys, "stranger");
    let gate_pub = keygen(&keys, "g1");
    let district = dir.path().join("district.toml");
    std::fs::write(
        &district,
        format!(
            "[office]\nid = \"d1\"\nlevel = \"district\"\nlisten = \"127.0.0.1:{pd}\"\ndatabase = \"district.db\"\n\
             signing_key = \"keys/district-sign.key\"\n"
        ),
    )
    .unwrap();
    let street_toml = |office_key: &str| {
        format!(
            "[office]\nid = \"s1\"\nlisten = \"127.0.0.1:{ps}\"\ndatabase = \"s1.db\"\nsigning_key = \"keys/s1-sign.key\"\n\n\
             [upstream]\nurl = \"http://127.0.0.1:{pd}\"\nkey = \"keys/s1.key\"\noffice_key = \"keys/{office_key}.pub\"\n\n\
             [[gate]]\nid = \"test-gate\"\nkey = \"{gate_pub}\"\ncommunity = \"xingfuli\"\n"
        )
    };
    let street = dir.path().join("s1.toml");
    std::fs::write(&street, street_toml("stranger")).unwrap();
    let csv = dir.path().join("s.csv");
    std::fs::write(&csv, format!("id,name,community,public_key,kind\ns1,一元街道,一元,{s_pub},office\n")).unwrap();
    ok(&["office", "enroll", "--config", district.to_str().unwrap(), "--csv", csv.to_str().unwrap()]);
    let _servers = [serve(&district, pd), serve(&street, ps)];
    let (d, s) = (district.to_str().unwrap(), street.to_str().unwrap());

    // A street cannot designate; the district can.
    let o = run(&["office", "designate", "--config", s, "--community", "xingfuli", "--tier", "high"]);
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
    let effective = sibi::hw::now().plus_ms(-3_600_000).to_rfc3339();
    let out = ok(&[
        "office",
        "designate",
        "--config",
        d,
        "--community",
        "xingfuli",
        "--tier",
        "high",
        "--effective",
        &effective,
    ]);
    assert!(out.contains("designated xingfuli high") && out.contains("version 1"), "{out}");

    // Checked with the wrong key: not taken.
    let o = run(&["office", "designations", "--config", s, "--apply"]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("applied 0 designation(s)"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // With the district's key: taken and republished as the community's next bundle.
    std::fs::write(&street, street_toml("district-sign")).unwrap();
    let o = run(&["office", "designations", "--config", s, "--apply"]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("applied 1 designation(s)"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains("xingfuli\thigh"), "{}", String::from_utf8_lossy(&o.stdout));
    let bundle = ureq::get(&format!("http://127.0.0.1:{ps}/v1/bundle?community=xingfuli"))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    let street_key = sibi::credential::pass::read_verifying_key(&keys.join("s1-sign.pub")).unwrap();
    let b = sibi::bundle::verify(&bundle, &street_key, "xingfuli", 0).unwrap();
    let last = b.tier_changes().unwrap().pop().unwrap();
    assert_eq!(
        (last.tier, last.effective),
        (sibi::domain::Tier::High, sibi::domain::Timestamp::parse(&effective).unwrap())
    );
    // Applied once: a second fetch changes nothing.
    let o = run(&["office", "designations", "--config", s, "--apply"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("applied 0 designation(s)"));

    // The designation reaches a gate's decision: the gate fetches the street's bundle and `sibi decide` on its config
    // decides in the designated tier (a green-coded visitor, who passes in low, is denied in high).
    let gate = crate::util::Gate::new(
        "[[event]]\nat = 0.0\ntemperature = 36.5\n",
        &format!(
            "\n[sync]\noffice = \"http://127.0.0.1:{ps}\"\ngate_key = {:?}\noffice_key = {:?}\n",
            keys.join("g1.key").display().to_string(),
            keys.join("s1-sign.pub").display().to_string()
        ),
        "",
    );
    let text = std::fs::read_to_string(gate.config()).unwrap().replace("test-community", "xingfuli");
    std::fs::write(gate.config(), text).unwrap();
    let g = gate.config();
    let case = gate.dir.path().join("case.json");
    std::fs::write(
        &case,
        r#"{"direction":"in","people":[{"category":"visitor","identity":"health_code","code":"green",
            "temperature":36.5,"mask":"worn","visitor_registered":true}]}"#,
    )
    .unwrap();
    let decide = || -> serde_json::Value {
        serde_json::from_str(&ok(&["decide", "--config", g.to_str().unwrap(), "--input", case.to_str().unwrap()]))
            .unwrap()
    };
    assert_eq!(decide()["verdict"], "pass", "before: the gate's own low tier");
    let synced = ok(&["sync", "--config", g.to_str().unwrap(), "--now"]);
    assert!(synced.contains("policy bundle version 1 applied"), "{synced}");
    let after = decide();
    assert_eq!((after["verdict"].as_str(), after["tier"].as_str()), (Some("deny"), Some("high")), "{after}");

    // The street's own tier over the designation: looser and (after a medium designation) stricter are refused.
    let o = run(&["office", "publish", "--config", s, "--community", "xingfuli", "--tier", "low"]);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("a street may not publish a looser tier") && err.contains("不得层层加码"), "{err}");
    ok(&["office", "designate", "--config", d, "--community", "xingfuli", "--tier", "medium"]);
    ok(&["office", "designations", "--config", s, "--apply"]);
    let o = run(&["office", "publish", "--config", s, "--community", "xingfuli", "--tier", "high"]);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(err.contains("designated medium by `d1` (version 2") && err.contains("stricter"), "{err}");
    // The designated tier itself, and the lists, the street still publishes.
    ok(&["office", "publish", "--config", s, "--community", "xingfuli", "--revoke", "XFL-0001"]);
}

/// #15: the city designates a community's tier; the district whose street serves it designates it again (naming the
/// city's) and may not designate over it; the street republishes it and may not publish over it either.
#[test]
fn a_city_designation_reaches_the_street_through_its_district_and_neither_may_set_another_tier() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let (pc, pd, ps) = (port(), port(), port());
    keygen(&keys, "city-sign");
    keygen(&keys, "district-sign");
    keygen(&keys, "d1");
    let s_pub = keygen(&keys, "s1");
    keygen(&keys, "s1-sign");
    let gate_pub = keygen(&keys, "g1");
    let w = |name: &str, text: String| written(dir.path(), name, text);
    let city = w(
        "city.toml",
        format!(
            "[office]\nid = \"wuhan\"\nlevel = \"city\"\nlisten = \"127.0.0.1:{pc}\"\ndatabase = \"city.db\"\n\
             signing_key = \"keys/city-sign.key\"\n"
        ),
    );
    let district = w(
        "district.toml",
        format!(
            "[office]\nid = \"d1\"\nlevel = \"district\"\nlisten = \"127.0.0.1:{pd}\"\ndatabase = \"district.db\"\n\
             signing_key = \"keys/district-sign.key\"\n\n[upstream]\nurl = \"http://127.0.0.1:{pc}\"\nkey = \"keys/d1.key\"\n\
             office_key = \"keys/city-sign.pub\"\nevery_secs = 3600\n"
        ),
    );
    let street = w(
        "s1.toml",
        format!(
            "[office]\nid = \"s1\"\nlisten = \"127.0.0.1:{ps}\"\ndatabase = \"s1.db\"\nsigning_key = \"keys/s1-sign.key\"\n\n\
             [upstream]\nurl = \"http://127.0.0.1:{pd}\"\nkey = \"keys/s1.key\"\noffice_key = \"keys/district-sign.pub\"\n\
             every_secs = 3600\n\n[[gate]]\nid = \"test-gate\"\nkey = \"{gate_pub}\"\ncommunity = \"xingfuli\"\n"
        ),
    );
    let csv = w("s.csv", format!("id,name,community,public_key,kind\ns1,一元街道,一元,{s_pub},office\n"));
    let (c, d, s) = (city.to_str().unwrap(), district.to_str().unwrap(), street.to_str().unwrap());
    ok(&["office", "enroll", "--config", d, "--csv", csv.to_str().unwrap()]);
    let _servers = [serve(&city, pc), serve(&district, pd)];
    // The district knows its streets' communities from their roll-ups.
    let today = sibi::hw::now().to_rfc3339()[..10].to_string();
    ok(&["office", "rollup", "--config", s, "--date", &today, "--send"]);

    let applied = |config: &str| -> String {
        let o = run(&["office", "designations", "--config", config, "--apply"]);
        assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stderr).into_owned() + &String::from_utf8_lossy(&o.stdout)
    };
    ok(&["office", "designate", "--config", c, "--community", "xingfuli", "--tier", "high"]);
    ok(&["office", "designate", "--config", c, "--community", "elsewhere", "--tier", "medium"]);
    let at_d = applied(d);
    assert!(at_d.contains("applied 1 designation(s)") && at_d.contains("xingfuli\thigh"), "only its own: {at_d}");
    assert!(!at_d.contains("elsewhere"), "{at_d}");
    assert!(
        at_d.contains("by d1\tversion 1\tfor wuhan (its version 1)"),
        "signed by the district, naming the city's: {at_d}"
    );
    assert!(applied(d).contains("applied 0 designation(s)"), "carried down once");

    // The district may not designate over the city's tier.
    let o = run(&["office", "designate", "--config", d, "--community", "xingfuli", "--tier", "low"]);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("designated high by `wuhan` (version 1")
            && err.contains("a district may not designate a looser tier"),
        "{err}"
    );
    assert!(err.contains("不得层层加码") && err.contains("the city decides"), "{err}");

    // The street takes it from its district (verified with the district's key) and republishes it to its gates.
    let at_s = applied(s);
    assert!(at_s.contains("applied 1 designation(s)") && at_s.contains("xingfuli\thigh"), "{at_s}");
    let mut db = sibi::office::OfficeDb::open(&sibi::office::Database::Sqlite(dir.path().join("s1.db"))).unwrap();
    let bundle = db.latest_bundle("xingfuli").unwrap().expect("republished as the community's bundle");
    let street_key = sibi::credential::pass::read_verifying_key(&keys.join("s1-sign.pub")).unwrap();
    let b = sibi::bundle::verify(&bundle, &street_key, "xingfuli", 0).unwrap();
    assert_eq!(b.tier_changes().unwrap().pop().unwrap().tier, sibi::domain::Tier::High);
    let o = run(&["office", "publish", "--config", s, "--community", "xingfuli", "--tier", "medium"]);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("by `wuhan`") && err.contains("a street may not publish a looser tier"), "{err}");

    // The city changes its mind: the new tier comes down the same way.
    ok(&["office", "designate", "--config", c, "--community", "xingfuli", "--tier", "medium"]);
    assert!(applied(d).contains("xingfuli\tmedium"));
    assert!(applied(s).contains("applied 1 designation(s)"));
    ok(&["office", "publish", "--config", s, "--community", "xingfuli", "--tier", "medium"]);
}

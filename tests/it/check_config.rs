//! `sibi check-config`: broken files and over-controlling policies each get their own readable error and exit 2.

use std::collections::HashSet;

use crate::util::{repo, run};

const SCENARIO: &str = "[[event]]\nat = 0\ntemperature = 36.5\n";

const BASE: &str = r#"
[gate]
id = "g1"
community = "c1"
state_dir = "state"

[devices.credentials]
backend = "script"
[devices.thermometer]
backend = "script"
[devices.operator]
backend = "script"
[devices.gate]
backend = "sim"

[script]
file = "scenario.toml"
"#;

fn check(config: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("scenario.toml"), SCENARIO).unwrap();
    std::fs::write(dir.path().join("a-file"), "").unwrap();
    let path = dir.path().join("gate.toml");
    std::fs::write(&path, config).unwrap();
    let out = run(&["check-config", path.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    if out.status.code() == Some(2) {
        assert!(err.contains("gate.toml"), "the error names the file: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    (out.status.code(), err)
}

fn with(section_edit: impl Fn(&str) -> String) -> String {
    section_edit(BASE)
}

#[test]
fn the_shipped_configs_are_valid() {
    let out = run(&["check-config", repo().join("config/demo.toml").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("demo-east-gate"));
    // The demo's ID card reader and its roster (one resident known by keyed hash).
    assert!(String::from_utf8_lossy(&out.stdout).contains("id reader   scripted (simulated)"));
    assert!(String::from_utf8_lossy(&out.stdout).contains("id cards    1 residents on the roster by keyed hash"));
    let out = run(&["check-config", repo().join("config/gate.example.toml").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    // What the technician wires against, readable: device paths and BCM pins as in hardware/README.md.
    let text = String::from_utf8_lossy(&out.stdout);
    for line in [
        "camera      v4l2 camera /dev/sibi-camera 640×480",
        "thermometer serial /dev/sibi-thermometer 9600 baud",
        "buttons     gpio buttons (BCM) mask 5 emergency 6 help 13",
        "outputs     gpio (BCM) relay 17 (active high), green 22 red 27 amber 23 buzzer 24",
    ] {
        assert!(text.contains(line), "{line:?} not in {text}");
    }
    assert_eq!(check(BASE).0, Some(0));
}

#[test]
fn ten_broken_files_give_ten_distinct_readable_errors() {
    let cases: Vec<(&str, String, &str)> = vec![
        ("wrong type", with(|b| b.replace("id = \"g1\"", "id = 42")), "invalid type"),
        ("unknown key", with(|b| b.replace("[gate]\n", "[gate]\ncolour = \"red\"\n")), "unknown field `colour`"),
        (
            "missing section",
            with(|b| b.replace("[gate]\nid = \"g1\"\ncommunity = \"c1\"\nstate_dir = \"state\"\n", "")),
            "missing section `[gate]`",
        ),
        (
            "bad path",
            with(|b| b.replace("file = \"scenario.toml\"", "file = \"nowhere.toml\"")),
            "cannot read scenario",
        ),
        (
            "negative duration",
            format!("{BASE}\n[checkpoint]\nsession_timeout_secs = -5\n"),
            "`checkpoint.session_timeout_secs` = -5",
        ),
        (
            "negative grace",
            with(|b| b.replace("state_dir = \"state\"", "state_dir = \"state\"\nshutdown_grace_ms = -1")),
            "`gate.shutdown_grace_ms` = -1",
        ),
        ("bad gate id", with(|b| b.replace("id = \"g1\"", "id = \"东门 1\"")), "`gate.id`"),
        (
            "state dir is a file",
            with(|b| b.replace("state_dir = \"state\"", "state_dir = \"a-file\"")),
            "is not a directory",
        ),
        (
            "unknown backend",
            with(|b| b.replace("backend = \"sim\"", "backend = \"teleport\"")),
            "unknown variant `teleport`",
        ),
        (
            "script section missing",
            with(|b| b.replace("[script]\nfile = \"scenario.toml\"\n", "")),
            "missing section `[script]`",
        ),
        ("syntax error", with(|b| b.replace("[devices.gate]", "[devices.gate")), "TOML parse error"),
        (
            "relay pulse",
            with(|b| b.replace("backend = \"sim\"", "backend = \"sim\"\npulse_ms = 60000")),
            "`devices.gate.pulse_ms`",
        ),
        (
            "missing device",
            with(|b| b.replace("[devices.operator]\nbackend = \"script\"\n", "")),
            "missing section `[devices.operator]`",
        ),
        (
            "bad speed",
            with(|b| b.replace("file = \"scenario.toml\"", "file = \"scenario.toml\"\nspeed = 0")),
            "`script.speed`",
        ),
    ];
    let mut seen = HashSet::new();
    for (what, config, needle) in &cases {
        let (code, err) = check(config);
        assert_eq!(code, Some(2), "{what}: {err}");
        assert!(err.contains(needle), "{what}: expected {needle:?} in:\n{err}");
        let body: String = err.lines().skip(1).collect::<Vec<_>>().join("\n");
        assert!(seen.insert(body), "{what}: the same message as another case");
    }
    assert!(cases.len() >= 10);
}

#[test]
fn over_control_is_refused_with_the_bound_it_broke() {
    let cases: &[(&str, &str)] = &[
        ("fever_threshold = 36.9", "below 37.0"),
        ("fever_threshold = 37.6", "above 37.5"),
        ("emergency_lane = false", "emergency lane cannot be disabled"),
        ("require_mask = false", "口罩必戴"),
        ("temperature_range = [35.0, 42.5]", "policy.temperature_range"),
        ("require_code_with_pass = true", "stands in for the health code"),
        ("registration_fields = [\"name\", \"work_unit\"]", "`work_unit` may not be demanded"),
        ("registration_fields = [\"name\", \"travel_history\"]", "`travel_history` may not be demanded"),
        (
            "[[policy.rule]]\ntier = \"low\"\ncategory = \"resident\"\nverdict = \"deny\"",
            "denies residents in low tier",
        ),
        (
            "[[policy.rule]]\ntier = \"medium\"\ncategory = \"resident\"\nverdict = \"deny\"",
            "denies residents in medium tier",
        ),
        ("[[policy.rule]]\ntier = \"low\"\ncategory = \"emergency\"\nverdict = \"deny\"", "emergency lane passes"),
        (
            "[[policy.rule]]\ntier = \"low\"\ncategory = \"work_resumption\"\ndirection = \"in\"\nverdict = \"refer\"",
            "makes low tier, work_resumption, going in a refer where the guidance says pass",
        ),
        (
            "[[policy.rule]]\ntier = \"medium\"\ncategory = \"visitor\"\ndirection = \"in\"\nverdict = \"pass\"",
            "street office changes",
        ),
        ("[policy.vehicle_categories]\nlow = [\"resident\"]", "leaves out visitor vehicles"),
    ];
    let mut seen = HashSet::new();
    for (policy, needle) in cases {
        let section = if policy.starts_with("[[") || policy.starts_with("[policy.") {
            policy.to_string()
        } else {
            format!("[policy]\n{policy}")
        };
        let (code, err) = check(&format!("{BASE}\n{section}\n"));
        assert_eq!(code, Some(2), "{policy}: {err}");
        assert!(err.contains(needle), "{policy}: expected {needle:?} in:\n{err}");
        assert!(err.contains("guidance") || err.contains("DESIGN.md"), "{policy}: cites the guidance: {err}");
        assert!(seen.insert(err.lines().skip(1).collect::<String>()), "{policy}: message repeated");
    }
    assert!(cases.len() >= 10);
}

#[test]
fn relaxing_within_bounds_is_accepted() {
    let (code, err) = check(&format!(
        "{BASE}\n[policy]\nfever_threshold = 37.5\ncourier_admission = false\n\
         registration_fields = [\"name\", \"phone\", \"destination\", \"reason\", \"id_number\"]\n"
    ));
    assert_eq!(code, Some(0), "{err}");
}

#[test]
fn the_pi_config_on_a_machine_without_gpio_refuses_to_start_with_that_message() {
    if std::path::Path::new("/dev/gpiomem").exists() {
        return; // a real Pi
    }
    let dir = tempfile::tempdir().unwrap();
    let example = std::fs::read_to_string(repo().join("config/gate.example.toml")).unwrap();
    let config = dir.path().join("gate.toml");
    let clips = format!("clips = {:?}", repo().join("voice").display().to_string());
    let text = example
        .replace("state_dir = \"/var/lib/sibi\"", "state_dir = \"state\"")
        .replace("clips = \"../voice\"", &clips);
    std::fs::write(&config, text).unwrap();
    let out = run(&["run", "--config", config.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no Raspberry Pi GPIO found (未找到树莓派 GPIO)"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let out = run(&["probe", "gpio"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("no Raspberry Pi GPIO found"));
}

#[test]
fn probe_audio_plays_every_shipped_clip_through_the_real_player() {
    let dir = tempfile::tempdir().unwrap();
    let example = std::fs::read_to_string(repo().join("config/gate.example.toml")).unwrap();
    let config = dir.path().join("gate.toml");
    let clips = repo().join("voice");
    let text = example
        .replace("state_dir = \"/var/lib/sibi\"", "state_dir = \"state\"")
        .replace("command = [\"aplay\", \"-q\"]", "command = [\"aplay\", \"-q\", \"-D\", \"null\"]")
        .replace("clips = \"../voice\"", &format!("clips = {:?}", clips.display().to_string()));
    std::fs::write(&config, text).unwrap();
    let out = run(&["probe", "audio", "--config", config.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout.lines().count(), 9, "{stdout}");
    for words in ["请出示健康码", "体温正常，请通行", "体温异常，请复测", "请佩戴口罩", "禁止通行，请联系工作人员"]
    {
        assert!(stdout.contains(words), "{words} missing: {stdout}");
    }
    // Clips missing from the folder: the config is refused, naming them.
    let empty = dir.path().join("voice");
    std::fs::create_dir(&empty).unwrap();
    let text =
        std::fs::read_to_string(&config).unwrap().replace(&format!("{:?}", clips.display().to_string()), "\"voice\"");
    std::fs::write(&config, text).unwrap();
    let out = run(&["probe", "audio", "--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("wait_for_staff.wav"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const PIN_1234: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$Ze5HCKmqZN2AQ4WtQ5HPVw$ERaj8Zk33GrWDwdcYcWHuNA2t8J4v5GnRNkBvvboMtU";

#[test]
fn the_console_section_is_checked() {
    let console = |extra: &str| {
        format!(
            "{BASE}\n[console]\nlisten = \"127.0.0.1:0\"\n{extra}\n[[console.operator]]\nid = \"v1\"\nname = \"张阿姨\"\npin_hash = \"{PIN_1234}\"\n"
        )
    };
    assert_eq!(check(&console("simulator = true")).0, Some(0));
    let (code, err) = check(&console("lockout_failures = 1"));
    assert_eq!(code, Some(2));
    assert!(err.contains("`console.lockout_failures` = 1: use 3–20"), "{err}");
    let (code, err) = check(&console("").replace(PIN_1234, "1234"));
    assert_eq!(code, Some(2));
    assert!(err.contains("`console.operator[0].pin_hash`: not a PIN hash"), "{err}");
    // The simulator injects device events: never beside a real device.
    let real = console("simulator = true").replace(
        "[devices.thermometer]\nbackend = \"script\"",
        "[devices.thermometer]\nbackend = \"serial\"\nport = \"a-file\"\nprotocol = \"ascii\"",
    );
    let (code, err) = check(&real);
    assert_eq!(code, Some(2));
    assert!(err.contains("`console.simulator` = true: only with simulated devices"), "{err}");
    // Roster names must be masked: the box keeps no resident's full name.
    let dir = tempfile::tempdir().unwrap();
    let roster = dir.path().join("roster.csv");
    std::fs::write(&roster, "building,room,name\n3,201,王小华\n").unwrap();
    let (code, err) = check(&console(&format!("roster = {:?}", roster.display().to_string())));
    assert_eq!(code, Some(2));
    assert!(err.contains("names in the roster must be masked"), "{err}");
    let out = run(&["check-config", repo().join("config/demo.toml").to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("console     http://127.0.0.1:8080/ (1 operator(s), lock after 5 wrong PINs for 300 s, 5 roster entries, simulator on)"));
}

/// `[devices.face_camera]` is checked like the QR camera, feeds only the mask judge (so needs `[mask]`), reads no codes,
/// and `check-config` names it for the technician.
#[test]
fn the_face_camera_is_checked_and_described() {
    let face = "\n[devices.face_camera]\nbackend = \"v4l2\"\ndevice = \"/dev/sibi-face\"\n";
    let (code, err) = check(&format!("{BASE}{face}"));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("feeds only the mask judge: add `[mask]`"), "{err}");
    let (code, err) = check(&format!("{BASE}{face}fps = 500\ndecoder = \"rqrr\"\n[mask]\n"));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("`devices.face_camera.fps` = 500"), "{err}");
    assert!(err.contains("`devices.face_camera.decoder`: the face camera reads no codes"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("scenario.toml"), SCENARIO).unwrap();
    let path = dir.path().join("gate.toml");
    std::fs::write(&path, format!("{BASE}{face}[mask]\n")).unwrap();
    let out = run(&["check-config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("face camera v4l2 /dev/sibi-face 640×480 15 fps"), "{text}");
}

/// Timings that would turn people away without a trace are refused with what the key is for and the guidance line:
/// a same-code interval of a day (or an hour) drops a resident who goes out and comes back; a 0.2 s timeout closes
/// every presentation before anyone could finish; a day-long console lockout.
#[test]
fn timings_that_turn_people_away_are_refused_with_the_reason() {
    for (section, needle) in [
        (
            "[checkpoint]\nsame_code_interval_secs = 86400\n",
            "`checkpoint.same_code_interval_secs` = 86400: use 1–60 seconds",
        ),
        ("[checkpoint]\nsame_code_interval_secs = 3600\n", "不得层层加码"),
        ("[checkpoint]\nsession_timeout_secs = 0.2\n", "`checkpoint.session_timeout_secs` = 0.2: use 5–300 seconds"),
        ("[checkpoint]\nsession_timeout_secs = 3600\n", "closes it before anyone could finish"),
    ] {
        let (code, err) = check(&format!("{BASE}\n{section}"));
        assert_eq!(code, Some(2), "{section}: {err}");
        assert!(err.contains(needle), "{section}: expected {needle:?} in {err}");
    }
    // At the bounds, accepted; a scenario played 5× faster may use a 1 s timeout (its people move 5× faster too).
    assert_eq!(
        check(&format!("{BASE}\n[checkpoint]\nsame_code_interval_secs = 60\nsession_timeout_secs = 300\n")).0,
        Some(0)
    );
    let fast = BASE.replace("file = \"scenario.toml\"", "file = \"scenario.toml\"\nspeed = 5");
    assert_eq!(check(&format!("{fast}\n[checkpoint]\nsession_timeout_secs = 1\n")).0, Some(0));
    assert_eq!(check(&format!("{BASE}\n[checkpoint]\nsession_timeout_secs = 1\n")).0, Some(2));
}

//! Helpers: a temporary gate directory with a config and a scenario, and the built binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `sibi` binary cargo built for these tests.
pub fn sibi() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sibi"))
}

/// Run `sibi` with `args` and return its output.
pub fn run(args: &[&str]) -> Output {
    sibi().args(args).output().expect("sibi runs")
}

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A temporary gate: `dir/gate.toml`, `dir/scenario.toml`, state in `dir/state`.
pub struct Gate {
    pub dir: tempfile::TempDir,
}

impl Gate {
    /// A gate whose config has `extra` appended to the common sections, playing `scenario`.
    pub fn new(scenario: &str, script: &str, checkpoint: &str) -> Gate {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("scenario.toml"), scenario).unwrap();
        let config = format!(
            r#"
[gate]
id = "test-gate"
community = "test-community"
state_dir = "state"
shutdown_grace_ms = 5000

[policy]
version = "test-1"

[checkpoint]
{checkpoint}

[devices.credentials]
backend = "script"
[devices.thermometer]
backend = "script"
[devices.operator]
backend = "script"
[devices.gate]
backend = "sim"
pulse_ms = 200
log = "gate.log"
[devices.voice]
backend = "sim"
log = "voice.log"

[script]
file = "scenario.toml"
{script}
"#
        );
        std::fs::write(dir.path().join("gate.toml"), config).unwrap();
        Gate { dir }
    }

    pub fn config(&self) -> PathBuf {
        self.dir.path().join("gate.toml")
    }

    pub fn db(&self) -> PathBuf {
        self.dir.path().join("state/sibi.db")
    }

    pub fn voice_log(&self) -> PathBuf {
        self.dir.path().join("state/voice.log")
    }

    pub fn gate_log(&self) -> PathBuf {
        self.dir.path().join("state/gate.log")
    }
}

/// The gate log as (command name, seq) pairs.
pub fn gate_commands(path: &Path) -> Vec<(String, Option<i64>)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| {
            let cmd = &v["command"];
            (cmd["cmd"].as_str().unwrap_or("?").to_string(), cmd["seq"].as_i64())
        })
        .collect()
}

/// The shared strings of an XLSX workbook (every text cell), in order.
pub fn xlsx_strings(path: &Path) -> Vec<String> {
    use std::io::Read;
    let mut zip = zip::ZipArchive::new(std::fs::File::open(path).unwrap()).expect("an XLSX file is a zip archive");
    let mut xml = String::new();
    zip.by_name("xl/sharedStrings.xml").expect("a workbook with text").read_to_string(&mut xml).unwrap();
    xml.split("<t>")
        .skip(1)
        .chain(xml.split("<t xml:space=\"preserve\">").skip(1))
        .filter_map(|t| t.split("</t>").next())
        .map(|t| t.replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\""))
        .collect()
}

/// A child process killed when the test ends, pass or fail.
pub struct Killed(pub std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Wait until something accepts TCP connections on `port` (a server just spawned), at most 20 s.
pub fn wait_for_port(port: u16) {
    let end = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < end, "nothing listens on port {port}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Run the daemon in this process on the config at `path` until its scripted devices finish (at most `limit`), and
/// return its summary, which must say it shut down cleanly.
pub fn run_to_end(path: &Path, limit: std::time::Duration) -> sibi::app::RunSummary {
    let config = sibi::config::load(path).expect("config loads");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let summary = rt
        .block_on(async { tokio::time::timeout(limit, sibi::app::run(config, std::future::pending())).await })
        .expect("the scenario ends by itself")
        .expect("run succeeds");
    assert!(summary.clean);
    summary
}

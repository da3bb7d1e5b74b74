//! Running a Python speed anchor in the models venv (`scripts/models/prepare --venv`), one thread, and reading the
//! JSON object it prints last. Shared by the mask benches (`#[path]`-included: a folder, so cargo does not take it
//! for a bench of its own).

use std::ffi::OsString;
use std::path::Path;
use std::process::Command;

/// `script` (relative to the repository) run with `args` by the models venv's Python, or why it could not be.
pub fn run(script: &str, args: &[OsString]) -> Result<serde_json::Value, String> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let venv = Command::new(repo.join("scripts/models/prepare")).arg("--venv").output().map_err(|e| e.to_string())?;
    let python = String::from_utf8_lossy(&venv.stdout).trim().to_string();
    let out = Command::new(&python)
        .arg(repo.join(script))
        .args(args)
        .env("OMP_NUM_THREADS", "1")
        .output()
        .map_err(|e| format!("{python}: {e}"))?;
    // The last such line: Keras' predict() prints its progress bar on stdout before it.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().rev().find(|l| l.starts_with('{')).unwrap_or("");
    serde_json::from_str(last).map_err(|e| format!("{script}: {e}: {}", String::from_utf8_lossy(&out.stderr)))
}

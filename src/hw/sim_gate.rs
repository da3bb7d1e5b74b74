//! The simulated gate: records every command in memory and, if configured, appends it to a log file as a JSON line
//! (written before `apply` returns, so it survives the process being killed).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

use super::{DeviceFault, GateCommand, GateOutput, now};

/// A simulated relay, lights and buzzer.
pub struct SimGate {
    log: Option<File>,
    seen: Arc<Mutex<Vec<GateCommand>>>,
}

impl SimGate {
    /// A simulated gate; `log` is appended to.
    pub fn new(log: Option<&Path>) -> std::io::Result<SimGate> {
        let log = match log {
            Some(p) => {
                if let Some(dir) = p.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                Some(OpenOptions::new().create(true).append(true).open(p)?)
            }
            None => None,
        };
        Ok(SimGate { log, seen: Arc::default() })
    }

    /// A handle on the commands seen so far (for tests and benchmarks).
    pub fn seen(&self) -> Arc<Mutex<Vec<GateCommand>>> {
        self.seen.clone()
    }
}

impl GateOutput for SimGate {
    fn apply(&mut self, cmd: &GateCommand) -> Result<(), DeviceFault> {
        if let Some(f) = &mut self.log {
            let mut line = serde_json::json!({ "at_ms": now().0, "command": cmd }).to_string();
            line.push('\n');
            f.write_all(line.as_bytes()).map_err(|e| DeviceFault(format!("gate log: {e}")))?;
        }
        self.seen.lock().map_err(|_| DeviceFault("gate log poisoned".into()))?.push(cmd.clone());
        Ok(())
    }
}

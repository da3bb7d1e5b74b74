//! Voice prompts in Mandarin: short clips played on the box's audio output, never blocking a decision.
//!
//! [`VoiceHandle::say`] only queues; a player thread plays the newest prompt and cuts off one still playing (the gate
//! should say what is happening now, not what happened three people ago). Backends: `player` runs a command (default
//! `aplay -q`) on `<clips>/<key>.wav` — clips made by `scripts/voice-clips` with espeak-ng and shipped in `voice/`;
//! `sim` is silent and, if given a log, appends each prompt to it as a JSON line.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde::Deserialize;

use crate::policy::Voice;

/// `[devices.voice]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "backend", rename_all = "snake_case", deny_unknown_fields)]
pub enum VoiceSettings {
    /// Silent; each prompt appended to `log` (relative to `gate.state_dir`) if given.
    Sim {
        /// The prompt log.
        log: Option<PathBuf>,
    },
    /// Play clips with an audio player.
    Player {
        /// The player and its arguments; the clip path is appended (default `["aplay", "-q"]`).
        #[serde(default = "default_command")]
        command: Vec<String>,
        /// The folder of clips, one `<key>.wav` per prompt (default: `voice/` beside the config).
        clips: PathBuf,
    },
}

fn default_command() -> Vec<String> {
    vec!["aplay".into(), "-q".into()]
}

impl VoiceSettings {
    /// Problems with the settings (a missing clip, an empty command), for the config loader.
    pub fn problems(&self) -> Vec<String> {
        match self {
            VoiceSettings::Sim { .. } => Vec::new(),
            VoiceSettings::Player { command, clips } => {
                let mut p = Vec::new();
                if command.first().is_none_or(|c| c.is_empty()) {
                    p.push("`devices.voice.command`: give the player, e.g. [\"aplay\", \"-q\"]".to_string());
                }
                let missing: Vec<String> = Voice::ALL
                    .iter()
                    .map(|v| clip(clips, *v))
                    .filter(|c| !c.is_file())
                    .map(|c| c.display().to_string())
                    .collect();
                if !missing.is_empty() {
                    p.push(format!(
                        "`devices.voice.clips`: missing {} (make them with scripts/voice-clips)",
                        missing.join(", ")
                    ));
                }
                p
            }
        }
    }
}

/// The clip for `v` in `dir`.
pub fn clip(dir: &Path, v: Voice) -> PathBuf {
    dir.join(format!("{}.wav", v.key()))
}

/// Queue prompts for the player thread. Cloneable; the thread ends when the last handle is dropped.
#[derive(Clone, Debug)]
pub struct VoiceHandle {
    tx: mpsc::Sender<Voice>,
}

impl VoiceHandle {
    /// Start the backend.
    pub fn start(settings: &VoiceSettings) -> std::io::Result<VoiceHandle> {
        let (tx, rx) = mpsc::channel::<Voice>();
        match settings.clone() {
            VoiceSettings::Sim { log } => {
                let mut file = match log {
                    Some(p) => {
                        if let Some(d) = p.parent() {
                            std::fs::create_dir_all(d)?;
                        }
                        Some(OpenOptions::new().create(true).append(true).open(p)?)
                    }
                    None => None,
                };
                std::thread::Builder::new().name("voice-sim".into()).spawn(move || {
                    for v in rx {
                        if let Some(f) = &mut file {
                            let line = serde_json::json!({"at_ms": super::now().0, "voice": v.key(), "zh": v.zh()});
                            let _ = writeln!(f, "{line}");
                        }
                    }
                })?;
            }
            VoiceSettings::Player { command, clips } => {
                std::thread::Builder::new().name("voice".into()).spawn(move || player(&command, &clips, &rx))?;
            }
        }
        Ok(VoiceHandle { tx })
    }

    /// Say `v` (returns at once).
    pub fn say(&self, v: Voice) {
        let _ = self.tx.send(v);
    }
}

fn newest(first: Voice, rx: &mpsc::Receiver<Voice>) -> Voice {
    let mut v = first;
    while let Ok(n) = rx.try_recv() {
        v = n;
    }
    v
}

fn play(command: &[String], clips: &Path, v: Voice) -> Option<Child> {
    let (program, args) = command.split_first()?;
    match Command::new(program)
        .args(args)
        .arg(clip(clips, v))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!(player = %program, error = %e, "cannot play the voice prompt");
            None
        }
    }
}

fn stop(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

fn player(command: &[String], clips: &Path, rx: &mpsc::Receiver<Voice>) {
    let Ok(first) = rx.recv() else { return };
    let mut next = Some(newest(first, rx));
    while let Some(v) = next.take() {
        tracing::debug!(voice = v.key(), "语音: {}", v.zh());
        let Some(mut child) = play(command, clips, v) else {
            next = rx.recv().ok().map(|f| newest(f, rx));
            continue;
        };
        loop {
            match rx.recv_timeout(Duration::from_millis(20)) {
                Ok(n) => {
                    // A newer prompt cuts this one off.
                    stop(&mut child);
                    next = Some(newest(n, rx));
                    break;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    stop(&mut child);
                    return;
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if !matches!(child.try_wait(), Ok(None)) {
                        next = rx.recv().ok().map(|f| newest(f, rx));
                        break;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A "player" that appends the clip it was given to a file, then plays for `secs` (a real child process: the
    /// same spawn and kill path as aplay).
    fn fake_player(dir: &Path, secs: &str) -> Vec<String> {
        let script = dir.join("player.sh");
        std::fs::write(&script, format!("#!/bin/sh\necho \"$1\" >> {}/played\nexec sleep {secs}\n", dir.display()))
            .unwrap();
        vec!["/bin/sh".into(), script.display().to_string()]
    }

    fn played(dir: &Path) -> Vec<String> {
        std::fs::read_to_string(dir.join("played"))
            .unwrap_or_default()
            .lines()
            .map(|l| Path::new(l).file_stem().unwrap().to_string_lossy().into_owned())
            .collect()
    }

    fn wait_for(dir: &Path, n: usize) -> Vec<String> {
        for _ in 0..200 {
            let p = played(dir);
            if p.len() >= n {
                return p;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        played(dir)
    }

    #[test]
    fn say_returns_at_once_and_a_newer_prompt_cuts_the_playing_one_off() {
        let dir = tempfile::tempdir().unwrap();
        let settings = VoiceSettings::Player { command: fake_player(dir.path(), "5"), clips: dir.path().into() };
        let v = VoiceHandle::start(&settings).unwrap();
        let t = std::time::Instant::now();
        v.say(Voice::ShowCode);
        assert!(t.elapsed() < Duration::from_millis(50), "never blocks the decision");
        assert_eq!(wait_for(dir.path(), 1), vec!["show_code"]);
        // The 5-second clip is still "playing"; a decision arrives.
        v.say(Voice::Denied);
        assert_eq!(wait_for(dir.path(), 2), vec!["show_code", "denied"]);
    }

    #[test]
    fn prompts_queued_while_one_plays_collapse_to_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let settings = VoiceSettings::Player { command: fake_player(dir.path(), "0.3"), clips: dir.path().into() };
        let v = VoiceHandle::start(&settings).unwrap();
        v.say(Voice::Measure);
        assert_eq!(wait_for(dir.path(), 1), vec!["measure"]);
        std::thread::sleep(Duration::from_millis(500)); // it finished
        v.say(Voice::Pass);
        assert_eq!(wait_for(dir.path(), 2), vec!["measure", "pass"]);
    }

    #[test]
    fn a_missing_player_or_clip_is_a_config_problem_not_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let s = VoiceSettings::Player { command: vec![], clips: dir.path().into() };
        let p = s.problems();
        assert!(p.iter().any(|m| m.contains("give the player")), "{p:?}");
        assert!(p.iter().any(|m| m.contains("pass_normal.wav")), "{p:?}");
        // A player that does not exist: logged, and the next prompt is still tried.
        let v = VoiceHandle::start(&VoiceSettings::Player {
            command: vec!["/nonexistent/player".into()],
            clips: dir.path().into(),
        })
        .unwrap();
        v.say(Voice::Pass);
        v.say(Voice::Denied);
    }

    #[test]
    fn the_shipped_clips_cover_every_prompt() {
        let clips = Path::new(env!("CARGO_MANIFEST_DIR")).join("voice");
        let s = VoiceSettings::Player { command: default_command(), clips };
        assert_eq!(s.problems(), Vec::<String>::new());
    }
}

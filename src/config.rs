//! Configuration: raw TOML (unknown keys rejected) → validated [`Config`], one section per component.
//!
//! Every problem is reported with the file, the key and what is wrong; `sibi check-config` prints them all and exits 2.
//! Relative paths are resolved against the directory of the config file, so a config works from any working directory.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::domain::Direction;
use crate::hw::script::Script;
use crate::policy::{Policy, RawPolicy};

mod check;
pub use check::{command as check_command, describe as describe_config};

/// The whole file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// `[gate]`: who this gate is and where it keeps its state.
    pub gate: Option<RawGate>,
    /// `[policy]`: see [`crate::policy::bounds`].
    pub policy: Option<RawPolicy>,
    /// `[checkpoint]`: session timing.
    pub checkpoint: Option<RawCheckpoint>,
    /// `[store]`: the local database.
    pub store: Option<RawStore>,
    /// `[devices.*]`: one backend per device role.
    pub devices: Option<RawDevices>,
    /// `[credentials]`: what the gate trusts.
    pub credentials: Option<RawCredentials>,
    /// `[health_code]`: issuers and the verification gateway.
    pub health_code: Option<RawHealthCode>,
    /// `[script]`: the scenario the scripted (simulated) devices play.
    pub script: Option<RawScript>,
    /// `[sync]`: the street office this gate reports to.
    pub sync: Option<crate::sync::SyncSettings>,
    /// `[privacy]`: how personal data rests on this box.
    pub privacy: Option<RawPrivacy>,
    /// `[console]`: the operators' web console.
    pub console: Option<crate::console::RawConsole>,
    /// `[mask]`: 口罩必戴 by machine (the camera judges the mask).
    pub mask: Option<RawMask>,
    /// `[idcard]`: the resident roster by keyed ID hash, and the health lookup by ID number.
    pub idcard: Option<RawIdCard>,
}

/// `[idcard]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIdCard {
    /// The resident roster (CSV `building,room,name,id_hash`; `sibi idcard roster` makes it from the office's list).
    pub roster: Option<PathBuf>,
    /// The community's roster key (hex; `sibi idcard roster-key`), the HMAC key of `id_hash`. Needed with `roster`.
    pub roster_key: Option<PathBuf>,
    /// The province code whose platform answers ID queries (e.g. "420000"); default: the card's own province.
    pub health_region: Option<String>,
}

/// `[mask]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMask {
    /// Judge masks from the camera's frames (default true when the section is present).
    pub enabled: Option<bool>,
    /// The prepared models folder (`scripts/models/prepare`); default: `$SIBI_MODELS`, `/usr/share/sibi/models`,
    /// `~/.cache/sibi/models/current`. Relative to this file.
    pub models: Option<PathBuf>,
}

/// `[mask]`, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaskConfig {
    /// The models folder, if configured.
    pub models: Option<PathBuf>,
}

/// `[privacy]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPrivacy {
    /// The street office's public sealing key (`sibi keygen --kind seal` at the office). Registrations' names, phones
    /// and ID numbers are sealed to it; without it they are not kept at all, only their masked forms.
    pub office_key: PathBuf,
    /// Entries the office has acknowledged are deleted after this many days (default 28).
    pub retention_days: Option<u32>,
}

/// `[gate]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGate {
    /// Stable id of this gate (letters, digits, `-`, `_`), used in records and sync.
    pub id: String,
    /// Display name (示范小区东门).
    pub name: Option<String>,
    /// Community id.
    pub community: String,
    /// Directory for the database and logs.
    pub state_dir: PathBuf,
    /// The lane's direction (`in` by default).
    pub direction: Option<Direction>,
    /// How long shutdown may take before the process gives up waiting, in milliseconds.
    pub shutdown_grace_ms: Option<i64>,
}

/// `[checkpoint]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCheckpoint {
    /// A presentation with no new input for this long is closed as a recorded `refer` (the person walked away).
    pub session_timeout_secs: Option<f64>,
    /// The same code seen again within this interval after its presentation closed is the same person walking
    /// through, not a new presentation.
    pub same_code_interval_secs: Option<f64>,
}

/// `[store]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    /// Database file; relative to `gate.state_dir`. Default `sibi.db`.
    pub path: Option<PathBuf>,
}

/// `[devices]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDevices {
    /// `[devices.credentials]`: where credentials come from.
    pub credentials: Option<RawCredentialDevice>,
    /// `[devices.face_camera]`: a second camera that only the mask judge watches (where the box has one).
    pub face_camera: Option<RawFaceCamera>,
    /// `[devices.idcard]`: the ID card reader (where the gate has one).
    pub idcard: Option<RawIdCardDevice>,
    /// `[devices.thermometer]`.
    pub thermometer: Option<RawThermometerDevice>,
    /// `[devices.operator]`: operator input and buttons.
    pub operator: Option<RawOperatorDevice>,
    /// `[devices.gate]`: relay, lights and buzzer.
    pub gate: Option<RawGateDevice>,
    /// `[devices.voice]`: spoken prompts (default: silent).
    pub voice: Option<crate::hw::voice::VoiceSettings>,
}

/// A scripted device: plays its part of `[script]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawScripted {}

/// `[devices.credentials]`.
#[derive(Debug, Deserialize)]
#[serde(tag = "backend", rename_all = "snake_case")]
pub enum RawCredentialDevice {
    /// Already-read credentials from the script.
    Script(RawScripted),
    /// Frames from a folder of images, decoded and verified like a camera's.
    Frames(RawFrames),
    /// A V4L2 camera (USB UVC, or the Pi camera through its V4L2 compatibility).
    V4l2(RawV4l2),
}

/// `[devices.face_camera]`.
#[derive(Debug, Deserialize)]
#[serde(tag = "backend", rename_all = "snake_case")]
pub enum RawFaceCamera {
    /// Frames from a folder of images (demo, tests).
    Frames(RawFrames),
    /// A V4L2 camera.
    V4l2(RawV4l2),
}

/// `[devices.credentials]` (or `[devices.face_camera]`) with `backend = "v4l2"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawV4l2 {
    /// Device path; prefer the stable `/dev/v4l/by-id/...` link.
    pub device: PathBuf,
    /// Width (default 640).
    pub width: Option<u32>,
    /// Height (default 480).
    pub height: Option<u32>,
    /// Frames per second (default 15).
    pub fps: Option<u32>,
    /// `mjpeg` (default) or `yuyv`.
    pub format: Option<crate::hw::camera::PixelFormat>,
    /// QR decoder: `zxing` (default) or `rqrr`.
    pub decoder: Option<String>,
}

/// `[devices.credentials]` with `backend = "frames"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFrames {
    /// The folder of images (PNG, JPEG, WebP), replayed in name order.
    pub folder: PathBuf,
    /// Frames per second.
    pub fps: Option<f64>,
    /// Replay in a loop.
    pub repeat: Option<bool>,
    /// QR decoder: `zxing` (default) or `rqrr`.
    pub decoder: Option<String>,
}

/// `[health_code]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealthCode {
    /// Base URL of the street office's verification gateway.
    pub gateway: Option<String>,
    /// How long to wait for it, in ms (default 3000).
    pub timeout_ms: Option<i64>,
    /// Category a health-code holder is taken for (default `visitor`).
    pub default_category: Option<crate::domain::Category>,
    /// `[[health_code.issuer]]`: the issuer registry.
    #[serde(default)]
    pub issuer: Vec<crate::credential::health_code::Issuer>,
}

/// `[credentials]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCredentials {
    /// Public keys (from `sibi keygen`) that may sign this community's passes.
    #[serde(default)]
    pub pass_keys: Vec<PathBuf>,
    /// Revoked pass ids.
    #[serde(default)]
    pub revoked_passes: Vec<String>,
    /// Trusted DCC document signer certificates (DER or PEM).
    #[serde(default)]
    pub dcc_signers: Vec<PathBuf>,
}

/// `[devices.idcard]`.
#[derive(Debug, Deserialize)]
#[serde(tag = "backend", rename_all = "snake_case")]
pub enum RawIdCardDevice {
    /// Card taps from the script.
    Script(RawScripted),
    /// A GA 467 reader on a serial port.
    Serial(crate::hw::idcard::IdCardSettings),
}

/// `[devices.thermometer]`.
#[derive(Debug, Deserialize)]
#[serde(tag = "backend", rename_all = "snake_case")]
pub enum RawThermometerDevice {
    /// Readings from the script.
    Script(RawScripted),
    /// An IR thermometer module on a serial port.
    Serial(crate::hw::serial::SerialSettings),
}

/// `[devices.operator]`.
#[derive(Debug, Deserialize)]
#[serde(tag = "backend", rename_all = "snake_case")]
pub enum RawOperatorDevice {
    /// Operator actions and button presses from the script.
    Script(RawScripted),
    /// Buttons on Raspberry Pi GPIO.
    Gpio(crate::hw::gpio::GpioButtonSettings),
}

/// `[devices.gate]`.
#[derive(Debug, Deserialize)]
#[serde(tag = "backend", rename_all = "snake_case")]
pub enum RawGateDevice {
    /// A simulated gate that records and logs what it is told.
    Sim(RawSimGate),
    /// Relay, lights and buzzer on Raspberry Pi GPIO.
    Gpio(crate::hw::gpio::GpioGateSettings),
}

/// `[devices.gate]` with `backend = "sim"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSimGate {
    /// How long the relay holds the gate open, in milliseconds.
    pub pulse_ms: Option<i64>,
    /// File (relative to `gate.state_dir`) where every command is appended as a JSON line.
    pub log: Option<PathBuf>,
}

/// `[script]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawScript {
    /// The scenario file.
    pub file: PathBuf,
    /// Playback speed (2.0 plays twice as fast).
    pub speed: Option<f64>,
    /// Start again from the top when the scenario ends.
    pub repeat: Option<bool>,
    /// Stop the daemon once the scenario has played and the last presentation has closed.
    pub exit_when_done: Option<bool>,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from.
    pub source: PathBuf,
    /// `[gate]`.
    pub gate: GateConfig,
    /// `[policy]`, validated against the guidance bounds.
    pub policy: Policy,
    /// `[checkpoint]`.
    pub checkpoint: CheckpointConfig,
    /// Absolute path of the database.
    pub db_path: PathBuf,
    /// `[devices]`.
    pub devices: Devices,
    /// `[script]`, when a device plays it.
    pub script: Option<ScriptConfig>,
    /// `[credentials]`, loaded.
    pub credentials: CredentialsConfig,
    /// `[sync]` with the gate's signing key loaded; `None`: records stay local.
    pub sync: Option<SyncConfig>,
    /// The office's sealing key from `[privacy]`.
    pub seal_key: Option<crypto_box::PublicKey>,
    /// How long acknowledged entries are kept, ms.
    pub retention_ms: i64,
    /// The operators' web console, if configured.
    pub console: Option<crate::console::ConsoleConfig>,
    /// 口罩必戴 by machine, if enabled.
    pub mask: Option<MaskConfig>,
    /// `[idcard]` (always present: without the section, no roster and no regional override).
    pub idcard: IdCardConfig,
}

/// `[sync]`, validated, with the key loaded.
#[derive(Debug, Clone)]
pub struct SyncConfig {
    /// Settings (key path resolved).
    pub settings: crate::sync::SyncSettings,
    /// The gate's signing key.
    pub key: ed25519_dalek::SigningKey,
    /// The office's key that policy bundles must be signed with.
    pub office_key: Option<ed25519_dalek::VerifyingKey>,
}

/// `[credentials]` and `[health_code]`, loaded and checked.
#[derive(Debug, Clone)]
pub struct CredentialsConfig {
    /// Pass signing keys.
    pub pass_keys: Vec<ed25519_dalek::VerifyingKey>,
    /// Revoked pass ids.
    pub revoked_passes: Vec<String>,
    /// DCC signer certificates (DER, each parsed once at load).
    pub dcc_signers: Vec<Vec<u8>>,
    /// Health-code issuers.
    pub registry: crate::credential::health_code::Registry,
    /// Gateway base URL and timeout.
    pub gateway: Option<(String, Duration)>,
    /// Category for health-code holders.
    pub health_code_category: crate::domain::Category,
}

impl CredentialsConfig {
    /// The trust a gate of `community` applies.
    pub fn trust(&self, community: &str, gate: &str) -> crate::credential::Trust {
        crate::credential::Trust {
            registry: self.registry.clone(),
            health: self
                .gateway
                .as_ref()
                .map(|(url, t)| crate::credential::health_code::HealthCodeClient::new(url, *t, gate)),
            health_code_category: self.health_code_category,
            dcc: self.dcc_signers.iter().filter_map(|der| crate::credential::dcc::Signer::from_der(der).ok()).collect(),
            pass: crate::credential::pass::PassVerifier {
                keys: self.pass_keys.clone(),
                community: Some(community.to_string()),
                revoked: self.revoked_passes.iter().cloned().collect(),
            },
            ..Default::default()
        }
    }
}

/// `[gate]`, validated.
#[derive(Debug, Clone)]
pub struct GateConfig {
    /// Gate id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Community id.
    pub community: String,
    /// Absolute state directory.
    pub state_dir: PathBuf,
    /// Lane direction.
    pub direction: Direction,
    /// Shutdown grace.
    pub shutdown_grace: Duration,
}

/// `[checkpoint]`, validated: the checkpoint's own settings, built from the section here.
pub use crate::checkpoint::CheckpointConfig;

/// The backend chosen for each device role.
#[derive(Debug, Clone)]
pub struct Devices {
    /// Credentials.
    pub credentials: CredentialBackend,
    /// A second camera for the mask judge alone, if the box has one.
    pub face_camera: Option<FaceCameraBackend>,
    /// The ID card reader, if the gate has one.
    pub idcard: Option<IdCardBackend>,
    /// Thermometer.
    pub thermometer: ThermometerBackend,
    /// Operator input.
    pub operator: OperatorBackend,
    /// Gate outputs.
    pub gate: GateBackend,
    /// Voice prompts (paths resolved).
    pub voice: crate::hw::voice::VoiceSettings,
}

impl Devices {
    /// One line per device role, as `check-config` prints it for the technician: backend, device path or pins, and
    /// the settings that matter when wiring and commissioning.
    pub fn describe(&self) -> Vec<String> {
        let opt = |p: Option<u8>| p.map_or("-".to_string(), |p| p.to_string());
        let credentials = match &self.credentials {
            CredentialBackend::Script => "scripted (simulated)".to_string(),
            CredentialBackend::Frames { folder, fps, decoder, .. } => {
                format!("frames from {} at {fps} fps, decoder {decoder:?}", folder.display())
            }
            CredentialBackend::V4l2 { settings: c, decoder } => format!(
                "v4l2 camera {} {}×{} {} fps {:?}, decoder {decoder:?}",
                c.device.display(),
                c.width,
                c.height,
                c.fps,
                c.format
            ),
        };
        let thermometer = match &self.thermometer {
            ThermometerBackend::Script => "scripted (simulated)".to_string(),
            ThermometerBackend::Serial(t) => format!(
                "serial {} {} baud, protocol {:?}, calibration offset {:+} gain {}",
                t.port.display(),
                t.baud,
                t.protocol,
                t.calibration.offset,
                t.calibration.gain
            ),
        };
        let operator = match &self.operator {
            OperatorBackend::Script => "scripted (simulated)".to_string(),
            OperatorBackend::Gpio(b) => format!(
                "gpio buttons (BCM) mask {} emergency {} help {}, debounce {} ms",
                opt(b.mask),
                opt(b.emergency),
                opt(b.help),
                b.debounce_ms
            ),
        };
        let gate = match &self.gate {
            GateBackend::Sim { pulse, log } => format!(
                "simulated, pulse {} ms{}",
                pulse.as_millis(),
                log.as_ref().map(|l| format!(", log {}", l.display())).unwrap_or_default()
            ),
            GateBackend::Gpio { settings: g, pulse } => format!(
                "gpio (BCM) relay {} (active {}), green {} red {} amber {} buzzer {}, pulse {} ms",
                g.relay,
                if g.relay_active_high { "high" } else { "low" },
                g.green,
                g.red,
                g.amber,
                opt(g.buzzer),
                pulse.as_millis()
            ),
        };
        let mut lines = vec![format!("camera      {credentials}")];
        match &self.face_camera {
            Some(FaceCameraBackend::Frames { folder, fps, .. }) => {
                lines.push(format!("face camera frames from {} at {fps} fps (mask judge only)", folder.display()))
            }
            Some(FaceCameraBackend::V4l2(c)) => lines.push(format!(
                "face camera v4l2 {} {}×{} {} fps {:?} (mask judge only)",
                c.device.display(),
                c.width,
                c.height,
                c.fps,
                c.format
            )),
            None => {}
        }
        match &self.idcard {
            Some(IdCardBackend::Script) => lines.push("id reader   scripted (simulated)".into()),
            Some(IdCardBackend::Serial(r)) => {
                lines.push(format!("id reader   serial {} {} baud (GA 467)", r.port.display(), r.baud))
            }
            None => {}
        }
        lines.extend([
            format!("thermometer {thermometer}"),
            format!("buttons     {operator}"),
            format!("outputs     {gate}"),
        ]);
        lines
    }
}

/// Credential source backends.
#[derive(Debug, Clone, PartialEq)]
pub enum CredentialBackend {
    /// Scripted.
    Script,
    /// A folder of frames, decoded and verified.
    Frames {
        /// Absolute folder.
        folder: PathBuf,
        /// Frames per second.
        fps: f64,
        /// Loop.
        repeat: bool,
        /// Decoder.
        decoder: crate::credential::qr::DecoderKind,
    },
    /// A V4L2 camera.
    V4l2 {
        /// Settings.
        settings: crate::hw::camera::CameraSettings,
        /// Decoder.
        decoder: crate::credential::qr::DecoderKind,
    },
}

/// The face camera's backends (frames only: it decodes no codes).
#[derive(Debug, Clone, PartialEq)]
pub enum FaceCameraBackend {
    /// A folder of frames.
    Frames {
        /// Absolute folder.
        folder: PathBuf,
        /// Frames per second.
        fps: f64,
        /// Loop.
        repeat: bool,
    },
    /// A V4L2 camera.
    V4l2(crate::hw::camera::CameraSettings),
}

/// ID card reader backends.
#[derive(Debug, Clone, PartialEq)]
pub enum IdCardBackend {
    /// Scripted taps.
    Script,
    /// A serial reader.
    Serial(crate::hw::idcard::IdCardSettings),
}

/// `[idcard]`, resolved.
#[derive(Debug, Clone)]
pub struct IdCardConfig {
    /// The roster by keyed hash (empty, with a random key, when none is configured).
    pub roster: crate::credential::idcard::IdRoster,
    /// The province asked for health status by ID number.
    pub health_region: Option<String>,
}

/// Thermometer backends.
#[derive(Debug, Clone, PartialEq)]
pub enum ThermometerBackend {
    /// Scripted.
    Script,
    /// A serial IR thermometer.
    Serial(crate::hw::serial::SerialSettings),
}

/// Operator input backends.
#[derive(Debug, Clone, PartialEq)]
pub enum OperatorBackend {
    /// Scripted.
    Script,
    /// GPIO buttons.
    Gpio(crate::hw::gpio::GpioButtonSettings),
}

/// Gate output backends.
#[derive(Debug, Clone, PartialEq)]
pub enum GateBackend {
    /// Simulated.
    Sim {
        /// Relay pulse.
        pulse: Duration,
        /// Absolute path of the command log, if any.
        log: Option<PathBuf>,
    },
    /// GPIO relay, lights and buzzer.
    Gpio {
        /// Pins.
        settings: crate::hw::gpio::GpioGateSettings,
        /// Relay pulse.
        pulse: Duration,
    },
}

/// `[script]`, validated and loaded.
#[derive(Debug, Clone)]
pub struct ScriptConfig {
    /// Absolute path.
    pub file: PathBuf,
    /// The parsed scenario.
    pub script: Script,
    /// Speed factor (> 0).
    pub speed: f64,
    /// Loop.
    pub repeat: bool,
    /// Exit when played.
    pub exit_when_done: bool,
}

/// Why a config file was refused.
#[derive(Debug)]
pub struct ConfigError {
    /// The file.
    pub file: PathBuf,
    /// Every problem found, each naming its key.
    pub problems: Vec<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "config file `{}` is not usable:", self.file.display())?;
        for p in &self.problems {
            let mut lines = p.lines();
            if let Some(first) = lines.next() {
                write!(f, "\n  - {first}")?;
            }
            for l in lines {
                write!(f, "\n    {l}")?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Read and parse a file without validating the sections (used by `decide`, which needs only `[policy]`).
pub fn read_raw(path: &Path) -> Result<RawConfig, ConfigError> {
    let fail = |problem: String| ConfigError { file: path.to_path_buf(), problems: vec![problem] };
    let text = std::fs::read_to_string(path).map_err(|e| fail(format!("cannot read the file: {e}")))?;
    parse_raw(&text).map_err(fail)
}

fn parse_raw(text: &str) -> Result<RawConfig, String> {
    let de = toml::Deserializer::parse(text).map_err(|e| e.to_string().trim_end().to_string())?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        let inner = inner.trim_end();
        if path.is_empty() || path == "." { inner.to_string() } else { format!("in `{path}`: {inner}") }
    })
}

/// Only the policy of a config file (the dry run needs nothing else). A missing `[policy]` is the default policy.
pub fn load_policy(path: &Path) -> Result<Policy, ConfigError> {
    let raw = read_raw(path)?;
    raw.policy.unwrap_or_default().validate().map_err(|errors| ConfigError {
        file: path.to_path_buf(),
        problems: errors.iter().map(ToString::to_string).collect(),
    })
}

/// Load and validate a whole config file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let raw = read_raw(path)?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    validate(raw, path, &base).map_err(|problems| ConfigError { file: path.to_path_buf(), problems })
}

/// `[checkpoint] session_timeout_secs`: 5 s – 5 min.
pub const SESSION_TIMEOUT_SECS: (f64, f64) = (5.0, 300.0);
/// `[checkpoint] same_code_interval_secs`: 1 – 60 s.
pub const SAME_CODE_INTERVAL_SECS: (f64, f64) = (1.0, 60.0);

/// A duration in seconds within `(low, high)`, in ms; otherwise a problem that says what the key is for (`why`).
fn bounded_ms(
    key: &str,
    secs: Option<f64>,
    default_ms: i64,
    (low, high): (f64, f64),
    why: &str,
    problems: &mut Vec<String>,
) -> i64 {
    match secs {
        None => default_ms,
        Some(s) if s.is_finite() && (low..=high).contains(&s) => (s * 1000.0).round() as i64,
        Some(s) => {
            problems.push(format!("`{key}` = {s}: use {low}–{high} seconds. {why}"));
            default_ms
        }
    }
}

fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() { p.to_path_buf() } else { base.join(p) }
}

fn validate(raw: RawConfig, source: &Path, base: &Path) -> Result<Config, Vec<String>> {
    let mut problems = Vec::new();
    let missing = |section: &str, what: &str| format!("missing section `[{section}]`: {what}");

    let gate = match raw.gate {
        None => {
            problems.push(missing("gate", "give at least `id`, `community` and `state_dir`"));
            None
        }
        Some(g) => {
            if g.id.is_empty()
                || g.id.len() > 64
                || !g.id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                problems.push(format!(
                    "`gate.id` = {:?}: use 1–64 ASCII letters, digits, `-` or `_` (it names this gate in every record)",
                    g.id
                ));
            }
            if g.community.trim().is_empty() {
                problems.push("`gate.community` is empty: name the community this gate belongs to".into());
            }
            let state_dir = resolve(base, &g.state_dir);
            if state_dir.exists() && !state_dir.is_dir() {
                problems.push(format!("`gate.state_dir` = `{}` exists and is not a directory", state_dir.display()));
            } else if !state_dir.exists() {
                // It will be created at start; its parent must be able to hold it.
                let parent_ok = state_dir.ancestors().skip(1).find(|a| a.exists()).is_some_and(|a| a.is_dir());
                if !parent_ok {
                    problems.push(format!(
                        "`gate.state_dir` = `{}` cannot be created: a parent path is not a directory",
                        state_dir.display()
                    ));
                }
            }
            let grace = match g.shutdown_grace_ms {
                None => 5_000,
                Some(ms) if ms <= 0 => {
                    problems.push(format!("`gate.shutdown_grace_ms` = {ms}: a duration must be positive"));
                    5_000
                }
                Some(ms) if ms > 60_000 => {
                    problems.push(format!(
                        "`gate.shutdown_grace_ms` = {ms}: at most 60000 (systemd stops the service after that)"
                    ));
                    5_000
                }
                Some(ms) => ms,
            };
            Some(GateConfig {
                name: g.name.unwrap_or_else(|| g.id.clone()),
                id: g.id,
                community: g.community,
                state_dir,
                direction: g.direction.unwrap_or(Direction::In),
                shutdown_grace: Duration::from_millis(grace as u64),
            })
        }
    };

    let policy = match raw.policy.unwrap_or_default().validate() {
        Ok(p) => Some(p),
        Err(errors) => {
            problems.extend(errors.iter().map(ToString::to_string));
            None
        }
    };

    // A scenario played N× faster compresses a person's time at the gate by N: so may its timeout.
    let speed = raw.script.as_ref().and_then(|s| s.speed).filter(|s| s.is_finite() && *s >= 1.0).unwrap_or(1.0);
    let checkpoint = match raw.checkpoint {
        None => CheckpointConfig::default(),
        Some(c) => {
            let d = CheckpointConfig::default();
            let (low, high) = SESSION_TIMEOUT_SECS;
            CheckpointConfig {
                session_timeout_ms: bounded_ms(
                    "checkpoint.session_timeout_secs",
                    c.session_timeout_secs,
                    d.session_timeout_ms,
                    (low / speed, high),
                    "how long a presentation waits for the reading, the mask and the volunteer before it is recorded \
                     as walked away: shorter closes it before anyone could finish, longer keeps the next person \
                     waiting behind someone who left",
                    &mut problems,
                ),
                same_code_interval_ms: bounded_ms(
                    "checkpoint.same_code_interval_secs",
                    c.same_code_interval_secs,
                    d.same_code_interval_ms,
                    SAME_CODE_INTERVAL_SECS,
                    "it only keeps a code still in view as the person walks through from opening a second \
                     presentation; longer would turn away a resident who goes out and comes back, limiting how often \
                     people may pass, which the guidance forbids (不得层层加码，不得限制居民正常出入)",
                    &mut problems,
                ),
            }
        }
    };

    let db_rel = raw.store.and_then(|s| s.path).unwrap_or_else(|| PathBuf::from("sibi.db"));
    let state_dir = gate.as_ref().map(|g| g.state_dir.clone()).unwrap_or_default();
    let db_path = resolve(&state_dir, &db_rel);

    let devices = match raw.devices {
        None => {
            problems.push(missing(
                "devices",
                "choose a backend for `credentials`, `thermometer`, `operator` and `gate` (see config/demo.toml)",
            ));
            None
        }
        Some(d) => validate_devices(d, base, &state_dir, &mut problems),
    };
    let uses_script = devices.as_ref().is_some_and(|d| {
        d.credentials == CredentialBackend::Script
            || d.thermometer == ThermometerBackend::Script
            || d.operator == OperatorBackend::Script
    });

    let script = match raw.script {
        None if uses_script => {
            problems.push(missing("script", "a device uses `backend = \"script\"`, so give `[script] file = ...`"));
            None
        }
        None => None,
        Some(s) => {
            let file = resolve(base, &s.file);
            let speed = s.speed.unwrap_or(1.0);
            if !speed.is_finite() || speed <= 0.0 || speed > 10_000.0 {
                problems.push(format!("`script.speed` = {speed}: must be above 0 and at most 10000"));
            }
            match Script::load(&file) {
                Ok(script) => Some(ScriptConfig {
                    file,
                    script,
                    speed,
                    repeat: s.repeat.unwrap_or(false),
                    exit_when_done: s.exit_when_done.unwrap_or(false),
                }),
                Err(e) => {
                    problems.push(format!("`script.file`: {e}"));
                    None
                }
            }
        }
    };

    let mut credentials = load_credentials(raw.credentials.unwrap_or_default(), base, &mut problems);
    if let Some(h) = raw.health_code {
        credentials.health_code_category = h.default_category.unwrap_or(crate::domain::Category::Visitor);
        for (i, issuer) in h.issuer.iter().enumerate() {
            if issuer.prefixes.iter().all(|p| p.trim().is_empty()) {
                problems.push(format!("`health_code.issuer[{i}].prefixes`: give at least one non-empty prefix"));
            }
        }
        credentials.registry = crate::credential::health_code::Registry { issuers: h.issuer };
        let timeout = match h.timeout_ms {
            None => 3_000,
            Some(ms) if (100..=30_000).contains(&ms) => ms,
            Some(ms) => {
                problems.push(format!("`health_code.timeout_ms` = {ms}: use 100–30000 (the person is waiting)"));
                3_000
            }
        };
        if let Some(url) = h.gateway {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                problems.push(format!("`health_code.gateway` = {url:?}: give an http:// or https:// URL"));
            }
            credentials.gateway = Some((url, Duration::from_millis(timeout as u64)));
        }
    }

    let sync = raw.sync.and_then(|mut s| {
        problems.extend(s.problems());
        s.gate_key = resolve(base, &s.gate_key);
        s.ca_file = s.ca_file.as_ref().map(|p| resolve(base, p));
        if let Some(Err(e)) = s.ca_file.as_deref().map(crate::sync::tls_trusting) {
            problems.push(format!("`sync.ca_file`: {e}"));
        }
        let office_key = s.office_key.as_ref().map(|p| resolve(base, p)).and_then(|p| {
            crate::credential::pass::read_verifying_key(&p)
                .map_err(|e| problems.push(format!("`sync.office_key`: {e}")))
                .ok()
        });
        match crate::credential::pass::read_signing_key(&s.gate_key) {
            Ok(key) => Some(SyncConfig { settings: s, key, office_key }),
            Err(e) => {
                problems.push(format!("`sync.gate_key`: {e}"));
                None
            }
        }
    });

    let simulated = devices.as_ref().is_some_and(|d| {
        matches!(d.credentials, CredentialBackend::Script)
            && matches!(d.thermometer, ThermometerBackend::Script)
            && matches!(d.operator, OperatorBackend::Script)
            && matches!(d.gate, GateBackend::Sim { .. })
    });
    let console = raw.console.and_then(|c| crate::console::ConsoleConfig::load(c, base, simulated, &mut problems));

    let idcard = idcard_config(raw.idcard, base, &mut problems);
    let mask = raw
        .mask
        .filter(|m| m.enabled != Some(false))
        .map(|m| MaskConfig { models: m.models.map(|p| resolve(base, &p)) });
    if mask.is_none() && devices.as_ref().is_some_and(|d| d.face_camera.is_some()) {
        problems
            .push("`[devices.face_camera]` feeds only the mask judge: add `[mask]` (or remove the face camera)".into());
    }

    let retention_days = raw.privacy.as_ref().and_then(|p| p.retention_days).unwrap_or(28);
    if !(1..=3650).contains(&retention_days) {
        problems.push(format!("`privacy.retention_days` = {retention_days}: use 1–3650"));
    }
    let seal_key = raw.privacy.and_then(|p| {
        crate::privacy::read_public(&resolve(base, &p.office_key))
            .map_err(|e| problems.push(format!("`privacy.office_key`: {e}")))
            .ok()
    });

    match (gate, policy, devices) {
        (Some(gate), Some(policy), Some(devices)) if problems.is_empty() => Ok(Config {
            console,
            mask,
            idcard,
            seal_key,
            retention_ms: i64::from(retention_days) * 86_400_000,
            source: source.to_path_buf(),
            gate,
            policy,
            checkpoint,
            db_path,
            devices,
            script,
            credentials,
            sync,
        }),
        _ => Err(problems),
    }
}

fn load_credentials(raw: RawCredentials, base: &Path, problems: &mut Vec<String>) -> CredentialsConfig {
    let mut out = CredentialsConfig {
        revoked_passes: raw.revoked_passes,
        pass_keys: Vec::new(),
        dcc_signers: Vec::new(),
        registry: Default::default(),
        gateway: None,
        health_code_category: crate::domain::Category::Visitor,
    };
    for (i, p) in raw.pass_keys.iter().enumerate() {
        match crate::credential::pass::read_verifying_key(&resolve(base, p)) {
            Ok(k) => out.pass_keys.push(k),
            Err(e) => problems.push(format!("`credentials.pass_keys[{i}]`: {e}")),
        }
    }
    for (i, p) in raw.dcc_signers.iter().enumerate() {
        let path = resolve(base, p);
        let loaded = std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display())).and_then(|b| {
            let der = match x509_parser::pem::parse_x509_pem(&b) {
                Ok((_, pem)) => pem.contents,
                Err(_) => b,
            };
            crate::credential::dcc::Signer::from_der(&der).map(|_| der)
        });
        match loaded {
            Ok(der) => out.dcc_signers.push(der),
            Err(e) => problems.push(format!("`credentials.dcc_signers[{i}]`: {e}")),
        }
    }
    out
}

fn validate_devices(d: RawDevices, base: &Path, state_dir: &Path, problems: &mut Vec<String>) -> Option<Devices> {
    let need = |role: &str, problems: &mut Vec<String>| {
        problems.push(format!("missing section `[devices.{role}]`: choose its `backend`"));
    };
    let credentials = match d.credentials {
        Some(RawCredentialDevice::Script(_)) => Some(CredentialBackend::Script),
        Some(RawCredentialDevice::V4l2(c)) => {
            let decoder = decoder_of("devices.credentials", c.decoder.clone(), problems);
            Some(CredentialBackend::V4l2 { settings: v4l2_settings("devices.credentials", c, problems), decoder })
        }
        Some(RawCredentialDevice::Frames(f)) => {
            let decoder = decoder_of("devices.credentials", f.decoder.clone(), problems);
            let (folder, fps, repeat) = frames_settings("devices.credentials", base, f, problems);
            Some(CredentialBackend::Frames { folder, fps, repeat, decoder })
        }
        None => {
            need("credentials", problems);
            None
        }
    };
    let face_camera = d.face_camera.map(|f| match f {
        RawFaceCamera::V4l2(c) => {
            if c.decoder.is_some() {
                problems.push("`devices.face_camera.decoder`: the face camera reads no codes; remove it".into());
            }
            FaceCameraBackend::V4l2(v4l2_settings("devices.face_camera", c, problems))
        }
        RawFaceCamera::Frames(f) => {
            if f.decoder.is_some() {
                problems.push("`devices.face_camera.decoder`: the face camera reads no codes; remove it".into());
            }
            let (folder, fps, repeat) = frames_settings("devices.face_camera", base, f, problems);
            FaceCameraBackend::Frames { folder, fps, repeat }
        }
    });
    let idcard = d.idcard.map(|c| match c {
        RawIdCardDevice::Script(_) => IdCardBackend::Script,
        RawIdCardDevice::Serial(mut s) => {
            problems.extend(s.problems());
            s.port = resolve(base, &s.port);
            IdCardBackend::Serial(s)
        }
    });
    let thermometer = match d.thermometer {
        Some(RawThermometerDevice::Script(_)) => Some(ThermometerBackend::Script),
        Some(RawThermometerDevice::Serial(mut s)) => {
            problems.extend(s.problems());
            s.port = resolve(base, &s.port);
            Some(ThermometerBackend::Serial(s))
        }
        None => {
            need("thermometer", problems);
            None
        }
    };
    let gpio_gate = match &d.gate {
        Some(RawGateDevice::Gpio(g)) => Some(g.clone()),
        _ => None,
    };
    let operator = match d.operator {
        Some(RawOperatorDevice::Script(_)) => Some(OperatorBackend::Script),
        Some(RawOperatorDevice::Gpio(b)) => {
            if !(5..=500).contains(&b.debounce_ms) {
                problems.push(format!("`devices.operator.debounce_ms` = {}: use 5–500", b.debounce_ms));
            }
            Some(OperatorBackend::Gpio(b))
        }
        None => {
            need("operator", problems);
            None
        }
    };
    let buttons = match &operator {
        Some(OperatorBackend::Gpio(b)) => Some(b),
        _ => None,
    };
    problems.extend(
        crate::hw::gpio::pin_problems(gpio_gate.as_ref(), buttons).into_iter().map(|m| format!("`devices`: {m}")),
    );
    let mut pulse = |ms: Option<i64>| {
        let ms = match ms {
            None => 3_000,
            Some(ms) if !(100..=30_000).contains(&ms) => {
                problems.push(format!(
                    "`devices.gate.pulse_ms` = {ms}: the relay pulse must be 100–30000 ms (the gate closes by itself \
                     after it)"
                ));
                3_000
            }
            Some(ms) => ms,
        };
        Duration::from_millis(ms as u64)
    };
    let gate = match d.gate {
        Some(RawGateDevice::Sim(s)) => {
            Some(GateBackend::Sim { pulse: pulse(s.pulse_ms), log: s.log.map(|l| resolve(state_dir, &l)) })
        }
        Some(RawGateDevice::Gpio(g)) => Some(GateBackend::Gpio { pulse: pulse(g.pulse_ms), settings: g }),
        None => {
            need("gate", problems);
            None
        }
    };
    let voice = match d.voice {
        None => crate::hw::voice::VoiceSettings::Sim { log: None },
        Some(crate::hw::voice::VoiceSettings::Sim { log }) => {
            crate::hw::voice::VoiceSettings::Sim { log: log.map(|l| resolve(state_dir, &l)) }
        }
        Some(crate::hw::voice::VoiceSettings::Player { command, clips }) => {
            let v = crate::hw::voice::VoiceSettings::Player { command, clips: resolve(base, &clips) };
            problems.extend(v.problems());
            v
        }
    };
    Some(Devices {
        credentials: credentials?,
        face_camera,
        idcard,
        thermometer: thermometer?,
        operator: operator?,
        gate: gate?,
        voice,
    })
}

/// `[idcard]`: the roster (keyed hashes only) and its key.
fn idcard_config(raw: Option<RawIdCard>, base: &Path, problems: &mut Vec<String>) -> IdCardConfig {
    use crate::credential::idcard::{Home, IdRoster, read_roster_key};
    let raw = raw.unwrap_or(RawIdCard { roster: None, roster_key: None, health_region: None });
    if let Some(r) = &raw.health_region
        && (r.len() != 6 || !r.bytes().all(|b| b.is_ascii_digit()))
    {
        problems.push(format!("`idcard.health_region` = {r:?}: give a six-digit province code (420000)"));
    }
    let mut out = IdCardConfig { roster: IdRoster::empty(), health_region: raw.health_region };
    let (roster, key) = match (raw.roster, raw.roster_key) {
        (None, None) => return out,
        (Some(r), Some(k)) => (resolve(base, &r), resolve(base, &k)),
        _ => {
            problems.push("`idcard.roster` and `idcard.roster_key` go together (the roster's hashes are keyed)".into());
            return out;
        }
    };
    let key = match read_roster_key(&key) {
        Ok(k) => k,
        Err(e) => {
            problems.push(format!("`idcard.roster_key`: {e}"));
            return out;
        }
    };
    let mut reader = match csv::ReaderBuilder::new().has_headers(true).flexible(true).from_path(&roster) {
        Ok(r) => r,
        Err(e) => {
            problems.push(format!("`idcard.roster`: cannot read {}: {e}", roster.display()));
            return out;
        }
    };
    let mut entries = Vec::new();
    for (i, row) in reader.records().enumerate() {
        let line = i + 2;
        let Ok(row) = row else {
            problems.push(format!("`idcard.roster` {} line {line}: unreadable row", roster.display()));
            continue;
        };
        let Some(hash) = row.get(3).map(str::trim).filter(|h| !h.is_empty()) else { continue };
        if hash.len() != 32 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            problems.push(format!(
                "`idcard.roster` {} line {line}: `id_hash` must be 32 hex digits (sibi idcard roster makes them; \
                 the roster never holds a clear ID number)",
                roster.display()
            ));
            continue;
        }
        let home =
            Home { building: row.get(0).unwrap_or("").trim().into(), room: row.get(1).unwrap_or("").trim().into() };
        entries.push((hash.to_string(), home));
    }
    out.roster = IdRoster::new(key, entries);
    out
}

/// A QR decoder by name (`zxing`, the default, or `rqrr`).
fn decoder_of(role: &str, name: Option<String>, problems: &mut Vec<String>) -> crate::credential::qr::DecoderKind {
    let name = name.unwrap_or_else(|| "zxing".into());
    crate::credential::qr::DecoderKind::parse(&name).unwrap_or_else(|| {
        problems.push(format!("`{role}.decoder` = {name:?}: use \"zxing\" or \"rqrr\""));
        crate::credential::qr::DecoderKind::Zxing
    })
}

/// A V4L2 camera's settings, checked.
fn v4l2_settings(role: &str, c: RawV4l2, problems: &mut Vec<String>) -> crate::hw::camera::CameraSettings {
    let (width, height, fps) = (c.width.unwrap_or(640), c.height.unwrap_or(480), c.fps.unwrap_or(15));
    if !(160..=4096).contains(&width) || !(120..=4096).contains(&height) {
        problems.push(format!("`{role}` resolution {width}×{height}: use 160–4096 × 120–4096"));
    }
    if !(1..=60).contains(&fps) {
        problems.push(format!("`{role}.fps` = {fps}: use 1–60 frames per second"));
    }
    if !c.device.starts_with("/dev/") {
        problems
            .push(format!("`{role}.device` = `{}`: give a /dev path (ideally /dev/v4l/by-id/...)", c.device.display()));
    }
    crate::hw::camera::CameraSettings {
        device: c.device,
        width,
        height,
        fps,
        format: c.format.unwrap_or(crate::hw::camera::PixelFormat::Mjpeg),
    }
}

/// A frame folder's settings, checked: (folder, fps, repeat).
fn frames_settings(role: &str, base: &Path, f: RawFrames, problems: &mut Vec<String>) -> (PathBuf, f64, bool) {
    let folder = resolve(base, &f.folder);
    if !folder.is_dir() {
        problems.push(format!("`{role}.folder`: `{}` is not a directory", folder.display()));
    }
    let fps = f.fps.unwrap_or(10.0);
    if !(0.1..=120.0).contains(&fps) {
        problems.push(format!("`{role}.fps` = {fps}: use 0.1–120 frames per second"));
    }
    (folder, fps, f.repeat.unwrap_or(false))
}

//! Scripted devices: a scenario file (TOML) of timed events that the simulated credential source, thermometer and
//! operator input each play their part of. Used by the demo ("a morning at the gate") and by tests.
//!
//! ```toml
//! [[event]]
//! at = 0.0            # seconds from the start
//! credential = { key = "PASS-0001", identity = "pass", category = "resident", code = "none", holder = "王小华", frames = 30 }
//! [[event]]
//! at = 1.0
//! temperature = 36.5
//! [[event]]
//! at = 1.5
//! operator = { mask = "worn" }     # or colour = "green", approve = "探望父母", emergency = "pregnant",
//!                                  #    registered = true, cancel = true
//! [[event]]
//! at = 2.0
//! button = "mask_confirmed"        # or emergency_open, call_help
//! [[event]]
//! at = 3.0
//! thermometer_fault = 2.0          # the thermometer is unplugged for 2 s
//! [[event]]
//! at = 4.0
//! face = "faces/masked.png"        # the camera sees this picture (relative to the scenario; judged by the real
//!                                  #   mask judge when [mask] is on)
//! [[event]]
//! at = 5.0
//! card = { name = "王秀英", sex = "2", nation = "01", birth = "19460307", address = "示范市示范路1号",
//!          id = "11010119460307002", valid_from = "20100101", valid_to = "长期" }   # tapped on the ID card reader
//!                                  # (17 digits: the simulated card carries the check character)
//! ```
//!
//! When a script repeats, each cycle's credential keys get a `~N` suffix, so every cycle brings new people.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::{CredentialSource, DeviceFault, OperatorInput, OperatorSource, Polled, ThermoItem, Thermometer};
use crate::checkpoint::{Button, CredentialRead, EmergencyKind, OperatorAction};
use crate::domain::{Category, Celsius, CodeStatus, IdentityKind, MaskState};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScriptFile {
    #[serde(default)]
    event: Vec<RawEvent>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEvent {
    at: f64,
    credential: Option<SimCredential>,
    temperature: Option<f64>,
    operator: Option<RawOperator>,
    button: Option<Button>,
    thermometer_fault: Option<f64>,
    face: Option<std::path::PathBuf>,
    card: Option<SimCard>,
}

/// An ID card as a scenario describes it (a resident card, or with `kind = "hk_mo_tw"` the residence permit, which
/// has the same layout); written into a real text block and decoded by the real decoder. `id` gives the number's
/// first 17 digits and the card carries its check character (so no full number is written in a scenario), or all
/// 18 characters (to play a card whose check fails).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct SimCard {
    #[serde(default)]
    pub kind: Option<String>,
    pub name: String,
    pub sex: String,
    #[serde(default)]
    pub nation: String,
    pub birth: String,
    #[serde(default)]
    pub address: String,
    pub id: String,
    pub valid_from: String,
    pub valid_to: String,
}

impl SimCard {
    /// The card's 256-byte text block.
    pub fn text(&self) -> Result<[u8; 256], String> {
        use super::idcard::text::{CardKind, TextBuilder};
        let kind = match self.kind.as_deref() {
            None | Some("resident") => CardKind::Resident,
            Some("hk_mo_tw") => CardKind::HkMoTw,
            Some(other) => return Err(format!("card kind `{other}`: use resident or hk_mo_tw in a scenario")),
        };
        let id = match self.id.len() {
            17 => crate::domain::complete_id(&self.id).ok_or("card `id`: 17 digits expected")?,
            18 => self.id.clone(),
            _ => return Err("card `id`: give the first 17 digits (or all 18 characters)".into()),
        };
        let card = TextBuilder::resident(
            &self.name,
            &self.sex,
            &self.nation,
            &self.birth,
            &self.address,
            &id,
            &self.valid_from,
            &self.valid_to,
        );
        Ok(card.kind(kind).build())
    }
}

/// A credential as a scenario (or the console's simulator) describes it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct SimCredential {
    pub key: String,
    pub identity: IdentityKind,
    pub category: Category,
    #[serde(default = "no_code")]
    pub code: CodeStatus,
    #[serde(default)]
    pub holder: String,
    #[serde(default = "one")]
    pub frames: u32,
    #[serde(default)]
    pub quarantined: bool,
    #[serde(default)]
    pub from_risk_area: bool,
    #[serde(default)]
    pub inbound: bool,
    #[serde(default)]
    pub courier_registered: bool,
    #[serde(default)]
    pub visitor_registered: bool,
    #[serde(default)]
    pub service_roster: bool,
}

impl SimCredential {
    /// What the camera reader would have produced.
    pub fn read(self) -> CredentialRead {
        CredentialRead {
            key: self.key,
            identity: self.identity,
            category: self.category,
            code: self.code,
            holder: self.holder,
            quarantined: self.quarantined,
            from_risk_area: self.from_risk_area,
            inbound: self.inbound,
            courier_registered: self.courier_registered,
            visitor_registered: self.visitor_registered,
            service_roster: self.service_roster,
            prefill: None,
        }
    }
}

fn no_code() -> CodeStatus {
    CodeStatus::None
}
fn one() -> u32 {
    1
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOperator {
    mask: Option<MaskState>,
    colour: Option<CodeStatus>,
    approve: Option<String>,
    emergency: Option<EmergencyKind>,
    registered: Option<bool>,
    register: Option<crate::checkpoint::Registration>,
    cancel: Option<bool>,
}

/// One timed event of a scenario.
#[derive(Debug, Clone, PartialEq)]
pub enum ScriptItem {
    /// A credential shown for `frames` consecutive camera frames (40 ms apart).
    Credential(CredentialRead, u32),
    /// A reading.
    Temperature(Celsius),
    /// Operator input.
    Operator(OperatorInput),
    /// The thermometer is unplugged for this many milliseconds.
    ThermometerFault(u64),
    /// The camera sees this picture (a face for the mask judge).
    Face(std::path::PathBuf),
    /// A card tapped on the ID card reader: its text block.
    Card(Arc<[u8; 256]>),
}

/// A parsed scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct Script {
    /// Events sorted by time (milliseconds from the start).
    pub events: Vec<(u64, ScriptItem)>,
}

impl Script {
    /// Parse a scenario file. Errors name the file and the event.
    pub fn load(path: &Path) -> Result<Script, String> {
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("cannot read scenario `{}`: {e}", path.display()))?;
        let mut script = Script::parse(&text).map_err(|e| format!("scenario `{}`: {e}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        for (_, item) in &mut script.events {
            if let ScriptItem::Face(p) = item
                && p.is_relative()
            {
                *p = base.join(&*p);
            }
        }
        Ok(script)
    }

    /// Parse scenario text.
    pub fn parse(text: &str) -> Result<Script, String> {
        let raw: RawScriptFile = toml::from_str(text).map_err(|e| e.to_string().trim_end().to_string())?;
        let mut events = Vec::with_capacity(raw.event.len());
        for (i, e) in raw.event.into_iter().enumerate() {
            let bad = |m: &str| format!("event[{i}]: {m}");
            if !e.at.is_finite() || e.at < 0.0 {
                return Err(bad("`at` must be a non-negative number of seconds"));
            }
            let at = (e.at * 1000.0).round() as u64;
            let mut items = Vec::new();
            if let Some(c) = e.credential {
                if c.key.trim().is_empty() {
                    return Err(bad("credential `key` is empty"));
                }
                let frames = c.frames.clamp(1, 1000);
                items.push(ScriptItem::Credential(c.read(), frames));
            }
            if let Some(t) = e.temperature {
                let c = Celsius::from_f64(t).ok_or_else(|| bad("`temperature` is not a number"))?;
                items.push(ScriptItem::Temperature(c));
            }
            if let Some(o) = e.operator {
                let mut actions = Vec::new();
                if let Some(m) = o.mask {
                    actions.push(OperatorAction::Mask(m));
                }
                if let Some(c) = o.colour {
                    actions.push(OperatorAction::CodeColour(c));
                }
                if let Some(reason) = o.approve {
                    actions.push(OperatorAction::Approve { reason });
                }
                if let Some(k) = o.emergency {
                    actions.push(OperatorAction::Emergency(k));
                }
                if o.registered == Some(true) {
                    actions.push(OperatorAction::Register(Default::default()));
                }
                if let Some(r) = o.register {
                    actions.push(OperatorAction::Register(r));
                }
                if o.cancel == Some(true) {
                    actions.push(OperatorAction::Cancel);
                }
                if actions.len() != 1 {
                    return Err(bad(
                        "`operator` must hold exactly one of mask, colour, approve, emergency, registered, register, cancel",
                    ));
                }
                items.push(ScriptItem::Operator(OperatorInput::Action(actions.remove(0))));
            }
            if let Some(b) = e.button {
                items.push(ScriptItem::Operator(OperatorInput::Button(b)));
            }
            if let Some(secs) = e.thermometer_fault {
                if !secs.is_finite() || secs <= 0.0 {
                    return Err(bad("`thermometer_fault` must be a positive number of seconds"));
                }
                items.push(ScriptItem::ThermometerFault((secs * 1000.0) as u64));
            }
            if let Some(p) = e.face {
                items.push(ScriptItem::Face(p));
            }
            if let Some(c) = e.card {
                items.push(ScriptItem::Card(Arc::new(c.text().map_err(|m| bad(&m))?)));
            }
            if items.len() != 1 {
                return Err(bad(
                    "give exactly one of credential, temperature, operator, button, thermometer_fault, face, card",
                ));
            }
            events.push((at, items.remove(0)));
        }
        events.sort_by_key(|(at, _)| *at);
        Ok(Script { events })
    }

    /// The time between the starts of two cycles when repeating: the last event plus five seconds.
    pub fn period_ms(&self) -> u64 {
        self.events.last().map_or(0, |(at, _)| *at) + 5_000
    }
}

/// Playback settings shared by the scripted devices.
#[derive(Debug, Clone)]
pub struct Playback {
    /// Common start, so the devices stay in step.
    pub start: Instant,
    /// Speed factor.
    pub speed: f64,
    /// Loop.
    pub repeat: bool,
}

/// One device's part of a script, on a cursor.
struct Track<T> {
    items: Arc<Vec<(u64, T)>>,
    period: u64,
    playback: Playback,
    index: usize,
    cycle: u64,
}

impl<T: Clone> Track<T> {
    fn new(items: Vec<(u64, T)>, period: u64, playback: Playback) -> Track<T> {
        Track { items: Arc::new(items), period, playback, index: 0, cycle: 0 }
    }

    fn due(&self, script_ms: u64) -> Instant {
        self.playback.start + Duration::from_secs_f64(script_ms as f64 / 1000.0 / self.playback.speed)
    }

    /// Wait at most `wait` for the next item; returns it with its cycle number.
    fn next(&mut self, wait: Duration) -> Polled<(T, u64, u64)> {
        if self.index >= self.items.len() {
            if !self.playback.repeat || self.items.is_empty() {
                std::thread::sleep(wait.min(Duration::from_millis(10)));
                return Polled::Done;
            }
            self.index = 0;
            self.cycle += 1;
        }
        let (at, item) = &self.items[self.index];
        let script_ms = self.cycle * self.period + at;
        let due = self.due(script_ms);
        let now = Instant::now();
        if due > now {
            let nap = (due - now).min(wait);
            std::thread::sleep(nap);
            if Instant::now() < due {
                return Polled::Idle;
            }
        }
        self.index += 1;
        Polled::Item((item.clone(), self.cycle, script_ms))
    }
}

/// The scripted camera's pictures (faces), for the mask judge: each `face` event's picture at its time.
pub struct ScriptedFaces {
    track: Track<Arc<image::RgbImage>>,
}

impl ScriptedFaces {
    /// The face part of `script`, pictures loaded now; an unreadable picture is an error naming it.
    pub fn new(script: &Script, playback: Playback) -> Result<ScriptedFaces, String> {
        let mut items = Vec::new();
        for (at, item) in &script.events {
            if let ScriptItem::Face(p) = item {
                let img = image::open(p).map_err(|e| format!("scenario face `{}`: {e}", p.display()))?;
                items.push((*at, Arc::new(img.into_rgb8())));
            }
        }
        Ok(ScriptedFaces { track: Track::new(items, script.period_ms(), playback) })
    }

    /// Wait at most `wait` for the next picture.
    pub fn poll(&mut self, wait: Duration) -> Polled<Arc<image::RgbImage>> {
        match self.track.next(wait) {
            Polled::Item((p, _, _)) => Polled::Item(p),
            Polled::Idle => Polled::Idle,
            Polled::Done => Polled::Done,
        }
    }
}

/// The scripted ID card reader's taps: each `card` event's text block at its time.
pub struct ScriptedCards {
    track: Track<Arc<[u8; 256]>>,
}

impl ScriptedCards {
    /// The card part of `script`.
    pub fn new(script: &Script, playback: Playback) -> ScriptedCards {
        let items = script
            .events
            .iter()
            .filter_map(|(at, item)| match item {
                ScriptItem::Card(c) => Some((*at, c.clone())),
                _ => None,
            })
            .collect();
        ScriptedCards { track: Track::new(items, script.period_ms(), playback) }
    }

    /// Wait at most `wait` for the next tap.
    pub fn poll(&mut self, wait: Duration) -> Polled<Arc<[u8; 256]>> {
        match self.track.next(wait) {
            Polled::Item((c, _, _)) => Polled::Item(c),
            Polled::Idle => Polled::Idle,
            Polled::Done => Polled::Done,
        }
    }
}

/// The scripted credential source.
pub struct ScriptedCredentials {
    track: Track<(CredentialRead, u32)>,
    /// Frames still to repeat: (credential, remaining, next due in script ms).
    repeating: Option<(CredentialRead, u32, u64)>,
}

/// Milliseconds between two camera frames.
const FRAME_MS: u64 = 40;

impl ScriptedCredentials {
    /// The credential part of `script`.
    pub fn new(script: &Script, playback: Playback) -> ScriptedCredentials {
        let items = script
            .events
            .iter()
            .filter_map(|(at, i)| match i {
                ScriptItem::Credential(c, frames) => Some((*at, (c.clone(), *frames))),
                _ => None,
            })
            .collect();
        ScriptedCredentials { track: Track::new(items, script.period_ms(), playback), repeating: None }
    }
}

impl CredentialSource for ScriptedCredentials {
    fn poll(&mut self, wait: Duration) -> Result<Polled<CredentialRead>, DeviceFault> {
        if let Some((c, remaining, due_ms)) = self.repeating.take() {
            let due = self.track.due(due_ms);
            let now = Instant::now();
            if due > now {
                std::thread::sleep((due - now).min(wait));
                if Instant::now() < due {
                    self.repeating = Some((c, remaining, due_ms));
                    return Ok(Polled::Idle);
                }
            }
            if remaining > 1 {
                self.repeating = Some((c.clone(), remaining - 1, due_ms + FRAME_MS));
            }
            return Ok(Polled::Item(c));
        }
        Ok(match self.track.next(wait) {
            Polled::Item(((mut c, frames), cycle, at)) => {
                if cycle > 0 {
                    c.key = format!("{}~{cycle}", c.key);
                }
                if frames > 1 {
                    self.repeating = Some((c.clone(), frames - 1, at + FRAME_MS));
                }
                Polled::Item(c)
            }
            Polled::Idle => Polled::Idle,
            Polled::Done => Polled::Done,
        })
    }
}

/// The scripted thermometer (readings and unplugged periods).
pub struct ScriptedThermometer {
    track: Track<ScriptItem>,
    faulty_until: Option<Instant>,
}

impl ScriptedThermometer {
    /// The thermometer part of `script`.
    pub fn new(script: &Script, playback: Playback) -> ScriptedThermometer {
        let items = script
            .events
            .iter()
            .filter(|(_, i)| matches!(i, ScriptItem::Temperature(_) | ScriptItem::ThermometerFault(_)))
            .cloned()
            .collect();
        ScriptedThermometer { track: Track::new(items, script.period_ms(), playback), faulty_until: None }
    }
}

impl Thermometer for ScriptedThermometer {
    fn poll(&mut self, wait: Duration) -> Result<Polled<ThermoItem>, DeviceFault> {
        if let Some(until) = self.faulty_until {
            if Instant::now() < until {
                std::thread::sleep(wait.min(until - Instant::now()));
                return Err(DeviceFault("scripted thermometer unplugged".into()));
            }
            self.faulty_until = None;
        }
        match self.track.next(wait) {
            Polled::Item((ScriptItem::Temperature(c), _, _)) => Ok(Polled::Item(ThermoItem::Reading(c))),
            Polled::Item((ScriptItem::ThermometerFault(ms), _, _)) => {
                let ms = (ms as f64 / self.track.playback.speed) as u64;
                self.faulty_until = Some(Instant::now() + Duration::from_millis(ms.max(1)));
                Err(DeviceFault("scripted thermometer unplugged".into()))
            }
            Polled::Item(_) | Polled::Idle => Ok(Polled::Idle),
            Polled::Done => Ok(Polled::Done),
        }
    }
}

/// The scripted operator (console actions and buttons).
pub struct ScriptedOperator {
    track: Track<OperatorInput>,
}

impl ScriptedOperator {
    /// The operator part of `script`.
    pub fn new(script: &Script, playback: Playback) -> ScriptedOperator {
        let items = script
            .events
            .iter()
            .filter_map(|(at, i)| match i {
                ScriptItem::Operator(o) => Some((*at, o.clone())),
                _ => None,
            })
            .collect();
        ScriptedOperator { track: Track::new(items, script.period_ms(), playback) }
    }
}

impl OperatorSource for ScriptedOperator {
    fn poll(&mut self, wait: Duration) -> Result<Polled<OperatorInput>, DeviceFault> {
        Ok(match self.track.next(wait) {
            Polled::Item((o, _, _)) => Polled::Item(o),
            Polled::Idle => Polled::Idle,
            Polled::Done => Polled::Done,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"
[[event]]
at = 0.0
credential = { key = "P1", identity = "pass", category = "resident", holder = "王小华", frames = 3 }
[[event]]
at = 0.05
temperature = 36.5
[[event]]
at = 0.06
operator = { mask = "worn" }
"#;

    fn fast() -> Playback {
        Playback { start: Instant::now(), speed: 10.0, repeat: false }
    }

    #[test]
    fn each_device_plays_its_part_in_order_then_ends() {
        let s = Script::parse(TEXT).unwrap();
        let mut creds = ScriptedCredentials::new(&s, fast());
        let mut got = Vec::new();
        loop {
            match creds.poll(Duration::from_millis(50)).unwrap() {
                Polled::Item(c) => got.push(c.key),
                Polled::Idle => {}
                Polled::Done => break,
            }
        }
        assert_eq!(got, vec!["P1", "P1", "P1"]);
        let mut t = ScriptedThermometer::new(&s, fast());
        let first = loop {
            if let Polled::Item(c) = t.poll(Duration::from_millis(50)).unwrap() {
                break c;
            }
        };
        assert_eq!(first, ThermoItem::Reading(crate::domain::Celsius::from_centi(3650)));
    }

    #[test]
    fn repeating_scripts_bring_new_keys_each_cycle() {
        let s = Script::parse(
            "[[event]]\nat = 0\ncredential = { key = \"P\", identity = \"pass\", category = \"resident\" }",
        )
        .unwrap();
        let mut creds = ScriptedCredentials::new(&s, Playback { start: Instant::now(), speed: 1000.0, repeat: true });
        let mut keys = Vec::new();
        while keys.len() < 3 {
            if let Polled::Item(c) = creds.poll(Duration::from_millis(20)).unwrap() {
                keys.push(c.key);
            }
        }
        assert_eq!(keys, vec!["P", "P~1", "P~2"]);
    }

    #[test]
    fn bad_scripts_name_the_event() {
        for (text, needle) in [
            ("[[event]]\nat = -1\ntemperature = 36", "event[0]"),
            ("[[event]]\nat = 1\n", "exactly one"),
            ("[[event]]\nat = 1\ntemperature = 36\nbutton = \"call_help\"", "exactly one"),
            ("[[event]]\nat = 1\noperator = {}", "exactly one of mask"),
            ("[[event]]\nat = 1\nsmell = 1", "unknown field"),
        ] {
            let e = Script::parse(text).unwrap_err();
            assert!(e.contains(needle), "{text}: {e}");
        }
    }
}

//! The checkpoint: a pure state machine that gathers the events of one presentation and asks the policy for a
//! decision. Events in, effects out; time is an input; no I/O and no panics.
//!
//! It handles the mess of a real gate:
//! - a reading (or a mask confirmation) that arrives before the code is kept for the next presentation, and is used
//!   if it is still fresh;
//! - the same code seen in many consecutive frames is one presentation, and the same code still in view shortly after
//!   its presentation closed is the same person walking through; shown again after leaving the view, inside that
//!   interval, it is a prompt for the volunteer (once), never silence;
//! - a person who walks away is closed after the timeout as a recorded `refer`;
//! - a second person presenting while the first is pending closes the first as a recorded `refer`.
//!
//! Every presentation ends with exactly one `final` outcome; intermediate refers (a first fever reading, a missing
//! mask) are recorded as non-final outcomes so nothing is lost if the power fails mid-presentation.

use crate::domain::{
    Category, Celsius, CodeStatus, Direction, IdentityKind, MaskBy, MaskSeen, MaskState, Timestamp, Verdict, mask_name,
};
use crate::policy::{Decision, Person, Policy, Presentation, Reading, Rule, Voice, decide};

/// A credential as read and verified by a source (the QR text itself never travels further than the source).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CredentialRead {
    /// A stable key for de-duplication: pass id or a digest of the code text. Never an ID or phone number.
    pub key: String,
    /// What kind of credential.
    pub identity: IdentityKind,
    /// The holder's category.
    pub category: Category,
    /// Code status (green, red, unverified...).
    pub code: CodeStatus,
    /// The holder's name, masked (王*华); may be empty.
    pub holder: String,
    /// On the home-quarantine list.
    pub quarantined: bool,
    /// Returned from a risk area.
    pub from_risk_area: bool,
    /// Inbound traveller.
    pub inbound: bool,
    /// On the courier registry.
    pub courier_registered: bool,
    /// Registered visitor.
    pub visitor_registered: bool,
    /// On the service roster.
    pub service_roster: bool,
    /// What the credential itself says of the person (an ID card's name, number and address), to be recorded like a
    /// registration (sealed); the operator's registration form adds destination and reason. Moved into the
    /// presentation when it opens, so no copy travels with the credential.
    pub prefill: Option<Box<Registration>>,
}

impl CredentialRead {
    /// A credential with none of the list flags set (not quarantined, not from a risk area, not on any registry);
    /// the lists from the street office set them.
    pub fn new(
        key: impl Into<String>,
        identity: IdentityKind,
        category: Category,
        code: CodeStatus,
        holder: impl Into<String>,
    ) -> CredentialRead {
        CredentialRead {
            key: key.into(),
            identity,
            category,
            code,
            holder: holder.into(),
            quarantined: false,
            from_risk_area: false,
            inbound: false,
            courier_registered: false,
            visitor_registered: false,
            service_roster: false,
            prefill: None,
        }
    }
}

/// A code out of view this long and then shown again is someone presenting again, not the same walk-through.
const SHOWN_AGAIN_MS: i64 = 2_000;

/// The checkpoint's settings (`[checkpoint]` in a gate config, which `config` checks and builds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointConfig {
    /// Walk-away timeout in ms.
    pub session_timeout_ms: i64,
    /// Same-code interval in ms.
    pub same_code_interval_ms: i64,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig { session_timeout_ms: 30_000, same_code_interval_ms: 10_000 }
    }
}

/// What an emergency passage is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EmergencyKind {
    /// 发热病人就医.
    FeverPatient,
    /// 急症病人.
    Acute,
    /// 孕产妇.
    Pregnant,
    /// 救护车.
    Ambulance,
    /// Pressed on the emergency button without saying which.
    Unspecified,
}

/// What the offline lane records about a person (信息必录): only these fields. Name, phone and ID number are
/// sealed before they are stored; the gate keeps masked forms.
#[derive(Clone, Debug, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registration {
    /// Name.
    #[serde(default)]
    pub name: String,
    /// Phone.
    pub phone: Option<String>,
    /// Resident ID number (optional).
    pub id_number: Option<String>,
    /// The address on their ID card (filled by the card reader, not the form).
    #[serde(default)]
    pub address: Option<String>,
    /// Where they are going (3栋201).
    pub destination: Option<String>,
    /// Why (探亲, 送货...).
    pub reason: Option<String>,
    /// Who they are, when the operator registers someone who showed nothing (a resident from the roster, a visitor);
    /// default visitor, the stricter.
    #[serde(default)]
    pub category: Option<Category>,
}

impl Registration {
    /// The operator's form over what a card already said: the card's name, number and address stand (the form
    /// shows them masked), the form adds phone, destination, reason and category.
    pub fn over(self, card: Registration) -> Registration {
        let masked_or_empty = self.name.is_empty() || self.name.contains('*');
        Registration {
            name: if masked_or_empty { card.name } else { self.name },
            phone: self.phone.or(card.phone),
            id_number: card.id_number.or(self.id_number),
            address: card.address.or(self.address),
            destination: self.destination.or(card.destination),
            reason: self.reason.or(card.reason),
            category: self.category.or(card.category),
        }
    }
}

/// Something the operator did on the console.
#[derive(Clone, Debug, PartialEq)]
pub enum OperatorAction {
    /// Confirmed the mask state.
    Mask(MaskState),
    /// Looked at the phone and saw this colour (network down or check timed out).
    CodeColour(CodeStatus),
    /// Approved what the guidance leaves to the operator, with the reason.
    Approve {
        /// Why (探望老人...).
        reason: String,
    },
    /// The operator recorded the person's details (a visitor's registration; with no credential, a manual identity).
    Register(Registration),
    /// Emergency passage.
    Emergency(EmergencyKind),
    /// The person left; close the presentation.
    Cancel,
    /// The operator starts the re-measurement of a fever: the person is asked to measure again.
    Remeasure,
    /// A guard starts checking a vehicle: each occupant then presents or is registered in turn.
    VehicleStart {
        /// The plate (validated by the console).
        plate: String,
        /// The vehicle's category.
        category: Category,
        /// How many occupants (1–9); the vehicle is decided when that many have been decided.
        occupants: u8,
    },
    /// Decide the vehicle now, with the occupants decided so far.
    VehicleFinish,
}

/// A physical button on the gate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Button {
    /// Mask confirmed worn.
    MaskConfirmed,
    /// Emergency open.
    EmergencyOpen,
    /// Call for help.
    CallHelp,
}

/// What the camera's mask judge saw on the largest face in a frame (never the picture itself).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MaskObservation {
    /// Worn, not worn, or unsure.
    pub seen: MaskSeen,
    /// The mask probability, 0..1.
    pub score: f32,
    /// The face's size (shorter side of its box), pixels.
    pub face_px: u32,
}

/// Which device a fault concerns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceKind {
    /// Camera / credential source.
    Credentials,
    /// Thermometer.
    Thermometer,
    /// Operator input / buttons.
    Operator,
    /// Relay, lights, buzzer.
    Gate,
    /// The camera's mask judge.
    Mask,
    /// The ID card reader.
    IdCard,
}

impl DeviceKind {
    /// The Chinese name.
    pub fn zh(self) -> &'static str {
        match self {
            DeviceKind::Credentials => "扫码设备",
            DeviceKind::Thermometer => "体温计",
            DeviceKind::Operator => "按键",
            DeviceKind::Gate => "闸门",
            DeviceKind::Mask => "口罩识别",
            DeviceKind::IdCard => "身份证阅读器",
        }
    }
}

/// Everything that can happen at the gate. Closed: a new kind of input is a new variant here.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A credential was read.
    Credential(CredentialRead),
    /// A temperature reading (after calibration).
    Temperature(Celsius),
    /// Operator input.
    Operator(OperatorAction),
    /// The camera saw a face and judged its mask.
    Mask(MaskObservation),
    /// A button was pressed.
    Button(Button),
    /// Time passed (the driver ticks a few times a second).
    Tick,
    /// A device stopped working.
    Fault {
        /// Which.
        device: DeviceKind,
        /// What happened (English, for the log).
        detail: String,
    },
    /// A device works again.
    Restored(DeviceKind),
    /// The street office's signed bundle changed the tier schedule (already verified).
    Tiers {
        /// Bundle version.
        version: u64,
        /// The new schedule, sorted, non-empty.
        tiers: Vec<crate::policy::TierChange>,
    },
    /// A device needs attention but still works (a thermometer that has drifted).
    Notice {
        /// Which.
        device: DeviceKind,
        /// For the log (English).
        detail: String,
        /// For the operator (Chinese).
        message_zh: String,
    },
}

/// Why a presentation closed without a pass or deny.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CloseNote {
    /// Nothing new for the session timeout.
    WalkedAway,
    /// Another person presented.
    Superseded,
    /// The operator cancelled.
    Cancelled,
    /// The daemon stopped.
    Shutdown,
}

impl CloseNote {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseNote::WalkedAway => "walked_away",
            CloseNote::Superseded => "superseded",
            CloseNote::Cancelled => "cancelled",
            CloseNote::Shutdown => "shutdown",
        }
    }
}

impl EmergencyKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            EmergencyKind::FeverPatient => "fever_patient",
            EmergencyKind::Acute => "acute",
            EmergencyKind::Pregnant => "pregnant",
            EmergencyKind::Ambulance => "ambulance",
            EmergencyKind::Unspecified => "unspecified",
        }
    }
}

/// A decision to record, and then act on.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    /// Presentation id (unique across restarts: the driver seeds the counter from the store).
    pub presentation: u64,
    /// When.
    pub at: Timestamp,
    /// The decision.
    pub decision: Decision,
    /// True when this outcome ends the presentation.
    pub is_final: bool,
    /// Why it closed, when not by pass or deny.
    pub note: Option<CloseNote>,
    /// The credential behind it, if any.
    pub credential: Option<CredentialRead>,
    /// The person as decided.
    pub person: Person,
    /// The operator confirmed the code colour by eye.
    pub colour_by_operator: bool,
    /// Why the operator approved, if they did.
    pub approval_reason: Option<String>,
    /// Emergency kind, for emergency passages.
    pub emergency: Option<EmergencyKind>,
    /// What the operator registered, if anything (sealed and masked by the store).
    pub registration: Option<Registration>,
    /// How the mask state was set: by the camera (with its score) or by the operator; `None` while unchecked.
    pub mask_by: Option<MaskBy>,
    /// The vehicle this outcome is for, or whose occupant it decides.
    pub vehicle: Option<VehicleRef>,
}

/// An outcome's vehicle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VehicleRef {
    /// The plate.
    pub plate: String,
    /// True on an occupant's outcome (it never moves the gate), false on the vehicle's own.
    pub occupant: bool,
}

/// A vehicle being checked: its occupants are decided one by one; only the vehicle's verdict moves the gate.
#[derive(Clone, Debug)]
struct VehicleCheck {
    id: u64,
    plate: String,
    category: Category,
    /// Occupants the guard counted (0: until the guard finishes).
    expected: u8,
    occupants: Vec<Person>,
}

/// A prompt for the operator's panel and the voice, without a decision to record.
#[derive(Clone, Debug, PartialEq)]
pub struct Prompt {
    /// Presentation id, if one is open.
    pub presentation: Option<u64>,
    /// Message in Chinese.
    pub message_zh: String,
    /// Voice clip.
    pub voice: Option<Voice>,
}

/// What the driver must do, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// Record durably, then act on the gate (open on pass, keep closed otherwise), then prompt.
    Decided(Box<Outcome>),
    /// Show and say something.
    Prompt(Prompt),
}

#[derive(Clone, Debug)]
struct Session {
    id: u64,
    last_activity: Timestamp,
    credential: Option<CredentialRead>,
    person: Person,
    /// The last recorded decision's rule and reasons, so a repeated refer is not recorded twice.
    last_recorded: Option<(Rule, Vec<Rule>)>,
    last_prompt: Option<Rule>,
    /// The last refer recorded for this presentation: what a close falls back to if the rules have changed since.
    last_refer: Option<Decision>,
    fever_recorded: bool,
    colour_by_operator: bool,
    approval_reason: Option<String>,
    emergency: Option<EmergencyKind>,
    registration: Option<Registration>,
    mask_by: Option<MaskBy>,
}

/// The checkpoint of one lane.
#[derive(Debug)]
pub struct Checkpoint {
    cfg: CheckpointConfig,
    policy: Policy,
    direction: Direction,
    next_id: u64,
    current: Option<Session>,
    early_reading: Option<Reading>,
    early_mask: Option<(MaskState, MaskBy, Timestamp)>,
    /// Keys of closed presentations and when they were last seen.
    /// Codes whose presentation closed lately: (key, last seen, told the volunteer it came back).
    recent: Vec<(String, Timestamp, bool)>,
    /// The vehicle being checked.
    vehicle: Option<VehicleCheck>,
}

impl Checkpoint {
    /// A checkpoint whose presentation ids start at `first_id`.
    pub fn new(cfg: CheckpointConfig, policy: Policy, direction: Direction, first_id: u64) -> Checkpoint {
        Checkpoint {
            cfg,
            policy,
            direction,
            next_id: first_id,
            current: None,
            early_reading: None,
            early_mask: None,
            recent: Vec::new(),
            vehicle: None,
        }
    }

    /// Replace the policy (a new bundle or tier); open sessions are decided under the new one from now on.
    pub fn set_policy(&mut self, policy: Policy) {
        self.policy = policy;
    }

    /// The policy in force.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// True when no presentation is open.
    pub fn is_idle(&self) -> bool {
        self.current.is_none()
    }

    /// Handle one event at `now`.
    pub fn handle(&mut self, event: Event, now: Timestamp) -> Vec<Effect> {
        let mut out = Vec::new();
        match event {
            Event::Credential(c) => self.on_credential(c, now, &mut out),
            Event::Temperature(celsius) => {
                let reading = Reading { celsius, taken_at: Some(now) };
                match &mut self.current {
                    Some(s) => {
                        s.person.retest = s.fever_recorded;
                        s.person.temperature = Some(reading);
                        s.last_activity = now;
                        self.evaluate(now, &mut out);
                    }
                    None => self.early_reading = Some(reading),
                }
            }
            Event::Operator(action) => self.on_operator(action, now, &mut out),
            Event::Mask(seen) => self.on_mask(seen, now, &mut out),
            Event::Button(Button::MaskConfirmed) => {
                self.on_operator(OperatorAction::Mask(MaskState::Worn), now, &mut out)
            }
            Event::Button(Button::EmergencyOpen) => {
                self.on_operator(OperatorAction::Emergency(EmergencyKind::Unspecified), now, &mut out)
            }
            Event::Button(Button::CallHelp) => out.push(Effect::Prompt(Prompt {
                presentation: self.current.as_ref().map(|s| s.id),
                message_zh: "有人呼叫帮助：请工作人员到闸口".into(),
                voice: Some(Voice::WaitForStaff),
            })),
            Event::Tick => {
                let timed_out =
                    self.current.as_ref().is_some_and(|s| now.since(s.last_activity) >= self.cfg.session_timeout_ms);
                if timed_out {
                    self.close(now, CloseNote::WalkedAway, &mut out);
                }
                let keep = self.cfg.same_code_interval_ms;
                self.recent.retain(|(_, seen, _)| now.since(*seen) < keep);
                if self.early_mask.is_some_and(|(_, _, at)| now.since(at) > crate::policy::READING_MAX_AGE_MS) {
                    self.early_mask = None;
                }
            }
            Event::Fault { device, .. } => out.push(Effect::Prompt(Prompt {
                presentation: self.current.as_ref().map(|s| s.id),
                message_zh: format!("{}故障：请联系工作人员", device.zh()),
                voice: Some(Voice::WaitForStaff),
            })),
            Event::Tiers { version, tiers } => {
                if !tiers.is_empty() {
                    self.policy.tiers = tiers;
                    if let Some(base) = self.policy.version.split("+bundle-").next().map(String::from) {
                        self.policy.version = format!("{base}+bundle-{version}");
                    }
                }
                let now_tier = self.policy.tier_at(now);
                out.push(Effect::Prompt(Prompt {
                    presentation: self.current.as_ref().map(|s| s.id),
                    message_zh: format!("街道办更新风险等级（第{version}版）：当前{}", now_tier.tier.zh()),
                    voice: None,
                }));
            }
            Event::Notice { message_zh, .. } => out.push(Effect::Prompt(Prompt {
                presentation: self.current.as_ref().map(|s| s.id),
                message_zh,
                voice: None,
            })),
            Event::Restored(device) => out.push(Effect::Prompt(Prompt {
                presentation: self.current.as_ref().map(|s| s.id),
                message_zh: format!("{}已恢复", device.zh()),
                voice: None,
            })),
        }
        self.follow_vehicle(now, &mut out);
        out
    }

    /// Close whatever is open as a recorded outcome (the daemon is stopping); a vehicle being checked closes as a
    /// refer.
    pub fn shutdown(&mut self, now: Timestamp) -> Vec<Effect> {
        let mut out = Vec::new();
        self.close(now, CloseNote::Shutdown, &mut out);
        self.follow_vehicle(now, &mut out);
        if self.vehicle.is_some() {
            self.finish_vehicle(now, Some(CloseNote::Shutdown), &mut out);
        }
        out
    }

    /// The vehicle being checked, if any: (plate, category, occupants expected, occupants decided).
    pub fn vehicle(&self) -> Option<(&str, Category, u8, usize)> {
        self.vehicle.as_ref().map(|v| (v.plate.as_str(), v.category, v.expected, v.occupants.len()))
    }

    /// In vehicle mode, mark this round's outcomes as the vehicle's occupants' (they never move the gate), count the
    /// decided ones, and decide the vehicle when the last expected occupant is decided.
    fn follow_vehicle(&mut self, now: Timestamp, out: &mut Vec<Effect>) {
        let Some(v) = &mut self.vehicle else { return };
        for e in out.iter_mut() {
            if let Effect::Decided(o) = e
                && o.presentation > v.id
                && o.vehicle.is_none()
            {
                o.vehicle = Some(VehicleRef { plate: v.plate.clone(), occupant: true });
                if o.is_final {
                    v.occupants.push(o.person.clone());
                }
            }
        }
        if v.expected > 0 && v.occupants.len() >= usize::from(v.expected) && self.current.is_none() {
            self.finish_vehicle(now, None, out);
        }
    }

    fn finish_vehicle(&mut self, now: Timestamp, note: Option<CloseNote>, out: &mut Vec<Effect>) {
        let Some(v) = self.vehicle.take() else { return };
        let presentation = Presentation {
            direction: self.direction,
            vehicle: Some(crate::policy::Vehicle { plate: v.plate.clone(), category: v.category }),
            people: v.occupants,
        };
        let mut decision = decide(&self.policy, &presentation, now);
        if note.is_some() {
            decision = refer_as_is(decision);
        }
        out.push(Effect::Decided(Box::new(Outcome {
            presentation: v.id,
            at: now,
            decision,
            is_final: true,
            note,
            credential: None,
            person: Person::unknown(v.category),
            colour_by_operator: false,
            approval_reason: None,
            emergency: None,
            registration: None,
            mask_by: None,
            vehicle: Some(VehicleRef { plate: v.plate, occupant: false }),
        })));
    }

    fn on_credential(&mut self, c: CredentialRead, now: Timestamp, out: &mut Vec<Effect>) {
        if let Some(s) = &mut self.current
            && s.credential.as_ref().is_some_and(|cur| cur.key == c.key)
        {
            s.last_activity = now; // the same code in the next frame
            return;
        }
        if let Some(seen) = self.recent.iter_mut().find(|(k, _, _)| *k == c.key) {
            // Still in view as the person walks through after their presentation closed: nothing new. Shown again
            // after leaving the view, within the interval: not silently dropped — the volunteer is told, once.
            let back = now.since(seen.1) >= SHOWN_AGAIN_MS && !seen.2;
            seen.1 = now;
            if back {
                seen.2 = true;
                let wait = (self.cfg.same_code_interval_ms + 999) / 1000;
                out.push(Effect::Prompt(Prompt {
                    presentation: None,
                    message_zh: format!("此码刚刚已核验过；如需再次通行，请{wait}秒后重新出示，或由工作人员登记"),
                    voice: None,
                }));
            }
            return;
        }
        if self.current.is_some() {
            self.close(now, CloseNote::Superseded, out);
        }
        let mut person = Person {
            identity: c.identity,
            code: c.code,
            quarantined: c.quarantined,
            from_risk_area: c.from_risk_area,
            inbound: c.inbound,
            courier_registered: c.courier_registered,
            visitor_registered: c.visitor_registered,
            service_roster: c.service_roster,
            ..Person::unknown(c.category)
        };
        person.temperature = self.early_reading.take();
        let mut mask_by = None;
        if let Some((mask, by, _)) = self.early_mask.take() {
            person.mask = mask;
            mask_by = Some(by);
        }
        let holder = mask_name(&c.holder);
        let mut credential = CredentialRead { holder, ..c };
        let prefill = credential.prefill.take();
        self.open(Some(credential), person, now);
        if let Some(s) = &mut self.current {
            s.mask_by = mask_by;
            s.registration = prefill.map(|r| *r);
        }
        self.evaluate(now, out);
    }

    /// The camera's verdict. A confident `worn` meets the must by machine and `not_worn` is the mask refer; `unsure`
    /// changes nothing (the operator confirms, as without a camera). What the operator set is never overridden by the
    /// camera; the camera may revise its own verdict (the person puts the mask on). A face seen does not keep a
    /// presentation open: only the person's own actions do.
    fn on_mask(&mut self, o: MaskObservation, now: Timestamp, out: &mut Vec<Effect>) {
        let state = match o.seen {
            MaskSeen::Worn => MaskState::Worn,
            MaskSeen::NotWorn => MaskState::NotWorn,
            MaskSeen::Unsure => return,
        };
        let by = MaskBy::Detected(o.score);
        let Some(s) = &mut self.current else {
            if !matches!(self.early_mask, Some((_, MaskBy::Operator, _))) {
                self.early_mask = Some((state, by, now));
            }
            return;
        };
        if s.mask_by == Some(MaskBy::Operator) || s.person.mask == state {
            return;
        }
        s.person.mask = state;
        s.mask_by = Some(by);
        self.evaluate(now, out);
    }

    fn on_operator(&mut self, action: OperatorAction, now: Timestamp, out: &mut Vec<Effect>) {
        if let OperatorAction::Emergency(kind) = action {
            if self.current.is_none() {
                self.open(None, Person::unknown(Category::Emergency), now);
            }
            if let Some(s) = &mut self.current {
                s.person.category = Category::Emergency;
                s.emergency = Some(kind);
                s.last_activity = now;
            }
            self.evaluate(now, out);
            return;
        }
        match action {
            OperatorAction::VehicleStart { plate, category, occupants } => {
                self.close(now, CloseNote::Superseded, out);
                self.follow_vehicle(now, out);
                if self.vehicle.is_some() {
                    self.finish_vehicle(now, Some(CloseNote::Superseded), out);
                }
                let id = self.next_id;
                self.next_id += 1;
                out.push(Effect::Prompt(Prompt {
                    presentation: Some(id),
                    message_zh: format!("车辆 {plate}：请车内{occupants}人逐一出示健康码或登记"),
                    voice: Some(Voice::ShowCode),
                }));
                self.vehicle = Some(VehicleCheck { id, plate, category, expected: occupants, occupants: Vec::new() });
                return;
            }
            OperatorAction::VehicleFinish => {
                self.close(now, CloseNote::Superseded, out);
                self.follow_vehicle(now, out);
                if self.vehicle.is_some() {
                    self.finish_vehicle(now, None, out);
                }
                return;
            }
            _ => {}
        }
        if let (None, OperatorAction::Register(r)) = (&self.current, &action) {
            // Someone who showed nothing: the registration is their identity.
            let category = r.category.unwrap_or(Category::Visitor);
            self.open(None, Person::unknown(category), now);
        }
        let Some(s) = &mut self.current else {
            match action {
                OperatorAction::Mask(m) => self.early_mask = Some((m, MaskBy::Operator, now)),
                _ => out.push(Effect::Prompt(Prompt {
                    presentation: None,
                    message_zh: "当前没有待处理的人员".into(),
                    voice: None,
                })),
            }
            return;
        };
        s.last_activity = now;
        match action {
            OperatorAction::Mask(m) => {
                s.person.mask = m;
                s.mask_by = Some(MaskBy::Operator);
            }
            OperatorAction::CodeColour(colour) => {
                if matches!(s.person.code, CodeStatus::Unverified | CodeStatus::Timeout)
                    && matches!(colour, CodeStatus::Green | CodeStatus::Yellow | CodeStatus::Red)
                {
                    s.person.code = colour;
                    s.colour_by_operator = true;
                } else {
                    out.push(Effect::Prompt(Prompt {
                        presentation: Some(s.id),
                        message_zh: "此人健康码已联网核验，无需人工确认颜色".into(),
                        voice: None,
                    }));
                    return;
                }
            }
            OperatorAction::Approve { reason } => {
                s.person.operator_approved = true;
                s.approval_reason = Some(reason);
            }
            OperatorAction::Register(r) => {
                s.registration = Some(match s.registration.take() {
                    Some(card) => r.over(card),
                    None => r,
                });
                s.person.visitor_registered = true;
                if s.person.identity == IdentityKind::None {
                    s.person.identity = IdentityKind::Manual;
                }
            }
            OperatorAction::Cancel => {
                self.close(now, CloseNote::Cancelled, out);
                return;
            }
            OperatorAction::VehicleStart { .. } | OperatorAction::VehicleFinish => {}
            OperatorAction::Remeasure => {
                out.push(Effect::Prompt(Prompt {
                    presentation: Some(s.id),
                    message_zh: if s.fever_recorded { "请再次测量体温（复测）" } else { "请测量体温" }.into(),
                    voice: Some(crate::policy::Voice::Measure),
                }));
                return;
            }
            OperatorAction::Emergency(_) => {}
        }
        self.evaluate(now, out);
    }

    fn open(&mut self, credential: Option<CredentialRead>, person: Person, now: Timestamp) {
        let id = self.next_id;
        self.next_id += 1;
        self.current = Some(Session {
            id,
            last_activity: now,
            credential,
            person,
            last_recorded: None,
            last_prompt: None,
            last_refer: None,
            fever_recorded: false,
            colour_by_operator: false,
            approval_reason: None,
            registration: None,
            emergency: None,
            mask_by: None,
        });
    }

    fn decide_current(&self, s: &Session, now: Timestamp) -> Decision {
        let presentation = Presentation { direction: self.direction, vehicle: None, people: vec![s.person.clone()] };
        decide(&self.policy, &presentation, now)
    }

    /// Decide the open session. Pass and deny close it; a refer that waits only for a reading or a mask check is a
    /// prompt; any other refer is recorded (once per distinct refer) and waits for the operator or a re-measurement.
    fn evaluate(&mut self, now: Timestamp, out: &mut Vec<Effect>) {
        let Some(s) = &self.current else { return };
        let decision = self.decide_current(s, now);
        let pd = &decision.people[0];
        let waiting_for_input = pd
            .reasons
            .iter()
            .any(|r| matches!(r, Rule::TemperatureMissing | Rule::TemperatureStale | Rule::MaskUnchecked));
        match decision.verdict {
            Verdict::Pass | Verdict::Deny => self.finish(decision, None, now, out),
            Verdict::Refer if waiting_for_input => {
                let rule = decision.rule;
                let Some(s) = &mut self.current else { return };
                if s.last_prompt != Some(rule) {
                    s.last_prompt = Some(rule);
                    out.push(Effect::Prompt(Prompt {
                        presentation: Some(s.id),
                        message_zh: rule.message_zh().to_string(),
                        voice: Some(rule.voice()),
                    }));
                }
            }
            Verdict::Refer => {
                let key = (decision.rule, pd.reasons.clone());
                let Some(s) = &mut self.current else { return };
                if s.last_recorded.as_ref() == Some(&key) {
                    return;
                }
                s.last_recorded = Some(key);
                s.last_prompt = Some(decision.rule);
                s.last_refer = Some(decision.clone());
                if decision.rule == Rule::FeverFirst {
                    s.fever_recorded = true;
                }
                let outcome = outcome_of(s, decision, false, None, now);
                out.push(Effect::Decided(Box::new(outcome)));
            }
        }
    }

    fn finish(&mut self, decision: Decision, note: Option<CloseNote>, now: Timestamp, out: &mut Vec<Effect>) {
        let Some(s) = self.current.take() else { return };
        if let Some(c) = &s.credential {
            self.recent.push((c.key.clone(), now, false));
        }
        out.push(Effect::Decided(Box::new(outcome_of(&s, decision, true, note, now))));
    }

    fn close(&mut self, now: Timestamp, note: CloseNote, out: &mut Vec<Effect>) {
        let Some(s) = &self.current else { return };
        let decision = self.decide_current(s, now);
        // A presentation that would pass or be denied is decided on the spot; one left open can only be a refer. If
        // the rules changed while it was open (a scheduled tier change) it closes as the refer it was last recorded as.
        let decision = match (decision.verdict, &s.last_refer) {
            (Verdict::Refer, _) => decision,
            (_, Some(last)) => last.clone(),
            (_, None) => refer_as_is(decision),
        };
        self.finish(decision, Some(note), now, out);
    }
}

/// Keeps `close` total when an open presentation was never recorded as a refer: downgrade to a refer.
fn refer_as_is(mut d: Decision) -> Decision {
    d.verdict = Verdict::Refer;
    d
}

fn outcome_of(s: &Session, decision: Decision, is_final: bool, note: Option<CloseNote>, now: Timestamp) -> Outcome {
    Outcome {
        presentation: s.id,
        at: now,
        decision,
        is_final,
        note,
        credential: s.credential.clone(),
        person: s.person.clone(),
        colour_by_operator: s.colour_by_operator,
        approval_reason: s.approval_reason.clone(),
        registration: s.registration.clone(),
        emergency: s.emergency,
        mask_by: s.mask_by,
        vehicle: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Timestamp = Timestamp(1_790_000_000_000);

    fn cp() -> Checkpoint {
        Checkpoint::new(CheckpointConfig::default(), Policy::default(), Direction::In, 1)
    }

    fn pass_card(key: &str) -> CredentialRead {
        CredentialRead::new(key, IdentityKind::Pass, Category::Resident, CodeStatus::None, "王小华")
    }

    fn at(ms: i64) -> Timestamp {
        T0.plus_ms(ms)
    }

    fn outcomes(effects: &[Effect]) -> Vec<&Outcome> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Decided(o) => Some(&**o),
                Effect::Prompt(_) => None,
            })
            .collect()
    }

    fn c(deg: f64) -> Event {
        Event::Temperature(Celsius::from_f64(deg).unwrap())
    }

    fn seen(seen: MaskSeen, score: f32) -> Event {
        Event::Mask(MaskObservation { seen, score, face_px: 180 })
    }

    #[test]
    fn a_confident_worn_from_the_camera_meets_the_must_without_a_tap() {
        let mut k = cp();
        k.handle(Event::Credential(pass_card("P1")), at(0));
        k.handle(c(36.5), at(300));
        let e = k.handle(seen(MaskSeen::Worn, 0.99), at(400));
        let o = outcomes(&e);
        assert_eq!(o.len(), 1);
        assert_eq!(o[0].decision.verdict, Verdict::Pass);
        assert_eq!(o[0].person.mask, MaskState::Worn);
        assert_eq!(o[0].mask_by, Some(MaskBy::Detected(0.99)));
        assert_eq!(o[0].decision.people[0].musts.mask, MaskState::Worn);
    }

    #[test]
    fn not_worn_is_a_recorded_refer_to_put_one_on_and_a_mask_put_on_then_passes() {
        let mut k = cp();
        k.handle(Event::Credential(pass_card("P1")), at(0));
        k.handle(c(36.5), at(300));
        let e = k.handle(seen(MaskSeen::NotWorn, 0.01), at(400));
        let o = outcomes(&e);
        assert_eq!(o.len(), 1);
        assert!(!o[0].is_final);
        assert_eq!(o[0].decision.rule, Rule::MaskNotWorn);
        assert_eq!(o[0].decision.people[0].voice, Voice::WearMask);
        assert_eq!(o[0].mask_by, Some(MaskBy::Detected(0.01)));
        // The same verdict in the next frames records nothing more.
        assert!(outcomes(&k.handle(seen(MaskSeen::NotWorn, 0.02), at(600))).is_empty());
        // Unsure in between changes nothing.
        assert!(k.handle(seen(MaskSeen::Unsure, 0.5), at(700)).is_empty());
        let o = k.handle(seen(MaskSeen::Worn, 0.97), at(2_000));
        assert_eq!(outcomes(&o)[0].decision.verdict, Verdict::Pass);
        assert_eq!(outcomes(&o)[0].mask_by, Some(MaskBy::Detected(0.97)));
    }

    #[test]
    fn unsure_leaves_the_must_to_the_operator_and_the_operator_overrides_the_camera() {
        let mut k = cp();
        k.handle(Event::Credential(pass_card("P1")), at(0));
        k.handle(c(36.5), at(300));
        let e = k.handle(seen(MaskSeen::Unsure, 0.6), at(400));
        assert!(e.is_empty(), "unsure: still today's 确认已戴口罩 prompt, nothing recorded: {e:?}");
        let o = k.handle(Event::Operator(OperatorAction::Mask(MaskState::Worn)), at(900));
        assert_eq!(outcomes(&o)[0].decision.verdict, Verdict::Pass);
        assert_eq!(outcomes(&o)[0].mask_by, Some(MaskBy::Operator));

        // The camera says worn, the operator sees a mask below the nose: the operator's word stands.
        k.handle(Event::Credential(pass_card("P2")), at(10_000));
        k.handle(Event::Operator(OperatorAction::Mask(MaskState::NotWorn)), at(10_100));
        let e = k.handle(c(36.5), at(10_200));
        assert_eq!(outcomes(&e)[0].decision.rule, Rule::MaskNotWorn);
        assert!(outcomes(&k.handle(seen(MaskSeen::Worn, 0.99), at(10_300))).is_empty(), "the camera cannot override");
        assert!(!k.is_idle());
    }

    #[test]
    fn a_mask_seen_before_the_code_is_used_and_an_old_one_expires() {
        let mut k = cp();
        assert!(k.handle(seen(MaskSeen::Worn, 0.98), at(0)).is_empty());
        k.handle(c(36.4), at(100));
        let o = k.handle(Event::Credential(pass_card("P1")), at(300));
        assert_eq!(outcomes(&o)[0].decision.verdict, Verdict::Pass);
        assert_eq!(outcomes(&o)[0].mask_by, Some(MaskBy::Detected(0.98)));
        // Seen long ago: not this person's.
        k.handle(seen(MaskSeen::Worn, 0.98), at(1_000));
        k.handle(Event::Tick, at(1_000 + crate::policy::READING_MAX_AGE_MS + 1));
        let e = k.handle(Event::Credential(pass_card("P2")), at(1_000 + crate::policy::READING_MAX_AGE_MS + 2));
        assert!(outcomes(&e).is_empty());
        // An operator's early confirmation is not replaced by the camera's.
        let mut k = cp();
        k.handle(Event::Operator(OperatorAction::Mask(MaskState::NotWorn)), at(0));
        k.handle(seen(MaskSeen::Worn, 0.99), at(10));
        k.handle(c(36.4), at(20));
        let e = k.handle(Event::Credential(pass_card("P3")), at(30));
        assert_eq!(outcomes(&e)[0].decision.rule, Rule::MaskNotWorn);
        assert_eq!(outcomes(&e)[0].mask_by, Some(MaskBy::Operator));
    }

    #[test]
    fn code_then_reading_then_mask_passes_once() {
        let mut k = cp();
        let e1 = k.handle(Event::Credential(pass_card("P1")), at(0));
        assert!(outcomes(&e1).is_empty());
        assert!(matches!(&e1[0], Effect::Prompt(p) if p.voice == Some(Voice::Measure)));
        assert!(outcomes(&k.handle(c(36.5), at(500))).is_empty());
        let e = k.handle(Event::Button(Button::MaskConfirmed), at(900));
        let o = outcomes(&e);
        assert_eq!(o.len(), 1);
        assert_eq!(o[0].decision.verdict, Verdict::Pass);
        assert!(o[0].is_final);
        assert_eq!(o[0].credential.as_ref().unwrap().holder, "王*华");
        assert!(k.is_idle());
    }

    #[test]
    fn a_reading_and_mask_before_the_code_are_used() {
        let mut k = cp();
        assert!(k.handle(c(36.4), at(0)).is_empty());
        assert!(k.handle(Event::Operator(OperatorAction::Mask(MaskState::Worn)), at(100)).is_empty());
        let e = k.handle(Event::Credential(pass_card("P1")), at(300));
        assert_eq!(outcomes(&e)[0].decision.verdict, Verdict::Pass);
    }

    #[test]
    fn an_early_reading_older_than_a_minute_is_not_used() {
        let mut k = cp();
        k.handle(c(36.4), at(0));
        k.handle(Event::Operator(OperatorAction::Mask(MaskState::Worn)), at(61_000));
        let e = k.handle(Event::Credential(pass_card("P1")), at(61_500));
        assert!(outcomes(&e).is_empty(), "stale reading must not pass");
        assert!(matches!(&e[0], Effect::Prompt(p) if p.message_zh.contains("60秒")));
    }

    #[test]
    fn thirty_frames_of_one_code_are_one_presentation() {
        let mut k = cp();
        let mut all = Vec::new();
        for i in 0..30 {
            all.extend(k.handle(Event::Credential(pass_card("P1")), at(i * 40)));
            if i == 10 {
                all.extend(k.handle(c(36.6), at(i * 40)));
                all.extend(k.handle(Event::Button(Button::MaskConfirmed), at(i * 40 + 1)));
            }
        }
        let o = outcomes(&all);
        assert_eq!(o.len(), 1);
        assert_eq!(o[0].presentation, 1);
        // Seen again well after the interval: a new presentation.
        k.handle(Event::Tick, at(20_000));
        k.handle(Event::Credential(pass_card("P1")), at(20_001));
        assert!(!k.is_idle());
    }

    #[test]
    fn a_code_shown_again_inside_the_interval_reaches_the_volunteer_once() {
        let mut k = cp();
        k.handle(Event::Credential(pass_card("P1")), at(0));
        k.handle(c(36.6), at(10));
        assert_eq!(outcomes(&k.handle(Event::Button(Button::MaskConfirmed), at(20))).len(), 1, "passed");
        // Still in view for a moment as they walk through: nothing.
        let walking: Vec<Effect> =
            (1..10).flat_map(|i| k.handle(Event::Credential(pass_card("P1")), at(20 + i * 40))).collect();
        assert!(walking.is_empty(), "{walking:?}");
        // Out of view, then shown again 5 s later (inside the 10 s interval): a prompt, not silence, and only once.
        let e = k.handle(Event::Credential(pass_card("P1")), at(5_000));
        let prompts: Vec<&str> = e
            .iter()
            .filter_map(|e| match e {
                Effect::Prompt(p) => Some(p.message_zh.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(prompts, vec!["此码刚刚已核验过；如需再次通行，请10秒后重新出示，或由工作人员登记"]);
        assert!(k.handle(Event::Credential(pass_card("P1")), at(5_040)).is_empty());
        assert!(k.is_idle(), "no second presentation inside the interval");
    }

    #[test]
    fn a_refer_left_open_across_a_tier_change_closes_as_the_refer_it_was() {
        use crate::domain::Tier;
        use crate::policy::TierChange;
        let policy = Policy {
            tiers: vec![
                TierChange { tier: Tier::High, effective: Timestamp(0) },
                TierChange { tier: Tier::Low, effective: at(10_000) },
            ],
            ..Policy::default()
        };
        let mut k = Checkpoint::new(CheckpointConfig::default(), policy, Direction::In, 1);
        k.handle(Event::Credential(pass_card("P1")), at(0));
        k.handle(c(36.5), at(100));
        let e = k.handle(Event::Button(Button::MaskConfirmed), at(200));
        let o = outcomes(&e);
        assert_eq!((o[0].decision.verdict, o[0].decision.rule), (Verdict::Refer, Rule::TierHighResidentIn));
        // The tier drops to low while the resident waits; they walk away: recorded as the refer shown, not a pass
        // that never opened the gate, and never a "refer" carrying a pass rule.
        let e = k.handle(Event::Tick, at(31_000));
        let o = outcomes(&e);
        assert_eq!(o.len(), 1);
        assert_eq!((o[0].decision.verdict, o[0].decision.rule), (Verdict::Refer, Rule::TierHighResidentIn));
        assert_eq!(o[0].note, Some(CloseNote::WalkedAway));
    }

    #[test]
    fn walking_away_is_a_recorded_refer() {
        let mut k = cp();
        k.handle(Event::Credential(pass_card("P1")), at(0));
        assert!(k.handle(Event::Tick, at(29_999)).is_empty());
        let e = k.handle(Event::Tick, at(30_000));
        let o = outcomes(&e);
        assert_eq!(o.len(), 1);
        assert_eq!((o[0].decision.verdict, o[0].note), (Verdict::Refer, Some(CloseNote::WalkedAway)));
        assert_eq!(o[0].decision.rule, Rule::TemperatureMissing);
        assert!(o[0].is_final && k.is_idle());
    }

    #[test]
    fn a_second_person_closes_the_first_as_a_refer() {
        let mut k = cp();
        k.handle(Event::Credential(pass_card("P1")), at(0));
        let e = k.handle(Event::Credential(pass_card("P2")), at(1_000));
        let o = outcomes(&e);
        assert_eq!(o.len(), 1);
        assert_eq!((o[0].presentation, o[0].note), (1, Some(CloseNote::Superseded)));
        k.handle(c(36.5), at(1_500));
        let e = k.handle(Event::Button(Button::MaskConfirmed), at(1_600));
        assert_eq!(outcomes(&e)[0].presentation, 2);
        assert_eq!(outcomes(&e)[0].decision.verdict, Verdict::Pass);
    }

    #[test]
    fn fever_then_confirming_remeasure_is_denied_with_the_clinic() {
        let mut k = cp();
        k.handle(Event::Credential(pass_card("P1")), at(0));
        k.handle(Event::Button(Button::MaskConfirmed), at(100));
        let e = k.handle(c(37.8), at(200));
        let o = outcomes(&e);
        assert_eq!((o[0].decision.rule, o[0].is_final), (Rule::FeverFirst, false));
        // Other input meanwhile does not record the same refer again.
        assert!(outcomes(&k.handle(Event::Button(Button::MaskConfirmed), at(5_000))).is_empty());
        let e = k.handle(c(37.9), at(20_000));
        let o = outcomes(&e);
        assert_eq!((o[0].decision.rule, o[0].is_final), (Rule::FeverConfirmed, true));
        assert!(o[0].person.retest);
    }

    #[test]
    fn fever_then_normal_remeasure_passes() {
        let mut k = cp();
        k.handle(Event::Credential(pass_card("P1")), at(0));
        k.handle(Event::Button(Button::MaskConfirmed), at(100));
        k.handle(c(37.5), at(200));
        let e = k.handle(c(36.9), at(20_000));
        assert_eq!(outcomes(&e)[0].decision.verdict, Verdict::Pass);
    }

    #[test]
    fn no_mask_then_mask_passes_and_both_are_recorded() {
        let mut k = cp();
        k.handle(Event::Credential(pass_card("P1")), at(0));
        k.handle(c(36.5), at(100));
        let e = k.handle(Event::Operator(OperatorAction::Mask(MaskState::NotWorn)), at(200));
        assert_eq!(outcomes(&e)[0].decision.rule, Rule::MaskNotWorn);
        let e = k.handle(Event::Operator(OperatorAction::Mask(MaskState::Worn)), at(9_000));
        assert_eq!(outcomes(&e)[0].decision.verdict, Verdict::Pass);
    }

    #[test]
    fn red_code_is_denied_at_once_and_unverified_waits_for_the_operator() {
        let mut k = cp();
        let red = CredentialRead {
            key: "HC-red".into(),
            identity: IdentityKind::HealthCode,
            code: CodeStatus::Red,
            category: Category::Visitor,
            ..pass_card("x")
        };
        let e = k.handle(Event::Credential(red), at(0));
        assert_eq!(outcomes(&e)[0].decision.rule, Rule::CodeRed);
        let unv = CredentialRead {
            key: "HC-1".into(),
            identity: IdentityKind::HealthCode,
            code: CodeStatus::Unverified,
            ..pass_card("x")
        };
        k.handle(Event::Credential(unv), at(100));
        k.handle(c(36.5), at(200));
        let e = k.handle(Event::Button(Button::MaskConfirmed), at(300));
        assert_eq!(outcomes(&e)[0].decision.rule, Rule::CodeUnverified);
        let e = k.handle(Event::Operator(OperatorAction::CodeColour(CodeStatus::Green)), at(400));
        let o = outcomes(&e);
        assert_eq!(o[0].decision.verdict, Verdict::Pass);
        assert!(o[0].colour_by_operator);
    }

    #[test]
    fn emergency_button_opens_for_nobody_in_particular() {
        let mut k = cp();
        let e = k.handle(Event::Button(Button::EmergencyOpen), at(0));
        let o = outcomes(&e);
        assert_eq!((o[0].decision.verdict, o[0].decision.rule), (Verdict::Pass, Rule::Emergency));
        assert!(o[0].decision.flagged);
    }

    #[test]
    fn shutdown_closes_the_open_presentation_as_a_record() {
        let mut k = cp();
        k.handle(Event::Credential(pass_card("P1")), at(0));
        let e = k.shutdown(at(10));
        assert_eq!(outcomes(&e)[0].note, Some(CloseNote::Shutdown));
        assert!(k.shutdown(at(20)).is_empty());
    }

    fn walk_through(k: &mut Checkpoint, key: &str, code: CodeStatus, t: i64) -> Vec<Effect> {
        let cred = CredentialRead { code, ..pass_card(key) };
        let mut e = k.handle(Event::Credential(cred), at(t));
        e.extend(k.handle(c(36.5), at(t + 10)));
        e.extend(k.handle(Event::Button(Button::MaskConfirmed), at(t + 20)));
        e
    }

    fn start_vehicle(k: &mut Checkpoint, occupants: u8, t: i64) -> Vec<Effect> {
        let start = OperatorAction::VehicleStart { plate: "鄂A12345".into(), category: Category::Resident, occupants };
        k.handle(Event::Operator(start), at(t))
    }

    #[test]
    fn a_vehicle_is_decided_when_its_last_occupant_is_and_only_its_verdict_opens() {
        let mut k = cp();
        let e = start_vehicle(&mut k, 2, 0);
        assert!(outcomes(&e).is_empty());
        assert!(matches!(&e[0], Effect::Prompt(p) if p.message_zh.contains("鄂A12345")));
        assert_eq!(k.vehicle(), Some(("鄂A12345", Category::Resident, 2, 0)));
        let e = walk_through(&mut k, "V1", CodeStatus::None, 100);
        let o = outcomes(&e);
        assert_eq!(o.len(), 1);
        assert_eq!(o[0].decision.verdict, Verdict::Pass);
        assert_eq!(o[0].vehicle, Some(VehicleRef { plate: "鄂A12345".into(), occupant: true }), "an occupant");
        assert_eq!(k.vehicle().map(|v| v.3), Some(1));
        let e = walk_through(&mut k, "V2", CodeStatus::Red, 200);
        let o = outcomes(&e);
        assert_eq!(o.len(), 2, "the second occupant, then the vehicle");
        assert_eq!((o[0].decision.verdict, o[0].vehicle.as_ref().map(|v| v.occupant)), (Verdict::Deny, Some(true)));
        let v = o[1];
        assert_eq!((v.decision.verdict, v.decision.rule), (Verdict::Deny, Rule::VehicleOccupantDenied));
        assert_eq!(v.vehicle, Some(VehicleRef { plate: "鄂A12345".into(), occupant: false }));
        assert_eq!(v.decision.people.len(), 2);
        assert!(k.vehicle().is_none() && k.is_idle());
        // Two clean occupants: the vehicle passes.
        start_vehicle(&mut k, 2, 1000);
        walk_through(&mut k, "W1", CodeStatus::None, 1100);
        let o = walk_through(&mut k, "W2", CodeStatus::None, 1200);
        assert_eq!(outcomes(&o).last().map(|v| v.decision.rule), Some(Rule::VehiclePass));
    }

    #[test]
    fn finishing_a_vehicle_early_or_stopping_decides_it_with_whoever_was_checked() {
        let mut k = cp();
        start_vehicle(&mut k, 3, 0);
        walk_through(&mut k, "V1", CodeStatus::None, 100);
        k.handle(Event::Credential(pass_card("V2")), at(200));
        let e = k.handle(Event::Operator(OperatorAction::VehicleFinish), at(300));
        let o = outcomes(&e);
        // The occupant still being checked closes as a refer; the vehicle then cannot pass.
        assert_eq!(o.len(), 2);
        assert_eq!((o[0].note, o[0].decision.verdict), (Some(CloseNote::Superseded), Verdict::Refer));
        assert_eq!(o[1].decision.verdict, Verdict::Refer);
        assert_eq!(o[1].decision.people.len(), 2);
        // Stopping mid-vehicle still leaves one final row for the vehicle.
        start_vehicle(&mut k, 2, 1000);
        let e = k.shutdown(at(1100));
        let o = outcomes(&e);
        assert_eq!(o.len(), 1);
        assert_eq!((o[0].note, o[0].decision.verdict), (Some(CloseNote::Shutdown), Verdict::Refer));
        assert!(o[0].vehicle.as_ref().is_some_and(|v| !v.occupant));
    }

    #[test]
    fn a_pedestrian_before_the_vehicle_is_not_one_of_its_occupants() {
        let mut k = cp();
        k.handle(Event::Credential(pass_card("P1")), at(0));
        let e = start_vehicle(&mut k, 1, 100);
        let o = outcomes(&e);
        assert_eq!(o.len(), 1);
        assert_eq!((o[0].note, o[0].vehicle.clone()), (Some(CloseNote::Superseded), None));
        assert_eq!(k.vehicle().map(|v| v.3), Some(0));
    }

    #[test]
    fn a_card_prefill_stays_with_the_presentation_and_the_form_adds_only_the_rest() {
        let mut k = cp();
        let mut card =
            CredentialRead::new("id:abc", IdentityKind::IdCard, Category::Visitor, CodeStatus::Green, "周*国");
        card.prefill = Some(Box::new(Registration {
            name: "周建国".into(),
            id_number: Some("TEST-ID".into()),
            address: Some("外市某路8号".into()),
            ..Registration::default()
        }));
        k.handle(Event::Credential(card), at(0));
        k.handle(c(36.5), at(10));
        k.handle(Event::Button(Button::MaskConfirmed), at(20));
        // The form sends the masked name (or none) and no number; the card's stand, the form adds where and why.
        let form = Registration {
            name: "周*国".into(),
            destination: Some("3栋201".into()),
            reason: Some("探亲".into()),
            ..Registration::default()
        };
        let e = k.handle(Event::Operator(OperatorAction::Register(form)), at(30));
        let o = outcomes(&e);
        assert_eq!(o[0].decision.verdict, Verdict::Pass);
        assert_eq!(o[0].credential.as_ref().map(|c| c.prefill.is_none()), Some(true), "no copy on the credential");
        let r = o[0].registration.clone().unwrap();
        assert_eq!(
            (r.name.as_str(), r.id_number.as_deref(), r.address.as_deref()),
            ("周建国", Some("TEST-ID"), Some("外市某路8号"))
        );
        assert_eq!((r.destination.as_deref(), r.reason.as_deref()), (Some("3栋201"), Some("探亲")));
    }

    #[test]
    fn registering_someone_who_showed_nothing_opens_their_presentation() {
        let mut k = cp();
        let reg = Registration {
            name: "样例访客".into(),
            phone: Some("13000000001".into()),
            destination: Some("3栋201".into()),
            reason: Some("探亲".into()),
            ..Registration::default()
        };
        let e = k.handle(Event::Operator(OperatorAction::Register(reg)), at(0));
        assert!(outcomes(&e).is_empty(), "a temperature and a mask check are still missing");
        k.handle(c(36.4), at(10));
        let e = k.handle(Event::Button(Button::MaskConfirmed), at(20));
        let o = outcomes(&e);
        assert_eq!(o[0].decision.verdict, Verdict::Pass);
        assert_eq!((o[0].person.identity, o[0].person.category), (IdentityKind::Manual, Category::Visitor));
        // A resident picked from the roster is registered as a resident.
        let reg =
            Registration { name: "王*华".into(), category: Some(Category::Resident), ..Registration::default() };
        k.handle(Event::Operator(OperatorAction::Register(reg)), at(1000));
        k.handle(c(36.4), at(1010));
        let o = k.handle(Event::Button(Button::MaskConfirmed), at(1020));
        assert_eq!(outcomes(&o)[0].person.category, Category::Resident);
    }

    #[test]
    fn the_operator_starts_a_re_measurement_and_the_next_reading_is_the_retest() {
        let mut k = cp();
        k.handle(Event::Credential(pass_card("P1")), at(0));
        k.handle(Event::Button(Button::MaskConfirmed), at(10));
        let e = k.handle(c(38.2), at(20));
        assert_eq!(outcomes(&e)[0].decision.verdict, Verdict::Refer);
        let e = k.handle(Event::Operator(OperatorAction::Remeasure), at(30));
        assert!(matches!(&e[0], Effect::Prompt(p) if p.message_zh.contains("复测") && p.voice == Some(Voice::Measure)));
        let e = k.handle(c(38.3), at(40));
        let o = outcomes(&e);
        assert_eq!((o[0].decision.verdict, o[0].person.retest), (Verdict::Deny, true));
    }
}

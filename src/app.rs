//! Wiring only: open the devices named in the config, spawn the tasks, own the shutdown order.
//!
//! Tasks:
//! - one thread per input device ([`hw::spawn_source`]) → a bounded channel of stamped events;
//! - the checkpoint driver (this module's [`Pipeline`], on the main task): event → pure checkpoint → effects, executed
//!   in order: **record durably, then move the gate**, then log and prompt;
//! - the gate controller task: relay pulses, lights, buzzer; the relay closes by itself when its pulse ends;
//! - the store thread ([`StoreHandle`]).
//!
//! Shutdown (SIGINT/SIGTERM, or the scenario played with `exit_when_done`): sources stop → the checkpoint closes any
//! open presentation as a recorded outcome → the gate goes to its safe state → the store drains → exit, all within
//! `gate.shutdown_grace_ms`.

use std::future::Future;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{Instrument, error, info, info_span, warn};

use crate::checkpoint::{Checkpoint, CloseNote, DeviceKind, Effect, Event, Outcome};
use crate::config::{Config, CredentialBackend, FaceCameraBackend, GateBackend, OperatorBackend, ThermometerBackend};
use crate::credential::reader::CameraCredentials;
use crate::domain::{Timestamp, Verdict};
use crate::hw::camera::V4l2Camera;
use crate::hw::frames::{FolderFrames, FrameSource};
use crate::hw::gpio;
use crate::hw::script::{Playback, ScriptedCredentials, ScriptedOperator, ScriptedThermometer};
use crate::hw::serial::SerialThermometer;
use crate::hw::sim_gate::SimGate;
use crate::hw::voice::VoiceHandle;
use crate::hw::{
    self, Buzz, CredentialSource, DeviceFault, GateCommand, GateOutput, Lights, OperatorInput, OperatorSource,
    SourceMsg, StopFlag, Thermometer,
};
use crate::store::{GateAction, Store, StoreHandle};

/// The devices opened from the config.
pub struct OpenDevices {
    /// Credential source.
    pub credentials: Box<dyn CredentialSource>,
    /// Thermometer.
    pub thermometer: Box<dyn Thermometer>,
    /// Operator input.
    pub operator: Box<dyn OperatorSource>,
    /// Gate outputs.
    pub gate: Box<dyn GateOutput>,
    /// Relay pulse length.
    pub pulse: Duration,
    /// The camera reader's trust (pass keys, revocations, signers, issuers, the office's lists).
    pub trust: crate::credential::SharedTrust,
    /// The mask thread's source, with `[mask]` and its models.
    pub mask: Option<crate::mask::source::MaskSource>,
    /// The camera's tap for it (a camera backend only; the scripted camera plays its faces itself).
    pub mask_tap: Option<crate::mask::source::MaskTap>,
    /// Why `[mask]` is on but the judge is not running (its models are missing or broken).
    pub mask_fault: Option<String>,
    /// The ID card lane, where the gate has a reader (and whether it plays a script to its end).
    pub idcard: Option<(crate::credential::idcard::IdCardCredentials, bool)>,
    /// The console simulator's taps on the scripted ID card reader.
    pub card_taps: Option<crate::hw::idcard::CardTaps>,
}

/// Open every device the config names.
pub fn open_devices(config: &Config) -> anyhow::Result<OpenDevices> {
    let playback = config
        .script
        .as_ref()
        .map(|s| (s, Playback { start: std::time::Instant::now(), speed: s.speed, repeat: s.repeat }));
    let script = || playback.clone().context("a scripted device needs the [script] section");
    let trust = config.credentials.trust(&config.gate.community, &config.gate.id).shared();
    let (mut judge, mut mask_fault) = (None, None);
    if let Some(m) = &config.mask {
        match crate::mask::MaskJudge::open(m.models.as_deref()) {
            Ok(j) => {
                info!(models = %j.models_dir().display(), "mask judge loaded (口罩必戴 by machine)");
                judge = Some(j);
            }
            Err(e) => {
                error!(error = %e, "the mask judge is off: the operator confirms masks");
                mask_fault = Some(e.to_string());
            }
        }
    }
    let (mut mask, mut mask_tap) = (None, None);
    // A face camera of its own, where the box has one: the QR camera then hands the judge nothing.
    if let (Some(j), Some(face)) = (&judge, &config.devices.face_camera) {
        let frames: Box<dyn FrameSource> = match face {
            FaceCameraBackend::Frames { folder, fps, repeat } => {
                Box::new(FolderFrames::open(folder, *fps, *repeat).map_err(anyhow::Error::msg)?)
            }
            FaceCameraBackend::V4l2(settings) => {
                Box::new(V4l2Camera::start(settings.clone()).context("cannot start the face camera thread")?)
            }
        };
        let (t, source) = crate::mask::source::camera(j.clone(), frames);
        info!("the mask judge watches the face camera");
        (mask, mask_tap) = (Some(source), Some(t));
    }
    let tapped = |c: CameraCredentials, mask: &mut Option<_>, tap: &mut Option<_>| match &judge {
        Some(_) if tap.is_some() => c,
        Some(j) => {
            let (t, source) = crate::mask::source::channel(j.clone());
            *mask = Some(source);
            *tap = Some(t.clone());
            c.with_mask_tap(t)
        }
        None => c,
    };
    let credentials: Box<dyn CredentialSource> = match &config.devices.credentials {
        CredentialBackend::Script => {
            let (s, p) = script()?;
            if let Some(j) = &judge
                && mask.is_none()
            {
                let faces = crate::hw::script::ScriptedFaces::new(&s.script, p.clone()).map_err(anyhow::Error::msg)?;
                mask = Some(crate::mask::source::scripted(j.clone(), faces));
            }
            Box::new(ScriptedCredentials::new(&s.script, p))
        }
        CredentialBackend::Frames { folder, fps, repeat, decoder } => {
            let frames = FolderFrames::open(folder, *fps, *repeat).map_err(anyhow::Error::msg)?;
            let c = CameraCredentials::with_shared(Box::new(frames), decoder.decoder(), trust.clone());
            Box::new(tapped(c, &mut mask, &mut mask_tap))
        }
        CredentialBackend::V4l2 { settings, decoder } => {
            let camera = V4l2Camera::start(settings.clone()).context("cannot start the camera thread")?;
            let c = CameraCredentials::with_shared(Box::new(camera), decoder.decoder(), trust.clone());
            Box::new(tapped(c, &mut mask, &mut mask_tap))
        }
    };
    let thermometer: Box<dyn Thermometer> = match &config.devices.thermometer {
        ThermometerBackend::Script => {
            let (s, p) = script()?;
            Box::new(ScriptedThermometer::new(&s.script, p))
        }
        ThermometerBackend::Serial(settings) => Box::new(
            SerialThermometer::start(settings, config.policy.fever_threshold)
                .context("cannot start the thermometer thread")?,
        ),
    };
    let operator: Box<dyn OperatorSource> = match &config.devices.operator {
        OperatorBackend::Script => {
            let (s, p) = script()?;
            Box::new(ScriptedOperator::new(&s.script, p))
        }
        OperatorBackend::Gpio(b) => Box::new(gpio::pi::buttons(b).map_err(anyhow::Error::msg)?),
    };
    let (gate, pulse): (Box<dyn GateOutput>, Duration) = match &config.devices.gate {
        GateBackend::Sim { pulse, log } => {
            let g =
                SimGate::new(log.as_deref()).with_context(|| format!("cannot open the simulated gate log {log:?}"))?;
            (Box::new(g), *pulse)
        }
        GateBackend::Gpio { settings, pulse } => {
            (Box::new(gpio::pi::gate(settings).map_err(anyhow::Error::msg)?), *pulse)
        }
    };
    let mut card_taps = None;
    let idcard = match &config.devices.idcard {
        None => None,
        Some(backend) => {
            let (reader, scripted): (Box<dyn crate::hw::idcard::IdCardReader>, bool) = match backend {
                crate::config::IdCardBackend::Script => {
                    let (s, p) = script()?;
                    let reader = crate::hw::idcard::ScriptedIdCard::new(&s.script, p);
                    if config.console.as_ref().is_some_and(|c| c.simulator) {
                        // The console's 刷身份证 buttons tap here; the reader then runs until the daemon stops.
                        let (reader, taps) = reader.with_taps();
                        card_taps = Some(taps);
                        (Box::new(reader), false)
                    } else {
                        (Box::new(reader), true)
                    }
                }
                crate::config::IdCardBackend::Serial(settings) => (
                    Box::new(
                        crate::hw::idcard::SerialIdCard::start(settings)
                            .context("cannot start the ID card reader thread")?,
                    ),
                    false,
                ),
            };
            let health = config.credentials.gateway.as_ref().map(|(url, timeout)| {
                crate::credential::idcard::IdHealth::new(
                    crate::credential::health_code::HealthCodeClient::new(url, *timeout, &config.gate.id),
                    config.idcard.health_region.clone(),
                )
            });
            let lane = crate::credential::idcard::IdCardCredentials::new(reader, config.idcard.roster.clone(), health);
            Some((lane, scripted))
        }
    };
    Ok(OpenDevices {
        credentials,
        thermometer,
        operator,
        gate,
        pulse,
        trust,
        mask,
        mask_tap,
        mask_fault,
        idcard,
        card_taps,
    })
}

enum GateRequest {
    Open { seq: i64, reply: oneshot::Sender<Result<(), DeviceFault>> },
    Show(Verdict),
}

/// A handle on the gate controller task.
#[derive(Clone)]
pub struct GateHandle {
    tx: mpsc::Sender<GateRequest>,
}

impl GateHandle {
    /// Start the controller. It holds the relay open only while a pulse is live, and leaves everything safe when the
    /// last handle is dropped.
    pub fn spawn(mut dev: Box<dyn GateOutput>, pulse: Duration) -> (GateHandle, tokio::task::JoinHandle<()>) {
        let (tx, mut rx) = mpsc::channel::<GateRequest>(64);
        let task = tokio::spawn(async move {
            let mut close_at: Option<Instant> = None;
            let apply = |dev: &mut Box<dyn GateOutput>, cmd: GateCommand| {
                if let Err(e) = dev.apply(&cmd) {
                    error!(?cmd, error = %e, "gate command failed");
                }
            };
            loop {
                let pulse_end = async {
                    match close_at {
                        Some(t) => tokio::time::sleep_until(t).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    req = rx.recv() => match req {
                        None => break,
                        Some(GateRequest::Open { seq, reply }) => {
                            let result = dev.apply(&GateCommand::RelayOpen { seq });
                            if result.is_ok() {
                                close_at = Some(Instant::now() + pulse);
                                apply(&mut dev, GateCommand::Lights(Lights { green: true, ..Lights::default() }));
                                apply(&mut dev, GateCommand::Buzz { pattern: Buzz::Short });
                            } else {
                                // A relay that may be half-set is put safe at once.
                                apply(&mut dev, GateCommand::Safe);
                            }
                            let _ = reply.send(result);
                        }
                        Some(GateRequest::Show(v)) => {
                            let lights = match v {
                                Verdict::Pass => Lights { green: true, ..Lights::default() },
                                Verdict::Refer => Lights { amber: true, ..Lights::default() },
                                Verdict::Deny => Lights { red: true, ..Lights::default() },
                            };
                            apply(&mut dev, GateCommand::Lights(lights));
                            if v == Verdict::Deny {
                                apply(&mut dev, GateCommand::Buzz { pattern: Buzz::Alarm });
                            }
                        }
                    },
                    _ = pulse_end => {
                        close_at = None;
                        apply(&mut dev, GateCommand::RelayClose);
                        apply(&mut dev, GateCommand::Lights(Lights::default()));
                    }
                }
            }
            // Every exit path: relay closed, lights and buzzer off.
            apply(&mut dev, GateCommand::Safe);
        });
        (GateHandle { tx }, task)
    }

    /// Open the gate for the entry `seq` (already recorded); returns when the relay has been told.
    pub async fn open(&self, seq: i64) -> Result<(), DeviceFault> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(GateRequest::Open { seq, reply })
            .await
            .map_err(|_| DeviceFault("gate controller stopped".into()))?;
        rx.await.map_err(|_| DeviceFault("gate controller stopped".into()))?
    }

    /// Show a verdict that keeps the gate closed.
    pub async fn show(&self, v: Verdict) {
        let _ = self.tx.send(GateRequest::Show(v)).await;
    }
}

/// What the pipeline did with one decided outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct Executed {
    /// Its entry, if it was recorded.
    pub seq: Option<i64>,
    /// The verdict.
    pub verdict: Verdict,
    /// What the gate did.
    pub gate: GateAction,
}

/// Checkpoint → policy → durable record → gate command.
pub struct Pipeline {
    checkpoint: Checkpoint,
    store: StoreHandle,
    gate: GateHandle,
    voice: Option<VoiceHandle>,
    /// The last prompt spoken and for which presentation: the same words to the same person are not repeated.
    last_said: Option<(Option<u64>, crate::policy::Voice)>,
    /// The operator console's live channel.
    live: Option<crate::console::LiveSender>,
    /// The mask judge's tap: told after every event whether a presentation is open.
    mask_tap: Option<crate::mask::source::MaskTap>,
}

impl Pipeline {
    /// A pipeline over an opened store and a running gate controller.
    pub fn new(checkpoint: Checkpoint, store: StoreHandle, gate: GateHandle) -> Pipeline {
        Pipeline { checkpoint, store, gate, voice: None, last_said: None, live: None, mask_tap: None }
    }

    /// Feed the mask judge only while a presentation is open.
    pub fn with_mask_tap(mut self, tap: crate::mask::source::MaskTap) -> Pipeline {
        tap.set_wanted(!self.checkpoint.is_idle());
        self.mask_tap = Some(tap);
        self
    }

    /// Publish what the operator's panel shows on `live` (the console's live channel).
    pub fn with_live(mut self, live: crate::console::LiveSender) -> Pipeline {
        for device in [DeviceKind::Credentials, DeviceKind::Thermometer, DeviceKind::Gate] {
            crate::console::device_health(&live, device, true);
        }
        self.live = Some(live);
        self.refresh_gate_view(crate::hw::now());
        self
    }

    /// The tier, the vehicle in progress: published only when they change.
    fn refresh_gate_view(&self, now: Timestamp) {
        let Some(live) = &self.live else { return };
        let tier = self.checkpoint.policy().tier_at(now);
        let vehicle = self.checkpoint.vehicle().map(|(plate, category, expected, decided)| {
            crate::console::VehicleView { plate: plate.to_string(), category: category.zh(), expected, decided }
        });
        live.send_if_modified(|l| {
            let before = (l.gate.tier, l.gate.tier_since.clone(), l.panel.vehicle.clone());
            l.gate.tier = tier.tier.as_str();
            l.gate.tier_zh = tier.tier.zh();
            l.gate.tier_since = tier.effective.to_rfc3339();
            l.panel.vehicle = vehicle.clone();
            let changed = before != (l.gate.tier, l.gate.tier_since.clone(), l.panel.vehicle.clone());
            if changed {
                l.panel.update += 1;
            }
            changed
        });
    }

    fn publish_prompt(&self, presentation: Option<u64>, message: &str) {
        let Some(live) = &self.live else { return };
        live.send_modify(|l| {
            l.panel.update += 1;
            if presentation.is_some() && presentation != l.panel.presentation {
                // Someone new is being checked: nothing decided yet.
                l.panel = crate::console::Panel {
                    update: l.panel.update,
                    presentation,
                    state: "pending",
                    headline: "请稍候",
                    message: message.to_string(),
                    vehicle: l.panel.vehicle.clone(),
                    ..Default::default()
                };
            }
            l.panel.prompt = Some(message.to_string());
        });
    }

    /// Speak prompts and decisions through `voice` (queued: never blocks a decision).
    pub fn with_voice(mut self, voice: VoiceHandle) -> Pipeline {
        self.voice = Some(voice);
        self
    }

    fn say(&mut self, presentation: Option<u64>, v: Option<crate::policy::Voice>) {
        if let (Some(h), Some(v)) = (&self.voice, v)
            && self.last_said != Some((presentation, v))
        {
            self.last_said = Some((presentation, v));
            h.say(v);
        }
    }

    /// True when no presentation is open.
    pub fn is_idle(&self) -> bool {
        self.checkpoint.is_idle()
    }

    /// Handle one event stamped `at`.
    pub async fn handle(&mut self, event: Event, at: Timestamp) -> Vec<Executed> {
        match &event {
            Event::Fault { device, detail } => {
                self.store.journal(at, "device_fault", format!("{device:?}: {detail}")).await
            }
            Event::Restored(device) => self.store.journal(at, "device_restored", format!("{device:?}")).await,
            Event::Notice { device, detail, .. } => {
                self.store.journal(at, "device_notice", format!("{device:?}: {detail}")).await
            }
            _ => {}
        }
        if let Some(live) = &self.live {
            match &event {
                Event::Fault { device, .. } => crate::console::device_health(live, *device, false),
                Event::Restored(device) => crate::console::device_health(live, *device, true),
                _ => {}
            }
        }
        let effects = self.checkpoint.handle(event, at);
        if let Some(tap) = &self.mask_tap {
            tap.set_wanted(!self.checkpoint.is_idle());
        }
        let done = self.execute(effects).await;
        self.refresh_gate_view(at);
        done
    }

    /// Close any open presentation as a record (stopping).
    pub async fn shutdown(&mut self, at: Timestamp) -> Vec<Executed> {
        let effects = self.checkpoint.shutdown(at);
        self.execute(effects).await
    }

    async fn execute(&mut self, effects: Vec<Effect>) -> Vec<Executed> {
        let mut done = Vec::new();
        for effect in effects {
            match effect {
                Effect::Decided(o) => {
                    let span = info_span!("presentation", p = o.presentation);
                    done.push(self.act(*o).instrument(span).await);
                }
                Effect::Prompt(p) => {
                    let span = info_span!("presentation", p = p.presentation);
                    let voice = p.voice.map(|v| v.zh()).unwrap_or("-");
                    span.in_scope(|| info!(voice, "提示: {}", p.message_zh));
                    self.publish_prompt(p.presentation, &p.message_zh);
                    self.say(p.presentation, p.voice);
                }
            }
        }
        done
    }

    /// The invariant lives here: the entry is committed before the relay is told to open; if it cannot be recorded,
    /// the gate stays closed.
    async fn act(&mut self, o: Outcome) -> Executed {
        let verdict = o.decision.verdict;
        // Nobody to speak to when a presentation was closed for them (walked away, superseded, shutdown).
        let voice = o.note.is_none().then(|| o.decision.rule.voice());
        let presentation = o.presentation;
        let summary = Summary::of(&o);
        let o_vehicle_occupant = o.vehicle.as_ref().is_some_and(|v| v.occupant);
        let panel = self.live.as_ref().map(|_| crate::console::Panel::of(&o, true));
        let seq = match self.store.insert(o).await {
            Ok(seq) => seq,
            Err(e) => {
                error!(error = %e, "could not record the decision; the gate stays closed");
                self.gate.show(Verdict::Refer).await;
                warn!("提示: 系统记录故障，闸门保持关闭，请人工登记并联系技术人员");
                return Executed { seq: None, verdict, gate: GateAction::KeptClosed };
            }
        };
        let occupant = o_vehicle_occupant;
        let gate = if occupant {
            GateAction::KeptClosed
        } else if verdict == Verdict::Pass {
            match self.gate.open(seq).await {
                Ok(()) => GateAction::Opened,
                Err(e) => {
                    error!(seq, error = %e, "the gate did not open");
                    GateAction::OpenFailed
                }
            }
        } else {
            self.gate.show(verdict).await;
            GateAction::KeptClosed
        };
        if gate != GateAction::KeptClosed
            && let Err(e) = self.store.set_gate_action(seq, gate).await
        {
            error!(seq, error = %e, "could not record what the gate did");
        }
        info!(
            seq,
            verdict = verdict.as_str(),
            rule = summary.rule,
            category = summary.category,
            holder = %summary.holder,
            temperature = %summary.temperature,
            final_ = summary.is_final,
            note = summary.note,
            gate = gate.as_str(),
            "{} {}",
            verdict.zh(),
            summary.message
        );
        if let (Some(live), Some(mut panel)) = (&self.live, panel) {
            live.send_modify(|l| {
                panel.update = l.panel.update + 1;
                panel.vehicle = l.panel.vehicle.clone();
                l.panel = panel;
            });
        }
        // Spoken after the gate has been told: the voice never delays the relay.
        self.say(Some(presentation), voice);
        Executed { seq: Some(seq), verdict, gate }
    }
}

struct Summary {
    rule: &'static str,
    category: &'static str,
    holder: String,
    temperature: String,
    message: &'static str,
    is_final: bool,
    note: &'static str,
}

impl Summary {
    fn of(o: &Outcome) -> Summary {
        Summary {
            rule: o.decision.rule.id(),
            category: o.person.category.as_str(),
            holder: o.credential.as_ref().map(|c| c.holder.clone()).unwrap_or_default(),
            temperature: o.person.temperature.map(|t| t.celsius.to_string()).unwrap_or_else(|| "-".into()),
            message: o.decision.message_zh,
            is_final: o.is_final,
            note: o.note.map_or("-", CloseNote::as_str),
        }
    }
}

/// What a run did, for the caller and tests.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct RunSummary {
    /// Outcomes recorded.
    pub recorded: usize,
    /// Gate openings.
    pub opened: usize,
    /// Whether shutdown finished within the grace period.
    pub clean: bool,
}

const TICK: Duration = Duration::from_millis(100);

/// The last good policy bundle in the gate's database, re-verified against the configured office key.
fn stored_bundle(config: &Config, store: &Store) -> anyhow::Result<Option<crate::bundle::Bundle>> {
    Ok(match (config.sync.as_ref().and_then(|s| s.office_key), store.applied_bundle()?) {
        (Some(key), Some((_, text))) => match crate::bundle::verify(&text, &key, &config.gate.community, 0) {
            Ok(b) => Some(b),
            Err(e) => {
                warn!(error = %e, "the stored policy bundle no longer verifies; using the config's policy");
                None
            }
        },
        _ => None,
    })
}

/// The tier schedule of the last good bundle in the gate's database (if the database exists; it is not created here),
/// with the bundle's version: what the daemon decides with.
pub fn applied_tiers(config: &Config) -> anyhow::Result<Option<(u64, Vec<crate::policy::TierChange>)>> {
    if !config.db_path.exists() {
        return Ok(None);
    }
    let store = Store::open(&config.db_path, &config.gate.id)?;
    Ok(stored_bundle(config, &store)?
        .and_then(|b| b.tier_changes().map(|t| (b.version, t)))
        .filter(|(_, t)| !t.is_empty()))
}

/// The trust a gate applies now: its config's, plus the lists of the last good bundle in its database (if the
/// database exists; it is not created here).
pub fn current_trust(config: &Config) -> anyhow::Result<crate::credential::Trust> {
    let mut trust = config.credentials.trust(&config.gate.community, &config.gate.id);
    if config.db_path.exists() {
        let store = Store::open(&config.db_path, &config.gate.id)?;
        if let Some(b) = stored_bundle(config, &store)? {
            trust.apply_bundle(&b).map_err(anyhow::Error::msg)?;
        }
    }
    Ok(trust)
}

/// Run the gate daemon until `shutdown` resolves (or the scenario has played, with `exit_when_done`).
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<RunSummary> {
    std::fs::create_dir_all(&config.gate.state_dir)
        .with_context(|| format!("cannot create the state directory {}", config.gate.state_dir.display()))?;
    let store = Store::open(&config.db_path, &config.gate.id)?.with_seal_key(config.seal_key.clone());
    if config.seal_key.is_none() {
        warn!("no [privacy] office_key: registrations keep only masked names, phones and ID numbers");
    }
    let first_id = store.next_presentation_id()?;
    // The last good policy bundle survives restarts: re-verified and applied before the first decision.
    let stored_bundle = stored_bundle(&config, &store)?;
    let (store, store_thread) = StoreHandle::spawn(store).context("cannot start the store thread")?;
    let devices = open_devices(&config)?;
    let (gate, gate_task) = GateHandle::spawn(devices.gate, devices.pulse);
    let tier = config.policy.tier_at(hw::now());
    info!(
        gate = %config.gate.id,
        name = %config.gate.name,
        tier = tier.tier.as_str(),
        tier_since = %tier.effective,
        policy = %config.policy.version,
        db = %config.db_path.display(),
        "sibi gate daemon started ({}，{})",
        config.gate.name,
        tier.tier.zh()
    );
    store.journal(hw::now(), "start", format!("policy {} tier {}", config.policy.version, tier.tier.as_str())).await;

    let (tx, mut rx) = mpsc::channel::<SourceMsg>(1024);
    // Only with [sync] and an office key: otherwise no extra sender keeps the channel open.
    let mut bundle_sink = config.sync.as_ref().and_then(|s| s.office_key).map(|office| crate::sync::BundleSink {
        office,
        tx: tx.clone(),
        trust: devices.trust.clone(),
    });
    let console_tx = config.console.as_ref().map(|_| tx.clone());
    let stop = StopFlag::default();
    let mut threads = Vec::new();
    let mut cred = devices.credentials;
    threads.push(hw::spawn_source(
        DeviceKind::Credentials,
        move |w| cred.poll(w),
        Event::Credential,
        tx.clone(),
        stop.clone(),
    )?);
    let mut thermo = devices.thermometer;
    threads.push(hw::spawn_source(
        DeviceKind::Thermometer,
        move |w| thermo.poll(w),
        hw::thermometer_event,
        tx.clone(),
        stop.clone(),
    )?);
    let mut op = devices.operator;
    threads.push(hw::spawn_source(
        DeviceKind::Operator,
        move |w| op.poll(w),
        |i| match i {
            OperatorInput::Action(a) => Event::Operator(a),
            OperatorInput::Button(b) => Event::Button(b),
        },
        tx.clone(),
        stop.clone(),
    )?);
    // A camera-fed mask thread never ends by itself (the pipeline holds its tap): only a scripted one counts towards
    // "every scripted device finished"; so does only a scripted ID card reader.
    let mut sources = threads.len();
    if let Some((mut lane, scripted)) = devices.idcard {
        sources += usize::from(scripted);
        threads.push(hw::spawn_source(
            DeviceKind::IdCard,
            move |w| lane.poll(w),
            |e| match e {
                crate::credential::idcard::CardEvent::Read(read) => Event::Credential(read),
                crate::credential::idcard::CardEvent::Notice { detail, message_zh } => {
                    Event::Notice { device: DeviceKind::IdCard, detail, message_zh }
                }
            },
            tx.clone(),
            stop.clone(),
        )?);
    }
    if let Some(mut mask) = devices.mask {
        sources += usize::from(mask.is_scripted());
        threads.push(hw::spawn_source(DeviceKind::Mask, move |w| mask.poll(w), Event::Mask, tx, stop.clone())?);
    } else {
        drop(tx);
    }
    // Sync runs beside the decision path with its own connection; it is not waited for at shutdown (a request in
    // flight is simply resent next time: the office is idempotent on (gate, seq)).
    let _sync = match &config.sync {
        Some(s) => {
            info!(office = %s.settings.office, "syncing to the street office");
            Some(
                crate::sync::spawn(
                    s.settings.clone(),
                    config.db_path.clone(),
                    config.gate.id.clone(),
                    config.gate.community.clone(),
                    s.key.clone(),
                    config.retention_ms,
                    bundle_sink.take(),
                    stop.clone(),
                )
                .context("cannot start the sync thread")?,
            )
        }
        None => None,
    };

    let mut checkpoint = Checkpoint::new(config.checkpoint, config.policy.clone(), config.gate.direction, first_id);
    if let Some(b) = stored_bundle {
        info!(version = b.version, "applying the stored policy bundle");
        if let Err(e) = devices.trust.write().unwrap_or_else(std::sync::PoisonError::into_inner).apply_bundle(&b) {
            warn!(error = %e, "the stored policy bundle's lists are unusable");
        }
        let tiers = b.tier_changes().unwrap_or_default();
        checkpoint.handle(Event::Tiers { version: b.version, tiers }, hw::now());
    }
    let voice = VoiceHandle::start(&config.devices.voice).context("cannot start the voice prompts")?;
    let mut pipeline = Pipeline::new(checkpoint, store.clone(), gate.clone()).with_voice(voice);
    if let Some(tap) = devices.mask_tap {
        pipeline = pipeline.with_mask_tap(tap);
    }
    let console_task = match &config.console {
        Some(c) => {
            let (live_tx, live_rx) = tokio::sync::watch::channel(crate::console::Live::default());
            pipeline = pipeline.with_live(live_tx);
            let console = crate::console::Console::new(
                c.clone(),
                console_tx.clone().context("internal: the console's sender")?,
                live_rx,
                store.clone(),
                config.db_path.clone(),
                config.gate.id.clone(),
                devices.card_taps.clone(),
            );
            let listener = tokio::net::TcpListener::bind(c.listen)
                .await
                .with_context(|| format!("cannot serve the console on {} (`console.listen`)", c.listen))?;
            info!(address = %listener.local_addr().map_or(c.listen, |a| a), "operator console: http://{}/", c.listen);
            Some(tokio::spawn(async move {
                if let Err(e) = crate::console::serve(console, listener, std::future::pending()).await {
                    error!(error = %e, "the operator console stopped");
                }
            }))
        }
        None => None,
    };
    if let Some(detail) = devices.mask_fault {
        pipeline.handle(Event::Fault { device: DeviceKind::Mask, detail }, hw::now()).await;
    }
    let mut summary = RunSummary::default();
    let count = |done: Vec<Executed>, s: &mut RunSummary| {
        s.recorded += done.iter().filter(|e| e.seq.is_some()).count();
        s.opened += done.iter().filter(|e| e.gate == GateAction::Opened).count();
    };
    let exit_when_done = config.script.as_ref().is_some_and(|s| s.exit_when_done);
    let mut finished_sources = 0;
    // Closed when every source thread has ended; the checkpoint still ticks (timeouts) after that.
    let mut sources_open = true;
    let mut tick = tokio::time::interval(TICK);
    let mut systemd = crate::systemd::Notifier::from_env();
    systemd.ready(&format!("{}: {}", config.gate.id, config.policy.tier_at(hw::now()).tier.zh()));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            _ = &mut shutdown => {
                info!("stop requested");
                break;
            }
            msg = rx.recv(), if sources_open => match msg {
                Some(SourceMsg::Event(s)) => {
                    count(pipeline.handle(s.event, s.at).await, &mut summary);
                    systemd.alive();
                }
                Some(SourceMsg::Done(kind)) => {
                    finished_sources += 1;
                    info!(device = ?kind, "scripted device finished");
                }
                None => sources_open = false,
            },
            _ = tick.tick() => {
                count(pipeline.handle(Event::Tick, hw::now()).await, &mut summary);
                // Pinged from the decision loop itself: if it hangs, the pings stop and systemd restarts the daemon.
                systemd.alive();
                if exit_when_done && finished_sources == sources && pipeline.is_idle() {
                    info!("scenario played to its end");
                    break;
                }
            }
        }
    }

    // Shutdown order: sources, open presentation, gate, store.
    systemd.stopping();
    let grace = config.gate.shutdown_grace;
    let drained = tokio::time::timeout(grace, async {
        stop.stop();
        count(pipeline.shutdown(hw::now()).await, &mut summary);
        drop(rx);
        for t in threads {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
        drop(pipeline);
        if let Some(t) = console_task {
            t.abort();
        }
        drop(gate);
        let _ = gate_task.await;
        store.journal(hw::now(), "stop", "clean shutdown").await;
        drop(store);
        let _ = tokio::task::spawn_blocking(move || store_thread.join()).await;
    })
    .await;
    summary.clean = drained.is_ok();
    if summary.clean {
        info!(recorded = summary.recorded, opened = summary.opened, "stopped cleanly");
    } else {
        error!(grace_ms = grace.as_millis() as u64, "shutdown did not finish within the grace period");
    }
    Ok(summary)
}

/// `sibi run`: loads the config and runs the gate until SIGINT or SIGTERM. An unclean stop (a task that did not end
/// in its grace) exits 1.
pub fn run_command(path: &std::path::Path) -> crate::cli::Outcome {
    use crate::cli::Failure;
    let config = crate::config::load(path).map_err(|e| Failure::Usage(e.to_string()))?;
    crate::systemd::init_logging();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Failed(format!("cannot start the async runtime: {e}")))?;
    match rt.block_on(async { run(config, stop_signal()).await }) {
        Ok(summary) => crate::cli::ok_if(summary.clean),
        Err(e) => {
            tracing::error!("{e:#}");
            Err(Failure::Failed(format!("{e:#}")))
        }
    }
}

/// Registers SIGINT and SIGTERM handlers at once (so a stop during start-up is not lost) and returns a future that
/// resolves on either. Must be called inside the runtime.
pub fn stop_signal() -> impl Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let int = signal(SignalKind::interrupt());
    let term = signal(SignalKind::terminate());
    async move {
        match (int, term) {
            (Ok(mut int), Ok(mut term)) => {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}

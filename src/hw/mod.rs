//! Devices behind small role traits. Only this module knows backends, pins and device paths.
//!
//! Input devices (credential source, thermometer, operator input) are polled with a bounded wait on a thread of their
//! own ([`spawn_source`]), which stamps each item with the wall clock and forwards it as a checkpoint [`Event`]. The
//! gate output is driven by the gate controller task in [`crate::app`]. Every role has a simulated backend (the
//! scripted devices in [`script`], the simulated gate in [`sim_gate`]), chosen in the `[devices]` config section.

pub mod camera;
pub mod frames;
pub mod gpio;
pub mod idcard;
pub mod script;
pub mod serial;
pub mod sim_gate;
pub mod thermo;
pub mod voice;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::checkpoint::{Button, CredentialRead, DeviceKind, Event, OperatorAction};
use crate::domain::{Celsius, Timestamp};

/// A device that stopped working, with a message for the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DeviceFault(pub String);

/// The result of one bounded poll.
#[derive(Debug, Clone, PartialEq)]
pub enum Polled<T> {
    /// Something arrived.
    Item(T),
    /// Nothing within the wait.
    Idle,
    /// The source has nothing more, ever (a script that played to its end).
    Done,
}

/// Where credentials come from (a camera and decoder, or a script of already-read credentials).
pub trait CredentialSource: Send {
    /// Wait at most `wait` for the next credential.
    fn poll(&mut self, wait: Duration) -> Result<Polled<CredentialRead>, DeviceFault>;
}

/// What a thermometer reports.
#[derive(Debug, Clone, PartialEq)]
pub enum ThermoItem {
    /// A body temperature, calibrated, one per person.
    Reading(Celsius),
    /// It still works but needs attention (drift): `detail` for the log, `message_zh` for the operator.
    Notice {
        /// English.
        detail: String,
        /// Chinese.
        message_zh: String,
    },
}

/// A thermometer: body temperatures, calibrated.
pub trait Thermometer: Send {
    /// Wait at most `wait` for the next reading or notice.
    fn poll(&mut self, wait: Duration) -> Result<Polled<ThermoItem>, DeviceFault>;
}

/// What an operator device produces.
#[derive(Debug, Clone, PartialEq)]
pub enum OperatorInput {
    /// A console action.
    Action(OperatorAction),
    /// A button.
    Button(Button),
}

/// Operator input: console actions and buttons.
pub trait OperatorSource: Send {
    /// Wait at most `wait` for the next input.
    fn poll(&mut self, wait: Duration) -> Result<Polled<OperatorInput>, DeviceFault>;
}

/// Lights on the gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Lights {
    /// Green: pass.
    pub green: bool,
    /// Red: stop.
    pub red: bool,
    /// Amber: an operator must act.
    pub amber: bool,
}

/// Buzzer patterns (an active buzzer switched on and off; no PWM needed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Buzz {
    /// One short beep.
    Short,
    /// Three long beeps.
    Alarm,
}

/// A command for the gate outputs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum GateCommand {
    /// Energise the relay: the gate opens for the entry with this sequence number.
    RelayOpen {
        /// The entry that was recorded before this command.
        seq: i64,
    },
    /// De-energise the relay.
    RelayClose,
    /// Set the lights.
    Lights(Lights),
    /// Sound the buzzer.
    Buzz {
        /// Which pattern.
        pattern: Buzz,
    },
    /// Everything off, relay closed: the state for stopping and for faults.
    Safe,
}

/// Relay, lights and buzzer.
pub trait GateOutput: Send {
    /// Carry out one command.
    fn apply(&mut self, cmd: &GateCommand) -> Result<(), DeviceFault>;
}

/// A shared stop flag for source threads.
#[derive(Clone, Debug, Default)]
pub struct StopFlag(Arc<AtomicBool>);

impl StopFlag {
    /// Ask the threads to stop.
    pub fn stop(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Has stop been asked?
    pub fn is_stopped(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// An event stamped with the wall clock when it was received.
#[derive(Debug, Clone, PartialEq)]
pub struct Stamped {
    /// The event.
    pub event: Event,
    /// When it arrived.
    pub at: Timestamp,
}

/// A message from a source thread.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceMsg {
    /// An event.
    Event(Stamped),
    /// The source has ended (its script played out).
    Done(DeviceKind),
}

/// What a thermometer item is to the checkpoint.
pub fn thermometer_event(item: ThermoItem) -> Event {
    match item {
        ThermoItem::Reading(c) => Event::Temperature(c),
        ThermoItem::Notice { detail, message_zh } => {
            Event::Notice { device: DeviceKind::Thermometer, detail, message_zh }
        }
    }
}

/// The wall clock, as the pure core's time input. Only drivers call this.
pub fn now() -> Timestamp {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    Timestamp(d.as_millis() as i64)
}

const POLL_WAIT: Duration = Duration::from_millis(100);

/// Run `poll` on a thread of its own until `stop`, forwarding items as events. A fault is reported once (and again
/// only after the device came back), so a pulled cable is one log line and one prompt, not a flood.
pub fn spawn_source<T, P, M>(
    kind: DeviceKind,
    mut poll: P,
    map: M,
    tx: mpsc::Sender<SourceMsg>,
    stop: StopFlag,
) -> std::io::Result<std::thread::JoinHandle<()>>
where
    T: Send + 'static,
    P: FnMut(Duration) -> Result<Polled<T>, DeviceFault> + Send + 'static,
    M: Fn(T) -> Event + Send + 'static,
{
    std::thread::Builder::new().name(format!("source-{kind:?}").to_lowercase()).spawn(move || {
        let mut faulted = false;
        let send = |msg: SourceMsg| tx.blocking_send(msg).is_ok();
        while !stop.is_stopped() {
            match poll(POLL_WAIT) {
                Ok(Polled::Item(item)) => {
                    if faulted {
                        faulted = false;
                        tracing::info!(device = ?kind, "device restored");
                        if !send(SourceMsg::Event(Stamped { event: Event::Restored(kind), at: now() })) {
                            return;
                        }
                    }
                    if !send(SourceMsg::Event(Stamped { event: map(item), at: now() })) {
                        return;
                    }
                }
                Ok(Polled::Idle) => {}
                Ok(Polled::Done) => {
                    let _ = send(SourceMsg::Done(kind));
                    return;
                }
                Err(DeviceFault(detail)) => {
                    if !faulted {
                        faulted = true;
                        tracing::warn!(device = ?kind, %detail, "device fault");
                        if !send(SourceMsg::Event(Stamped { event: Event::Fault { device: kind, detail }, at: now() }))
                        {
                            return;
                        }
                    }
                    std::thread::sleep(POLL_WAIT);
                }
            }
        }
    })
}

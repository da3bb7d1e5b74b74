//! The serial IR thermometer: one reader thread per port, reopening it by its (stable) path after it disappears.
//!
//! The thread owns the port and a protocol [`Parser`]; it sends the module's start or poll commands, feeds the parser,
//! and reports readings, faults and the gap when the port comes back over a channel. [`SerialThermometer`] turns
//! those into body temperatures (calibration, range, one settled reading per person, drift alarm) for the checkpoint.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::thermo::{
    Calibration, Drift, DriftMonitor, GyMode, ModbusSettings, Parsed, Protocol, ProtocolName, RawReading, Settler,
};
use super::{DeviceFault, Polled, StopFlag, ThermoItem, Thermometer};
use crate::domain::Celsius;

/// `[devices.thermometer]` with `backend = "serial"`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SerialSettings {
    /// The port; prefer the stable `/dev/serial/by-id/...` link (or the udev name `/dev/sibi-thermometer`).
    pub port: PathBuf,
    /// Baud rate (9600 default).
    #[serde(default = "default_baud")]
    pub baud: u32,
    /// `gy-mcu90614`, `modbus-rtu` or `ascii`.
    pub protocol: ProtocolName,
    /// GY-MCU: `continuous` (default) or `query`.
    #[serde(default)]
    pub mode: GyMode,
    /// `[devices.thermometer.modbus]`: slave, function, register, scale, signed.
    pub modbus: Option<ModbusSettings>,
    /// For polled protocols: ask for a reading this often, in ms (default 200).
    #[serde(default = "default_poll_ms")]
    pub poll_ms: u64,
    /// No valid frame for this long (from a streaming or polled module) is a device fault, in ms (default 2000).
    #[serde(default = "default_silence_ms")]
    pub silence_ms: u64,
    /// Agreeing readings needed before one is taken (default 3; 1 for `ascii`, whose bridge sends one per person).
    pub settle_readings: Option<usize>,
    /// Surface → body.
    #[serde(default)]
    pub calibration: Calibration,
    /// The drift alarm: median of the last `window` normal readings outside `[low, high]`.
    #[serde(default)]
    pub drift: DriftSettings,
}

/// Drift alarm settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriftSettings {
    /// Readings in the window (default 50).
    #[serde(default = "default_window")]
    pub window: usize,
    /// Lowest acceptable median (default 35.5 ℃).
    #[serde(default = "default_low")]
    pub low: f64,
    /// Highest acceptable median (default 37.0 ℃).
    #[serde(default = "default_high")]
    pub high: f64,
}

impl Default for DriftSettings {
    fn default() -> DriftSettings {
        DriftSettings { window: default_window(), low: default_low(), high: default_high() }
    }
}

fn default_baud() -> u32 {
    9600
}
fn default_poll_ms() -> u64 {
    200
}
fn default_silence_ms() -> u64 {
    2000
}
fn default_window() -> usize {
    50
}
fn default_low() -> f64 {
    35.5
}
fn default_high() -> f64 {
    37.0
}

impl SerialSettings {
    /// The protocol with its settings (a missing `[modbus]` table reads slave 1, register 0).
    pub fn protocol(&self) -> Protocol {
        match self.protocol {
            ProtocolName::GyMcu90614 => Protocol::GyMcu90614 { mode: self.mode },
            ProtocolName::ModbusRtu => Protocol::ModbusRtu(self.modbus.clone().unwrap_or(ModbusSettings {
                slave: 1,
                function: 3,
                register: 0,
                scale: 0.1,
                signed: true,
            })),
            ProtocolName::Ascii => Protocol::Ascii,
        }
    }

    /// Problems with the settings, for the config loader.
    pub fn problems(&self) -> Vec<String> {
        let mut p = self.protocol().problems();
        if self.protocol == ProtocolName::ModbusRtu && self.modbus.is_none() {
            p.push(
                "`protocol = \"modbus-rtu\"` needs a `[devices.thermometer.modbus]` table (slave, register...)".into(),
            );
        }
        p.extend(self.calibration.problems());
        if ![1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200].contains(&self.baud) {
            p.push(format!("`baud` = {}: use a standard rate (9600 or 115200 for GY-MCU modules)", self.baud));
        }
        if !(20..=10_000).contains(&self.poll_ms) {
            p.push(format!("`poll_ms` = {}: use 20–10000", self.poll_ms));
        }
        if !(200..=60_000).contains(&self.silence_ms) {
            p.push(format!("`silence_ms` = {}: use 200–60000", self.silence_ms));
        }
        if self.settle_readings.is_some_and(|n| !(1..=20).contains(&n)) {
            p.push("`settle_readings`: use 1–20".into());
        }
        let d = &self.drift;
        if !(5..=1000).contains(&d.window)
            || d.low.partial_cmp(&d.high) != Some(std::cmp::Ordering::Less)
            || !(30.0..=40.0).contains(&d.low)
        {
            p.push(format!("`drift`: window 5–1000 and 30 ≤ low < high (got {}, {}, {})", d.window, d.low, d.high));
        }
        p.into_iter().map(|m| format!("`devices.thermometer`: {m}")).collect()
    }
}

/// What the reader thread reports.
#[derive(Debug, Clone, PartialEq)]
pub enum ReaderMsg {
    /// A frame with a reading.
    Reading(RawReading),
    /// A well-formed frame without one (Modbus exception...).
    Rejected(String),
    /// The port is gone, silent, or sends only garbage.
    Fault(String),
    /// Valid frames again after a fault that lasted this long.
    Restored(Duration),
}

/// A running reader thread; stops when dropped.
pub struct Reader {
    /// Its reports.
    pub rx: mpsc::Receiver<ReaderMsg>,
    stop: StopFlag,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.stop.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Reader {
    /// Start reading `settings.port` with its protocol.
    pub fn start(settings: &SerialSettings) -> std::io::Result<Reader> {
        let (tx, rx) = mpsc::sync_channel(256);
        let stop = StopFlag::default();
        let s = settings.clone();
        let flag = stop.clone();
        let thread = std::thread::Builder::new().name("thermometer".into()).spawn(move || read_loop(&s, &tx, &flag))?;
        Ok(Reader { rx, stop, thread: Some(thread) })
    }
}

/// A port that could not be opened, or was lost, is retried this often.
const REOPEN_EVERY: Duration = Duration::from_millis(250);
const READ_TIMEOUT: Duration = Duration::from_millis(50);

/// An outage of a serial device: begun once (so a pulled cable is one report, not a flood), ended with its length.
#[derive(Debug, Default)]
pub struct Outage {
    since: Option<Instant>,
}

impl Outage {
    /// The device stopped working: true the first time (report it), false while the outage lasts.
    pub fn begin(&mut self) -> bool {
        let first = self.since.is_none();
        if first {
            self.since = Some(Instant::now());
        }
        first
    }

    /// Valid data again: how long the outage lasted, if there was one.
    pub fn end(&mut self) -> Option<Duration> {
        self.since.take().map(|s| s.elapsed())
    }
}

/// Keep the serial port `name` open (the reader threads of the thermometer and the ID card reader): run `session` on
/// it until it says the port is lost (`Some(why)`) or the thread should stop (`None`), then reopen it by its path
/// after a pause, as often as it takes. Opening failures and losses begin an `outage` and go to `report` once.
pub fn keep_open(
    name: &str,
    baud: u32,
    timeout: Duration,
    stop: &StopFlag,
    outage: &mut Outage,
    report: &dyn Fn(String),
    mut session: impl FnMut(&mut serialport::TTYPort, &mut Outage) -> Option<String>,
) {
    while !stop.is_stopped() {
        let why = match serialport::new(name, baud).timeout(timeout).open_native() {
            Ok(mut port) => match session(&mut port, outage) {
                Some(lost) => lost,
                None => return,
            },
            Err(e) => format!("cannot open {name}: {e}"),
        };
        if outage.begin() {
            report(why);
        }
        std::thread::sleep(REOPEN_EVERY);
    }
}

fn read_loop(s: &SerialSettings, tx: &mpsc::SyncSender<ReaderMsg>, stop: &StopFlag) {
    let port_name = s.port.display().to_string();
    let protocol = s.protocol();
    let watch_silence = !matches!(protocol, Protocol::Ascii);
    let report = |why: String| {
        tracing::warn!(port = %port_name, %why, "thermometer fault");
        let _ = tx.try_send(ReaderMsg::Fault(why));
    };
    let mut outage = Outage::default();
    keep_open(&port_name, s.baud, READ_TIMEOUT, stop, &mut outage, &report, |port, outage| {
        let mut parser = protocol.parser();
        let start = parser.on_open();
        if !start.is_empty() {
            let _ = port.write_all(&start);
        }
        let mut last_valid = Instant::now();
        let mut last_request: Option<Instant> = None;
        let mut buf = [0u8; 256];
        let mut out = Vec::new();
        loop {
            if stop.is_stopped() {
                return None;
            }
            if protocol.polled() && last_request.is_none_or(|t| t.elapsed() >= Duration::from_millis(s.poll_ms)) {
                last_request = Some(Instant::now());
                if let Err(e) = port.write_all(&parser.request()) {
                    return Some(format!("{port_name}: write failed: {e}"));
                }
            }
            match port.read(&mut buf) {
                Ok(0) => return Some(format!("{port_name}: the port closed")),
                Ok(n) => parser.feed(&buf[..n], &mut out),
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Some(format!("{port_name}: read failed: {e}")),
            }
            for p in out.drain(..) {
                last_valid = Instant::now();
                if let Some(gap) = outage.end() {
                    tracing::info!(port = %port_name, gap_ms = gap.as_millis() as u64, "thermometer back");
                    let _ = tx.try_send(ReaderMsg::Restored(gap));
                }
                let msg = match p {
                    Parsed::Reading(r) => ReaderMsg::Reading(r),
                    Parsed::Rejected(why) => ReaderMsg::Rejected(why),
                };
                let _ = tx.try_send(msg);
            }
            if last_valid.elapsed() >= Duration::from_millis(s.silence_ms) {
                let why = if parser.garbage() > 0 {
                    Some(format!(
                        "{port_name}: only unreadable data ({} bytes) — check the baud rate ({}) and protocol",
                        parser.garbage(),
                        s.baud
                    ))
                } else if watch_silence {
                    Some(format!("{port_name}: no data from the thermometer"))
                } else {
                    None
                };
                if let Some(why) = why
                    && outage.begin()
                {
                    report(why);
                }
            }
        }
    });
}

/// The serial thermometer as the checkpoint sees it: settled, calibrated body temperatures.
pub struct SerialThermometer {
    reader: Reader,
    calibration: Calibration,
    settler: Settler,
    drift: DriftMonitor,
    window: usize,
    /// A notice to report on the next poll (after the reading that raised it).
    pending: Option<ThermoItem>,
}

impl SerialThermometer {
    /// Start the reader for `settings`; `fever` is the policy's fever threshold (fevers are left out of the drift
    /// median).
    pub fn start(settings: &SerialSettings, fever: Celsius) -> std::io::Result<SerialThermometer> {
        let need = settings.settle_readings.unwrap_or(if settings.protocol == ProtocolName::Ascii { 1 } else { 3 });
        let c = |d: f64| Celsius::from_f64(d).unwrap_or(Celsius::from_centi(0));
        Ok(SerialThermometer {
            reader: Reader::start(settings)?,
            calibration: settings.calibration.clone(),
            settler: Settler::new(need, Celsius::from_centi(30)),
            drift: DriftMonitor::new(settings.drift.window, c(settings.drift.low), c(settings.drift.high), fever),
            window: settings.drift.window,
            pending: None,
        })
    }
}

impl Thermometer for SerialThermometer {
    fn poll(&mut self, wait: Duration) -> Result<Polled<ThermoItem>, DeviceFault> {
        if let Some(n) = self.pending.take() {
            return Ok(Polled::Item(n));
        }
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let msg = match self.reader.rx.recv_timeout(left) {
                Ok(m) => m,
                Err(mpsc::RecvTimeoutError::Timeout) => return Ok(Polled::Idle),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(DeviceFault("thermometer reader stopped".into()));
                }
            };
            match msg {
                ReaderMsg::Fault(why) => return Err(DeviceFault(why)),
                ReaderMsg::Restored(_) => {}
                ReaderMsg::Rejected(why) => tracing::debug!(%why, "thermometer frame without a reading"),
                ReaderMsg::Reading(raw) => match self.calibration.body(&raw) {
                    Err(_) => self.settler.absent(),
                    Ok(body) => {
                        if let Some(t) = self.settler.add(body) {
                            match self.drift.add(t) {
                                Some(Drift::Alarm { median }) => {
                                    tracing::warn!(%median, "thermometer drift: recalibrate");
                                    self.pending = Some(ThermoItem::Notice {
                                        detail: format!(
                                            "drift: median of the last {} normal readings is {median}, outside the band; \
                                             recalibrate",
                                            self.window
                                        ),
                                        message_zh: format!(
                                            "体温计读数漂移（近{}人中位数 {median}），请校准或更换体温计",
                                            self.window
                                        ),
                                    });
                                }
                                Some(Drift::Cleared { median }) => {
                                    tracing::info!(%median, "thermometer drift cleared");
                                    self.pending = Some(ThermoItem::Notice {
                                        detail: format!("drift cleared: median {median}"),
                                        message_zh: format!("体温计读数已恢复正常（中位数 {median}）"),
                                    });
                                }
                                None => {}
                            }
                            return Ok(Polled::Item(ThermoItem::Reading(t)));
                        }
                    }
                },
            }
        }
    }
}

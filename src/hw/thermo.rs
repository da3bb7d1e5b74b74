//! IR thermometer protocols and the surface-to-body conversion, all pure: bytes in, readings out.
//!
//! Each protocol is a [`Parser`] fed whatever bytes the serial port gave (frames split anywhere, garbage between them)
//! and resynchronising on the next frame start; none can panic, and each holds at most one frame's worth of bytes.
//! [`Calibration`] turns a surface reading into a body temperature; [`DriftMonitor`] watches the median of normal
//! readings for a thermometer that has wandered.

use std::collections::VecDeque;

use serde::Deserialize;

use crate::domain::Celsius;

/// One reading as the module sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawReading {
    /// Object (surface) temperature.
    pub object: Celsius,
    /// Ambient (sensor body) temperature, when the protocol reports it.
    pub ambient: Option<Celsius>,
    /// The frame's bytes, for `sibi probe thermometer`.
    pub frame: Vec<u8>,
}

/// What a parser found in the bytes fed to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// A well-formed reading.
    Reading(RawReading),
    /// A well-formed frame that carries no reading: a Modbus exception, an ASCII line that is not `T=`.
    Rejected(String),
}

/// A protocol parser.
pub trait Parser: Send {
    /// Feed bytes; complete frames are appended to `out`. Bytes that cannot start a frame are counted as garbage.
    fn feed(&mut self, bytes: &[u8], out: &mut Vec<Parsed>);
    /// Bytes to send when the port opens (start continuous output), if any.
    fn on_open(&self) -> Vec<u8>;
    /// Bytes to send to ask for one reading (polled protocols), if any.
    fn request(&self) -> Vec<u8>;
    /// Bytes discarded as garbage so far.
    fn garbage(&self) -> u64;
}

/// A thermometer protocol with its settings.
#[derive(Debug, Clone, PartialEq)]
pub enum Protocol {
    /// GY-MCU90614 / 90615 boards (MLX90614/90615, TTL UART).
    GyMcu90614 {
        /// Continuous output or one reading per request.
        mode: GyMode,
    },
    /// Modbus RTU over RS-485.
    ModbusRtu(ModbusSettings),
    /// `T=36.62` lines from a microcontroller bridge.
    Ascii,
}

/// `protocol` in `[devices.thermometer]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProtocolName {
    /// GY-MCU90614 / 90615.
    GyMcu90614,
    /// Modbus RTU (settings in `[devices.thermometer.modbus]`).
    ModbusRtu,
    /// ASCII `T=` lines.
    Ascii,
}

/// GY-MCU906xx output mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GyMode {
    /// `A5 45 EA`: the module sends readings continuously.
    #[default]
    Continuous,
    /// `A5 15 BA`: one reading per request.
    Query,
}

/// Modbus register read settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusSettings {
    /// Slave address (1–247).
    pub slave: u8,
    /// 3 (holding registers, default) or 4 (input registers).
    #[serde(default = "default_function")]
    pub function: u8,
    /// Register address.
    pub register: u16,
    /// Multiply the register value by this to get °C (0.1 for tenths).
    #[serde(default = "default_scale")]
    pub scale: f64,
    /// Is the register a signed 16-bit value (default true)?
    #[serde(default = "default_true")]
    pub signed: bool,
}

fn default_function() -> u8 {
    3
}
fn default_scale() -> f64 {
    0.1
}
fn default_true() -> bool {
    true
}

impl Protocol {
    /// Problems with the settings, for the config loader.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if let Protocol::ModbusRtu(m) = self {
            if !(1..=247).contains(&m.slave) {
                p.push(format!("`slave` = {}: a Modbus slave address is 1–247", m.slave));
            }
            if !matches!(m.function, 3 | 4) {
                p.push(format!("`function` = {}: use 3 (holding) or 4 (input registers)", m.function));
            }
            if !(m.scale.is_finite() && m.scale > 0.0 && m.scale <= 10.0) {
                p.push(format!("`scale` = {}: give the factor from register units to °C, e.g. 0.1", m.scale));
            }
        }
        p
    }

    /// A fresh parser for this protocol.
    pub fn parser(&self) -> Box<dyn Parser> {
        match self {
            Protocol::GyMcu90614 { mode } => Box::new(GyMcu::new(*mode)),
            Protocol::ModbusRtu(m) => Box::new(ModbusRtu::new(m.clone())),
            Protocol::Ascii => Box::new(AsciiLines::default()),
        }
    }

    /// Does the host have to ask for each reading?
    pub fn polled(&self) -> bool {
        matches!(self, Protocol::ModbusRtu(_) | Protocol::GyMcu90614 { mode: GyMode::Query })
    }
}

/// GY-MCU90614: `5A 5A 45 04 TOh TOl TAh TAl SUM`.
pub struct GyMcu {
    mode: GyMode,
    buf: Vec<u8>,
    garbage: u64,
}

impl GyMcu {
    const FRAME: usize = 9;

    /// A parser; `mode` decides what is sent on open and per request.
    pub fn new(mode: GyMode) -> GyMcu {
        GyMcu { mode, buf: Vec::with_capacity(Self::FRAME), garbage: 0 }
    }

    /// The host command `A5 CMD SUM`.
    pub fn command(cmd: u8) -> Vec<u8> {
        vec![0xA5, cmd, 0xA5u8.wrapping_add(cmd)]
    }
}

impl Parser for GyMcu {
    fn feed(&mut self, bytes: &[u8], out: &mut Vec<Parsed>) {
        const HEAD: [u8; 4] = [0x5A, 0x5A, 0x45, 0x04];
        for &b in bytes {
            self.buf.push(b);
            // Keep only a prefix of a frame header; drop bytes until the buffer could start a frame.
            while !self.buf.is_empty() {
                let n = self.buf.len().min(HEAD.len());
                if self.buf[..n] == HEAD[..n] {
                    break;
                }
                self.buf.remove(0);
                self.garbage += 1;
            }
            if self.buf.len() == Self::FRAME {
                let f = std::mem::take(&mut self.buf);
                let sum = f[..8].iter().fold(0u8, |a, &x| a.wrapping_add(x));
                if sum == f[8] {
                    let object = i16::from_be_bytes([f[4], f[5]]);
                    let ambient = i16::from_be_bytes([f[6], f[7]]);
                    out.push(Parsed::Reading(RawReading {
                        object: Celsius::from_centi(i32::from(object)),
                        ambient: Some(Celsius::from_centi(i32::from(ambient))),
                        frame: f,
                    }));
                } else {
                    // A bad sum: the header may have been garbage; rescan what followed it.
                    self.garbage += 1;
                    let rest = f[1..].to_vec();
                    self.feed(&rest, out);
                }
            }
        }
    }

    fn on_open(&self) -> Vec<u8> {
        match self.mode {
            GyMode::Continuous => GyMcu::command(0x45),
            GyMode::Query => Vec::new(),
        }
    }

    fn request(&self) -> Vec<u8> {
        match self.mode {
            GyMode::Continuous => Vec::new(),
            GyMode::Query => GyMcu::command(0x15),
        }
    }

    fn garbage(&self) -> u64 {
        self.garbage
    }
}

/// CRC-16/MODBUS, appended low byte first.
pub fn modbus_crc(bytes: &[u8]) -> u16 {
    crc::Crc::<u16>::new(&crc::CRC_16_MODBUS).checksum(bytes)
}

/// Modbus RTU: read one register, parse the answer or the exception.
pub struct ModbusRtu {
    settings: ModbusSettings,
    buf: Vec<u8>,
    garbage: u64,
}

impl ModbusRtu {
    /// A parser for answers from `settings.slave`.
    pub fn new(settings: ModbusSettings) -> ModbusRtu {
        ModbusRtu { settings, buf: Vec::new(), garbage: 0 }
    }

    /// The request frame: read one register.
    pub fn read_request(slave: u8, function: u8, register: u16) -> Vec<u8> {
        let mut f = vec![slave, function];
        f.extend_from_slice(&register.to_be_bytes());
        f.extend_from_slice(&1u16.to_be_bytes());
        let crc = modbus_crc(&f);
        f.extend_from_slice(&crc.to_le_bytes());
        f
    }

    /// How long the frame at the start of the buffer is, if its first bytes can start one; `None` to drop a byte.
    fn frame_len(&self) -> Option<usize> {
        let s = &self.settings;
        match self.buf.as_slice() {
            [] => Some(usize::MAX),
            [a] if *a == s.slave => Some(usize::MAX),
            [a, f, ..] if *a == s.slave && *f == s.function => {
                // Normal answer: addr fn count(=2) hi lo crc crc.
                match self.buf.get(2) {
                    None => Some(usize::MAX),
                    Some(2) => Some(7),
                    Some(_) => None,
                }
            }
            [a, f, ..] if *a == s.slave && *f == s.function | 0x80 => Some(5),
            _ => None,
        }
    }
}

impl Parser for ModbusRtu {
    fn feed(&mut self, bytes: &[u8], out: &mut Vec<Parsed>) {
        for &b in bytes {
            self.buf.push(b);
            loop {
                match self.frame_len() {
                    None => {
                        self.buf.remove(0);
                        self.garbage += 1;
                    }
                    Some(n) if self.buf.len() >= n => {
                        let f: Vec<u8> = self.buf.drain(..n).collect();
                        let crc = u16::from_le_bytes([f[n - 2], f[n - 1]]);
                        if modbus_crc(&f[..n - 2]) != crc {
                            // The start may have been garbage that looked like a frame: rescan from its next byte.
                            self.garbage += 1;
                            self.buf.splice(0..0, f[1..].iter().copied());
                            continue;
                        }
                        if f[1] & 0x80 != 0 {
                            let why = match f[2] {
                                1 => "illegal function",
                                2 => "illegal data address (check `register`)",
                                3 => "illegal data value",
                                4 => "slave device failure",
                                6 => "slave device busy",
                                _ => "exception",
                            };
                            out.push(Parsed::Rejected(format!("Modbus exception {}: {why}", f[2])));
                        } else {
                            let raw = u16::from_be_bytes([f[3], f[4]]);
                            let value = if self.settings.signed { f64::from(raw as i16) } else { f64::from(raw) };
                            match Celsius::from_f64(value * self.settings.scale) {
                                Some(object) => {
                                    out.push(Parsed::Reading(RawReading { object, ambient: None, frame: f }))
                                }
                                None => {
                                    out.push(Parsed::Rejected(format!("register value {raw} is not a temperature")))
                                }
                            }
                        }
                    }
                    Some(_) => break,
                }
                if self.buf.is_empty() {
                    break;
                }
            }
        }
    }

    fn on_open(&self) -> Vec<u8> {
        Vec::new()
    }

    fn request(&self) -> Vec<u8> {
        ModbusRtu::read_request(self.settings.slave, self.settings.function, self.settings.register)
    }

    fn garbage(&self) -> u64 {
        self.garbage
    }
}

/// `T=36.62` lines (optionally `,A=25.10` for ambient), `\n` or `\r\n` terminated, at most 64 bytes.
#[derive(Default)]
pub struct AsciiLines {
    line: Vec<u8>,
    overflow: bool,
    garbage: u64,
}

impl AsciiLines {
    const MAX: usize = 64;

    fn parse(line: &str) -> Option<(Celsius, Option<Celsius>)> {
        let mut object = None;
        let mut ambient = None;
        for part in line.split(',') {
            let (k, v) = part.trim().split_once('=')?;
            let v: f64 = v.trim().parse().ok()?;
            match k.trim() {
                "T" => object = Some(Celsius::from_f64(v)?),
                "A" => ambient = Some(Celsius::from_f64(v)?),
                _ => return None,
            }
        }
        Some((object?, ambient))
    }
}

impl Parser for AsciiLines {
    fn feed(&mut self, bytes: &[u8], out: &mut Vec<Parsed>) {
        for &b in bytes {
            if b == b'\n' {
                let line = std::mem::take(&mut self.line);
                if std::mem::take(&mut self.overflow) {
                    continue;
                }
                let text = String::from_utf8_lossy(&line);
                let text = text.trim();
                if text.is_empty() {
                    continue;
                }
                match AsciiLines::parse(text) {
                    Some((object, ambient)) => out.push(Parsed::Reading(RawReading { object, ambient, frame: line })),
                    None => {
                        self.garbage += line.len() as u64;
                        out.push(Parsed::Rejected(format!(
                            "not a reading: {:?}",
                            text.chars().take(32).collect::<String>()
                        )));
                    }
                }
            } else if self.line.len() >= Self::MAX {
                // An overlong line is garbage up to the next newline.
                self.overflow = true;
                self.garbage += 1;
                self.line.clear();
            } else if !self.overflow {
                self.line.push(b);
            } else {
                self.garbage += 1;
            }
        }
    }

    fn on_open(&self) -> Vec<u8> {
        Vec::new()
    }

    fn request(&self) -> Vec<u8> {
        Vec::new()
    }

    fn garbage(&self) -> u64 {
        self.garbage
    }
}

/// Surface → body temperature, and the measuring range.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Calibration {
    /// Added after the gain (°C). Default 0.
    #[serde(default)]
    pub offset: f64,
    /// Multiplies the surface reading (a linear curve with `offset`). Default 1.
    #[serde(default = "default_gain")]
    pub gain: f64,
    /// Ambient compensation: add `ambient_coeff × (ambient_ref − ambient)` when the module reports ambient (a cold
    /// forehead reads low in winter). Default 0 (off).
    #[serde(default)]
    pub ambient_coeff: f64,
    /// Reference ambient temperature for the compensation (°C). Default 25.
    #[serde(default = "default_ambient_ref")]
    pub ambient_ref: f64,
    /// Lowest surface reading taken as a person (°C). Default 30: below is a wall, a sleeve, nobody.
    #[serde(default = "default_min")]
    pub min: f64,
    /// Highest surface reading accepted (°C). Default 45.
    #[serde(default = "default_max")]
    pub max: f64,
}

fn default_gain() -> f64 {
    1.0
}
fn default_ambient_ref() -> f64 {
    25.0
}
fn default_min() -> f64 {
    30.0
}
fn default_max() -> f64 {
    45.0
}

impl Default for Calibration {
    fn default() -> Calibration {
        Calibration { offset: 0.0, gain: 1.0, ambient_coeff: 0.0, ambient_ref: 25.0, min: 30.0, max: 45.0 }
    }
}

/// Why a raw reading gave no body temperature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalid {
    /// Outside the measuring range: nobody in front of the sensor, or aimed wrong.
    OutOfRange(Celsius),
}

impl Calibration {
    /// Problems with the settings, for the config loader.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if !(self.gain.is_finite() && (0.5..=2.0).contains(&self.gain)) {
            p.push(format!("`gain` = {}: use 0.5–2.0", self.gain));
        }
        if !(self.offset.is_finite() && (-5.0..=5.0).contains(&self.offset)) {
            p.push(format!("`offset` = {}: use −5–5 °C", self.offset));
        }
        if !(self.ambient_coeff.is_finite() && (0.0..=0.5).contains(&self.ambient_coeff)) {
            p.push(format!("`ambient_coeff` = {}: use 0–0.5", self.ambient_coeff));
        }
        if !(self.min.is_finite() && self.max.is_finite() && 0.0 < self.min && self.min < self.max && self.max < 60.0) {
            p.push(format!("`min`/`max` = {}/{}: give 0 < min < max < 60", self.min, self.max));
        }
        p
    }

    /// The body temperature for a raw reading, or why there is none.
    pub fn body(&self, r: &RawReading) -> Result<Celsius, Invalid> {
        let surface = r.object.as_f64();
        if !(self.min..=self.max).contains(&surface) {
            return Err(Invalid::OutOfRange(r.object));
        }
        let mut body = surface * self.gain + self.offset;
        if let Some(a) = r.ambient {
            body += self.ambient_coeff * (self.ambient_ref - a.as_f64());
        }
        Celsius::from_f64(body).ok_or(Invalid::OutOfRange(r.object))
    }
}

/// Watches the median of the last `window` normal readings; a thermometer whose median wanders out of
/// `[low, high]` needs recalibration.
#[derive(Debug, Clone)]
pub struct DriftMonitor {
    window: usize,
    low: Celsius,
    high: Celsius,
    fever: Celsius,
    recent: VecDeque<Celsius>,
    alarmed: bool,
}

/// A change in the drift state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Drift {
    /// The median left the band.
    Alarm {
        /// The median.
        median: Celsius,
    },
    /// It came back.
    Cleared {
        /// The median.
        median: Celsius,
    },
}

impl DriftMonitor {
    /// A monitor over `window` readings below `fever`, alarming outside `[low, high]`.
    pub fn new(window: usize, low: Celsius, high: Celsius, fever: Celsius) -> DriftMonitor {
        DriftMonitor { window: window.max(1), low, high, fever, recent: VecDeque::new(), alarmed: false }
    }

    /// Add a body temperature; returns a change of state, if any. Fevers are not "normal" and are left out.
    pub fn add(&mut self, t: Celsius) -> Option<Drift> {
        if t >= self.fever {
            return None;
        }
        self.recent.push_back(t);
        if self.recent.len() > self.window {
            self.recent.pop_front();
        }
        if self.recent.len() < self.window {
            return None;
        }
        let mut v: Vec<Celsius> = self.recent.iter().copied().collect();
        v.sort();
        let median = v[v.len() / 2];
        let out = median < self.low || median > self.high;
        match (out, self.alarmed) {
            (true, false) => {
                self.alarmed = true;
                Some(Drift::Alarm { median })
            }
            (false, true) => {
                self.alarmed = false;
                Some(Drift::Cleared { median })
            }
            _ => None,
        }
    }
}

/// The daily self-check: a reference (blackbody, or a known reading entered by the operator) against what the
/// thermometer reports; passes within `tolerance`.
pub fn self_check(reference: Celsius, measured: Celsius, tolerance: Celsius) -> bool {
    (reference.centi() - measured.centi()).abs() <= tolerance.centi()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(p: &mut dyn Parser, bytes: &[u8]) -> Vec<Parsed> {
        let mut out = Vec::new();
        p.feed(bytes, &mut out);
        out
    }

    fn object(p: &Parsed) -> Option<i32> {
        match p {
            Parsed::Reading(r) => Some(r.object.centi()),
            Parsed::Rejected(_) => None,
        }
    }

    #[test]
    fn gy_mcu_reads_the_datasheet_example_split_anywhere_and_after_garbage() {
        let frame = [0x5A, 0x5A, 0x45, 0x04, 0x0E, 0x47, 0x09, 0xD0, 0x2B];
        let mut p = GyMcu::new(GyMode::Continuous);
        let out = feed(&mut p, &frame);
        assert_eq!(
            out,
            vec![Parsed::Reading(RawReading {
                object: Celsius::from_centi(3655),
                ambient: Some(Celsius::from_centi(2512)),
                frame: frame.to_vec()
            })]
        );
        for split in 0..frame.len() {
            let mut p = GyMcu::new(GyMode::Continuous);
            let mut all = feed(&mut p, &[0x00, 0x5A, 0x13, 0x5A, 0x5A]);
            all.extend(feed(&mut p, &frame[..split]));
            all.extend(feed(&mut p, &frame[split..]));
            assert_eq!(all.iter().filter_map(object).collect::<Vec<_>>(), vec![3655], "split at {split}");
        }
        let mut bad = frame;
        bad[8] = 0x2C;
        let mut p = GyMcu::new(GyMode::Continuous);
        assert!(feed(&mut p, &bad).is_empty());
        assert_eq!(feed(&mut p, &frame).iter().filter_map(object).collect::<Vec<_>>(), vec![3655]);
        assert_eq!(GyMcu::command(0x45), vec![0xA5, 0x45, 0xEA]);
        assert_eq!(GyMcu::command(0x15), vec![0xA5, 0x15, 0xBA]);
    }

    fn calex() -> ModbusSettings {
        ModbusSettings { slave: 1, function: 3, register: 0x12, scale: 0.1, signed: true }
    }

    #[test]
    fn modbus_request_answer_and_exception() {
        assert_eq!(ModbusRtu::read_request(1, 3, 0x12), vec![0x01, 0x03, 0x00, 0x12, 0x00, 0x01, 0x24, 0x0F]);
        let mut answer = vec![0x01, 0x03, 0x02, 0x01, 0x6D];
        answer.extend(modbus_crc(&answer).to_le_bytes());
        let mut p = ModbusRtu::new(calex());
        assert_eq!(feed(&mut p, &answer).iter().filter_map(object).collect::<Vec<_>>(), vec![3650]);
        let mut neg = vec![0x01, 0x03, 0x02, 0xFF, 0x9C];
        neg.extend(modbus_crc(&neg).to_le_bytes());
        assert_eq!(feed(&mut p, &neg).iter().filter_map(object).collect::<Vec<_>>(), vec![-1000]);
        let mut exc = vec![0x01, 0x83, 0x02];
        exc.extend(modbus_crc(&exc).to_le_bytes());
        let mut noisy = vec![0xFF, 0x01, 0x07];
        noisy.extend(&exc);
        let out = feed(&mut p, &noisy);
        assert!(matches!(&out[..], [Parsed::Rejected(m)] if m.contains("data address")), "{out:?}");
        let mut corrupt = answer.clone();
        corrupt[4] ^= 1;
        corrupt.extend(&answer);
        assert_eq!(feed(&mut p, &corrupt).iter().filter_map(object).collect::<Vec<_>>(), vec![3650]);
    }

    #[test]
    fn ascii_lines_with_ambient_garbage_and_overlong_lines() {
        let mut p = AsciiLines::default();
        let out = feed(&mut p, b"T=36.62\r\nhello\nT=36.7,A=21.5\n");
        assert_eq!(out.iter().filter_map(object).collect::<Vec<_>>(), vec![3662, 3670]);
        assert!(matches!(out[1], Parsed::Rejected(_)));
        let mut long = vec![b'9'; 500];
        long.extend(b"\nT=36.5\n");
        assert_eq!(feed(&mut p, &long).iter().filter_map(object).collect::<Vec<_>>(), vec![3650]);
    }

    #[test]
    fn calibration_range_gain_offset_and_ambient() {
        let r = |o: i32, a: Option<i32>| RawReading {
            object: Celsius::from_centi(o),
            ambient: a.map(Celsius::from_centi),
            frame: vec![],
        };
        let c = Calibration { offset: 0.8, ..Calibration::default() };
        assert_eq!(c.body(&r(3580, None)), Ok(Celsius::from_centi(3660)));
        assert_eq!(c.body(&r(2500, None)), Err(Invalid::OutOfRange(Celsius::from_centi(2500))));
        let cold = Calibration { ambient_coeff: 0.1, ..Calibration::default() };
        assert_eq!(cold.body(&r(3500, Some(500))), Ok(Celsius::from_centi(3700)));
        assert!(Calibration { gain: 3.0, ..Calibration::default() }.problems().len() == 1);
    }

    #[test]
    fn drift_alarm_on_the_median_of_the_last_fifty() {
        let mut d =
            DriftMonitor::new(50, Celsius::from_centi(3550), Celsius::from_centi(3700), Celsius::from_centi(3730));
        for _ in 0..49 {
            assert_eq!(d.add(Celsius::from_centi(3640)), None);
        }
        assert_eq!(d.add(Celsius::from_centi(3640)), None);
        let mut alarm = None;
        for _ in 0..30 {
            alarm = alarm.or(d.add(Celsius::from_centi(3480)));
        }
        assert_eq!(alarm, Some(Drift::Alarm { median: Celsius::from_centi(3480) }));
        // Fevers do not count as normal readings.
        assert_eq!(d.add(Celsius::from_centi(3800)), None);
        let mut cleared = None;
        for _ in 0..50 {
            cleared = cleared.or(d.add(Celsius::from_centi(3650)));
        }
        assert!(matches!(cleared, Some(Drift::Cleared { .. })));
        assert!(self_check(Celsius::from_centi(3700), Celsius::from_centi(3680), Celsius::from_centi(30)));
        assert!(!self_check(Celsius::from_centi(3700), Celsius::from_centi(3650), Celsius::from_centi(30)));
    }
}

/// Turns a stream of body temperatures into one reading per person: a streaming module reports ten times a second
/// whether anyone is there, so a reading is taken once `need` consecutive in-range readings agree within
/// `tolerance`, and the next only after the sensor has seen nobody (an out-of-range reading) in between.
#[derive(Debug, Clone)]
pub struct Settler {
    need: usize,
    tolerance: i32,
    run: Vec<Celsius>,
    taken: bool,
}

impl Settler {
    /// Take a reading after `need` (≥ 1) agreeing readings.
    pub fn new(need: usize, tolerance: Celsius) -> Settler {
        Settler { need: need.max(1), tolerance: tolerance.centi(), run: Vec::new(), taken: false }
    }

    /// An in-range body temperature; returns the reading to report, if this settles one.
    pub fn add(&mut self, t: Celsius) -> Option<Celsius> {
        if self.taken {
            return None;
        }
        self.run.push(t);
        if self.run.len() > self.need {
            self.run.remove(0);
        }
        let (lo, hi) = self.run.iter().fold((i32::MAX, i32::MIN), |(lo, hi), c| (lo.min(c.centi()), hi.max(c.centi())));
        if self.run.len() == self.need && hi - lo <= self.tolerance {
            self.taken = true;
            let mut v = std::mem::take(&mut self.run);
            v.sort();
            return Some(v[v.len() / 2]);
        }
        None
    }

    /// Nobody in front of the sensor: the next person gets a new reading.
    pub fn absent(&mut self) {
        self.taken = false;
        self.run.clear();
    }
}

#[cfg(test)]
mod settle_tests {
    use super::*;

    #[test]
    fn one_reading_per_person_once_it_is_steady() {
        let c = Celsius::from_centi;
        let mut s = Settler::new(3, c(30));
        assert_eq!(s.add(c(3400)), None);
        assert_eq!(s.add(c(3620)), None);
        assert_eq!(s.add(c(3650)), None);
        assert_eq!(s.add(c(3640)), Some(c(3640)));
        assert_eq!(s.add(c(3640)), None, "the same person again");
        s.absent();
        assert_eq!(s.add(c(3700)), None);
        assert_eq!(s.add(c(3700)), None);
        assert_eq!(s.add(c(3710)), Some(c(3700)));
        let mut one = Settler::new(1, c(0));
        assert_eq!(one.add(c(3662)), Some(c(3662)));
    }
}

//! The resident ID card reader (二代身份证阅读器, GA 467) on a serial port, in the thermometer's shape: a pure frame
//! parser ([`frame`]) and reader state machine ([`machine`]), the text block decoder ([`text`]), and the serial
//! transport on its own thread, reopening the port by its stable path after an unplug (a fault reported once, the
//! gap reported on return). The encrypted photo in the read answer is dropped unread.

pub mod cli;
pub mod frame;
pub mod machine;
pub mod text;

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::{DeviceFault, Polled, StopFlag};
use machine::{Machine, Step};
pub use text::{CardKind, IdCard, Sex, TextBuilder, ValidTo, Ymd};

/// `[devices.idcard]` with `backend = "serial"`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdCardSettings {
    /// The port; prefer the stable `/dev/serial/by-id/...` link (or the udev name `/dev/sibi-idcard`).
    pub port: PathBuf,
    /// Baud rate (115200 default; readers also offer 57600, 38400, 19200, 9600).
    #[serde(default = "default_baud")]
    pub baud: u32,
}

fn default_baud() -> u32 {
    115_200
}

impl IdCardSettings {
    /// Problems with the settings, for the config loader.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if ![9600, 19200, 38400, 57600, 115_200].contains(&self.baud) {
            p.push(format!("`devices.idcard.baud` = {}: use 115200 (or 57600, 38400, 19200, 9600)", self.baud));
        }
        p
    }
}

/// What a reader reports.
#[derive(Debug, Clone, PartialEq)]
pub enum CardItem {
    /// A card was read and its text decoded (check digit and validity are for the caller to judge).
    Card(Box<IdCard>),
    /// Something for the operator (a status from the reader, a text block that is no card).
    Prompt {
        /// For the log (English).
        detail: String,
        /// For the operator (Chinese).
        message_zh: String,
    },
    /// The reader works again after a gap this long.
    Restored(Duration),
}

/// An ID card reader (serial, or scripted for the demo and tests).
pub trait IdCardReader: Send {
    /// Wait at most `wait` for the next card or prompt.
    fn poll(&mut self, wait: Duration) -> Result<Polled<CardItem>, DeviceFault>;
}

/// What the transport thread reports.
#[derive(Debug, Clone, PartialEq)]
enum ReaderMsg {
    Card(Vec<u8>),
    Prompt(machine::Prompt),
    Fault(String),
    Restored(Duration),
}

const READ_TIMEOUT: Duration = Duration::from_millis(5);

/// The serial reader: a transport thread and the text decoder. Stops its thread when dropped.
pub struct SerialIdCard {
    rx: mpsc::Receiver<ReaderMsg>,
    stop: StopFlag,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for SerialIdCard {
    fn drop(&mut self) {
        self.stop.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl SerialIdCard {
    /// Start reading `settings.port`.
    pub fn start(settings: &IdCardSettings) -> std::io::Result<SerialIdCard> {
        let (tx, rx) = mpsc::sync_channel(64);
        let stop = StopFlag::default();
        let (s, flag) = (settings.clone(), stop.clone());
        let thread = std::thread::Builder::new().name("idcard".into()).spawn(move || read_loop(&s, &tx, &flag))?;
        Ok(SerialIdCard { rx, stop, thread: Some(thread) })
    }
}

impl IdCardReader for SerialIdCard {
    fn poll(&mut self, wait: Duration) -> Result<Polled<CardItem>, DeviceFault> {
        match self.rx.recv_timeout(wait) {
            Ok(ReaderMsg::Card(bytes)) => Ok(Polled::Item(match text::decode(&bytes) {
                Ok(card) => CardItem::Card(Box::new(card)),
                Err(e) => CardItem::Prompt {
                    detail: format!("the card's text block is unreadable: {e}"),
                    message_zh: "读卡失败，请重新放卡".into(),
                },
            })),
            Ok(ReaderMsg::Prompt(p)) => {
                Ok(Polled::Item(CardItem::Prompt { detail: p.detail, message_zh: p.message_zh.into() }))
            }
            Ok(ReaderMsg::Fault(why)) => Err(DeviceFault(why)),
            Ok(ReaderMsg::Restored(gap)) => Ok(Polled::Item(CardItem::Restored(gap))),
            Err(mpsc::RecvTimeoutError::Timeout) => Ok(Polled::Idle),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(DeviceFault("the ID card reader thread stopped".into())),
        }
    }
}

fn read_loop(s: &IdCardSettings, tx: &mpsc::SyncSender<ReaderMsg>, stop: &StopFlag) {
    let port_name = s.port.display().to_string();
    let epoch = Instant::now();
    let now_ms = || epoch.elapsed().as_millis() as u64;
    let mut machine = Machine::new();
    let mut parser = frame::Parser::new();
    let report = |why: String| {
        tracing::warn!(port = %port_name, %why, "ID card reader fault");
        let _ = tx.try_send(ReaderMsg::Fault(why));
    };
    // A port-level outage (cannot open, unplugged) here; the machine keeps its own (the reader stops answering).
    let mut outage = crate::hw::serial::Outage::default();
    crate::hw::serial::keep_open(&port_name, s.baud, READ_TIMEOUT, stop, &mut outage, &report, |port, outage| {
        parser.reset();
        machine.reopened(now_ms());
        let mut buf = [0u8; 2048];
        let mut parsed = Vec::new();
        loop {
            if stop.is_stopped() {
                return None;
            }
            let mut steps = machine.tick(now_ms());
            match port.read(&mut buf) {
                Ok(0) => return Some(format!("{port_name}: the port closed")),
                Ok(n) => parser.feed(&buf[..n], &mut parsed),
                Err(e) if matches!(e.kind(), std::io::ErrorKind::TimedOut | std::io::ErrorKind::Interrupted) => {}
                Err(e) => return Some(format!("{port_name}: read failed: {e}")),
            }
            for p in parsed.drain(..) {
                match p {
                    frame::Parsed::Frame(body) => {
                        if let Some(gap) = outage.end() {
                            tracing::info!(port = %port_name, gap_ms = gap.as_millis() as u64, "ID card reader back");
                            let _ = tx.try_send(ReaderMsg::Restored(gap));
                        }
                        steps.extend(machine.frame(&body, now_ms()));
                    }
                    frame::Parsed::BadChecksum => {
                        tracing::debug!(port = %port_name, "ID card reader frame with a bad checksum");
                        steps.extend(machine.bad_frame(now_ms()));
                    }
                }
            }
            for step in steps {
                match step {
                    Step::Send(bytes) => {
                        if let Err(e) = port.write_all(&bytes) {
                            return Some(format!("{port_name}: write failed: {e}"));
                        }
                    }
                    Step::Card(text) => {
                        let _ = tx.send(ReaderMsg::Card(text));
                    }
                    Step::Prompt(p) => {
                        tracing::info!(port = %port_name, detail = %p.detail, "ID card reader status");
                        let _ = tx.try_send(ReaderMsg::Prompt(p));
                    }
                    Step::Fault(why) => report(why),
                    Step::Restored { since_ms } => {
                        let gap = Duration::from_millis(now_ms().saturating_sub(since_ms));
                        tracing::info!(port = %port_name, gap_ms = gap.as_millis() as u64, "ID card reader answers again");
                        let _ = tx.try_send(ReaderMsg::Restored(gap));
                    }
                    Step::Found => tracing::debug!(port = %port_name, "card found"),
                    Step::Resync => parser.reset(),
                }
            }
        }
    });
}

/// Taps on the scripted reader from outside the script (the console's simulator): each a card's text block.
pub type CardTaps = mpsc::SyncSender<[u8; text::TEXT_LEN]>;

/// The scripted reader (demo, tests): each `card` event of the scenario is a tap, and so is each block sent through
/// its [`CardTaps`]; all are decoded by the real decoder.
pub struct ScriptedIdCard {
    cards: super::script::ScriptedCards,
    taps: Option<mpsc::Receiver<[u8; text::TEXT_LEN]>>,
}

impl ScriptedIdCard {
    /// The card part of `script`.
    pub fn new(script: &super::script::Script, playback: super::script::Playback) -> ScriptedIdCard {
        ScriptedIdCard { cards: super::script::ScriptedCards::new(script, playback), taps: None }
    }

    /// Also take taps from the returned sender. The reader then never finishes by itself.
    pub fn with_taps(mut self) -> (ScriptedIdCard, CardTaps) {
        let (tx, rx) = mpsc::sync_channel(4);
        self.taps = Some(rx);
        (self, tx)
    }
}

impl IdCardReader for ScriptedIdCard {
    fn poll(&mut self, wait: Duration) -> Result<Polled<CardItem>, DeviceFault> {
        let tapped = self.taps.as_ref().and_then(|t| t.try_recv().ok());
        let polled = match tapped {
            Some(block) => Polled::Item(std::sync::Arc::new(block)),
            None if self.taps.is_some() => match self.cards.poll(wait.min(Duration::from_millis(50))) {
                Polled::Done => Polled::Idle, // the script has played; taps may still come
                other => other,
            },
            None => self.cards.poll(wait),
        };
        Ok(match polled {
            Polled::Item(bytes) => Polled::Item(match text::decode(&bytes[..]) {
                Ok(card) => CardItem::Card(Box::new(card)),
                Err(e) => CardItem::Prompt {
                    detail: format!("scripted card: {e}"),
                    message_zh: "读卡失败，请重新放卡".into(),
                },
            }),
            Polled::Idle => Polled::Idle,
            Polled::Done => Polled::Done,
        })
    }
}

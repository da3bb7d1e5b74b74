//! The reader's state machine, without I/O: bytes and time in, steps out. Find (`20 01`) every
//! [`FIND_EVERY_MS`] → select (`20 02`) → read (`30 01`) → the text block; a card that was read must leave the field
//! (a find that fails) before it is read again; the security module (SAM) is asked for its status, and reset if that
//! fails, when the reader reports a SAM error; a reader that stops answering is a fault once, and the gap is reported
//! when it answers again.

use super::frame::{Response, cmd, request};
use super::text::TEXT_LEN;

/// Find a card this often while none is in the field.
pub const FIND_EVERY_MS: u64 = 100;
/// A find, select or SAM command answers within this.
pub const ANSWER_MS: u64 = 500;
/// A read answers within this (readers take up to ~3 s).
pub const READ_MS: u64 = 3_500;
/// Unanswered commands in a row that make the reader faulty.
pub const MISSES_FOR_FAULT: u32 = 3;
/// While faulty, ask this often.
pub const FAULTY_EVERY_MS: u64 = 500;

/// What the reader's status byte (SW3) means: `(english, chinese prompt)`. `None` for the non-error ones.
pub fn status_text(sw3: u8) -> Option<(&'static str, &'static str)> {
    Some(match sw3 {
        0x90 | 0x9F => return None,
        0x80 => ("no card in the field", "请放置身份证"),
        0x81 => ("select failed", "请将身份证放稳"),
        0x41 => ("read failed", "读卡失败，请重新放卡"),
        0x10 => ("the reader saw a checksum error", "读卡失败，请重新放卡"),
        0x11 => ("the reader saw a length error", "读卡失败，请重新放卡"),
        0x21 => ("the reader refused the command", "读卡器故障，请联系工作人员"),
        0x23 => ("unauthorised", "读卡器故障（未授权），请联系工作人员"),
        0x24 => ("unknown error", "读卡器故障，请联系工作人员"),
        0x31 => ("the card could not authenticate the SAM", "读卡失败，请重新放卡"),
        0x32 => ("the SAM could not authenticate the card", "身份证无法验证，请人工登记"),
        0x33 => ("information check error", "身份证信息校验失败，请重新放卡"),
        0x40 => ("unknown card type", "无法识别的证件，请人工登记"),
        0x47 => ("random number failed", "读卡失败，请重新放卡"),
        0x60 => ("the SAM's self-test failed", "读卡器故障（安全模块自检失败），请联系工作人员"),
        0x66 => ("the SAM is not authorised", "读卡器故障（安全模块未授权），请联系工作人员"),
        0x91 => ("no content for this item", "读卡失败，请重新放卡"),
        _ => ("unknown status", "读卡器故障，请联系工作人员"),
    })
}

/// Status bytes that say the security module needs attention.
fn sam_error(sw3: u8) -> bool {
    matches!(sw3, 0x21 | 0x23 | 0x24 | 0x60 | 0x66)
}

/// Something for the operator, from a status byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompt {
    /// The status byte.
    pub sw3: u8,
    /// For the log (English).
    pub detail: String,
    /// For the operator and the resident (Chinese).
    pub message_zh: &'static str,
}

impl Prompt {
    fn of(sw3: u8, during: &str) -> Prompt {
        let (en, zh) = status_text(sw3).unwrap_or(("unexpected status", "读卡失败，请重新放卡"));
        Prompt { sw3, detail: format!("{during}: {en} (SW3 {sw3:02X})"), message_zh: zh }
    }
}

/// What the machine asks its driver to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Write these bytes.
    Send(Vec<u8>),
    /// A card was read: its text block (the photo is not kept).
    Card(Vec<u8>),
    /// Tell the operator.
    Prompt(Prompt),
    /// The reader stopped working (once, until it works again).
    Fault(String),
    /// It answers again after a fault that began at this time (ms).
    Restored {
        /// When the fault began.
        since_ms: u64,
    },
    /// A card answered "find ok" (the latency measurement starts here).
    Found,
    /// An answer is overdue: drop any partial frame (half an answer from a lifted card would otherwise swallow the
    /// next answers).
    Resync,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting to send the next find.
    Idle {
        next_ms: u64,
    },
    /// A command is out; its answer is due by `deadline_ms`.
    Find {
        deadline_ms: u64,
    },
    Select {
        deadline_ms: u64,
    },
    Read {
        deadline_ms: u64,
    },
    Sam {
        deadline_ms: u64,
        reset: bool,
    },
}

/// The reader's state machine.
#[derive(Debug, Clone)]
pub struct Machine {
    state: State,
    /// A card was read and has not left the field yet.
    leave_pending: bool,
    misses: u32,
    faulted_since: Option<u64>,
}

impl Default for Machine {
    fn default() -> Machine {
        Machine::new()
    }
}

impl Machine {
    /// A machine that sends its first find on the first tick.
    pub fn new() -> Machine {
        Machine { state: State::Idle { next_ms: 0 }, leave_pending: false, misses: 0, faulted_since: None }
    }

    /// True while the reader is faulty.
    pub fn faulted(&self) -> bool {
        self.faulted_since.is_some()
    }

    /// The port was (re)opened: start afresh (a card may have come or gone meanwhile).
    pub fn reopened(&mut self, now_ms: u64) {
        self.state = State::Idle { next_ms: now_ms };
        self.leave_pending = false;
    }

    fn idle(&mut self, now_ms: u64) {
        let every = if self.faulted() { FAULTY_EVERY_MS } else { FIND_EVERY_MS };
        self.state = State::Idle { next_ms: now_ms + every };
    }

    fn send(&mut self, c: (u8, u8), state: State, out: &mut Vec<Step>) {
        self.state = state;
        out.push(Step::Send(request(c)));
    }

    /// Time passed: send what is due, give up on what is overdue.
    pub fn tick(&mut self, now_ms: u64) -> Vec<Step> {
        let mut out = Vec::new();
        match self.state {
            State::Idle { next_ms } if now_ms >= next_ms => {
                self.send(cmd::FIND, State::Find { deadline_ms: now_ms + ANSWER_MS }, &mut out);
            }
            State::Find { deadline_ms } | State::Select { deadline_ms } | State::Sam { deadline_ms, .. }
                if now_ms >= deadline_ms =>
            {
                self.missed(now_ms, &mut out);
            }
            State::Read { deadline_ms } if now_ms >= deadline_ms => {
                out.push(Step::Prompt(Prompt {
                    sw3: 0,
                    detail: "read: no answer in time (card lifted?)".into(),
                    message_zh: "读卡失败，请重新放卡",
                }));
                self.missed(now_ms, &mut out);
            }
            _ => {}
        }
        out
    }

    fn missed(&mut self, now_ms: u64, out: &mut Vec<Step>) {
        out.push(Step::Resync);
        self.misses += 1;
        if self.misses >= MISSES_FOR_FAULT && self.faulted_since.is_none() {
            self.faulted_since = Some(now_ms);
            out.push(Step::Fault(format!("the ID card reader does not answer ({} commands in a row)", self.misses)));
        }
        self.idle(now_ms);
    }

    /// A frame with a bad checksum arrived: the command is asked again.
    pub fn bad_frame(&mut self, now_ms: u64) -> Vec<Step> {
        let mut out = Vec::new();
        if let State::Read { .. } = self.state {
            out.push(Step::Prompt(Prompt {
                sw3: 0,
                detail: "read: the answer's checksum is wrong".into(),
                message_zh: "读卡失败，请重新放卡",
            }));
        }
        if !matches!(self.state, State::Idle { .. }) {
            self.state = State::Idle { next_ms: now_ms };
        }
        out
    }

    /// A well-formed frame arrived (its body: status and data).
    pub fn frame(&mut self, body: &[u8], now_ms: u64) -> Vec<Step> {
        let mut out = Vec::new();
        let Some(r) = Response::from_body(body) else { return out };
        if matches!(self.state, State::Idle { .. }) {
            return out; // an answer nobody waits for (late, or noise that looked like a frame)
        }
        self.misses = 0;
        if let Some(since_ms) = self.faulted_since.take() {
            out.push(Step::Restored { since_ms });
        }
        let sw3 = r.sw[2];
        match self.state {
            State::Find { .. } => match sw3 {
                0x9F if self.leave_pending => self.idle(now_ms),
                0x9F => {
                    out.push(Step::Found);
                    self.send(cmd::SELECT, State::Select { deadline_ms: now_ms + ANSWER_MS }, &mut out);
                }
                0x80 => {
                    self.leave_pending = false;
                    self.idle(now_ms);
                }
                s => self.error(s, "find", now_ms, &mut out),
            },
            State::Select { .. } => match sw3 {
                0x90 => self.send(cmd::READ, State::Read { deadline_ms: now_ms + READ_MS }, &mut out),
                s => self.error(s, "select", now_ms, &mut out),
            },
            State::Read { .. } => match sw3 {
                0x90 => {
                    // SW · text length (2) · photo length (2) · text · photo.
                    let d = &r.data;
                    let text_len = d.get(..2).map_or(0, |b| usize::from(u16::from_be_bytes([b[0], b[1]])));
                    if text_len == TEXT_LEN && d.len() >= 4 + TEXT_LEN {
                        out.push(Step::Card(d[4..4 + TEXT_LEN].to_vec()));
                        self.leave_pending = true;
                    } else {
                        out.push(Step::Prompt(Prompt {
                            sw3,
                            detail: format!("read: a text block of {text_len} bytes in {} bytes of data", d.len()),
                            message_zh: "读卡失败，请重新放卡",
                        }));
                    }
                    self.idle(now_ms);
                }
                s => self.error(s, "read", now_ms, &mut out),
            },
            State::Sam { reset, .. } => match (sw3, reset) {
                (0x90, _) => self.idle(now_ms),
                (_, false) => {
                    self.send(cmd::RESET_SAM, State::Sam { deadline_ms: now_ms + ANSWER_MS, reset: true }, &mut out)
                }
                (s, true) => {
                    if self.faulted_since.is_none() {
                        self.faulted_since = Some(now_ms);
                        out.push(Step::Fault(format!(
                            "the ID card reader's security module fails after a reset (SW3 {s:02X})"
                        )));
                    }
                    self.idle(now_ms);
                }
            },
            State::Idle { .. } => {}
        }
        out
    }

    fn error(&mut self, sw3: u8, during: &str, now_ms: u64, out: &mut Vec<Step>) {
        out.push(Step::Prompt(Prompt::of(sw3, during)));
        if sam_error(sw3) {
            self.send(cmd::SAM_STATUS, State::Sam { deadline_ms: now_ms + ANSWER_MS, reset: false }, out);
        } else {
            self.idle(now_ms);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::frame::{Parsed, Parser, frame};
    use super::*;

    /// The bodies of the requests among `steps`.
    fn sent(steps: &[Step]) -> Vec<(u8, u8)> {
        steps
            .iter()
            .filter_map(|s| match s {
                Step::Send(b) => {
                    let mut out = Vec::new();
                    Parser::new().feed(b, &mut out);
                    match out.first() {
                        Some(Parsed::Frame(body)) => Some((body[0], body[1])),
                        _ => None,
                    }
                }
                _ => None,
            })
            .collect()
    }

    fn answer(sw3: u8, data: &[u8]) -> Vec<u8> {
        let mut body = vec![0, 0, sw3];
        body.extend_from_slice(data);
        body
    }

    fn read_answer(text: &[u8]) -> Vec<u8> {
        let mut d = vec![0x01, 0x00, 0x04, 0x00];
        d.extend_from_slice(text);
        d.extend_from_slice(&[0x77; 1024]);
        answer(0x90, &d)
    }

    #[test]
    fn find_select_read_then_the_card_must_leave() {
        let mut m = Machine::new();
        assert_eq!(sent(&m.tick(0)), vec![cmd::FIND]);
        let s = m.frame(&answer(0x9F, &[0; 4]), 5);
        assert_eq!(s[0], Step::Found);
        assert_eq!(sent(&s), vec![cmd::SELECT]);
        assert_eq!(sent(&m.frame(&answer(0x90, &[0; 8]), 10)), vec![cmd::READ]);
        let s = m.frame(&read_answer(&[0x20; 256]), 130);
        assert_eq!(s, vec![Step::Card(vec![0x20; 256])]);
        assert!(frame(&read_answer(&[0x20; 256])).len() == 1295, "the documented answer size");
        // Still in the field: found, but not read again.
        assert_eq!(sent(&m.tick(130 + FIND_EVERY_MS)), vec![cmd::FIND]);
        assert!(sent(&m.frame(&answer(0x9F, &[0; 4]), 240)).is_empty());
        // Gone, then back: read again.
        m.tick(240 + FIND_EVERY_MS);
        m.frame(&answer(0x80, &[]), 345);
        m.tick(345 + FIND_EVERY_MS);
        assert_eq!(sent(&m.frame(&answer(0x9F, &[0; 4]), 450)), vec![cmd::SELECT]);
    }

    #[test]
    fn errors_become_prompts_and_sam_errors_ask_the_sam() {
        let mut m = Machine::new();
        m.tick(0);
        m.frame(&answer(0x9F, &[0; 4]), 1);
        let s = m.frame(&answer(0x81, &[]), 2);
        assert!(matches!(&s[0], Step::Prompt(p) if p.message_zh == "请将身份证放稳"));
        m.tick(200);
        m.frame(&answer(0x9F, &[0; 4]), 201);
        m.frame(&answer(0x90, &[0; 8]), 202);
        let s = m.frame(&answer(0x60, &[]), 203);
        assert!(matches!(&s[0], Step::Prompt(p) if p.message_zh.contains("安全模块自检失败")));
        assert_eq!(sent(&s), vec![cmd::SAM_STATUS]);
        assert_eq!(sent(&m.frame(&answer(0x60, &[]), 204)), vec![cmd::RESET_SAM]);
        let s = m.frame(&answer(0x60, &[]), 205);
        assert!(matches!(&s[0], Step::Fault(f) if f.contains("security module")));
        assert!(m.faulted());
        m.tick(205 + FAULTY_EVERY_MS);
        assert_eq!(m.frame(&answer(0x80, &[]), 800), vec![Step::Restored { since_ms: 205 }]);
        for sw3 in 0..=255u8 {
            let _ = status_text(sw3);
        }
    }

    #[test]
    fn silence_is_a_fault_once_and_a_lifted_card_a_prompt() {
        let mut m = Machine::new();
        m.tick(0);
        m.frame(&answer(0x9F, &[0; 4]), 1);
        m.frame(&answer(0x90, &[0; 8]), 2);
        let s = m.tick(2 + READ_MS);
        assert!(matches!(&s[0], Step::Prompt(p) if p.message_zh == "读卡失败，请重新放卡"));
        assert!(s.contains(&Step::Resync));
        let mut faults = 0;
        let mut t = 2 + READ_MS;
        for _ in 0..20 {
            t += FAULTY_EVERY_MS.max(ANSWER_MS);
            faults += m.tick(t).iter().filter(|s| matches!(s, Step::Fault(_))).count();
        }
        assert_eq!(faults, 1);
        // A bad checksum mid-read is a prompt and the find starts again.
        let mut m = Machine::new();
        m.tick(0);
        m.frame(&answer(0x9F, &[0; 4]), 1);
        m.frame(&answer(0x90, &[0; 8]), 2);
        assert!(matches!(&m.bad_frame(3)[0], Step::Prompt(_)));
        assert_eq!(sent(&m.tick(3)), vec![cmd::FIND]);
        // A short read answer is a prompt, not a card.
        let mut m = Machine::new();
        m.tick(0);
        m.frame(&answer(0x9F, &[0; 4]), 1);
        m.frame(&answer(0x90, &[0; 8]), 2);
        assert!(matches!(&m.frame(&answer(0x90, &[1, 0, 4, 0, 1, 2]), 3)[0], Step::Prompt(_)));
    }
}

//! GA 467 frames: `AA AA AA 96 69 | LEN (2, BE) | body | CHK`, where LEN counts the body and CHK, and CHK is the XOR
//! of the length bytes and the body. A request's body is `CMD PARA data…`, a response's `SW1 SW2 SW3 data…`; one
//! parser reads both (the driver reads responses, the tests' fake reader reads requests).
//!
//! The parser is bounded (a frame longer than [`MAX_LEN`] is garbage), resynchronises on the preamble after garbage
//! or a bad checksum, and never panics on any input (fuzzed: `fuzz/fuzz_targets/idcard_frame.rs`).

/// The preamble of every frame.
pub const PREAMBLE: [u8; 5] = [0xAA, 0xAA, 0xAA, 0x96, 0x69];

/// The longest LEN a frame may have: the text + photo + fingerprint answer (`30 10`) is 0x090A.
pub const MAX_LEN: usize = 0x0A00;

/// Commands (CMD, PARA).
pub mod cmd {
    /// Reset the security module (SAM).
    pub const RESET_SAM: (u8, u8) = (0x10, 0xFF);
    /// The SAM's status.
    pub const SAM_STATUS: (u8, u8) = (0x11, 0xFF);
    /// Read the SAM's id (16 bytes after SW).
    pub const SAM_ID: (u8, u8) = (0x12, 0xFF);
    /// Find a card in the field.
    pub const FIND: (u8, u8) = (0x20, 0x01);
    /// Select the card found.
    pub const SELECT: (u8, u8) = (0x20, 0x02);
    /// Read the text block and the (encrypted) photo.
    pub const READ: (u8, u8) = (0x30, 0x01);
}

/// XOR of `bytes`.
pub fn xor(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0, |a, b| a ^ b)
}

/// A whole frame around `body` (a request's `CMD PARA data…` or a response's `SW… data…`).
pub fn frame(body: &[u8]) -> Vec<u8> {
    let len = body.len() + 1;
    let mut out = Vec::with_capacity(PREAMBLE.len() + 2 + len);
    out.extend_from_slice(&PREAMBLE);
    out.extend_from_slice(&(len as u16).to_be_bytes());
    out.extend_from_slice(body);
    out.push(xor(&out[PREAMBLE.len()..]));
    out
}

/// A request frame for `(cmd, para)`.
pub fn request((c, p): (u8, u8)) -> Vec<u8> {
    frame(&[c, p])
}

/// What the parser found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// A frame with a good checksum: its body (between LEN and CHK).
    Frame(Vec<u8>),
    /// A frame whose checksum is wrong (dropped; the reader is asked again).
    BadChecksum,
}

/// A response's status and data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// SW1 SW2 SW3 (SW3 is the one that varies: `90` ok, `9F` find ok, `80` no card…).
    pub sw: [u8; 3],
    /// What follows the status.
    pub data: Vec<u8>,
}

impl Response {
    /// A response body split into status and data (`None` if shorter than a status).
    pub fn from_body(body: &[u8]) -> Option<Response> {
        (body.len() >= 3).then(|| Response { sw: [body[0], body[1], body[2]], data: body[3..].to_vec() })
    }
}

/// A streaming frame parser with a bounded buffer.
#[derive(Debug, Default)]
pub struct Parser {
    buf: Vec<u8>,
    garbage: u64,
}

impl Parser {
    /// A parser with nothing buffered.
    pub fn new() -> Parser {
        Parser::default()
    }

    /// Bytes skipped as garbage so far.
    pub fn garbage(&self) -> u64 {
        self.garbage
    }

    /// Bytes held for a frame not yet complete (never more than one frame's worth).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Forget a partial frame (after a reopen).
    pub fn reset(&mut self) {
        self.buf.clear();
    }

    /// Feed bytes; complete frames go to `out`.
    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<Parsed>) {
        self.buf.extend_from_slice(bytes);
        loop {
            // Find the preamble (at once while a long frame is still arriving: no rescan of what is buffered);
            // keep a possible partial preamble at the end.
            let start = if self.buf.starts_with(&PREAMBLE) { Some(0) } else { find(&self.buf, &PREAMBLE) };
            match start {
                None => {
                    let keep = partial_preamble_suffix(&self.buf);
                    let drop = self.buf.len() - keep;
                    self.garbage += drop as u64;
                    self.buf.drain(..drop);
                    return;
                }
                Some(s) if s > 0 => {
                    self.garbage += s as u64;
                    self.buf.drain(..s);
                }
                Some(_) => {}
            }
            if self.buf.len() < PREAMBLE.len() + 2 {
                return;
            }
            let len = usize::from(u16::from_be_bytes([self.buf[5], self.buf[6]]));
            if !(2..=MAX_LEN).contains(&len) {
                // Not a frame: skip this preamble and look for the next.
                self.garbage += 1;
                self.buf.drain(..1);
                continue;
            }
            let total = PREAMBLE.len() + 2 + len;
            if self.buf.len() < total {
                return;
            }
            let chk = self.buf[total - 1];
            if xor(&self.buf[PREAMBLE.len()..total - 1]) == chk {
                out.push(Parsed::Frame(self.buf[PREAMBLE.len() + 2..total - 1].to_vec()));
                self.buf.drain(..total);
            } else {
                out.push(Parsed::BadChecksum);
                // The length may itself be the corrupted byte: resynchronise just past this preamble.
                self.garbage += 1;
                self.buf.drain(..1);
            }
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// How many bytes at the end of `buf` could be the start of a preamble.
fn partial_preamble_suffix(buf: &[u8]) -> usize {
    (1..PREAMBLE.len()).rev().find(|&k| buf.len() >= k && buf[buf.len() - k..] == PREAMBLE[..k]).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> Vec<Parsed> {
        let mut p = Parser::new();
        let mut out = Vec::new();
        p.feed(bytes, &mut out);
        out
    }

    #[test]
    fn the_documented_requests_have_the_documented_checksums() {
        assert_eq!(request(cmd::RESET_SAM), [0xAA, 0xAA, 0xAA, 0x96, 0x69, 0x00, 0x03, 0x10, 0xFF, 0xEC]);
        assert_eq!(request(cmd::SAM_STATUS)[9], 0xED);
        assert_eq!(request(cmd::SAM_ID)[9], 0xEE);
        assert_eq!(request(cmd::FIND)[5..], [0x00, 0x03, 0x20, 0x01, 0x22]);
        assert_eq!(request(cmd::SELECT)[5..], [0x00, 0x03, 0x20, 0x02, 0x21]);
        assert_eq!(request(cmd::READ)[5..], [0x00, 0x03, 0x30, 0x01, 0x32]);
        assert_eq!(request((0x30, 0x10))[9], 0x23);
        assert_eq!(request((0x30, 0x03))[9], 0x30);
    }

    #[test]
    fn the_documented_answers_parse() {
        let find_ok = [0xAA, 0xAA, 0xAA, 0x96, 0x69, 0x00, 0x08, 0x00, 0x00, 0x9F, 0x00, 0x00, 0x00, 0x00, 0x97];
        assert_eq!(parse(&find_ok), vec![Parsed::Frame(vec![0, 0, 0x9F, 0, 0, 0, 0])]);
        assert_eq!(frame(&[0, 0, 0x9F, 0, 0, 0, 0]), find_ok);
        let find_failed = [0xAA, 0xAA, 0xAA, 0x96, 0x69, 0x00, 0x04, 0x00, 0x00, 0x80, 0x84];
        assert_eq!(parse(&find_failed), vec![Parsed::Frame(vec![0, 0, 0x80])]);
        let mut select_ok = vec![0xAA, 0xAA, 0xAA, 0x96, 0x69, 0x00, 0x0C, 0x00, 0x00, 0x90];
        select_ok.extend([0; 8]);
        select_ok.push(0x9C);
        assert_eq!(frame(&select_ok[7..select_ok.len() - 1]), select_ok);
        let read_failed = [0xAA, 0xAA, 0xAA, 0x96, 0x69, 0x00, 0x04, 0x00, 0x00, 0x41, 0x45];
        assert_eq!(Response::from_body(&[0, 0, 0x41]).unwrap().sw[2], 0x41);
        assert_eq!(parse(&read_failed).len(), 1);
    }

    #[test]
    fn split_frames_garbage_and_bad_checksums_resynchronise() {
        let f = frame(&[0, 0, 0x90, 1, 2, 3]);
        let mut p = Parser::new();
        let mut out = Vec::new();
        for b in &f {
            p.feed(&[*b], &mut out);
        }
        assert_eq!(out, vec![Parsed::Frame(vec![0, 0, 0x90, 1, 2, 3])]);
        // Garbage (including a lone AA and a false preamble start) before a frame.
        let mut bytes = vec![0x13, 0xAA, 0x00, 0xAA, 0xAA, 0x55];
        bytes.extend(&f);
        assert_eq!(parse(&bytes), vec![Parsed::Frame(vec![0, 0, 0x90, 1, 2, 3])]);
        // A corrupted frame, then a good one.
        let mut bad = f.clone();
        bad[9] ^= 0x40;
        bad.extend(&f);
        assert_eq!(parse(&bad), vec![Parsed::BadChecksum, Parsed::Frame(vec![0, 0, 0x90, 1, 2, 3])]);
        // A preamble with an impossible length is skipped.
        let mut long = PREAMBLE.to_vec();
        long.extend([0xFF, 0xFF]);
        long.extend(&f);
        assert_eq!(parse(&long), vec![Parsed::Frame(vec![0, 0, 0x90, 1, 2, 3])]);
    }

    #[test]
    fn noise_never_panics_and_the_buffer_stays_bounded() {
        let mut p = Parser::new();
        let mut out = Vec::new();
        let mut seed = 7u64;
        for _ in 0..20_000 {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let b = (seed >> 56) as u8;
            let b = if b < 40 { 0xAA } else { b };
            p.feed(&[b], &mut out);
            assert!(p.buf.len() <= PREAMBLE.len() + 2 + MAX_LEN);
        }
    }
}

//! Any bytes from the ID card reader, fed in any split, must give frames, bad-checksum notes or nothing — never a
//! panic, never more than one frame buffered — and whatever frames come out drive the reader's state machine
//! without a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sibi::hw::idcard::frame::{MAX_LEN, PREAMBLE, Parsed, Parser};
use sibi::hw::idcard::machine::Machine;

fuzz_target!(|data: &[u8]| {
    let mut parser = Parser::new();
    let mut machine = Machine::new();
    let mut out = Vec::new();
    let split = data.first().map_or(1, |b| usize::from(*b % 32) + 1);
    let mut now = 0u64;
    for chunk in data.chunks(split) {
        parser.feed(chunk, &mut out);
        assert!(parser.buffered() <= PREAMBLE.len() + 2 + MAX_LEN);
        now += u64::from(chunk[0]) * 7;
        let _ = machine.tick(now);
        for p in out.drain(..) {
            match p {
                Parsed::Frame(body) => {
                    let _ = machine.frame(&body, now);
                }
                Parsed::BadChecksum => {
                    let _ = machine.bad_frame(now);
                }
            }
        }
    }
});

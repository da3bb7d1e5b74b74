//! Any bytes must give readings, rejected lines or nothing — never a panic, lines bounded.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sibi::hw::thermo::{AsciiLines, Parser};

fuzz_target!(|data: &[u8]| {
    let mut p = AsciiLines::default();
    let mut out = Vec::new();
    for chunk in data.chunks(7) {
        p.feed(chunk, &mut out);
    }
});

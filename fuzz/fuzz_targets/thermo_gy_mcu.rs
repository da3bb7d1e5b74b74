//! Any bytes, fed in any split, must give readings or nothing — never a panic, never unbounded buffering.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sibi::hw::thermo::{GyMcu, GyMode, Parser};

fuzz_target!(|data: &[u8]| {
    let mut p = GyMcu::new(GyMode::Continuous);
    let mut out = Vec::new();
    let split = data.first().map_or(1, |b| usize::from(*b % 16) + 1);
    for chunk in data.chunks(split) {
        p.feed(chunk, &mut out);
    }
    assert!(p.garbage() <= data.len() as u64 * 2);
});

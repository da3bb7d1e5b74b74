//! Any bytes, fed in any split, must give readings, exceptions or nothing — never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sibi::hw::thermo::{ModbusRtu, ModbusSettings, Parser};

fuzz_target!(|data: &[u8]| {
    let (signed, slave) = data.first().map_or((true, 1), |b| (b & 1 == 0, (b >> 1).max(1)));
    let mut p = ModbusRtu::new(ModbusSettings { slave, function: 3, register: 0x12, scale: 0.1, signed });
    let mut out = Vec::new();
    let split = data.get(1).map_or(1, |b| usize::from(*b % 16) + 1);
    for chunk in data.chunks(split) {
        p.feed(chunk, &mut out);
    }
});

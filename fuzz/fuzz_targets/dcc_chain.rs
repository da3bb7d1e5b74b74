//! The DCC chain on hostile input at every stage: as QR text, as compressed bytes, as COSE bytes, as a CWT payload.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sibi::credential::dcc;
use sibi::domain::Timestamp;

fuzz_target!(|data: &[u8]| {
    let _ = dcc::verify(&String::from_utf8_lossy(data), &[], Timestamp(1_620_000_000_000));
    if let Ok(cose) = dcc::decompress(data) {
        let _ = dcc::parse_cose(&cose);
    }
    if let Ok(cose) = dcc::parse_cose(data) {
        let _ = cose.kid();
        let _ = cose.alg();
        let _ = cose.to_be_signed();
        if let Ok(cwt) = dcc::parse_cwt(&cose.payload) {
            let _ = cwt.kinds();
            let _ = cwt.holder();
            let _ = dcc::to_json(&cwt.dgc);
            let _ = dcc::check_time(&cwt, Timestamp(1_620_000_000_000));
        }
    }
    if let Ok(cwt) = dcc::parse_cwt(data) {
        let _ = dcc::to_json(&cwt.dgc);
    }
});

//! Any text, and any bytes behind the pass prefix, must give a pass or an error — never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sibi::credential::pass::{PREFIX, PassVerifier};
use sibi::domain::Timestamp;

fuzz_target!(|data: &[u8]| {
    let key = ed25519_key();
    let v = PassVerifier { keys: vec![key], community: Some("c".into()), ..Default::default() };
    let _ = v.verify(&String::from_utf8_lossy(data), Timestamp(1_790_000_000_000));
    // Get past the prefix and base45 too: arbitrary signed-looking payloads.
    let text = format!("{PREFIX}{}", base45_encode(data));
    let _ = v.verify(&text, Timestamp(1_790_000_000_000));
});

fn ed25519_key() -> ed25519_dalek::VerifyingKey {
    sibi::credential::pass::parse_verifying_key(
        "sibi-ed25519-public:d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
    )
    .expect("a valid test key")
}

fn base45_encode(data: &[u8]) -> String {
    const A: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:";
    let mut out = String::new();
    for chunk in data.chunks(2) {
        let n = if chunk.len() == 2 { usize::from(chunk[0]) * 256 + usize::from(chunk[1]) } else { usize::from(chunk[0]) };
        let (c, d, e) = (n % 45, (n / 45) % 45, n / 2025);
        out.push(A[c] as char);
        out.push(A[d] as char);
        if chunk.len() == 2 {
            out.push(A[e] as char);
        }
    }
    out
}

//! What an empty gate costs per camera frame: the change-detection signature (thumbnail + difference) that skips an
//! unchanged frame, against the decode it saves (the default decoder on the same empty 640×480 frame), and against a
//! frame with a code.
//!
//! Run: `cargo bench --bench idle_frame`.

use std::time::Instant;

use image::GrayImage;
use sibi::credential::qr::DecoderKind;
use sibi::hw::frames::{difference, thumbnail};

fn median_us(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn main() {
    // An empty gate: a mildly textured, noisy background (as a real camera sees it).
    let mut seed = 12345u32;
    let empty = GrayImage::from_fn(640, 480, |x, y| {
        seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        image::Luma([(100 + (x / 40 + y / 30) % 5 * 8 + (seed >> 28)) as u8])
    });
    let qr = sibi::credential::qr::render(&"HCT:".repeat(40), 3).unwrap();
    let mut with_code = empty.clone();
    image::imageops::overlay(&mut with_code, &qr, 180, 100);

    let decoder = DecoderKind::Zxing.decoder();
    let previous = thumbnail(&empty);
    let n = 300;
    let mut skip = Vec::with_capacity(n);
    let mut decode_empty = Vec::with_capacity(n);
    let mut decode_code = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let d = difference(&thumbnail(&empty), &previous);
        skip.push(t.elapsed().as_secs_f64() * 1e6);
        assert!(d < 2.0);
        let t = Instant::now();
        assert!(decoder.decode(&empty).unwrap().is_empty());
        decode_empty.push(t.elapsed().as_secs_f64() * 1e6);
        let t = Instant::now();
        assert_eq!(decoder.decode(&with_code).unwrap().len(), 1);
        decode_code.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let (s, e, c) = (median_us(skip), median_us(decode_empty), median_us(decode_code));
    println!("idle-frame benchmark: 640x480 frames, {n} runs each, median");
    println!("| per frame | µs |");
    println!("|---|---|");
    println!("| change detection (skips an unchanged frame) | {s:.0} |");
    println!("| decode of the same empty frame (what the skip saves) | {e:.0} |");
    println!("| decode of a frame with a code | {c:.0} |");
    println!(
        "at 15 fps an empty gate costs {:.1}% of one core with the skip, {:.1}% without",
        s * 15.0 / 1e4,
        e * 15.0 / 1e4
    );
}

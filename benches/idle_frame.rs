//! What an empty gate costs per camera frame: the change-detection signature (thumbnail + difference) that skips an
//! unchanged frame, against the decode it saves (the default decoder on the same empty 640×480 frame), and against a
//! frame with a code. Then the whole reader as the daemon runs it with `[mask]` on (the camera reader with the mask
//! tap, fed the empty gate's frames, with the mask thread's side drained after each): its cost per frame, and how many
//! frames reached the mask judge (must be 0: the judge runs only while a presentation is open or a face appears).
//!
//! Run: `cargo bench --bench idle_frame` (the mask part needs the models: `scripts/models/prepare`).

use std::time::Instant;

use image::GrayImage;
use sibi::credential::qr::DecoderKind;
use sibi::credential::reader::CameraCredentials;
use sibi::hw::frames::{FrameSource, difference, thumbnail};
use sibi::hw::{CredentialSource, DeviceFault, Polled};

/// The empty gate's frames: the same background with fresh sensor noise each time (made beforehand, handed out in
/// turn, so the figure is the reader's and not the noise generator's).
struct EmptyGate {
    seed: u32,
}

/// Frames made beforehand, handed out in turn.
struct Replay {
    frames: Vec<GrayImage>,
    next: usize,
}

impl EmptyGate {
    fn frame(&mut self) -> GrayImage {
        GrayImage::from_fn(640, 480, |x, y| {
            self.seed = self.seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            image::Luma([(100 + (x / 40 + y / 30) % 5 * 8 + (self.seed >> 28)) as u8])
        })
    }
}

impl FrameSource for Replay {
    fn next_frame(&mut self, _wait: std::time::Duration) -> Result<Polled<GrayImage>, DeviceFault> {
        self.next = (self.next + 1) % self.frames.len();
        Ok(Polled::Item(self.frames[self.next].clone()))
    }

    fn colour(&mut self) -> Option<image::RgbImage> {
        Some(image::RgbImage::new(640, 480))
    }
}

fn median_us(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn main() {
    // An empty gate: a mildly textured, noisy background (as a real camera sees it).
    let empty = EmptyGate { seed: 12345 }.frame();
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

    match sibi::mask::MaskJudge::open(None) {
        Err(e) => println!("reader with the mask tap: skipped ({e})"),
        Ok(judge) => {
            let (tap, mut thread) = sibi::mask::source::channel(judge);
            let mut noise = EmptyGate { seed: 777 };
            let mut reader = CameraCredentials::new(
                Box::new(Replay { frames: (0..16).map(|_| noise.frame()).collect(), next: 0 }),
                DecoderKind::Zxing.decoder(),
                Default::default(),
            )
            .with_mask_tap(tap);
            let frames = 450; // 30 s at 15 fps
            let mut per_frame = Vec::with_capacity(frames);
            for _ in 0..frames {
                let t = Instant::now();
                let polled = reader.poll(std::time::Duration::ZERO).unwrap();
                per_frame.push(t.elapsed().as_secs_f64() * 1e6);
                assert!(matches!(polled, Polled::Idle));
                let _ = thread.poll(std::time::Duration::ZERO).unwrap();
            }
            let r = median_us(per_frame);
            println!("| whole reader with the mask tap, empty gate ({frames} frames) | {r:.0} |");
            println!(
                "frames the mask judge saw on the empty gate: {} of {frames}; the reader costs {:.1}% of one core at 15 fps",
                thread.judged,
                r * 15.0 / 1e4
            );
            assert!(thread.judged <= 1, "the first frame is a changed scene; no other may reach the judge");
        }
    }
}

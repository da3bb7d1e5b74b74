//! Decode rate over the real QR photographs in ../shared/testdata/qr-photos, per set, with floors set from the measured
//! figures (decoding is deterministic, so a floor is the count measured: anything less is a regression). Also: a
//! backend that panics on a strange photo is contained, not fatal.

use std::path::{Path, PathBuf};

use sibi::credential::qr::{DecoderKind, load_luma};

fn photos() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/testdata/qr-photos");
    if p.is_dir() {
        Some(p)
    } else {
        eprintln!("skipped: {} is absent (the shared test data sits beside the repo; CI has it)", p.display());
        None
    }
}

fn set(root: &Path, name: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let mut items = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(root.join(name)).unwrap().flatten().map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
        if ["png", "jpg", "jpeg", "webp"].contains(&ext.as_str())
            && let Ok(expected) = std::fs::read(p.with_extension("txt"))
        {
            items.push((p, expected));
        }
    }
    items
}

/// (set, images, floor of correct decodes with the default backend).
const FLOORS: &[(&str, usize, usize)] = &[
    ("cpp-qrcode-1", 8, 8),
    ("cpp-qrcode-2", 56, 53),
    ("cpp-qrcode-3", 18, 18),
    ("cpp-qrcode-4", 24, 17),
    ("cpp-qrcode-5", 16, 16),
    ("cpp-qrcode-6", 15, 15),
    ("synth-640x480", 100, 71),
];

#[test]
fn the_default_decoder_reads_at_least_the_measured_share_of_every_set() {
    let Some(root) = photos() else { return };
    let decoder = DecoderKind::Zxing.decoder();
    let (mut cpp_ok, mut cpp_all) = (0, 0);
    for &(name, images, floor) in FLOORS {
        let items = set(&root, name);
        assert_eq!(items.len(), images, "{name}: image count");
        let ok = items
            .iter()
            .filter(|(path, expected)| {
                let frame = load_luma(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                decoder.decode(&frame).unwrap_or_default().iter().any(|t| t.as_bytes() == expected.as_slice())
            })
            .count();
        eprintln!("{name}: {ok}/{images} ({:.0}%)", 100.0 * ok as f64 / images as f64);
        assert!(ok >= floor, "{name}: decoded {ok}/{images}, floor {floor}");
        if name.starts_with("cpp-") {
            cpp_ok += ok;
            cpp_all += images;
        }
    }
    // The floors: at least 85 % of the cpp-qrcode photos and 65 % of the 640x480 frames.
    assert!(cpp_ok * 100 >= cpp_all * 85, "cpp-qrcode sets: {cpp_ok}/{cpp_all}");
}

#[test]
fn rqrr_never_takes_the_process_down() {
    let Some(root) = photos() else { return };
    let decoder = DecoderKind::Rqrr.decoder();
    let mut frames = 0;
    for &(name, _, _) in FLOORS {
        for (path, _) in set(&root, name) {
            let frame = load_luma(&path).unwrap();
            let _ = decoder.decode(&frame); // a panic inside is contained and counted
            frames += 1;
        }
    }
    eprintln!("rqrr: {frames} photos, {} panics contained", decoder.panics());
    assert_eq!(frames, 237);
}

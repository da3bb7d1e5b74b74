//! 口罩必戴 by machine, measured on the real photographs of ../shared/testdata/masks through `sibi mask scan`
//! (DESIGN.md §6), with the protocol: every face whose box is ≥ 40 px on its short side, cropped with a 40 %
//! margin on each side; the largest face found is the verdict; no face counts as unsure. The judge is deterministic,
//! so the floors are the counts measured: anything worse is a regression. Also the whole photographs (faces found vs
//! annotated, by size) and the contract's shape and errors.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::util::sibi;

fn shared() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/testdata/masks");
    if p.is_dir() {
        Some(p)
    } else {
        eprintln!("skipped: {} is absent (the shared test data sits beside the repo; CI has it)", p.display());
        None
    }
}

struct Face {
    file: String,
    number: u32,
    label: String,
    bbox: [i64; 4],
}

fn faces(root: &Path) -> Vec<Face> {
    let text = std::fs::read_to_string(root.join("faces.tsv")).unwrap();
    text.lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            let n = |i: usize| f[i].parse::<i64>().unwrap();
            Face {
                file: f[0].to_string(),
                number: f[0].trim_start_matches("mask-").split('.').next().unwrap().parse().unwrap(),
                label: f[1].to_string(),
                bbox: [n(2), n(3), n(4), n(5)],
            }
        })
        .collect()
}

/// Run `sibi mask scan` over `paths` (one process), returning each line's JSON.
fn scan(paths: &[PathBuf]) -> Vec<serde_json::Value> {
    let out = sibi().args(["mask", "scan"]).args(paths).output().unwrap();
    assert!(out.status.success(), "mask scan failed: {}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<serde_json::Value> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), paths.len());
    lines
}

type Counts = BTreeMap<(String, String), [usize; 3]>;

/// Lower bounds of the face-size buckets the accuracy test prints (short side, px): the crowd crops of the shared
/// set against faces the size a camera at the gate sees.
const SIZES: [i64; 3] = [40, 60, 80];

fn verdict_index(line: &serde_json::Value) -> usize {
    match line["faces"].as_array().and_then(|f| f.first()).map(|f| f["mask"].as_str().unwrap()) {
        Some("worn") => 0,
        Some("not_worn") => 1,
        _ => 2,
    }
}

#[test]
fn the_mask_judge_never_passes_an_unmasked_face_and_passes_the_measured_share_of_masked_ones() {
    let Some(root) = shared() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut crops = Vec::new();
    let mut which = Vec::new();
    let mut images: BTreeMap<String, image::RgbImage> = BTreeMap::new();
    for f in faces(&root) {
        let [x0, y0, x1, y1] = f.bbox;
        let (w, h) = (x1 - x0, y1 - y0);
        if w.min(h) < 40 {
            continue;
        }
        let im = images.entry(f.file.clone()).or_insert_with(|| image::open(root.join(&f.file)).unwrap().into_rgb8());
        let crop = sibi::mask::scan::margin_crop(im, f.bbox, 0.4);
        let path = dir.path().join(format!("{:04}.png", crops.len()));
        crop.save(&path).unwrap();
        crops.push(path);
        let split = if f.number % 4 == 0 { "training half" } else { "held-out half" };
        which.push((split.to_string(), f.label.clone(), SIZES.iter().rposition(|&s| w.min(h) >= s).unwrap()));
    }
    let lines = scan(&crops);
    let mut by_size: BTreeMap<(String, String, usize), [usize; 3]> = BTreeMap::new();
    let mut ms: Vec<f64> = Vec::new();
    for (line, key) in lines.iter().zip(&which) {
        by_size.entry(key.clone()).or_default()[verdict_index(line)] += 1;
        ms.push(line["ms"].as_f64().unwrap());
    }
    // The counts per half and label: the size buckets summed.
    let mut counts: Counts = BTreeMap::new();
    for ((split, label, _), c) in &by_size {
        let total = counts.entry((split.clone(), label.clone())).or_default();
        total.iter_mut().zip(c).for_each(|(t, n)| *t += n);
    }
    ms.sort_by(f64::total_cmp);
    eprintln!("mask accuracy, faces >= 40 px through `sibi mask scan` (worn / not_worn / unsure):");
    for ((split, label), c) in &counts {
        eprintln!("  {split:14} {label:22} {:4} {:4} {:4}   of {}", c[0], c[1], c[2], c.iter().sum::<usize>());
    }
    eprintln!("by the face's short side (worn / not_worn / unsure):");
    for ((split, label, size), c) in &by_size {
        let (a, b) = (SIZES[*size], SIZES.get(size + 1).map_or("".to_string(), |b| format!("{b}")));
        eprintln!("  {split:14} {label:22} {a:>3}–{b:<3} px {:4} {:4} {:4}", c[0], c[1], c[2]);
    }
    eprintln!("  per crop (debug build): median {:.1} ms, p95 {:.1} ms", ms[ms.len() / 2], ms[ms.len() * 95 / 100]);
    let get = |split: &str, label: &str| counts[&(split.to_string(), label.to_string())];
    for split in ["held-out half", "training half"] {
        // The safety figure: no unmasked face is ever called worn.
        assert_eq!(get(split, "without_mask")[0], 0, "{split}: an unmasked face judged worn");
    }
    // Floors: the counts measured (see README, performance). The convenience figure, masked faces judged worn.
    assert!(get("held-out half", "with_mask")[0] >= 154, "{:?}", get("held-out half", "with_mask"));
    assert!(get("training half", "with_mask")[0] >= 139, "{:?}", get("training half", "with_mask"));
    // Faces the size the gate's camera sees (80 px and more): the held-out half's masked ones, 59 of 64 measured.
    let held_large = by_size[&("held-out half".to_string(), "with_mask".to_string(), SIZES.len() - 1)];
    assert!(held_large[0] >= 59, "{held_large:?}");
    // Unmasked faces are told to put one on, not left to the operator, for the measured share.
    assert!(get("held-out half", "without_mask")[1] >= 14);
    // Badly worn masks (below the nose): at most the two of ten measured on the held-out half (README says so),
    // none on the training half.
    assert!(get("held-out half", "mask_weared_incorrect")[0] <= 2);
    assert_eq!(get("training half", "mask_weared_incorrect")[0], 0);
}

#[test]
fn the_demo_cameras_three_faces_are_judged_as_the_demo_tells_them() {
    // config/demo-morning.toml plays these: the volunteer sees a mask met by machine, a missing mask refused, and an
    // unsure one they confirm. (Made by scripts/demo-faces.py; the thin mask sits in the head's unsure band even
    // after the mirrored second look.)
    let dir = super::util::repo().join("tests/data/faces");
    let names = ["masked.jpg", "bare.jpg", "unsure.jpg"];
    let lines = scan(&names.map(|n| dir.join(n)));
    let got: Vec<&str> = lines.iter().map(|l| l["faces"][0]["mask"].as_str().unwrap_or("no face")).collect();
    assert_eq!(got, ["worn", "not_worn", "unsure"], "{lines:?}");
}

#[test]
fn whole_photographs_faces_found_by_size_and_the_contract_shape() {
    let Some(root) = shared() else { return };
    let all = faces(&root);
    let mut files: Vec<String> = all.iter().map(|f| f.file.clone()).collect();
    files.dedup();
    let paths: Vec<PathBuf> = files.iter().map(|f| root.join(f)).collect();
    let lines = scan(&paths);
    // Contract: file, faces (largest first) with box/mask/score, ms.
    for line in &lines {
        assert!(line["file"].is_string() && line["ms"].as_f64().unwrap() >= 0.0);
        let faces = line["faces"].as_array().unwrap();
        let areas: Vec<i64> = faces
            .iter()
            .map(|f| {
                let b = f["box"].as_array().unwrap();
                assert_eq!(b.len(), 4);
                assert!(["worn", "not_worn", "unsure"].contains(&f["mask"].as_str().unwrap()));
                let s = f["score"].as_f64().unwrap();
                assert!((0.0..=1.0).contains(&s));
                b[2].as_i64().unwrap() * b[3].as_i64().unwrap()
            })
            .collect();
        assert!(areas.windows(2).all(|w| w[0] >= w[1]), "faces largest first: {areas:?}");
    }
    // Found: an annotated face whose box overlaps a detected box by IoU >= 0.3.
    let buckets = [(0, 20), (20, 40), (40, 80), (80, 10_000)];
    let mut found = [0usize; 4];
    let mut annotated = [0usize; 4];
    for (file, line) in files.iter().zip(&lines) {
        let detected: Vec<[f64; 4]> = line["faces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                let b: Vec<f64> = f["box"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
                [b[0], b[1], b[0] + b[2], b[1] + b[3]]
            })
            .collect();
        for f in all.iter().filter(|f| &f.file == file) {
            let [x0, y0, x1, y1] = f.bbox.map(|v| v as f64);
            let side = (x1 - x0).min(y1 - y0) as i64;
            let k = buckets.iter().position(|&(a, b)| side >= a && side < b).unwrap();
            annotated[k] += 1;
            let hit = detected.iter().any(|d| {
                let iw = (x1.min(d[2]) - x0.max(d[0])).max(0.0);
                let ih = (y1.min(d[3]) - y0.max(d[1])).max(0.0);
                let inter = iw * ih;
                inter / ((x1 - x0) * (y1 - y0) + (d[2] - d[0]) * (d[3] - d[1]) - inter) >= 0.3
            });
            if hit {
                found[k] += 1;
            }
        }
    }
    eprintln!("whole photographs ({} images): faces found / annotated by short side", files.len());
    for (k, (a, b)) in buckets.iter().enumerate() {
        eprintln!("  {a:>3}–{b:<5} px  {:4} / {:4}", found[k], annotated[k]);
    }
    // The short-range detector is for a person at the gate, not a crowd: faces of 80 px and more are found.
    assert!(found[3] * 10 >= annotated[3] * 7, "{found:?} of {annotated:?}");
    // Floors, the counts measured (README): the long-range fallback finds faces of a crowd the short-range one does not.
    assert!(found[2] >= 167 && found[1] >= 266, "{found:?} of {annotated:?}");
}

#[test]
fn an_unreadable_image_is_exit_2_with_an_error_line_and_the_others_still_scanned() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("garbled.jpg");
    std::fs::write(&bad, b"\xff\xd8 not a jpeg").unwrap();
    let blank = dir.path().join("blank.png");
    image::RgbImage::from_pixel(320, 240, image::Rgb([90, 90, 90])).save(&blank).unwrap();
    let out = sibi().args(["mask", "scan"]).arg(&bad).arg(&blank).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    assert!(lines[0]["error"].as_str().unwrap().contains("cannot read"));
    assert_eq!(lines[1]["faces"], serde_json::json!([]), "a blank picture has no face");
    assert!(lines[1].get("error").is_none());
    // Models that are not there: exit 2 with what to do.
    let out = sibi().args(["mask", "scan", "--models"]).arg(dir.path()).arg(&blank).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("scripts/models"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn sibis_depthwise_and_pool_ops_give_the_numbers_tracts_own_give_on_the_three_models() {
    // src/mask/depthwise.rs, maxpool.rs, spatial.rs and pointwise.rs replace tract's depthwise convolution, max pool
    // and (on x86-64) first convolutions and 1 × 1 convolutions when the models load; they keep the arithmetic and
    // order of tract's x86-64 kernels (a multiply and an add per depthwise tap; fused multiply-adds where tract's
    // direct convolution and matrix products fuse them), so there
    // every output of every network must come out bit for bit the same, on a real face picture. tract's aarch64
    // depthwise kernel fuses each multiply-add (one rounding fewer per tap), so there the two agree to rounding only.
    use tract_onnx::prelude::*;
    let dir = sibi::mask::Models::locate(None).expect("the mask models (scripts/setup prepares them)");
    let face = image::open(super::util::repo().join("tests/data/faces/masked.jpg")).unwrap().into_rgb8();
    for (file, side, at_least, clamped, pools, pointwise) in [
        (sibi::mask::CLASSIFIER_FILE, 224, 17, 17, 0, 20),
        (sibi::mask::DETECTOR_FILE, 128, 16, 0, 3, 11),
        (sibi::mask::FAR_DETECTOR_FILE, 256, 32, 0, 3, 31),
    ] {
        let typed = tract_onnx::onnx().model_for_path(dir.join(file)).unwrap().into_typed().unwrap();
        let (ours, ops) = sibi::mask::with_sibis_ops(typed.clone()).unwrap();
        let replaced = ops.depthwise;
        assert!(replaced.convolutions >= at_least, "{file}: {replaced:?}");
        // MobileNetV2's ReLU6 after each depthwise convolution folds into the op; BlazeFace's ReLU follows a sum.
        assert_eq!(replaced.clamped, clamped, "{file}: {replaced:?}");
        // And the ReLU6 before each (the expansion's; tract would otherwise fuse it into its matrix product).
        assert_eq!(replaced.input_clamped, clamped, "{file}: {replaced:?}");
        assert_eq!(ops.max_pools, pools, "{file}: max pools replaced");
        // Each network's first convolution (over the picture's three channels) on x86-64 with AVX2 and FMA: the
        // long-range detector's where tract would run its fused direct convolution (128-point output rows or more),
        // the short-range one's (64-point rows) and the classifier's (channels last) where it runs a matrix product.
        let fused_here = sibi::mask::spatial::tracts_kernel_is_fused();
        assert_eq!(ops.spatial, usize::from(fused_here), "{file}: dense convolutions replaced");
        // And there the 1 × 1 convolutions on planes of 196 points or more with at most 32768 weights (MobileNetV2's
        // from its first projection to block 10's expansion; BlazeFace's but those on its 8 × 8 planes).
        assert_eq!(ops.pointwise, if fused_here { pointwise } else { 0 }, "{file}: 1 × 1 convolutions replaced");
        let theirs = typed.into_optimized().unwrap().into_runnable().unwrap();
        let ours = ours.into_optimized().unwrap().into_runnable().unwrap();
        let px = image::imageops::resize(&face, side, side, image::imageops::FilterType::Triangle);
        let data: Vec<f32> = px.as_raw().iter().map(|&v| f32::from(v) / 127.5 - 1.0).collect();
        let input: Tensor =
            tract_ndarray::Array4::from_shape_vec((1, side as usize, side as usize, 3), data).unwrap().into();
        let a = theirs.run(tvec!(input.clone().into())).unwrap();
        let b = ours.run(tvec!(input.into())).unwrap();
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(&b) {
            let (x, y) = (x.to_plain_array_view::<f32>().unwrap(), y.to_plain_array_view::<f32>().unwrap());
            assert_eq!(x.shape(), y.shape(), "{file}");
            let differ = x.iter().zip(y.iter()).filter(|(p, q)| p.to_bits() != q.to_bits()).count();
            let worst = x.iter().zip(y.iter()).map(|(p, q)| (p - q).abs() / p.abs().max(1.0)).fold(0f32, f32::max);
            println!("{file}: {differ} of {} outputs differ in their bits, by at most {worst:e} (relative)", x.len());
            if cfg!(target_arch = "x86_64") {
                assert_eq!(differ, 0, "{file}: {differ} of {} outputs differ", x.len());
            } else {
                assert!(worst <= 1e-4, "{file}: outputs differ by up to {worst:e}");
            }
        }
    }
}

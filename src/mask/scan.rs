//! `sibi mask scan IMAGE...` (DESIGN.md §6): one JSON line per image,
//! `{"file", "faces": [{"box": [x, y, w, h], "mask": "worn|not_worn|unsure", "score"}], "ms"}`, faces largest
//! first; `ms` is detection and classification, the image being loaded first. An unreadable image gets a line with an
//! `error` and makes the exit status 2; so do models that cannot be loaded (with what to do, on stderr).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::MaskJudge;

/// The evaluation protocol's crop of an annotated face `[xmin, ymin, xmax, ymax]`: a `margin` (0.4) of its width and
/// height on each side, clamped to the picture, the edges truncated as the evaluation script's `int()` does.
pub fn margin_crop(picture: &image::RgbImage, bbox: [i64; 4], margin: f64) -> image::RgbImage {
    let [x0, y0, x1, y1] = bbox.map(|v| v as f64);
    let (w, h) = (x1 - x0, y1 - y0);
    let (iw, ih) = (i64::from(picture.width()), i64::from(picture.height()));
    let l = ((x0 - margin * w) as i64).clamp(0, iw);
    let t = ((y0 - margin * h) as i64).clamp(0, ih);
    let r = ((x1 + margin * w) as i64).clamp(l, iw);
    let b = ((y1 + margin * h) as i64).clamp(t, ih);
    image::imageops::crop_imm(picture, l as u32, t as u32, (r - l) as u32, (b - t) as u32).to_image()
}

/// One face on the output line.
#[derive(serde::Serialize)]
pub struct FaceLine {
    /// `[x, y, w, h]`, whole pixels.
    #[serde(rename = "box")]
    pub bbox: [i64; 4],
    /// `worn`, `not_worn` or `unsure`.
    pub mask: &'static str,
    /// The mask probability, 0..1.
    pub score: f64,
}

/// One image's output line.
#[derive(serde::Serialize)]
pub struct Line {
    /// The path as given.
    pub file: String,
    /// Faces, largest first.
    pub faces: Vec<FaceLine>,
    /// Detection and classification time, ms.
    pub ms: f64,
    /// Why the image could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Scan one image with `judge`.
pub fn scan_one(judge: &MaskJudge, path: &Path) -> Line {
    let file = path.display().to_string();
    let picture = match image::open(path) {
        Ok(p) => p.into_rgb8(),
        Err(e) => return Line { file, faces: vec![], ms: 0.0, error: Some(format!("cannot read the image: {e}")) },
    };
    let t = Instant::now();
    let result = judge.judge(&picture);
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    match result {
        Ok(faces) => Line {
            file,
            faces: faces
                .iter()
                .map(|f| FaceLine {
                    bbox: [
                        f.bbox.x.round() as i64,
                        f.bbox.y.round() as i64,
                        f.bbox.w.round() as i64,
                        f.bbox.h.round() as i64,
                    ],
                    mask: f.mask.as_str(),
                    score: (f64::from(f.score) * 10_000.0).round() / 10_000.0,
                })
                .collect(),
            ms: (ms * 100.0).round() / 100.0,
            error: None,
        },
        Err(e) => Line { file, faces: vec![], ms, error: Some(format!("the models failed on this image: {e:#}")) },
    }
}

/// `sibi mask scan`: one JSON line per image; a usage failure (exit 2) when an image or the models could not be used.
pub fn run(images: &[PathBuf], models: Option<&Path>) -> crate::cli::Outcome {
    use crate::cli::Failure;
    let judge = MaskJudge::open(models).map_err(|e| Failure::Usage(e.to_string()))?;
    let mut status = Ok(());
    let stdout = std::io::stdout();
    for path in images {
        let line = scan_one(&judge, path);
        if line.error.is_some() {
            status = Err(Failure::Usage(String::new()));
        }
        let text = serde_json::to_string(&line).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
        if writeln!(stdout.lock(), "{text}").is_err() {
            return Err(Failure::Usage(String::new()));
        }
    }
    status
}

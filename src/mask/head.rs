//! sibi's own mask head: a logistic regression over three horizontal bands of the classifier's 7 × 7 × 1280 feature
//! map, with the crop rule and the thresholds it was trained and chosen with (`models/mask_head.json`, written by
//! `scripts/models --train`; provenance and split in that file's `about`).
//!
//! Only a confident `worn` (at or above `worn_threshold`, set above every unmasked and badly worn face of the training
//! half) meets the must by machine; at or below `not_worn_threshold` is `not_worn`; between is `unsure`. An unsure face
//! gets a second look when the head has a [`Mirror`] rule: the crop mirrored left to right is scored too, and the mean
//! of the two decides with the rule's own thresholds; what is still between them leaves the must to the operator.

use std::sync::OnceLock;

use image::RgbImage;

use super::blazeface::FaceBox;
use crate::domain::MaskSeen;

/// The head file, embedded.
const EMBEDDED: &str = include_str!("../../models/mask_head.json");

/// Side of the classifier's feature map.
const GRID: usize = 7;
/// Channels of the feature map.
const CHANNELS: usize = 1280;

/// The head and its rules.
#[derive(Clone, Debug, serde::Deserialize)]
pub struct Head {
    /// Provenance.
    pub about: String,
    /// Row bands of the feature map, `[from, to)`.
    pub bands: Vec<(usize, usize)>,
    /// Detector confidence for a face.
    pub detector_threshold: f32,
    /// A face box must lie at least this much inside the picture.
    pub keep_inside: f32,
    /// Smaller faces are `unsure` without classification.
    pub min_face_px: f32,
    /// The crop's side, as a multiple of the box's larger side.
    pub crop_grow: f32,
    /// The crop's centre moves down by this share of the box height (the box sits high on a masked face).
    pub crop_shift: f32,
    /// At or above: worn.
    pub worn_threshold: f32,
    /// At or below: not worn.
    pub not_worn_threshold: f32,
    /// The second look for the unsure band (absent: none).
    #[serde(default)]
    pub mirror: Option<Mirror>,
    /// Logistic bias.
    pub bias: f32,
    /// One weight per band and channel.
    pub weights: Vec<f32>,
}

/// The thresholds for the mean of a face's score and its mirrored crop's score.
#[derive(Clone, Copy, Debug, serde::Deserialize)]
pub struct Mirror {
    /// At or above: worn.
    pub worn_threshold: f32,
    /// At or below: not worn.
    pub not_worn_threshold: f32,
}

impl Head {
    /// The head built into this binary.
    pub fn embedded() -> Result<&'static Head, String> {
        static HEAD: OnceLock<Result<Head, String>> = OnceLock::new();
        HEAD.get_or_init(|| Head::parse(EMBEDDED)).as_ref().map_err(|e| format!("models/mask_head.json: {e}"))
    }

    /// Parse and check a head file.
    pub fn parse(text: &str) -> Result<Head, String> {
        let h: Head = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if h.bands.iter().any(|&(a, b)| a >= b || b > GRID) {
            return Err("a band is empty or outside the 7 rows".into());
        }
        if h.weights.len() != h.bands.len() * CHANNELS {
            return Err(format!("{} weights for {} bands of {CHANNELS}", h.weights.len(), h.bands.len()));
        }
        let ordered = |not_worn: f32, worn: f32| 0.0 < not_worn && not_worn < worn && worn < 1.0;
        if !ordered(h.not_worn_threshold, h.worn_threshold) {
            return Err("thresholds must satisfy 0 < not_worn < worn < 1".into());
        }
        if let Some(m) = h.mirror
            && !ordered(m.not_worn_threshold, m.worn_threshold)
        {
            return Err("the mirror thresholds must satisfy 0 < not_worn < worn < 1".into());
        }
        Ok(h)
    }

    /// The mask probability from a 7 × 7 × 1280 feature map (HWC order).
    pub fn score(&self, fmap: &[f32]) -> anyhow::Result<f32> {
        if fmap.len() != GRID * GRID * CHANNELS {
            anyhow::bail!("a feature map of {} values, not {}", fmap.len(), GRID * GRID * CHANNELS);
        }
        let mut z = f64::from(self.bias);
        for (k, &(from, to)) in self.bands.iter().enumerate() {
            let cells = ((to - from) * GRID) as f64;
            let w = &self.weights[k * CHANNELS..(k + 1) * CHANNELS];
            let mut sums = vec![0f64; CHANNELS];
            for row in from..to {
                for col in 0..GRID {
                    let cell = &fmap[(row * GRID + col) * CHANNELS..(row * GRID + col + 1) * CHANNELS];
                    for (s, &v) in sums.iter_mut().zip(cell) {
                        *s += f64::from(v);
                    }
                }
            }
            z += sums.iter().zip(w).map(|(s, &wi)| s / cells * f64::from(wi)).sum::<f64>();
        }
        Ok((1.0 / (1.0 + (-z).exp())) as f32)
    }

    /// The verdict for a mask probability.
    pub fn verdict(&self, score: f32) -> MaskSeen {
        banded(score, self.worn_threshold, self.not_worn_threshold)
    }

    /// Whether a face with this first score gets the mirrored second look.
    pub fn looks_again(&self, score: f32) -> bool {
        self.mirror.is_some() && self.verdict(score) == MaskSeen::Unsure
    }

    /// The verdict for the mean of an unsure face's score and its mirrored crop's (`verdict` where there is no rule).
    pub fn second_verdict(&self, mean: f32) -> MaskSeen {
        match self.mirror {
            Some(m) => banded(mean, m.worn_threshold, m.not_worn_threshold),
            None => self.verdict(mean),
        }
    }

    /// The square the classifier sees for a face: centred on the box (moved down by `crop_shift` of its height),
    /// `crop_grow` × its larger side, black outside the picture.
    pub fn crop(&self, picture: &RgbImage, b: &FaceBox) -> RgbImage {
        let cx = b.x + b.w / 2.0;
        let cy = b.y + b.h / 2.0 + self.crop_shift * b.h;
        let side = (b.w.max(b.h) * self.crop_grow).round().clamp(1.0, 4096.0);
        let n = side as u32;
        let left = (cx - side / 2.0).round() as i64;
        let top = (cy - side / 2.0).round() as i64;
        let mut out = RgbImage::new(n, n);
        super::paste(&mut out, picture, -left, -top);
        out
    }
}

/// Worn at or above `worn`, not worn at or below `not_worn`, unsure between.
fn banded(score: f32, worn: f32, not_worn: f32) -> MaskSeen {
    if score >= worn {
        MaskSeen::Worn
    } else if score <= not_worn {
        MaskSeen::NotWorn
    } else {
        MaskSeen::Unsure
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_head_parses_and_its_thresholds_order_the_verdicts() {
        let h = Head::embedded().unwrap();
        assert_eq!(h.weights.len(), h.bands.len() * CHANNELS);
        assert!(h.about.contains("held out"), "the head says how it was trained: {}", h.about);
        assert_eq!(h.verdict(1.0), MaskSeen::Worn);
        assert_eq!(h.verdict(h.worn_threshold), MaskSeen::Worn);
        assert_eq!(h.verdict(h.worn_threshold - 1e-4), MaskSeen::Unsure);
        assert_eq!(h.verdict(h.not_worn_threshold), MaskSeen::NotWorn);
        assert_eq!(h.verdict(0.0), MaskSeen::NotWorn);
        let m = h.mirror.expect("the embedded head has a second look");
        assert!(h.looks_again((h.worn_threshold + h.not_worn_threshold) / 2.0));
        assert!(!h.looks_again(h.worn_threshold) && !h.looks_again(h.not_worn_threshold));
        assert_eq!(h.second_verdict(m.worn_threshold), MaskSeen::Worn);
        assert_eq!(h.second_verdict(m.worn_threshold - 1e-4), MaskSeen::Unsure);
        assert_eq!(h.second_verdict(m.not_worn_threshold), MaskSeen::NotWorn);
        let mut without = h.clone();
        without.mirror = None;
        assert!(!without.looks_again((h.worn_threshold + h.not_worn_threshold) / 2.0), "no rule, no second look");
    }

    #[test]
    fn a_score_is_the_logistic_of_the_band_means() {
        let mut h = Head::embedded().unwrap().clone();
        h.bands = vec![(0, 2), (2, 7)];
        h.weights = vec![0.0; 2 * CHANNELS];
        h.weights[3] = 1.0; // channel 3 of the top band
        h.weights[CHANNELS + 5] = -2.0; // channel 5 of the bottom band
        h.bias = 0.5;
        let mut fmap = vec![0f32; GRID * GRID * CHANNELS];
        // Channel 3 is 7.0 in every cell of row 0 only: its top-band mean is 7 × 7 / 14 = 3.5.
        for col in 0..GRID {
            fmap[col * CHANNELS + 3] = 7.0;
        }
        // Channel 5 is 1.0 in every bottom cell: mean 1.0.
        for row in 2..GRID {
            for col in 0..GRID {
                fmap[(row * GRID + col) * CHANNELS + 5] = 1.0;
            }
        }
        let z: f64 = 0.5 + 3.5 - 2.0;
        let want = 1.0 / (1.0 + (-z).exp());
        assert!((f64::from(h.score(&fmap).unwrap()) - want).abs() < 1e-6);
        assert!(h.score(&fmap[..100]).is_err(), "a short map is an error, not a panic");
    }

    #[test]
    fn broken_head_files_are_refused() {
        let good = serde_json::to_value(serde_json::from_str::<serde_json::Value>(EMBEDDED).unwrap()).unwrap();
        let with = |k: &str, v: serde_json::Value| {
            let mut j = good.clone();
            j[k] = v;
            Head::parse(&j.to_string())
        };
        assert!(with("weights", serde_json::json!([1.0, 2.0])).unwrap_err().contains("weights"));
        assert!(with("bands", serde_json::json!([[3, 3], [0, 2], [2, 7]])).is_err());
        assert!(with("worn_threshold", serde_json::json!(0.01)).is_err());
        assert!(with("mirror", serde_json::json!({"worn_threshold": 0.2, "not_worn_threshold": 0.5})).is_err());
        assert!(with("mirror", serde_json::json!(null)).unwrap().mirror.is_none(), "a head without one still loads");
        assert!(Head::parse("{").is_err());
    }

    #[test]
    fn the_crop_is_a_square_around_the_shifted_centre_and_black_outside() {
        let mut h = Head::embedded().unwrap().clone();
        h.crop_grow = 2.0;
        h.crop_shift = 0.25;
        let pic = RgbImage::from_pixel(100, 100, image::Rgb([200, 10, 10]));
        // A 20 × 20 box at the top-left corner: the crop is 40 px, centred at (10, 15): from (-10, -5).
        let c = h.crop(&pic, &FaceBox { x: 0.0, y: 0.0, w: 20.0, h: 20.0, score: 1.0 });
        assert_eq!(c.dimensions(), (40, 40));
        assert_eq!(c.get_pixel(0, 0).0, [0, 0, 0], "outside the picture");
        assert_eq!(c.get_pixel(9, 4).0, [0, 0, 0]);
        assert_eq!(c.get_pixel(10, 5).0, [200, 10, 10], "the picture's corner");
    }
}

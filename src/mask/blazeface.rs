//! BlazeFace (short range, 128 × 128) output decoding: anchors, boxes, scores, suppression. Pure arithmetic over
//! the model's four outputs, so it is tested without the model.
//!
//! The model (MediaPipe's `face_detection_front`, as packaged for Barracuda) has 896 anchors: a 16 × 16 grid with 2
//! anchors per cell (stride 8), then an 8 × 8 grid with 6 per cell (strides 16, 16, 16 merged), all of unit size.
//! Its outputs are the scores and the 16 regressors of the first 512 anchors, then of the other 384; a regressor's
//! first four values are the box centre offset and size in input pixels.

/// Side of the model's square input, in pixels.
pub const INPUT: usize = 128;
/// Side of the long-range model's input (`face_detection_back`: the same 896 anchors on a 256 × 256 input).
pub const FAR_INPUT: usize = 256;
/// Anchors of the first grid (16 × 16 × 2).
pub const FIRST: usize = 512;
/// Anchors of the second grid (8 × 8 × 6).
pub const SECOND: usize = 384;
/// Overlap above which the weaker of two boxes is the same face.
const SAME_FACE_IOU: f32 = 0.3;

/// A face box in the analysed picture's pixels, with the detector's confidence.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FaceBox {
    /// Left.
    pub x: f32,
    /// Top.
    pub y: f32,
    /// Width.
    pub w: f32,
    /// Height.
    pub h: f32,
    /// Detector confidence, 0..1.
    pub score: f32,
}

impl FaceBox {
    /// Area in square pixels.
    pub fn area(&self) -> f32 {
        self.w.max(0.0) * self.h.max(0.0)
    }

    /// Intersection over union with another box.
    pub fn iou(&self, o: &FaceBox) -> f32 {
        let iw = ((self.x + self.w).min(o.x + o.w) - self.x.max(o.x)).max(0.0);
        let ih = ((self.y + self.h).min(o.y + o.h) - self.y.max(o.y)).max(0.0);
        let inter = iw * ih;
        inter / (self.area() + o.area() - inter + 1e-9)
    }

    /// The share of the box that lies inside a `width` × `height` picture.
    pub fn inside(&self, width: f32, height: f32) -> f32 {
        let iw = ((self.x + self.w).min(width) - self.x.max(0.0)).max(0.0);
        let ih = ((self.y + self.h).min(height) - self.y.max(0.0)).max(0.0);
        iw * ih / (self.area() + 1e-9)
    }
}

/// The anchor centres, in units of the input side, in the model's output order.
pub fn anchors() -> Vec<(f32, f32)> {
    let mut out = Vec::with_capacity(FIRST + SECOND);
    for (grid, per_cell) in [(16usize, 2usize), (8, 6)] {
        for y in 0..grid {
            for x in 0..grid {
                for _ in 0..per_cell {
                    out.push(((x as f32 + 0.5) / grid as f32, (y as f32 + 0.5) / grid as f32));
                }
            }
        }
    }
    out
}

/// Where the analysed picture sits in the square the model saw: the picture was pasted at (`ox`, `oy`) on a black
/// square of side `side`, which was then scaled to the model's input.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Letterbox {
    /// Side of the square, in picture pixels.
    pub side: f32,
    /// Horizontal offset of the picture in the square.
    pub ox: f32,
    /// Vertical offset.
    pub oy: f32,
    /// Picture width.
    pub width: f32,
    /// Picture height.
    pub height: f32,
}

impl Letterbox {
    /// The square for a `width` × `height` picture, centred as the training script pastes it.
    pub fn for_picture(width: u32, height: u32) -> Letterbox {
        let side = width.max(height);
        Letterbox {
            side: side as f32,
            ox: ((side - width) / 2) as f32,
            oy: ((side - height) / 2) as f32,
            width: width as f32,
            height: height as f32,
        }
    }
}

/// Decode the model's outputs into face boxes at or above `threshold`, strongest first, overlapping boxes suppressed,
/// and boxes less than `keep_inside` inside the picture dropped (a face cut by the edge is someone else's).
///
/// `scores` holds the 896 raw logits (first grid, then second), `regressors` the 896 × 16 values likewise; shorter
/// inputs yield no faces rather than a panic.
pub fn decode(scores: &[f32], regressors: &[f32], lb: Letterbox, threshold: f32, keep_inside: f32) -> Vec<FaceBox> {
    decode_for(INPUT, scores, regressors, lb, threshold, keep_inside)
}

/// [`decode`] for a model whose square input is `input_side` pixels (the regressors are in its pixels).
pub fn decode_for(
    input_side: usize,
    scores: &[f32],
    regressors: &[f32],
    lb: Letterbox,
    threshold: f32,
    keep_inside: f32,
) -> Vec<FaceBox> {
    let n = FIRST + SECOND;
    if scores.len() < n || regressors.len() < n * 16 {
        return Vec::new();
    }
    let anchors = anchors();
    let mut candidates: Vec<(usize, f32)> = scores[..n]
        .iter()
        .enumerate()
        .map(|(i, &logit)| (i, sigmoid(logit)))
        .filter(|&(_, s)| s >= threshold)
        .collect();
    candidates.sort_by(|a, b| b.1.total_cmp(&a.1));
    let input = input_side as f32;
    let mut faces: Vec<FaceBox> = Vec::new();
    for (i, score) in candidates {
        let r = &regressors[i * 16..i * 16 + 4];
        let (ax, ay) = anchors[i];
        let (cx, cy) = (r[0] / input + ax, r[1] / input + ay);
        let (bw, bh) = (r[2] / input, r[3] / input);
        if !(bw.is_finite() && bh.is_finite() && cx.is_finite() && cy.is_finite()) || bw <= 0.0 || bh <= 0.0 {
            continue;
        }
        let b = FaceBox {
            x: (cx - bw / 2.0) * lb.side - lb.ox,
            y: (cy - bh / 2.0) * lb.side - lb.oy,
            w: bw * lb.side,
            h: bh * lb.side,
            score,
        };
        if b.inside(lb.width, lb.height) < keep_inside {
            continue;
        }
        if faces.iter().all(|f| f.iou(&b) <= SAME_FACE_IOU) {
            faces.push(b);
        }
    }
    faces
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x.clamp(-80.0, 80.0)).exp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anchors_follow_the_two_grids() {
        let a = anchors();
        assert_eq!(a.len(), 896);
        assert_eq!(a[0], (0.5 / 16.0, 0.5 / 16.0));
        assert_eq!(a[1], a[0], "two anchors per cell in the first grid");
        assert_eq!(a[2], (1.5 / 16.0, 0.5 / 16.0));
        assert_eq!(a[511], (15.5 / 16.0, 15.5 / 16.0));
        assert_eq!(a[512], (0.5 / 8.0, 0.5 / 8.0));
        assert_eq!(a[517], a[512], "six per cell in the second");
        assert_eq!(a[518], (1.5 / 8.0, 0.5 / 8.0));
        assert_eq!(a[895], (7.5 / 8.0, 7.5 / 8.0));
    }

    fn outputs() -> (Vec<f32>, Vec<f32>) {
        (vec![-20.0; 896], vec![0.0; 896 * 16])
    }

    #[test]
    fn boxes_map_back_through_the_letterbox_and_duplicates_are_suppressed() {
        let (mut s, mut r) = outputs();
        // Anchor 600 is in the second grid: index 88 there, cell 14 → (x 6, y 1); centre (6.5/8, 1.5/8).
        s[600] = 3.0;
        r[600 * 16..600 * 16 + 4].copy_from_slice(&[0.0, 0.0, 32.0, 40.0]);
        // A weaker, overlapping duplicate on the next anchor of the same cell.
        s[601] = 1.0;
        r[601 * 16..601 * 16 + 4].copy_from_slice(&[1.0, 1.0, 32.0, 40.0]);
        // A 640 × 480 picture: square side 640, pasted 80 px down.
        let lb = Letterbox::for_picture(640, 480);
        assert_eq!((lb.side, lb.ox, lb.oy), (640.0, 0.0, 80.0));
        let faces = decode(&s, &r, lb, 0.5, 0.0);
        assert_eq!(faces.len(), 1, "{faces:?}");
        let f = faces[0];
        assert!((f.w - 160.0).abs() < 1e-3 && (f.h - 200.0).abs() < 1e-3);
        assert!((f.x - (6.5 / 8.0 * 640.0 - 80.0)).abs() < 1e-3);
        assert!((f.y - (1.5 / 8.0 * 640.0 - 100.0 - 80.0)).abs() < 1e-3);
        assert!((f.score - sigmoid(3.0)).abs() < 1e-6);
        // The long-range model's regressors are in its 256 px input: twice the values, the same box.
        let mut r2 = r.clone();
        r2[600 * 16..600 * 16 + 4].copy_from_slice(&[0.0, 0.0, 64.0, 80.0]);
        r2[601 * 16..601 * 16 + 4].copy_from_slice(&[2.0, 2.0, 64.0, 80.0]);
        let far = decode_for(FAR_INPUT, &s, &r2, lb, 0.5, 0.0);
        assert_eq!(far.len(), 1);
        assert!((far[0].w - f.w).abs() < 1e-3 && (far[0].x - f.x).abs() < 1e-3 && (far[0].y - f.y).abs() < 1e-3);
    }

    #[test]
    fn weak_cut_off_and_broken_boxes_are_dropped_and_short_outputs_are_no_faces() {
        let (mut s, mut r) = outputs();
        let lb = Letterbox::for_picture(128, 128);
        s[0] = 0.1; // sigmoid 0.52: a face at threshold 0.5, not at 0.6
        r[..4].copy_from_slice(&[0.0, 0.0, 20.0, 20.0]); // centred 4 px from the corner: 49 % inside
        assert_eq!(decode(&s, &r, lb, 0.5, 0.8).len(), 0, "anchor 0 sits in the corner: mostly outside");
        assert_eq!(decode(&s, &r, lb, 0.5, 0.2).len(), 1);
        assert_eq!(decode(&s, &r, lb, 0.6, 0.2).len(), 0, "below the threshold");
        s[700] = 5.0;
        r[700 * 16..700 * 16 + 4].copy_from_slice(&[f32::NAN, 0.0, 10.0, 10.0]);
        s[701] = 5.0;
        r[701 * 16..701 * 16 + 4].copy_from_slice(&[0.0, 0.0, -3.0, 10.0]);
        assert_eq!(decode(&s, &r, lb, 0.9, 0.0).len(), 0, "a NaN or negative box is no face");
        assert!(decode(&s[..100], &r, lb, 0.5, 0.0).is_empty());
        assert!(decode(&s, &r[..100], lb, 0.5, 0.0).is_empty());
    }
}

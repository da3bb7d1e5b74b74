//! A dense convolution over few input channels for tract plans: each mask network's first layer — BlazeFace's
//! (3 → 24 channels, 5 × 5, stride 2) on the long-range detector's 256 × 256 picture and the short-range one's
//! 128 × 128, and MobileNetV2's (3 → 32, 3 × 3, stride 2, channels last) on the classifier's 224 × 224 crop.
//!
//! tract 0.23 runs the long-range layer as its `DirectSpatialConv`: four output channels at a time, eight points to
//! a vector, each stride-2 vector assembled from two loads and three shuffles, the input read again for every four
//! channels — 2.4 ms of the long-range detector's 14.3 (`cargo bench --bench mask_ops`, 2026-12-07). The other two
//! it runs as a matrix product over im2col patches, after padding the picture in a pass of its own: 1.0 ms of the
//! short-range detector's 3.9, 1.8 ms of the classifier's 17. This op splits the zero-padded input's columns by
//! stride phase once, so every tap of a row of outputs is one contiguous run, and keeps six output channels of
//! sixteen points (channels first) or 32 output channels of two points (channels last) in registers.
//!
//! Every output point keeps tract's arithmetic, tap by tap in tract's order (input channel by channel, the kernel
//! row by row). Where tract runs its direct convolution: from the bias, with a fused multiply-add where tract's
//! vector loop computes that point and a multiply and an add where its scalar loop does (the last points of a run,
//! and the runs down a column at the picture's edges); which points are which is read from tract's own zones of the
//! convolution when the op is built (a tap on the padding multiplies a zero and leaves the sum as it was, so taking
//! every tap is the same as taking a zone's). Where tract runs a matrix product: fused multiply-adds from zero (its
//! kernels clear their registers and fuse every one), then the bias added. So a plan gives the same numbers with
//! either op. Both are only these on x86-64 with AVX2 and FMA (tract's `conv_w4` and `fma_mmm` kernels);
//! [`replace_spatial`] swaps this op in only there, and elsewhere (the Pi's aarch64) tract's stays.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::cnn::{Conv, KernelFormat};
use tract_onnx::tract_core::ops::nn::DataFormat;

/// Output channels kept in registers at once.
#[cfg(target_arch = "x86_64")]
const CHANNELS: usize = 6;
/// Output points per vector pair.
const POINTS: usize = 16;
/// Output channels of a channels-last point kept in registers at once.
#[cfg(target_arch = "x86_64")]
const GROUP: usize = 32;
/// tract's `DirectSpatialConv` takes convolutions with at most this many inputs per output point…
const MAX_TAPS: usize = 576;
/// …and output rows of at least this many points (tract-core 0.23's `MIN_DIRECT_SPATIAL_W`).
const MIN_ROW: usize = 128;
/// Elsewhere the op takes convolutions of at most this many input channels (a picture's).
const MAX_CHANNELS: usize = 4;

/// One group-1 convolution of a fixed NCHW or NHWC picture (inputs: the picture, the kernel as `[oc, ic, kh, kw]`,
/// the bias as `[oc]` or one value).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SpatialConv {
    ic: usize,
    oc: usize,
    /// The input's height and width.
    h: usize,
    w: usize,
    kernel: [usize; 2],
    strides: [usize; 2],
    before: [usize; 2],
    after: [usize; 2],
    oh: usize,
    ow: usize,
    /// The picture and the output are channels last (NHWC), not first (NCHW).
    channels_last: bool,
    /// How tract sums each output point: from its bias, tap by tap (its direct convolution), or tap by tap from
    /// zero with the bias added last (a matrix product over its im2col patches: its multiply-adds accumulate from a
    /// cleared register, then it adds a row of biases).
    bias_last: bool,
    /// The points of an output plane (`y × ow + x`) that tract computes with a multiply and an add per tap rather
    /// than a fused multiply-add, in increasing order (none for a matrix product: its kernels fuse every one).
    unfused: Vec<u32>,
}

impl SpatialConv {
    fn taps(&self) -> usize {
        self.ic * self.kernel[0] * self.kernel[1]
    }

    /// Width of one stride phase of a padded input row in the scratch, with room for the last vector's overrun.
    fn phase_width(&self) -> usize {
        self.ow.next_multiple_of(POINTS) + (self.kernel[1] - 1) / self.strides[1]
    }

    /// Height of the padded input.
    fn padded_height(&self) -> usize {
        self.h + self.before[0] + self.after[0]
    }

    fn output_shape(&self, n: usize) -> Vec<usize> {
        if self.channels_last { vec![n, self.oh, self.ow, self.oc] } else { vec![n, self.oc, self.oh, self.ow] }
    }

    /// One image's input shape.
    fn image_shape(&self) -> [usize; 3] {
        if self.channels_last { [self.h, self.w, self.ic] } else { [self.ic, self.h, self.w] }
    }

    /// Where output channel `o` of point `p` (`y × ow + x`) goes in one image's output.
    fn out_index(&self, o: usize, p: usize) -> usize {
        if self.channels_last { p * self.oc + o } else { o * self.oh * self.ow + p }
    }

    /// The zero-padded picture `x` (one image, `[ic, h, w]`, or `[h, w, ic]` channels last), each channel's rows'
    /// columns split by stride phase: phase `q`, column `j` holds padded column `j × sw + q`, so a tap `(ky, kx)` of
    /// output row `oy` reads phase `kx % sw` of padded row `oy × sh + ky` from column `ox + kx / sw` on, contiguously.
    /// `e` is cleared first (the caller's buffer, kept between runs: a fresh one cost its page faults each run, up to
    /// 0.4 ms on this machine for the long-range detector's 0.8 MB).
    fn phases(&self, x: &[f32], e: &mut Vec<f32>) {
        let (sw, cw, ph) = (self.strides[1], self.phase_width(), self.padded_height());
        e.clear();
        e.resize(self.ic * sw * ph * cw, 0.0);
        if self.channels_last {
            let (ic, w) = (self.ic, self.w);
            for y in 0..self.h {
                let r = y + self.before[0];
                let row = &x[y * w * ic..][..w * ic];
                for q in 0..sw {
                    let first = (q + sw - self.before[1] % sw) % sw;
                    let j0 = (first + self.before[1]) / sw;
                    let n = w.saturating_sub(first).div_ceil(sw).min(cw.saturating_sub(j0));
                    for c in 0..ic {
                        let dst = &mut e[((c * sw + q) * ph + r) * cw + j0..][..n];
                        for (d, px) in dst.iter_mut().zip(row[first * ic + c..].iter().step_by(sw * ic)) {
                            *d = *px;
                        }
                    }
                }
            }
            return;
        }
        for c in 0..self.ic {
            for y in 0..self.h {
                let row = &x[(c * self.h + y) * self.w..][..self.w];
                let r = y + self.before[0];
                for q in 0..sw {
                    // The first input column of phase q, and its column in the phase.
                    let first = (q + sw - self.before[1] % sw) % sw;
                    let j0 = (first + self.before[1]) / sw;
                    let dst = &mut e[((c * sw + q) * ph + r) * cw..][..cw];
                    for (d, &v) in dst[j0.min(cw)..].iter_mut().zip(row.iter().skip(first).step_by(sw)) {
                        *d = v;
                    }
                }
            }
        }
    }

    /// Where tap `t` (`c`, `ky`, `kx`) of output point `(oy, 0)` starts in the phase scratch.
    fn tap_start(&self, t: usize, oy: usize) -> usize {
        let [kh, kw] = self.kernel;
        let (c, ky, kx) = (t / (kh * kw), t / kw % kh, t % kw);
        let (sw, cw, ph) = (self.strides[1], self.phase_width(), self.padded_height());
        ((c * sw + kx % sw) * ph + oy * self.strides[0] + ky) * cw + kx / sw
    }

    /// One image: `x` (as [`SpatialConv::image_shape`]) into `out` (`[oc, oh, ow]`, or `[oh, ow, oc]` channels
    /// last), `kernel` `[oc, taps]`, `bias` one per output channel.
    fn run(&self, x: &[f32], kernel: &[f32], bias: &[f32], out: &mut [f32]) {
        thread_local! {
            static PHASES: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        PHASES.with_borrow_mut(|e| {
            self.phases(x, e);
            self.sum(e, kernel, bias, out)
        });
    }

    /// [`SpatialConv::run`] from the phase scratch.
    fn sum(&self, e: &[f32], kernel: &[f32], bias: &[f32], out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if tracts_kernel_is_fused() {
            // SAFETY: the CPU has AVX2 and FMA (that is what the check says).
            unsafe {
                if self.channels_last {
                    self.channels_last_fma(e, kernel, bias, out);
                } else {
                    self.fused_fma(e, kernel, bias, out);
                }
                self.unfused_avx2(e, kernel, bias, out);
            }
            return;
        }
        self.fused_portable(e, kernel, bias, out);
        self.unfused_points(e, kernel, bias, out);
    }

    /// Every point with fused multiply-adds, one point at a time (`f32::mul_add`; where the CPU has no FMA: the
    /// op is only put in plans where it has, so this is for completeness and the test).
    fn fused_portable(&self, e: &[f32], kernel: &[f32], bias: &[f32], out: &mut [f32]) {
        let taps = self.taps();
        for o in 0..self.oc {
            let k = &kernel[o * taps..][..taps];
            for oy in 0..self.oh {
                for ox in 0..self.ow {
                    let from = if self.bias_last { 0.0 } else { bias[o] };
                    let acc = (0..taps).fold(from, |acc, t| k[t].mul_add(e[self.tap_start(t, oy) + ox], acc));
                    out[self.out_index(o, oy * self.ow + ox)] = if self.bias_last { acc + bias[o] } else { acc };
                }
            }
        }
    }

    /// Overwrite the points tract computes without fused multiply-adds: the bias, then `sum + k × x` tap by tap
    /// (every output channel of a point at once, each its own sum in the same order).
    fn unfused_points(&self, e: &[f32], kernel: &[f32], bias: &[f32], out: &mut [f32]) {
        let (taps, oc) = (self.taps(), self.oc);
        let mut by_tap = vec![0f32; taps * oc];
        for o in 0..oc {
            for t in 0..taps {
                by_tap[t * oc + o] = kernel[o * taps + t];
            }
        }
        let (mut row, mut starts) = (usize::MAX, vec![0usize; taps]);
        let mut sums = vec![0f32; oc];
        for &p in &self.unfused {
            let (oy, ox) = (p as usize / self.ow, p as usize % self.ow);
            if oy != row {
                row = oy;
                for (t, s) in starts.iter_mut().enumerate() {
                    *s = self.tap_start(t, oy);
                }
            }
            sums.copy_from_slice(&bias[..oc]);
            for (&s, k) in starts.iter().zip(by_tap.chunks_exact(oc)) {
                let x = e[s + ox];
                for (sum, &kt) in sums.iter_mut().zip(k) {
                    *sum += kt * x;
                }
            }
            for (o, &sum) in sums.iter().enumerate() {
                out[self.out_index(o, p as usize)] = sum;
            }
        }
    }

    /// [`SpatialConv::unfused_points`] with AVX2: up to 32 output channels of a point in four vectors, each lane
    /// its own sum, a multiply and then an add per tap (`_mm256_mul_ps`, `_mm256_add_ps`: the same two roundings).
    ///
    /// # Safety
    /// The CPU must have AVX2.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn unfused_avx2(&self, e: &[f32], kernel: &[f32], bias: &[f32], out: &mut [f32]) {
        use std::arch::x86_64::*;
        if self.unfused.is_empty() {
            return;
        }
        const LANES: usize = 8;
        const VECTORS: usize = 4;
        let (taps, oc) = (self.taps(), self.oc);
        for first in (0..oc).step_by(LANES * VECTORS) {
            let live = (oc - first).min(LANES * VECTORS);
            // The kernel as [tap][32 channels], and the bias, padded with zeros (never stored).
            let mut by_tap = vec![0f32; taps * LANES * VECTORS];
            let mut b = [0f32; LANES * VECTORS];
            for o in 0..live {
                b[o] = bias[first + o];
                for t in 0..taps {
                    by_tap[t * LANES * VECTORS + o] = kernel[(first + o) * taps + t];
                }
            }
            let (mut row, mut starts) = (usize::MAX, vec![0usize; taps]);
            let mut sums = [0f32; LANES * VECTORS];
            for &p in &self.unfused {
                let (oy, ox) = (p as usize / self.ow, p as usize % self.ow);
                if oy != row {
                    row = oy;
                    for (t, s) in starts.iter_mut().enumerate() {
                        *s = self.tap_start(t, oy);
                    }
                }
                // SAFETY: by_tap holds taps × 32 values and b 32; e[s + ox] is a checked index.
                unsafe {
                    let mut acc = [_mm256_setzero_ps(); VECTORS];
                    for (v, a) in acc.iter_mut().enumerate() {
                        *a = _mm256_loadu_ps(b.as_ptr().add(v * LANES));
                    }
                    for (t, &s) in starts.iter().enumerate() {
                        let x = _mm256_set1_ps(e[s + ox]);
                        let k = by_tap.as_ptr().add(t * LANES * VECTORS);
                        for (v, a) in acc.iter_mut().enumerate() {
                            *a = _mm256_add_ps(*a, _mm256_mul_ps(_mm256_loadu_ps(k.add(v * LANES)), x));
                        }
                    }
                    for (v, a) in acc.iter().enumerate() {
                        _mm256_storeu_ps(sums.as_mut_ptr().add(v * LANES), *a);
                    }
                }
                for (o, &sum) in sums.iter().enumerate().take(live) {
                    out[self.out_index(first + o, p as usize)] = sum;
                }
            }
        }
    }

    /// Every point with fused multiply-adds, [`CHANNELS`] output channels × [`POINTS`] points at a time.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn fused_fma(&self, e: &[f32], kernel: &[f32], bias: &[f32], out: &mut [f32]) {
        use std::arch::x86_64::*;
        let (taps, plane, ow) = (self.taps(), self.oh * self.ow, self.ow);
        let groups = self.oc.div_ceil(CHANNELS);
        // The kernel as [group][tap][CHANNELS], a short last group padded with zeros (never stored).
        let mut k = vec![0f32; groups * taps * CHANNELS];
        for o in 0..self.oc {
            for t in 0..taps {
                k[((o / CHANNELS) * taps + t) * CHANNELS + o % CHANNELS] = kernel[o * taps + t];
            }
        }
        let mut starts = vec![0usize; taps];
        let mut tile = [[0f32; POINTS]; CHANNELS];
        for oy in 0..self.oh {
            for (t, s) in starts.iter_mut().enumerate() {
                *s = self.tap_start(t, oy);
            }
            for g in 0..groups {
                let kg = &k[g * taps * CHANNELS..][..taps * CHANNELS];
                let live = CHANNELS.min(self.oc - g * CHANNELS);
                for ox in (0..ow).step_by(POINTS) {
                    // SAFETY: every load reads phase_width() ≥ ox + POINTS + (kw - 1) / sw columns of a scratch
                    // row at most (tap_start is within the scratch), and the stores go to `tile` or to whole
                    // POINTS runs inside an output row.
                    unsafe {
                        let mut acc = [[_mm256_setzero_ps(); 2]; CHANNELS];
                        if !self.bias_last {
                            for (c, a) in acc.iter_mut().enumerate() {
                                let b = _mm256_set1_ps(*bias.get(g * CHANNELS + c).unwrap_or(&0.0));
                                *a = [b, b];
                            }
                        }
                        for (t, &s) in starts.iter().enumerate() {
                            let p = e.as_ptr().add(s + ox);
                            let x0 = _mm256_loadu_ps(p);
                            let x1 = _mm256_loadu_ps(p.add(8));
                            let kt = kg.as_ptr().add(t * CHANNELS);
                            for (c, a) in acc.iter_mut().enumerate() {
                                let kv = _mm256_set1_ps(*kt.add(c));
                                a[0] = _mm256_fmadd_ps(x0, kv, a[0]);
                                a[1] = _mm256_fmadd_ps(x1, kv, a[1]);
                            }
                        }
                        if self.bias_last {
                            for (c, a) in acc.iter_mut().enumerate() {
                                let b = _mm256_set1_ps(*bias.get(g * CHANNELS + c).unwrap_or(&0.0));
                                *a = [_mm256_add_ps(a[0], b), _mm256_add_ps(a[1], b)];
                            }
                        }
                        let whole = ox + POINTS <= ow;
                        for (c, a) in acc.iter().enumerate().take(live) {
                            let o = g * CHANNELS + c;
                            if whole {
                                let dst = out.as_mut_ptr().add(o * plane + oy * ow + ox);
                                _mm256_storeu_ps(dst, a[0]);
                                _mm256_storeu_ps(dst.add(8), a[1]);
                            } else {
                                _mm256_storeu_ps(tile[c].as_mut_ptr(), a[0]);
                                _mm256_storeu_ps(tile[c].as_mut_ptr().add(8), a[1]);
                                out[o * plane + oy * ow + ox..][..ow - ox].copy_from_slice(&tile[c][..ow - ox]);
                            }
                        }
                    }
                }
            }
        }
    }

    /// Every point of a channels-last output with fused multiply-adds from zero, then its bias (a matrix product's
    /// arithmetic): [`GROUP`] output channels of two points at a time, in eight vectors, each tap's kernel row
    /// loaded once for both points.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn channels_last_fma(&self, e: &[f32], kernel: &[f32], bias: &[f32], out: &mut [f32]) {
        use std::arch::x86_64::*;
        const LANES: usize = 8;
        const VECTORS: usize = GROUP / LANES;
        let (taps, oc, ow) = (self.taps(), self.oc, self.ow);
        let groups = oc.div_ceil(GROUP);
        // The kernel as [group][tap][GROUP] and the bias as [group][GROUP], a short last group padded with zeros
        // (never stored).
        let mut k = vec![0f32; groups * taps * GROUP];
        let mut b = vec![0f32; groups * GROUP];
        for o in 0..oc {
            b[o] = bias[o];
            for t in 0..taps {
                k[((o / GROUP) * taps + t) * GROUP + o % GROUP] = kernel[o * taps + t];
            }
        }
        let mut starts = vec![0usize; taps];
        let mut tile = [0f32; GROUP];
        for oy in 0..self.oh {
            for (t, s) in starts.iter_mut().enumerate() {
                *s = self.tap_start(t, oy);
            }
            for g in 0..groups {
                let kg = &k[g * taps * GROUP..][..taps * GROUP];
                let live = GROUP.min(oc - g * GROUP);
                for ox in (0..ow).step_by(2) {
                    // SAFETY: the loads read columns ox and ox + 1 ≤ ow of a phase row from a tap's start, inside
                    // phase_width() ≥ ow + (kw - 1) / sw; kg holds taps × GROUP values and b groups × GROUP; the
                    // stores go to `tile` or to a point's whole GROUP channels inside the output.
                    unsafe {
                        let mut acc = [[_mm256_setzero_ps(); VECTORS]; 2];
                        for (t, &s) in starts.iter().enumerate() {
                            let p = e.as_ptr().add(s + ox);
                            let x = [_mm256_broadcast_ss(&*p), _mm256_broadcast_ss(&*p.add(1))];
                            let kt = kg.as_ptr().add(t * GROUP);
                            let [a0, a1] = &mut acc;
                            for (v, (a0, a1)) in a0.iter_mut().zip(a1.iter_mut()).enumerate() {
                                let w = _mm256_loadu_ps(kt.add(v * LANES));
                                *a0 = _mm256_fmadd_ps(w, x[0], *a0);
                                *a1 = _mm256_fmadd_ps(w, x[1], *a1);
                            }
                        }
                        for (i, a) in acc.iter().enumerate().take((ow - ox).min(2)) {
                            let at = (oy * ow + ox + i) * oc + g * GROUP;
                            let dst = if live == GROUP { out.as_mut_ptr().add(at) } else { tile.as_mut_ptr() };
                            for (v, a) in a.iter().enumerate() {
                                let bv = _mm256_loadu_ps(b.as_ptr().add(g * GROUP + v * LANES));
                                _mm256_storeu_ps(dst.add(v * LANES), _mm256_add_ps(*a, bv));
                            }
                            if live < GROUP {
                                out[at..][..live].copy_from_slice(&tile[..live]);
                            }
                        }
                    }
                }
            }
        }
    }
}

impl Op for SpatialConv {
    fn name(&self) -> StaticName {
        "SibiSpatialConv".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "{} → {} channels, kernel {:?} strides {:?} padding {:?}/{:?}, {} of {} points unfused",
            self.ic,
            self.oc,
            self.kernel,
            self.strides,
            self.before,
            self.after,
            self.unfused.len(),
            self.oh * self.ow
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for SpatialConv {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (x, kernel, bias) = args_3!(inputs);
        let image = self.image_shape();
        ensure!(x.rank() == 4 && x.shape()[1..] == image, "spatial conv: input shape {:?}", x.shape());
        let n = x.shape()[0];
        let [kh, kw] = self.kernel;
        ensure!(kernel.shape() == [self.oc, self.ic, kh, kw], "spatial conv: kernel shape {:?}", kernel.shape());
        let bv = bias.try_as_plain_ram()?;
        let b = bv.as_slice::<f32>()?;
        let bias: Vec<f32> = match b.len() {
            1 => vec![b[0]; self.oc],
            l if l == self.oc => b.to_vec(),
            l => bail!("spatial conv: {l} biases for {} channels", self.oc),
        };
        let (xv, kv) = (x.try_as_plain_ram()?, kernel.try_as_plain_ram()?);
        let (xs, ks) = (xv.as_slice::<f32>()?, kv.as_slice::<f32>()?);
        // SAFETY: f32 has no invalid bit patterns, and `run` writes every output (each point of each channel).
        let mut t = unsafe { Tensor::uninitialized::<f32>(&self.output_shape(n))? };
        {
            let mut view = t.try_as_plain_ram_mut()?;
            let out = view.as_slice_mut::<f32>()?;
            let (isz, osz) = (self.ic * self.h * self.w, self.oc * self.oh * self.ow);
            for i in 0..n {
                self.run(&xs[i * isz..][..isz], ks, &bias, &mut out[i * osz..][..osz]);
            }
        }
        Ok(tvec!(t.into_tvalue()))
    }
}

impl TypedOp for SpatialConv {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs[0].datum_type == f32::datum_type(), "spatial conv: f32 only");
        Ok(tvec!(f32::fact(self.output_shape(inputs[0].shape[0].to_usize()?))))
    }

    as_op!();
}

/// Replace with [`SpatialConv`] each float convolution of `model` (decluttered, not yet optimised) with group 1, an
/// OIHW kernel of at least two taps, no dilation, explicit padding, at most 576 inputs per output point and output
/// channels a multiple of four, on a CPU with AVX2 and FMA: channels first with input and output rows of at least
/// 128 points (what tract runs as its `DirectSpatialConv`), or, of one image of at most four channels with a kernel
/// at least two wide, channels first or last (what it runs as a matrix product). Returns how many were replaced;
/// elsewhere tract's op stays.
pub fn replace_spatial(model: &mut TypedModel) -> TractResult<usize> {
    if !tracts_kernel_is_fused() {
        return Ok(0);
    }
    let mut replaced = 0;
    for id in model.eval_order()? {
        let node = model.node(id);
        let Some(conv) = node.op_as::<Conv>() else { continue };
        let Some(op) = spatial_for(model, node, conv)? else { continue };
        let patch = TypedModelPatch::replace_single_op(model, node, &node.inputs, op)?;
        patch.apply(model)?;
        replaced += 1;
    }
    Ok(replaced)
}

/// Whether tract's `DirectSpatialConv` kernel on this CPU is its fused multiply-add one (x86-64 with AVX2 and FMA),
/// the arithmetic [`SpatialConv`] reproduces: where [`replace_spatial`] puts it in plans at all.
pub fn tracts_kernel_is_fused() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

fn spatial_for(model: &TypedModel, node: &TypedNode, conv: &Conv) -> TractResult<Option<SpatialConv>> {
    let spec = &conv.pool_spec;
    let channels_last = match spec.data_format {
        DataFormat::NCHW => false,
        DataFormat::NHWC => true,
        _ => return Ok(None),
    };
    if conv.q_params.is_some()
        || node.inputs.len() != 3
        || conv.group != 1
        || conv.kernel_fmt != KernelFormat::OIHW
        || spec.kernel_shape.len() != 2
        || spec.dilations.as_ref().is_some_and(|d| d.iter().any(|&d| d != 1))
    {
        return Ok(None);
    }
    let x = model.outlet_fact(node.inputs[0])?;
    let kernel = model.outlet_fact(node.inputs[1])?;
    let bias = model.outlet_fact(node.inputs[2])?;
    let (ic, oc) = (spec.input_channels, spec.output_channels);
    let [kh, kw] = [spec.kernel_shape[0], spec.kernel_shape[1]];
    let plain_f32 = |f: &TypedFact| f.datum_type == f32::datum_type() && f.is_plain();
    let Some(dims) = x.shape.as_concrete() else { return Ok(None) };
    let (h, w) = if channels_last { (dims[1], dims[2]) } else { (dims[2], dims[3]) };
    if !plain_f32(x)
        || !plain_f32(kernel)
        || !plain_f32(bias)
        || dims.len() != 4
        || dims[if channels_last { 3 } else { 1 }] != ic
        || kernel.shape.as_concrete() != Some(&[oc, ic, kh, kw][..])
        || !matches!(bias.shape.as_concrete(), Some([]) | Some([1])) && bias.shape.as_concrete() != Some(&[oc][..])
        || kh * kw < 2
        || ic * kh * kw > MAX_TAPS
        || !oc.is_multiple_of(4)
    {
        return Ok(None);
    }
    let Some((before, after, strides)) = super::depthwise::planar_geometry(spec) else { return Ok(None) };
    if strides.contains(&0) || h + before[0] + after[0] < kh || w + before[1] + after[1] < kw {
        return Ok(None);
    }
    let oh = (h + before[0] + after[0] - kh) / strides[0] + 1;
    let ow = (w + before[1] + after[1] - kw) / strides[1] + 1;
    let op = |bias_last, unfused| SpatialConv {
        ic,
        oc,
        h,
        w,
        kernel: [kh, kw],
        strides,
        before,
        after,
        oh,
        ow,
        channels_last,
        bias_last,
        unfused,
    };
    if !channels_last && w >= MIN_ROW && ow >= MIN_ROW {
        // tract's direct convolution.
        let Some(unfused) = unfused_points(spec, &x.shape, dims, [oh, ow])? else { return Ok(None) };
        return Ok(Some(op(false, unfused)));
    }
    // Elsewhere tract runs it as a matrix product over im2col patches (taps in the same order), a fused
    // multiply-add for every point and tap; one image only (tract's lazy patches are for one), few input channels
    // (what this op is for), and a kernel at least two wide (tract may take a column kernel elsewhere).
    if dims[0] != 1 || ic > MAX_CHANNELS || kw < 2 {
        return Ok(None);
    }
    Ok(Some(op(true, Vec::new())))
}

/// The output points (of one plane, `y × ow + x`) that tract's `DirectSpatialConv` computes with its scalar loop:
/// it walks each of its zones in runs — along each row for the zone clear of the padding, along the zone's longest
/// axis for the others — and its `conv_w4` kernel does a run along a row at input stride 1 to 3 eight points to a
/// vector with fused multiply-adds (sixteen while they fit, then eight; at stride 2 each block needs one point
/// more), the rest of the run, and every other run, a point at a time without. `None` where tract's geometry is
/// not the one this expects.
fn unfused_points(
    spec: &tract_onnx::tract_core::ops::cnn::PoolSpec,
    shape: &ShapeFact,
    dims: &[usize],
    [oh, ow]: [usize; 2],
) -> TractResult<Option<Vec<u32>>> {
    let geo = spec.compute_geo(&shape.to_tvec())?;
    let geo = geo.to_concrete(dims)?;
    let (patch, input, output) = (&geo.patch, &geo.input_shape, &geo.output_shape);
    if *output.w_stride() != 1 || *output.h_stride() != ow || patch.output_storage_strides[..] != [ow as isize, 1] {
        return Ok(None);
    }
    let vector_points = |len: usize, in_stride: isize, out_stride: isize| -> usize {
        if out_stride != 1 || !(1..=3).contains(&in_stride) {
            return 0;
        }
        let block = if in_stride == 2 { 9 } else { 8 };
        let mut i = 0;
        while i + 8 + block <= len {
            i += 16;
        }
        while i + block <= len {
            i += 8;
        }
        i
    };
    let mut fused = vec![false; oh * ow];
    for zone in &patch.zones {
        if zone.valid && zone.output_ranges.len() == 2 {
            let in_w = (*input.w_stride() * patch.spec.strides[1]) as isize;
            let xs = zone.output_ranges[1].clone();
            let n = vector_points(xs.len(), in_w, 1);
            for y in zone.output_ranges[0].clone() {
                fused[y * ow + xs.start..][..n].fill(true);
            }
        } else {
            let mut bad = false;
            zone.visit_output(patch, |s| {
                let at = s.output_offset;
                let i = s.output_coords[s.inner_loop_axis] - s.inner_loop_output_range.start;
                let n = vector_points(s.inner_loop_len, s.inner_loop_input_full_stride, s.inner_loop_output_stride);
                match usize::try_from(at).ok().filter(|&p| p < oh * ow) {
                    Some(p) => fused[p] = i < n,
                    None => bad = true,
                }
            });
            if bad {
                return Ok(None);
            }
        }
    }
    Ok(Some((0..oh * ow).filter(|&p| !fused[p]).map(|p| p as u32).collect()))
}

#[cfg(test)]
mod tests {
    use super::super::depthwise::tests::noise;
    use super::*;

    /// A plan of one NCHW convolution, with and without [`replace_spatial`].
    fn plans(ic: usize, oc: usize, hw: [usize; 2], k: [usize; 2], s: [usize; 2], pads: [usize; 4]) -> [TypedModel; 2] {
        plans_in(DataFormat::NCHW, ic, oc, hw, k, s, pads)
    }

    /// The input shape of one image in `format`.
    fn image(format: DataFormat, ic: usize, hw: [usize; 2]) -> [usize; 4] {
        if format == DataFormat::NHWC { [1, hw[0], hw[1], ic] } else { [1, ic, hw[0], hw[1]] }
    }

    /// A plan of one convolution over `format` pictures, with and without [`replace_spatial`].
    fn plans_in(
        format: DataFormat,
        ic: usize,
        oc: usize,
        hw: [usize; 2],
        k: [usize; 2],
        s: [usize; 2],
        pads: [usize; 4],
    ) -> [TypedModel; 2] {
        use tract_onnx::tract_core::ops::cnn::{PaddingSpec, PoolSpec};
        let mut m = TypedModel::default();
        let x = m.add_source("x", f32::fact(image(format, ic, hw))).unwrap();
        let kernel = tensor1(&noise(oc * ic * k[0] * k[1], 7)).into_shape(&[oc, ic, k[0], k[1]]).unwrap();
        let kernel = m.add_const("k", kernel).unwrap();
        let bias = m.add_const("b", tensor1(&noise(oc, 8))).unwrap();
        let pool_spec = PoolSpec {
            data_format: format,
            kernel_shape: tvec![k[0], k[1]],
            padding: PaddingSpec::Explicit(tvec!(pads[0], pads[1]), tvec!(pads[2], pads[3])),
            dilations: None,
            strides: Some(tvec![s[0], s[1]]),
            input_channels: ic,
            output_channels: oc,
        };
        let conv = Conv { pool_spec, kernel_fmt: KernelFormat::OIHW, group: 1, q_params: None };
        let y = m.wire_node("conv", conv, &[x, kernel, bias]).unwrap();
        m.select_output_outlets(&y).unwrap();
        let theirs = m.clone();
        replace_spatial(&mut m).unwrap();
        [theirs, m]
    }

    #[test]
    fn each_point_comes_out_as_tracts_own_op_computes_it() {
        if !tracts_kernel_is_fused() {
            eprintln!("skipped: tract's direct convolution is not the fused one on this CPU");
            return;
        }
        let mut cases = 0;
        // BlazeFace's first layer, then other strides, paddings, kernels and row lengths whose runs end in
        // blocks of sixteen, of eight and in a scalar tail.
        for (ic, oc, hw, k, s, pads) in [
            (3, 24, [256, 256], [5, 5], [2, 2], [1, 1, 2, 2]),
            (3, 8, [40, 270], [3, 3], [1, 1], [1, 1, 1, 1]),
            (2, 12, [17, 300], [5, 3], [2, 2], [0, 2, 2, 0]),
            (1, 4, [9, 399], [3, 5], [1, 3], [2, 0, 0, 2]),
            (4, 16, [12, 261], [2, 2], [1, 2], [0, 0, 0, 0]),
        ] {
            let [theirs, ours] = plans(ic, oc, hw, k, s, pads);
            let swapped = ours.nodes.iter().filter(|n| n.op_is::<SpatialConv>()).count();
            assert_eq!(swapped, 1, "{ic}→{oc} {hw:?} {k:?} {s:?}");
            let theirs = theirs.into_optimized().unwrap();
            assert!(
                theirs.nodes.iter().any(|n| n.op.name() == "DirectSpatialConv"),
                "tract runs {ic}→{oc} {hw:?} {k:?} {s:?} as its direct convolution: {theirs}"
            );
            let (theirs, ours) =
                (theirs.into_runnable().unwrap(), ours.into_optimized().unwrap().into_runnable().unwrap());
            let input: Tensor =
                tensor1(&noise(ic * hw[0] * hw[1], cases + 1)).into_shape(&[1, ic, hw[0], hw[1]]).unwrap();
            let a = theirs.run(tvec!(input.clone().into())).unwrap().remove(0);
            let b = ours.run(tvec!(input.into())).unwrap().remove(0);
            let (a, b) = (a.to_plain_array_view::<f32>().unwrap(), b.to_plain_array_view::<f32>().unwrap());
            assert_eq!(a.shape(), b.shape());
            let differ = a.iter().zip(b.iter()).filter(|(p, q)| p.to_bits() != q.to_bits()).count();
            assert_eq!(differ, 0, "{ic}→{oc} {hw:?} {k:?} {s:?}: {differ} of {} points differ", a.len());
            cases += 1;
        }
        assert_eq!(cases, 5);
    }

    /// Runs tract's plan and sibi's of the same convolution on noise; how many outputs differ in their bits.
    fn differing_bits(theirs: TypedModel, ours: TypedModel, input: Tensor) -> (usize, usize) {
        let (theirs, ours) = (theirs.into_runnable().unwrap(), ours.into_optimized().unwrap().into_runnable().unwrap());
        let a = theirs.run(tvec!(input.clone().into())).unwrap().remove(0);
        let b = ours.run(tvec!(input.into())).unwrap().remove(0);
        let (a, b) = (a.to_plain_array_view::<f32>().unwrap(), b.to_plain_array_view::<f32>().unwrap());
        assert_eq!(a.shape(), b.shape());
        (a.iter().zip(b.iter()).filter(|(p, q)| p.to_bits() != q.to_bits()).count(), a.len())
    }

    #[test]
    fn where_tract_runs_a_matrix_product_each_point_comes_out_as_its_product_computes_it() {
        if !tracts_kernel_is_fused() {
            eprintln!("skipped: tract's matrix product kernels are not the fused ones on this CPU");
            return;
        }
        let (nchw, nhwc) = (DataFormat::NCHW, DataFormat::NHWC);
        let mut cases = 0;
        // BlazeFace's short-range first layer (64-point rows, too short for tract's direct convolution), MobileNetV2's
        // (channels last), then odd rows, output channels short of, and over, a register group, other strides.
        for (format, ic, oc, hw, k, s, pads) in [
            (nchw, 3, 24, [128, 128], [5, 5], [2, 2], [1, 1, 2, 2]),
            (nhwc, 3, 32, [224, 224], [3, 3], [2, 2], [0, 0, 1, 1]),
            (nhwc, 3, 12, [31, 45], [3, 3], [1, 1], [1, 1, 1, 1]),
            (nchw, 2, 8, [20, 50], [3, 5], [1, 2], [2, 0, 0, 2]),
            (nhwc, 4, 40, [17, 19], [2, 3], [2, 1], [0, 1, 1, 0]),
        ] {
            let what = format!("{format:?} {ic}→{oc} {hw:?} {k:?} {s:?} {pads:?}");
            let [theirs, ours] = plans_in(format, ic, oc, hw, k, s, pads);
            let op = ours.nodes.iter().find_map(|n| n.op_as::<SpatialConv>());
            assert!(op.is_some_and(|op| op.bias_last && op.unfused.is_empty()), "{what}: {ours}");
            let theirs = theirs.into_optimized().unwrap();
            let names: Vec<_> = theirs.nodes.iter().map(|n| n.op.name()).collect();
            assert!(
                names.iter().any(|n| n == "OptMatMul") && !names.iter().any(|n| n == "DirectSpatialConv"),
                "tract runs {what} as a matrix product: {theirs}"
            );
            let input = tensor1(&noise(ic * hw[0] * hw[1], cases + 11)).into_shape(&image(format, ic, hw)).unwrap();
            let (differ, of) = differing_bits(theirs, ours, input);
            assert_eq!(differ, 0, "{what}: {differ} of {of} points differ");
            cases += 1;
        }
        assert_eq!(cases, 5);
    }

    #[test]
    fn the_portable_loop_gives_the_vector_loops_numbers() {
        // The direct convolution's arithmetic (with its unfused points), then a matrix product's, channels first and
        // last.
        for (format, ic, oc, hw, k, s, pads) in [
            (DataFormat::NCHW, 3, 24, [256, 256], [5, 5], [2, 2], [1, 1, 2, 2]),
            (DataFormat::NCHW, 3, 24, [128, 128], [5, 5], [2, 2], [1, 1, 2, 2]),
            (DataFormat::NHWC, 3, 40, [33, 47], [3, 3], [2, 2], [0, 0, 1, 1]),
        ] {
            let [_, ours] = plans_in(format, ic, oc, hw, k, s, pads);
            let Some(op) = ours.nodes.iter().find_map(|n| n.op_as::<SpatialConv>()) else {
                eprintln!("skipped: no AVX2 and FMA here, so no SpatialConv in the plan");
                return;
            };
            if op.bias_last {
                assert!(op.unfused.is_empty());
            } else {
                assert!(!op.unfused.is_empty() && op.unfused.len() < op.oh * op.ow / 4, "{}", op.unfused.len());
            }
            let x = noise(ic * hw[0] * hw[1], 3);
            let kernel = noise(oc * op.taps(), 4);
            let b = noise(oc, 5);
            let mut e = Vec::new();
            op.phases(&x, &mut e);
            let mut fast = vec![f32::NAN; oc * op.oh * op.ow];
            op.run(&x, &kernel, &b, &mut fast);
            let mut slow = vec![f32::NAN; fast.len()];
            op.fused_portable(&e, &kernel, &b, &mut slow);
            op.unfused_points(&e, &kernel, &b, &mut slow);
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&fast), bits(&slow), "{format:?} {hw:?}");
        }
    }
}

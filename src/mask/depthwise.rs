//! A depthwise convolution for tract plans (MobileNetV2's and BlazeFace's 3 × 3 and 5 × 5 per-channel filters).
//!
//! tract 0.23's own `DepthWise` walks each output point through its padding zones, which costs more than the
//! arithmetic: in the mask classifier it took ~9 ms of a ~21 ms run (2026-12-03), on 7 × 7 planes about one
//! multiply-add per nanosecond; `cargo bench --bench mask_ops` shows each network with and without this op. This op
//! pads each channel plane once into a scratch buffer, splits its columns by stride phase, and then every tap is one
//! multiply-add over a whole contiguous output row, a loop the compiler vectorises (AVX where the CPU has it, NEON on
//! the Pi); planes of up to 56 × 56 outputs go eight channels at a time through one interleaved scratch instead, and
//! a channels-last picture of up to 32 channels keeps each point in registers. The arithmetic is tract's, in its
//! order (the bias, then each tap row by row, a multiply and an add, no fused multiply-add), so a plan gives the same
//! numbers with either op.
//!
//! [`replace_depthwise`] swaps it in for every float depthwise `Conv` of a decluttered model, before
//! `into_optimized`, and folds the clamps around it (MobileNetV2's ReLU6 = `Max` 0 then `Min` 6, before and after
//! each depthwise convolution; BlazeFace's ReLU comes after a residual sum and stays) into the op's passes over its
//! input and output: the same `max`/`min` per number.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::cnn::{Conv, KernelFormat, PaddingSpec};
use tract_onnx::tract_core::ops::math::{Max, Min};
use tract_onnx::tract_core::ops::nn::DataFormat;

/// One depthwise convolution: each channel filtered by its own `kh × kw` kernel (inputs: the picture, the kernel
/// as `[C, 1, kh, kw]`, the bias as `[C]`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Depthwise {
    /// Channels last (HWC, NHWC) rather than first (CHW, NCHW).
    channel_last: bool,
    /// A leading batch axis.
    batch: bool,
    kernel: [usize; 2],
    strides: [usize; 2],
    before: [usize; 2],
    after: [usize; 2],
    /// A folded clamp of the input, as the bits of `[low, high]` (`Max` then `Min` with a constant): MobileNetV2's
    /// ReLU6 before each depthwise convolution, done while the input is copied into the scratch anyway (tract would
    /// fold it into the matrix product before, except the first, which it leaves as a pass of its own).
    pre: [Option<u32>; 2],
    /// A folded clamp of the output, as the bits of `[low, high]` likewise: the ReLU6 after each one.
    post: [Option<u32>; 2],
}

/// Where the axes sit for one input shape.
#[derive(Clone, Copy, Debug)]
struct Geometry {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
}

impl Depthwise {
    fn geometry<D: Clone>(&self, shape: &[D], to_usize: impl Fn(&D) -> Option<usize>) -> TractResult<Geometry> {
        let dims: Vec<usize> = shape.iter().map(to_usize).collect::<Option<_>>().context("symbolic shape")?;
        let (n, rest) = if self.batch { (dims[0], &dims[1..]) } else { (1, &dims[..]) };
        ensure!(
            rest.len() == 3,
            "depthwise: expected a rank-{} picture, got {shape_len}",
            3 + self.batch as usize,
            shape_len = dims.len()
        );
        let (c, h, w) = if self.channel_last { (rest[2], rest[0], rest[1]) } else { (rest[0], rest[1], rest[2]) };
        let [kh, kw] = self.kernel;
        let (ph, pw) = (h + self.before[0] + self.after[0], w + self.before[1] + self.after[1]);
        ensure!(ph >= kh && pw >= kw, "depthwise: picture smaller than the kernel");
        Ok(Geometry { n, c, h, w, oh: (ph - kh) / self.strides[0] + 1, ow: (pw - kw) / self.strides[1] + 1 })
    }

    fn output_shape(&self, g: Geometry) -> Vec<usize> {
        let spatial = if self.channel_last { [g.oh, g.ow, g.c] } else { [g.c, g.oh, g.ow] };
        let mut shape = if self.batch { vec![g.n] } else { vec![] };
        shape.extend(spatial);
        shape
    }

    /// The folded clamp of the output, as `[low, high]`.
    fn clamp(&self) -> [Option<f32>; 2] {
        self.post.map(|b| b.map(f32::from_bits))
    }

    /// The folded clamp of the input, as `[low, high]`.
    fn pre_clamp(&self) -> [Option<f32>; 2] {
        self.pre.map(|b| b.map(f32::from_bits))
    }

    /// The loops for a picture of geometry `g`.
    fn loops_for(&self, g: Geometry) -> Loops {
        if self.channel_last {
            Loops::ChannelLast
        } else if g.oh * g.ow <= GROUPS_UP_TO {
            Loops::Groups
        } else {
            Loops::Planes
        }
    }

    /// Filter `x` into `out` (every point written).
    fn run(&self, x: &[f32], kernel: &[f32], bias: &[f32], g: Geometry, out: &mut [f32]) {
        self.run_with(self.loops_for(g), x, kernel, bias, g, out)
    }

    /// [`Depthwise::run`] with the given loops.
    fn run_with(&self, loops: Loops, x: &[f32], kernel: &[f32], bias: &[f32], g: Geometry, out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx") {
            // SAFETY: the CPU has AVX (checked just above).
            return unsafe { run_avx(loops, self, x, kernel, bias, g, out) };
        }
        run_any(loops, self, x, kernel, bias, g, out)
    }
}

impl Op for Depthwise {
    fn name(&self) -> StaticName {
        "SibiDepthwise".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "kernel {:?} strides {:?} padding {:?}/{:?} channel_last {} clamp {:?} input clamp {:?}",
            self.kernel,
            self.strides,
            self.before,
            self.after,
            self.channel_last,
            self.clamp(),
            self.pre_clamp()
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for Depthwise {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (x, kernel, bias) = args_3!(inputs);
        let g = self.geometry(x.shape(), |d| Some(*d))?;
        let [kh, kw] = self.kernel;
        ensure!(kernel.shape() == [g.c, 1, kh, kw], "depthwise: kernel shape {:?}", kernel.shape());
        ensure!(bias.len() == g.c || bias.len() == 1, "depthwise: {} biases for {} channels", bias.len(), g.c);
        let (xv, kv, bv) = (x.try_as_plain_ram()?, kernel.try_as_plain_ram()?, bias.try_as_plain_ram()?);
        let mut t = Tensor::zero::<f32>(&self.output_shape(g))?;
        {
            let mut view = t.try_as_plain_ram_mut()?;
            self.run(
                xv.as_slice::<f32>()?,
                kv.as_slice::<f32>()?,
                bv.as_slice::<f32>()?,
                g,
                view.as_slice_mut::<f32>()?,
            );
        }
        Ok(tvec!(t.into_tvalue()))
    }
}

impl TypedOp for Depthwise {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs[0].datum_type == f32::datum_type(), "depthwise: f32 only");
        let g = self.geometry(&inputs[0].shape.to_tvec(), |d| d.to_usize().ok())?;
        Ok(tvec!(f32::fact(self.output_shape(g))))
    }

    as_op!();
}

/// Which loops run a picture.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Loops {
    /// [`run_channel_last`].
    ChannelLast,
    /// [`run_planes`].
    Planes,
    /// [`run_groups`].
    Groups,
}

/// Channels-first outputs of at most this many points a plane go through [`run_groups`] (MobileNetV2's 7 × 7 to
/// 56 × 56 planes, BlazeFace's 8 × 8 to 32 × 32), larger ones through [`run_planes`]. Measured per layer (min of 60
/// runs, A/B in one run) on the classifier, 2026-12-04: 7 × 7 and 14 × 14 1.15 → 0.54 ms, 28 × 28 0.39 → 0.28 ms,
/// 56 × 56 0.37 → 0.29 ms at stride 2 and even at stride 1; BlazeFace's totals neither gain nor lose.
const GROUPS_UP_TO: usize = 56 * 56;

/// The loops compiled for the build's baseline (SSE2 on x86-64, NEON on aarch64).
fn run_any(loops: Loops, op: &Depthwise, x: &[f32], kernel: &[f32], bias: &[f32], g: Geometry, out: &mut [f32]) {
    run_loops(loops, false, op, x, kernel, bias, g, out)
}

/// The same loops vectorised 8 wide.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn run_avx(loops: Loops, op: &Depthwise, x: &[f32], kernel: &[f32], bias: &[f32], g: Geometry, out: &mut [f32]) {
    run_loops(loops, true, op, x, kernel, bias, g, out)
}

/// `avx`: compiled into [`run_avx`], which runs only on a CPU with AVX (so AVX intrinsics may be called).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn run_loops(
    loops: Loops,
    avx: bool,
    op: &Depthwise,
    x: &[f32],
    kernel: &[f32],
    bias: &[f32],
    g: Geometry,
    out: &mut [f32],
) {
    match loops {
        Loops::ChannelLast => run_channel_last(op, x, kernel, bias, g, out),
        Loops::Planes => run_planes(op, x, kernel, bias, g, out),
        Loops::Groups => run_groups(op, avx, x, kernel, bias, g, out),
    }
}

/// Channels last: every output point is the bias vector plus, per tap, the kernel's channel vector times the input
/// point's channel vector (both contiguous). The picture is padded once, so no tap needs an edge test. With up to 32
/// channels (MobileNetV2's first depthwise convolution, the only channel-last one here) a point's channels stay in
/// registers through all its taps ([`LastRows::run`]: 0.46 → 0.27 ms, min of 60, A/B in one run, 2026-12-04); otherwise the taps go
/// one at a time over a whole output row, which stays in the first-level cache. Transposing to planes and back would
/// cost more than either.
#[inline(always)]
fn run_channel_last(op: &Depthwise, x: &[f32], kernel: &[f32], bias: &[f32], g: Geometry, out: &mut [f32]) {
    let [kh, kw] = op.kernel;
    let (ph, pw) = (g.h + op.before[0] + op.after[0], g.w + op.before[1] + op.after[1]);
    // The kernel tap-major, [kh * kw][C], and the bias one per channel.
    let mut taps = vec![0f32; kh * kw * g.c];
    for c in 0..g.c {
        for t in 0..kh * kw {
            taps[t * g.c + c] = kernel[c * kh * kw + t];
        }
    }
    let bias: Vec<f32> = (0..g.c).map(|c| bias[if bias.len() == 1 { 0 } else { c }]).collect();
    let mut padded = vec![0f32; ph * pw * g.c];
    for n in 0..g.n {
        let img = &x[n * g.h * g.w * g.c..][..g.h * g.w * g.c];
        for (y, row) in img.chunks_exact(g.w * g.c).enumerate() {
            clamp_into(
                &mut padded[((y + op.before[0]) * pw + op.before[1]) * g.c..][..g.w * g.c],
                Some(row),
                op.pre_clamp(),
            );
        }
        let dst = &mut out[n * g.oh * g.ow * g.c..][..g.oh * g.ow * g.c];
        let rows = LastRows { padded: &padded, taps: &taps, bias: &bias, op, g, pw };
        match (g.c, op.kernel) {
            // The kernel's size known too: the nine taps unrolled.
            (32, [3, 3]) => rows.run::<32>([3, 3], dst),
            (32, k) => rows.run::<32>(k, dst),
            (24, k) => rows.run::<24>(k, dst),
            (16, k) => rows.run::<16>(k, dst),
            (8, k) => rows.run::<8>(k, dst),
            _ => rows.run_any(dst),
        }
    }
}

/// [`run_channel_last`]'s output loops, over the padded picture.
struct LastRows<'a> {
    /// The padded (and clamped) picture.
    padded: &'a [f32],
    /// The kernel tap-major, `[kh * kw][C]`.
    taps: &'a [f32],
    bias: &'a [f32],
    op: &'a Depthwise,
    g: Geometry,
    /// The padded picture's width.
    pw: usize,
}

impl LastRows<'_> {
    /// Every output point, any number of channels: the taps one at a time over a whole output row (which stays in
    /// the first-level cache), each point's channels loaded and stored per tap.
    #[inline(always)]
    fn run_any(&self, dst: &mut [f32]) {
        let (op, g, bias, taps) = (self.op, self.g, self.bias, self.taps);
        let ([kh, kw], [sh, sw], pw) = (op.kernel, op.strides, self.pw);
        let padded = self.padded;
        for (oy, orow) in dst.chunks_exact_mut(g.ow * g.c).enumerate() {
            for o in orow.chunks_exact_mut(g.c) {
                o.copy_from_slice(bias);
            }
            for ky in 0..kh {
                let line = &padded[(oy * sh + ky) * pw * g.c..][..pw * g.c];
                for kx in 0..kw {
                    let tap = &taps[(ky * kw + kx) * g.c..][..g.c];
                    for (ox, o) in orow.chunks_exact_mut(g.c).enumerate() {
                        let src = &line[(ox * sw + kx) * g.c..][..g.c];
                        for ((d, v), k) in o.iter_mut().zip(src).zip(tap) {
                            *d += k * v;
                        }
                    }
                }
            }
            clamp_into(orow, None, op.clamp());
        }
    }

    /// Every output point, all its `C` channels kept in registers (side by side) through the bias and every tap
    /// in order, stored once.
    #[inline(always)]
    fn run<const C: usize>(&self, [kh, kw]: [usize; 2], dst: &mut [f32]) {
        let g = self.g;
        debug_assert_eq!(g.c, C);
        let [sh, sw] = self.op.strides;
        let post = self.op.clamp();
        let bias: &[f32; C] = self.bias.try_into().unwrap();
        let point = |s: &[f32], at: usize| -> [f32; C] { s[at * C..][..C].try_into().unwrap() };
        for (oy, orow) in dst.chunks_exact_mut(g.ow * C).enumerate() {
            for (ox, o) in orow.chunks_exact_mut(C).enumerate() {
                let mut acc = *bias;
                for ky in 0..kh {
                    let line = (oy * sh + ky) * self.pw + ox * sw;
                    for kx in 0..kw {
                        let (v, w) = (point(self.padded, line + kx), point(self.taps, ky * kw + kx));
                        for i in 0..C {
                            acc[i] += w[i] * v[i];
                        }
                    }
                }
                for (d, a) in o.iter_mut().zip(acc) {
                    *d = clamped(a, post);
                }
            }
        }
    }
}

/// `dst = src` (or `dst` in place without a `src`), each number through `max(low)` then `min(high)` where they are
/// set: tract's `Max` and `Min` on f32.
#[inline(always)]
fn clamp_into(dst: &mut [f32], src: Option<&[f32]>, [low, high]: [Option<f32>; 2]) {
    #[inline(always)]
    fn each(dst: &mut [f32], src: Option<&[f32]>, f: impl Fn(f32) -> f32) {
        match src {
            Some(src) => dst.iter_mut().zip(src).for_each(|(d, s)| *d = f(*s)),
            None => dst.iter_mut().for_each(|d| *d = f(*d)),
        }
    }
    match (low, high) {
        (None, None) => {
            if let Some(src) = src {
                dst.copy_from_slice(src)
            }
        }
        (Some(l), None) => each(dst, src, |v| v.max(l)),
        (None, Some(h)) => each(dst, src, |v| v.min(h)),
        (Some(l), Some(h)) => each(dst, src, |v| v.max(l).min(h)),
    }
}

/// Channels per group in [`run_groups`]: one AVX vector.
const LANES: usize = 8;

/// Channels first, for small planes: [`LANES`] channels at a time, their planes padded and interleaved into one
/// scratch of `[LANES]` points, so that every tap of an output point is one multiply-add over a group's channels
/// (the kernel's tap for those channels is contiguous too). On MobileNetV2's 7 × 7 and 14 × 14 planes the per-plane
/// set-up of [`run_planes`] cost more than its arithmetic; here it is paid once a group. Moving the planes in and out
/// is an 8 × 8 transpose (AVX shuffles on x86-64; number by number elsewhere and for a short last group), and was
/// two thirds of the time while it went number by number everywhere. The same numbers: the bias, then each tap in
/// order, a multiply and an add.
#[inline(always)]
fn run_groups(op: &Depthwise, avx: bool, x: &[f32], kernel: &[f32], bias: &[f32], g: Geometry, out: &mut [f32]) {
    let [kh, kw] = op.kernel;
    let pw = g.w + op.before[1] + op.after[1];
    let ph = g.h + op.before[0] + op.after[0];
    let n_taps = kh * kw;
    // The padding is never written, so it stays zero; a short last group leaves stale lanes that are never stored.
    let mut scratch = vec![[0f32; LANES]; ph * pw];
    let mut tile = vec![[0f32; LANES]; g.oh * g.ow];
    let mut taps = vec![[0f32; LANES]; n_taps];
    let (pre, post) = (op.pre_clamp(), op.clamp());
    let (plane_len, out_len) = (g.h * g.w, g.oh * g.ow);
    // Where each point of an input plane goes in the scratch.
    let at: Vec<usize> = (0..plane_len).map(|p| (p / g.w + op.before[0]) * pw + p % g.w + op.before[1]).collect();
    for n in 0..g.n {
        for c0 in (0..g.c).step_by(LANES) {
            let lanes = LANES.min(g.c - c0);
            let mut b = [0f32; LANES];
            for l in 0..lanes {
                let c = c0 + l;
                b[l] = bias[if bias.len() == 1 { 0 } else { c }];
                for (t, w) in taps.iter_mut().zip(&kernel[c * n_taps..][..n_taps]) {
                    t[l] = *w;
                }
            }
            let planes = &x[(n * g.c + c0) * plane_len..][..lanes * plane_len];
            // Into the scratch: a whole group eight points at a time by AVX transposes where the CPU has them, the
            // rest one number at a time.
            let moved = if lanes == LANES && avx { transpose_in(planes, &at, &mut scratch, pre) } else { 0 };
            for l in 0..lanes {
                for p in moved..plane_len {
                    scratch[at[p]][l] = clamped(planes[l * plane_len + p], pre);
                }
            }
            let points = Points { scratch: &scratch, taps: &taps, bias: b, strides: op.strides, pitch: pw };
            if op.kernel == [3, 3] {
                // The same loops with the kernel's size known: the nine taps unrolled.
                points.run([3, 3], &mut tile, g.ow);
            } else {
                points.run(op.kernel, &mut tile, g.ow);
            }
            // Out of the tile likewise.
            let dst = &mut out[(n * g.c + c0) * out_len..][..lanes * out_len];
            let moved = if lanes == LANES && avx { transpose_out(&tile, dst, post) } else { 0 };
            for l in 0..lanes {
                for p in moved..out_len {
                    dst[l * out_len + p] = clamped(tile[p][l], post);
                }
            }
        }
    }
}

/// The first points of a whole group's `planes` (each `at.len()` long) into the scratch at `at`, clamped; returns
/// how many points it moved (a multiple of [`LANES`]; 0 off x86-64). Only for [`run_loops`]' `avx`.
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))] // the AVX loop is all that reads them
#[inline(always)]
fn transpose_in(planes: &[f32], at: &[usize], scratch: &mut [[f32; LANES]], clamp: [Option<f32>; 2]) -> usize {
    let plane_len = at.len();
    let whole = plane_len / LANES * LANES;
    assert!(planes.len() >= LANES * plane_len);
    #[cfg(target_arch = "x86_64")]
    for p0 in (0..whole).step_by(LANES) {
        // SAFETY: AVX is there (called only with run_loops' `avx`); every load is inside `planes` (p0 + 8 <= whole <=
        // plane_len, checked above) and every store inside one scratch point (indexed with bounds checks).
        unsafe {
            let rows = avx::load8(|l| planes.as_ptr().add(l * plane_len + p0));
            let cols = avx::transpose(rows);
            for (j, col) in cols.into_iter().enumerate() {
                avx::store(scratch[at[p0 + j]].as_mut_ptr(), avx::clamp(col, clamp));
            }
        }
    }
    if cfg!(target_arch = "x86_64") { whole } else { 0 }
}

/// The first points of a whole group's `tile` out into its planes in `dst`, clamped; returns how many points it moved
/// (as [`transpose_in`]).
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))] // the AVX loop is all that reads them
#[inline(always)]
fn transpose_out(tile: &[[f32; LANES]], dst: &mut [f32], clamp: [Option<f32>; 2]) -> usize {
    let out_len = tile.len();
    let whole = out_len / LANES * LANES;
    assert!(dst.len() >= LANES * out_len);
    #[cfg(target_arch = "x86_64")]
    for p0 in (0..whole).step_by(LANES) {
        // SAFETY: AVX is there (called only with run_loops' `avx`); loads are eight whole tile points (p0 + 8 <= out_len),
        // stores eight numbers of one plane inside `dst` (checked above).
        unsafe {
            let points = avx::load8(|j| tile[p0 + j].as_ptr());
            let runs = avx::transpose(points);
            for (l, run) in runs.into_iter().enumerate() {
                avx::store(dst.as_mut_ptr().add(l * out_len + p0), avx::clamp(run, clamp));
            }
        }
    }
    if cfg!(target_arch = "x86_64") { whole } else { 0 }
}

/// The AVX pieces of [`transpose_in`] and [`transpose_out`].
#[cfg(target_arch = "x86_64")]
mod avx {
    use std::arch::x86_64::*;

    /// Eight vectors, the `i`-th loaded from `at(i)` (eight floats each).
    #[inline]
    #[target_feature(enable = "avx")]
    pub unsafe fn load8(at: impl Fn(usize) -> *const f32) -> [__m256; 8] {
        // SAFETY: the caller's pointers each have eight floats.
        unsafe {
            [
                _mm256_loadu_ps(at(0)),
                _mm256_loadu_ps(at(1)),
                _mm256_loadu_ps(at(2)),
                _mm256_loadu_ps(at(3)),
                _mm256_loadu_ps(at(4)),
                _mm256_loadu_ps(at(5)),
                _mm256_loadu_ps(at(6)),
                _mm256_loadu_ps(at(7)),
            ]
        }
    }

    /// Store `v` at `to` (eight floats).
    #[inline]
    #[target_feature(enable = "avx")]
    pub unsafe fn store(to: *mut f32, v: __m256) {
        // SAFETY: the caller's pointer has room for eight floats.
        unsafe { _mm256_storeu_ps(to, v) }
    }

    /// The 8 × 8 block with rows `r` transposed: `out[j][i] == r[i][j]`.
    #[inline]
    #[target_feature(enable = "avx")]
    pub fn transpose(r: [__m256; 8]) -> [__m256; 8] {
        let t0 = _mm256_unpacklo_ps(r[0], r[1]);
        let t1 = _mm256_unpackhi_ps(r[0], r[1]);
        let t2 = _mm256_unpacklo_ps(r[2], r[3]);
        let t3 = _mm256_unpackhi_ps(r[2], r[3]);
        let t4 = _mm256_unpacklo_ps(r[4], r[5]);
        let t5 = _mm256_unpackhi_ps(r[4], r[5]);
        let t6 = _mm256_unpacklo_ps(r[6], r[7]);
        let t7 = _mm256_unpackhi_ps(r[6], r[7]);
        let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
        let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
        let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
        let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
        let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
        let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
        let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
        let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
        [
            _mm256_permute2f128_ps::<0x20>(u0, u4),
            _mm256_permute2f128_ps::<0x20>(u1, u5),
            _mm256_permute2f128_ps::<0x20>(u2, u6),
            _mm256_permute2f128_ps::<0x20>(u3, u7),
            _mm256_permute2f128_ps::<0x31>(u0, u4),
            _mm256_permute2f128_ps::<0x31>(u1, u5),
            _mm256_permute2f128_ps::<0x31>(u2, u6),
            _mm256_permute2f128_ps::<0x31>(u3, u7),
        ]
    }

    /// `v` through `max(low)` then `min(high)` where they are set: the numbers [`super::clamped`] gives (the
    /// network test checks every output bit).
    #[inline]
    #[target_feature(enable = "avx")]
    pub fn clamp(v: __m256, [low, high]: [Option<f32>; 2]) -> __m256 {
        let v = low.map_or(v, |l| _mm256_max_ps(v, _mm256_set1_ps(l)));
        high.map_or(v, |h| _mm256_min_ps(v, _mm256_set1_ps(h)))
    }
}

/// One group's output points, from its interleaved scratch.
struct Points<'a> {
    scratch: &'a [[f32; LANES]],
    /// The group's kernel, tap by tap.
    taps: &'a [[f32; LANES]],
    bias: [f32; LANES],
    strides: [usize; 2],
    /// The scratch's row pitch, in points.
    pitch: usize,
}

impl Points<'_> {
    /// Every point of `tile` (rows of `ow`): the bias, then each tap in order, a multiply and an add per lane.
    #[inline(always)]
    fn run(&self, [kh, kw]: [usize; 2], tile: &mut [[f32; LANES]], ow: usize) {
        let [sh, sw] = self.strides;
        for (oy, orow) in tile.chunks_exact_mut(ow).enumerate() {
            for (ox, o) in orow.iter_mut().enumerate() {
                let mut acc = self.bias;
                for ky in 0..kh {
                    let line = &self.scratch[(oy * sh + ky) * self.pitch + ox * sw..][..kw];
                    for (v, k) in line.iter().zip(&self.taps[ky * kw..][..kw]) {
                        for l in 0..LANES {
                            acc[l] += k[l] * v[l];
                        }
                    }
                }
                *o = acc;
            }
        }
    }
}

/// `v` through `max(low)` then `min(high)` where they are set (one number of [`clamp_into`]).
#[inline(always)]
fn clamped(v: f32, [low, high]: [Option<f32>; 2]) -> f32 {
    let v = low.map_or(v, |l| v.max(l));
    high.map_or(v, |h| v.min(h))
}

/// Channels first, one plane at a time, padded once into a scratch plane split by stride phase (row phase and column
/// phase), so that every tap is one multiply-add over a single contiguous run: a block of output rows, laid out with
/// the scratch's row pitch (the few columns past the output's width are computed and dropped). Long runs keep the
/// vector loop busy even on MobileNetV2's 7 × 7 planes.
#[inline(always)]
fn run_planes(op: &Depthwise, x: &[f32], kernel: &[f32], bias: &[f32], g: Geometry, out: &mut [f32]) {
    let [kh, kw] = op.kernel;
    let [sh, sw] = op.strides;
    let (ph, pw) = (g.h + op.before[0] + op.after[0], g.w + op.before[1] + op.after[1]);
    // Phase (r, q) holds the padded points (r + i sh, q + j sw) at (i, j): a tap (ky, kx) of output (oy, ox) reads
    // phase (ky % sh, kx % sw) at (oy + ky / sh, ox + kx / sw).
    let (phase_h, phase_w) = (ph.div_ceil(sh), pw.div_ceil(sw));
    let phase_len = phase_h * phase_w;
    let mut scratch = vec![0f32; sh * sw * phase_len];
    // One padded row, rounded up to whole column phases (its padding stays zero; the middle is overwritten per row).
    let mut line = vec![0f32; sw * phase_w];
    // The output in blocks of rows whose run (about 8 KB) stays in the first-level cache across the taps.
    let block_rows = (2048 / phase_w).clamp(1, g.oh);
    let mut acc = vec![0f32; (block_rows - 1) * phase_w + g.ow];
    for n in 0..g.n {
        for c in 0..g.c {
            let plane = &x[(n * g.c + c) * g.h * g.w..][..g.h * g.w];
            scratch.fill(0.0);
            for (y, row) in plane.chunks_exact(g.w).enumerate() {
                let py = y + op.before[0];
                let (r, i) = (py % sh, py / sh);
                let rows = &mut scratch[r * sw * phase_len..][..sw * phase_len];
                if sw == 1 {
                    clamp_into(&mut rows[i * phase_w + op.before[1]..][..g.w], Some(row), op.pre_clamp());
                    continue;
                }
                clamp_into(&mut line[op.before[1]..][..g.w], Some(row), op.pre_clamp());
                // The padded row is in line: deal its columns out to the column phases.
                if sw == 2 {
                    let (even, odd) = rows.split_at_mut(phase_len);
                    let (even, odd) = (&mut even[i * phase_w..][..phase_w], &mut odd[i * phase_w..][..phase_w]);
                    let line = &line[..2 * phase_w];
                    for j in 0..phase_w {
                        even[j] = line[2 * j];
                        odd[j] = line[2 * j + 1];
                    }
                } else {
                    for q in 0..sw {
                        let dst = &mut rows[q * phase_len + i * phase_w..][..phase_w];
                        for (d, v) in dst.iter_mut().zip(line[q..].iter().step_by(sw)) {
                            *d = *v;
                        }
                    }
                }
            }
            let taps = &kernel[c * kh * kw..][..kh * kw];
            let dst = &mut out[(n * g.c + c) * g.oh * g.ow..][..g.oh * g.ow];
            for top in (0..g.oh).step_by(block_rows) {
                let rows = block_rows.min(g.oh - top);
                let acc = &mut acc[..(rows - 1) * phase_w + g.ow];
                acc.fill(bias[if bias.len() == 1 { 0 } else { c }]);
                let len = acc.len();
                let src = |ky: usize, kx: usize| {
                    let phase = &scratch[((ky % sh) * sw + kx % sw) * phase_len..][..phase_len];
                    &phase[(top + ky / sh) * phase_w + kx / sw..][..len]
                };
                if (kh, kw) == (3, 3) {
                    // All nine taps in one pass over the run, still row by row.
                    let at = |t: usize| src(t / 3, t % 3);
                    let w: [f32; 9] = std::array::from_fn(|t| taps[t]);
                    taps_row(std::array::from_fn::<_, 9, _>(at), w, acc);
                } else {
                    for ky in 0..kh {
                        let row = &taps[ky * kw..][..kw];
                        match kw {
                            5 => taps_row(
                                [src(ky, 0), src(ky, 1), src(ky, 2), src(ky, 3), src(ky, 4)],
                                [row[0], row[1], row[2], row[3], row[4]],
                                acc,
                            ),
                            _ => (0..kw).for_each(|kx| taps_row([src(ky, kx)], [row[kx]], acc)),
                        }
                    }
                }
                store_block(acc, dst, top, rows, phase_w, g.ow, op.clamp());
            }
        }
    }
}

/// The finished block of `rows` output rows from `top`, laid out in `acc` with the scratch's pitch, into the plane
/// `dst` (clamped where a clamp was folded in).
#[inline(always)]
fn store_block(
    acc: &[f32],
    dst: &mut [f32],
    top: usize,
    rows: usize,
    pitch: usize,
    ow: usize,
    clamp: [Option<f32>; 2],
) {
    for (oy, orow) in dst[top * ow..][..rows * ow].chunks_exact_mut(ow).enumerate() {
        clamp_into(orow, Some(&acc[oy * pitch..][..ow]), clamp);
    }
}

/// Taps over a run: `acc[i] += w[0] * src[0][i]`, then `+= w[1] * src[1][i]`, ... (one multiply
/// and one add each, in tap order: tract's rounding), with `acc[i]` loaded and stored once for them all.
#[inline(always)]
fn taps_row<const N: usize>(src: [&[f32]; N], w: [f32; N], acc: &mut [f32]) {
    let len = acc.len();
    let src = src.map(|s| &s[..len]);
    for (i, a) in acc.iter_mut().enumerate() {
        let mut v = *a;
        for t in 0..N {
            v += w[t] * src[t][i];
        }
        *a = v;
    }
}

/// Replace every float depthwise convolution of `model` (decluttered, not yet optimised) that [`Depthwise`] can
/// run: one filter per channel, an f32 `[C, 1, kh, kw]` kernel and a `[C]` or scalar bias, no dilation, explicit
/// padding. A `Max` and then a `Min` with a constant right after one (the only reader of its output) go into it, and
/// so do those that make its input when it is their only reader. Returns what was replaced; the others stay tract's.
pub fn replace_depthwise(model: &mut TypedModel) -> TractResult<Replaced> {
    let mut done = Replaced::default();
    for id in model.eval_order()? {
        let node = model.node(id);
        let Some(conv) = node.op_as::<Conv>() else { continue };
        let Some(mut op) = depthwise_for(model, node, conv)? else { continue };
        // The clamp: up to a Max then a Min, each the single reader of what came before it.
        let mut last = id;
        if let Some((low, next)) = clamp_after(model, last, true)? {
            op.post[0] = Some(low.to_bits());
            last = next;
        }
        if let Some((high, next)) = clamp_after(model, last, false)? {
            op.post[1] = Some(high.to_bits());
            last = next;
        }
        // The input's clamp: a Max then a Min, or either alone, each read by nothing else.
        let mut inputs: Vec<OutletId> = node.inputs.clone();
        if let Some((high, from)) = clamp_before(model, inputs[0], false)? {
            op.pre[1] = Some(high.to_bits());
            inputs[0] = from;
        }
        if let Some((low, from)) = clamp_before(model, inputs[0], true)? {
            op.pre[0] = Some(low.to_bits());
            inputs[0] = from;
        }
        let mut patch = TypedModelPatch::default();
        let inputs = patch.taps(model, &inputs)?;
        let wire = patch.wire_node(&node.name, op.clone(), &inputs)?[0];
        patch.shunt_outside(model, OutletId::new(last, 0), wire)?;
        patch.obliterate(id)?;
        patch.apply(model)?;
        done.convolutions += 1;
        done.clamped += op.post.iter().any(Option::is_some) as usize;
        done.input_clamped += op.pre.iter().any(Option::is_some) as usize;
    }
    Ok(done)
}

/// What [`replace_depthwise`] did to a model.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Replaced {
    /// Depthwise convolutions now run by [`Depthwise`].
    pub convolutions: usize,
    /// How many of them also took the clamp that followed.
    pub clamped: usize,
    /// How many of them also took the clamp before them.
    pub input_clamped: usize,
}

/// The constant and the input of the `Max` (or `Min`) with an f32 scalar constant that makes `outlet`, when nothing
/// else reads it.
fn clamp_before(model: &TypedModel, outlet: OutletId, is_max: bool) -> TractResult<Option<(f32, OutletId)>> {
    let node = model.node(outlet.node);
    if node.outputs.len() != 1 || node.outputs[0].successors.len() != 1 || model.outputs.contains(&outlet) {
        return Ok(None);
    }
    let Some(&from) = node.inputs.iter().find(|i| model.outlet_fact(**i).is_ok_and(|f| f.konst.is_none())) else {
        return Ok(None);
    };
    Ok(scalar_bound(model, node, is_max, from)?.map(|k| (k, from)))
}

/// The constant and the node of a `Max` (or `Min`) of `node`'s single output, its only reader, with an f32 scalar
/// constant.
pub(super) fn clamp_after(model: &TypedModel, node: usize, is_max: bool) -> TractResult<Option<(f32, usize)>> {
    let outlet = OutletId::new(node, 0);
    if model.node(node).outputs.len() != 1 || model.outputs.contains(&outlet) {
        return Ok(None);
    }
    let Some(next) = model.single_succ(node)? else { return Ok(None) };
    Ok(scalar_bound(model, next, is_max, outlet)?.map(|k| (k, next.id)))
}

/// `k` when `node` is `Max(x, k)` (or `Min`), either way round, with `k` an f32 scalar constant and a result of
/// `x`'s own type and shape.
fn scalar_bound(model: &TypedModel, node: &TypedNode, is_max: bool, x: OutletId) -> TractResult<Option<f32>> {
    let Some(bin) = node.op_as::<TypedBinOp>() else { return Ok(None) };
    if bin.1.is_some() || if is_max { !bin.0.is::<Max>() } else { !bin.0.is::<Min>() } {
        return Ok(None);
    }
    let other = match node.inputs.iter().position(|i| *i == x) {
        Some(at) if node.inputs.len() == 2 => node.inputs[1 - at],
        _ => return Ok(None),
    };
    let Some(k) = model.outlet_fact(other)?.konst.clone() else { return Ok(None) };
    if k.datum_type() != f32::datum_type()
        || k.len() != 1
        || model.outlet_fact(OutletId::new(node.id, 0))? != model.outlet_fact(x)?
    {
        return Ok(None);
    }
    Ok(Some(k.try_as_plain_ram()?.as_slice::<f32>()?[0]))
}

/// A two-axis pooling spec's padding before and after and its strides, where the padding is explicit (or none).
pub(super) fn planar_geometry(
    spec: &tract_onnx::tract_core::ops::cnn::PoolSpec,
) -> Option<([usize; 2], [usize; 2], [usize; 2])> {
    let (before, after) = match &spec.padding {
        PaddingSpec::Valid => ([0, 0], [0, 0]),
        PaddingSpec::Explicit(b, a) if b.len() == 2 && a.len() == 2 => ([b[0], b[1]], [a[0], a[1]]),
        _ => return None,
    };
    Some((before, after, spec.strides.as_ref().map_or([1, 1], |s| [s[0], s[1]])))
}

fn depthwise_for(model: &TypedModel, node: &TypedNode, conv: &Conv) -> TractResult<Option<Depthwise>> {
    let spec = &conv.pool_spec;
    if conv.q_params.is_some()
        || node.inputs.len() != 3
        || conv.kernel_fmt != KernelFormat::OIHW
        || spec.kernel_shape.len() != 2
        || conv.group != spec.input_channels
        || spec.input_channels != spec.output_channels
        || spec.dilations.as_ref().is_some_and(|d| d.iter().any(|&d| d != 1))
    {
        return Ok(None);
    }
    let x = model.outlet_fact(node.inputs[0])?;
    let kernel = model.outlet_fact(node.inputs[1])?;
    let bias = model.outlet_fact(node.inputs[2])?;
    let c = spec.input_channels;
    let [kh, kw] = [spec.kernel_shape[0], spec.kernel_shape[1]];
    let plain_f32 = |f: &TypedFact| f.datum_type == f32::datum_type() && f.is_plain();
    if !plain_f32(x)
        || !plain_f32(kernel)
        || !plain_f32(bias)
        || kernel.shape.as_concrete() != Some(&[c, 1, kh, kw][..])
        || !matches!(bias.shape.as_concrete(), Some([]) | Some([1])) && bias.shape.as_concrete() != Some(&[c][..])
    {
        return Ok(None);
    }
    let Some((before, after, strides)) = planar_geometry(spec) else { return Ok(None) };
    let (channel_last, batch) = match spec.data_format {
        DataFormat::NCHW => (false, true),
        DataFormat::CHW => (false, false),
        DataFormat::NHWC => (true, true),
        DataFormat::HWC => (true, false),
    };
    if strides.contains(&0) || x.rank() != 3 + batch as usize {
        return Ok(None);
    }
    Ok(Some(Depthwise {
        channel_last,
        batch,
        kernel: [kh, kw],
        strides,
        before,
        after,
        pre: [None; 2],
        post: [None; 2],
    }))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// The textbook definition, one output point at a time.
    fn reference(op: &Depthwise, x: &[f32], kernel: &[f32], bias: &[f32], g: Geometry) -> Vec<f32> {
        let [kh, kw] = op.kernel;
        let mut out = Vec::new();
        let at = |n: usize, c: usize, y: usize, xx: usize| {
            let v = if op.channel_last {
                x[((n * g.h + y) * g.w + xx) * g.c + c]
            } else {
                x[((n * g.c + c) * g.h + y) * g.w + xx]
            };
            let [low, high] = op.pre_clamp();
            let v = low.map_or(v, |l| v.max(l));
            high.map_or(v, |h| v.min(h))
        };
        let value = |n: usize, c: usize, oy: usize, ox: usize| {
            let mut acc = bias[c];
            for ky in 0..kh {
                for kx in 0..kw {
                    let (y, xx) = (
                        (oy * op.strides[0] + ky) as isize - op.before[0] as isize,
                        (ox * op.strides[1] + kx) as isize - op.before[1] as isize,
                    );
                    if y >= 0 && xx >= 0 && (y as usize) < g.h && (xx as usize) < g.w {
                        acc += kernel[(c * kh + ky) * kw + kx] * at(n, c, y as usize, xx as usize);
                    }
                }
            }
            let [low, high] = op.clamp();
            let acc = low.map_or(acc, |l| acc.max(l));
            high.map_or(acc, |h| acc.min(h))
        };
        for n in 0..g.n {
            if op.channel_last {
                for oy in 0..g.oh {
                    for ox in 0..g.ow {
                        for c in 0..g.c {
                            out.push(value(n, c, oy, ox));
                        }
                    }
                }
            } else {
                for c in 0..g.c {
                    for oy in 0..g.oh {
                        for ox in 0..g.ow {
                            out.push(value(n, c, oy, ox));
                        }
                    }
                }
            }
        }
        out
    }

    /// Reproducible numbers in [-1, 1).
    pub(in crate::mask) fn noise(len: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect()
    }

    #[test]
    fn every_layout_stride_and_padding_matches_the_definition() {
        let (mut cases, mut shapes) = (0, 0usize);
        for channel_last in [false, true] {
            for batch in [false, true] {
                for (kernel, strides, before, after) in [
                    ([3, 3], [1, 1], [1, 1], [1, 1]),
                    ([3, 3], [2, 2], [0, 0], [1, 1]),
                    ([3, 3], [2, 2], [1, 1], [1, 1]),
                    ([5, 5], [1, 1], [2, 2], [2, 2]),
                    ([3, 5], [2, 1], [0, 2], [1, 0]),
                    ([1, 1], [1, 1], [0, 0], [0, 0]),
                ] {
                    for ((h, w), (low, high)) in [
                        ((7, 7), (None, None)),
                        ((8, 5), (Some(0.0f32), Some(0.25f32))),
                        ((3, 12), (Some(-0.1), None)),
                        ((6, 6), (None, Some(0.1))),
                    ] {
                        let post = [low.map(f32::to_bits), high.map(f32::to_bits)];
                        let pre = [high.map(|_| (-0.5f32).to_bits()), low.map(|_| 0.5f32.to_bits())];
                        let op = Depthwise { channel_last, batch, kernel, strides, before, after, pre, post };
                        let n = if batch { 2 } else { 1 };
                        // One whole group of channels and a short one, or one to four whole groups (the
                        // channel counts the channel-last loops keep in registers).
                        shapes += 1;
                        let c = [LANES + 3, 4 * LANES, 2 * LANES, 3 * LANES, LANES][shapes % 5];
                        let mut shape = if batch { vec![n] } else { vec![] };
                        shape.extend(if channel_last { [h, w, c] } else { [c, h, w] });
                        let Ok(g) = op.geometry(&shape, |d| Some(*d)) else { continue };
                        let x = noise(n * c * h * w, cases);
                        let k = noise(c * kernel[0] * kernel[1], cases + 1000);
                        let b = noise(c, cases + 2000);
                        let want = reference(&op, &x, &k, &b, g);
                        let loops: &[Loops] =
                            if channel_last { &[Loops::ChannelLast] } else { &[Loops::Planes, Loops::Groups] };
                        let mut first: Option<Vec<f32>> = None;
                        for &l in loops {
                            let mut got = vec![f32::NAN; g.n * g.c * g.oh * g.ow];
                            op.run_with(l, &x, &k, &b, g, &mut got);
                            assert_eq!(got.len(), want.len());
                            for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                                assert!((a - b).abs() <= 1e-5, "{l:?} {op:?} {shape:?} at {i}: {a} vs {b}");
                            }
                            assert_eq!(op.output_shape(g).iter().product::<usize>(), got.len());
                            // Every channels-first loop, and every build of each, gives the same bits (the
                            // arithmetic is one order).
                            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                            if let Some(first) = &first {
                                assert_eq!(bits(first), bits(&got), "{l:?} {op:?} {shape:?}");
                            }
                            // The baseline build of the same loops (no AVX: the transposes number by number).
                            let mut plain = vec![f32::NAN; got.len()];
                            run_any(l, &op, &x, &k, &b, g, &mut plain);
                            assert_eq!(bits(&plain), bits(&got), "baseline {l:?} {op:?} {shape:?}");
                            first.get_or_insert(got);
                            cases += 1;
                        }
                    }
                }
            }
        }
        assert!(cases >= 120, "{cases}");
    }
}

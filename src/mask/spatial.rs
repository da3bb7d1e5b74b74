//! A dense convolution over few input channels for tract plans: BlazeFace's first layer (3 → 24 channels, 5 × 5,
//! stride 2) on the long-range detector's 256 × 256 picture.
//!
//! tract 0.23 runs that layer as its `DirectSpatialConv`: four output channels at a time, eight points to a vector,
//! each stride-2 vector assembled from two loads and three shuffles, the input read again for every four channels —
//! 2.4 ms of the long-range detector's 14.3 (`cargo bench --bench mask_ops`, 2026-12-07). This op splits the
//! zero-padded input's columns by stride phase once, so every tap is one contiguous load, and keeps six output
//! channels of sixteen points in registers while it reads the input once per six channels.
//!
//! Every output point keeps tract's arithmetic: the bias, then each tap (input channel by channel, the kernel row by
//! row), with a fused multiply-add where tract's vector loop computes that point and a multiply and an add where its
//! scalar loop does (the last points of a run, and the runs down a column at the picture's edges). Which points are
//! which is read from tract's own zones of the convolution when the op is built (a tap on the padding multiplies a
//! zero and leaves the sum as it was, so taking every tap is the same as taking a zone's). So a plan gives the same
//! numbers with either op. tract's op is only this one on x86-64 with AVX2 and FMA (its `conv_w4` kernel), and only
//! for output rows of at least 128 points; [`replace_spatial`] swaps this op in exactly there, and elsewhere (the Pi's
//! aarch64, the short-range detector's 64-point rows, which tract runs as a matrix product) tract's stays.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::cnn::{Conv, KernelFormat};
use tract_onnx::tract_core::ops::nn::DataFormat;

/// Output channels kept in registers at once.
#[cfg(target_arch = "x86_64")]
const CHANNELS: usize = 6;
/// Output points per vector pair.
const POINTS: usize = 16;
/// tract's `DirectSpatialConv` takes convolutions with at most this many inputs per output point…
const MAX_TAPS: usize = 576;
/// …and output rows of at least this many points (tract-core 0.23's `MIN_DIRECT_SPATIAL_W`).
const MIN_ROW: usize = 128;

/// One group-1 convolution of a fixed NCHW picture (inputs: the picture, the kernel as `[oc, ic, kh, kw]`, the bias
/// as `[oc]` or one value).
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
    /// The points of an output plane (`y × ow + x`) that tract computes with a multiply and an add per tap rather
    /// than a fused multiply-add, in increasing order.
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
        vec![n, self.oc, self.oh, self.ow]
    }

    /// The zero-padded picture `x` (one image, `[ic, h, w]`), each row's columns split by stride phase: phase `q`,
    /// column `j` holds padded column `j × sw + q`, so a tap `(ky, kx)` of output row `oy` reads phase `kx % sw` of
    /// padded row `oy × sh + ky` from column `ox + kx / sw` on, contiguously.
    fn phases(&self, x: &[f32]) -> Vec<f32> {
        let (sw, cw, ph) = (self.strides[1], self.phase_width(), self.padded_height());
        let mut e = vec![0f32; self.ic * sw * ph * cw];
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
        e
    }

    /// Where tap `t` (`c`, `ky`, `kx`) of output point `(oy, 0)` starts in the phase scratch.
    fn tap_start(&self, t: usize, oy: usize) -> usize {
        let [kh, kw] = self.kernel;
        let (c, ky, kx) = (t / (kh * kw), t / kw % kh, t % kw);
        let (sw, cw, ph) = (self.strides[1], self.phase_width(), self.padded_height());
        ((c * sw + kx % sw) * ph + oy * self.strides[0] + ky) * cw + kx / sw
    }

    /// One image: `x` `[ic, h, w]` into `out` `[oc, oh, ow]`, `kernel` `[oc, taps]`, `bias` one per output channel.
    fn run(&self, x: &[f32], kernel: &[f32], bias: &[f32], out: &mut [f32]) {
        let e = self.phases(x);
        #[cfg(target_arch = "x86_64")]
        if tracts_kernel_is_fused() {
            // SAFETY: the CPU has AVX2 and FMA (that is what the check says).
            unsafe {
                self.fused_fma(&e, kernel, bias, out);
                self.unfused_avx2(&e, kernel, bias, out);
            }
            return;
        }
        self.fused_portable(&e, kernel, bias, out);
        self.unfused_points(&e, kernel, bias, out);
    }

    /// Every point with fused multiply-adds, one point at a time (`f32::mul_add`; where the CPU has no FMA: the
    /// op is only put in plans where it has, so this is for completeness and the test).
    fn fused_portable(&self, e: &[f32], kernel: &[f32], bias: &[f32], out: &mut [f32]) {
        let (taps, plane) = (self.taps(), self.oh * self.ow);
        for o in 0..self.oc {
            let k = &kernel[o * taps..][..taps];
            for oy in 0..self.oh {
                for ox in 0..self.ow {
                    let acc = (0..taps).fold(bias[o], |acc, t| k[t].mul_add(e[self.tap_start(t, oy) + ox], acc));
                    out[o * plane + oy * self.ow + ox] = acc;
                }
            }
        }
    }

    /// Overwrite the points tract computes without fused multiply-adds: the bias, then `sum + k × x` tap by tap
    /// (every output channel of a point at once, each its own sum in the same order).
    fn unfused_points(&self, e: &[f32], kernel: &[f32], bias: &[f32], out: &mut [f32]) {
        let (taps, plane, oc) = (self.taps(), self.oh * self.ow, self.oc);
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
                out[o * plane + p as usize] = sum;
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
        const LANES: usize = 8;
        const VECTORS: usize = 4;
        let (taps, plane, oc) = (self.taps(), self.oh * self.ow, self.oc);
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
                    out[(first + o) * plane + p as usize] = sum;
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
                        for (c, a) in acc.iter_mut().enumerate() {
                            let b = _mm256_set1_ps(*bias.get(g * CHANNELS + c).unwrap_or(&0.0));
                            *a = [b, b];
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
        let image = [self.ic, self.h, self.w];
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
        let mut t = Tensor::zero::<f32>(&self.output_shape(n))?;
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

/// Replace each float convolution of `model` (decluttered, not yet optimised) that tract would run as its
/// `DirectSpatialConv` on this machine with [`SpatialConv`]: group 1, channels first, an OIHW kernel, no dilation,
/// explicit padding, at most 576 inputs per output point, output channels a multiple of four, input and output rows
/// of at least 128 points, and a CPU with AVX2 and FMA. Returns how many were replaced; elsewhere tract's op stays.
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
    // tract's DirectSpatialConv is for NCHW only: a CHW or channels-last convolution stays its matrix product.
    if spec.data_format != DataFormat::NCHW
        || conv.q_params.is_some()
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
    if !plain_f32(x)
        || !plain_f32(kernel)
        || !plain_f32(bias)
        || dims.len() != 4
        || dims[1] != ic
        || kernel.shape.as_concrete() != Some(&[oc, ic, kh, kw][..])
        || !matches!(bias.shape.as_concrete(), Some([]) | Some([1])) && bias.shape.as_concrete() != Some(&[oc][..])
        || kh * kw < 2
        || ic * kh * kw > MAX_TAPS
        || !oc.is_multiple_of(4)
        || dims[3] < MIN_ROW
    {
        return Ok(None);
    }
    let Some((before, after, strides)) = super::depthwise::planar_geometry(spec) else { return Ok(None) };
    let (h, w) = (dims[2], dims[3]);
    if strides.contains(&0) || h + before[0] + after[0] < kh || w + before[1] + after[1] < kw {
        return Ok(None);
    }
    let oh = (h + before[0] + after[0] - kh) / strides[0] + 1;
    let ow = (w + before[1] + after[1] - kw) / strides[1] + 1;
    if ow < MIN_ROW {
        return Ok(None);
    }
    let Some(unfused) = unfused_points(spec, &x.shape, dims, [oh, ow])? else { return Ok(None) };
    Ok(Some(SpatialConv { ic, oc, h, w, kernel: [kh, kw], strides, before, after, oh, ow, unfused }))
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
        use tract_onnx::tract_core::ops::cnn::{PaddingSpec, PoolSpec};
        let mut m = TypedModel::default();
        let x = m.add_source("x", f32::fact([1, ic, hw[0], hw[1]])).unwrap();
        let kernel = tensor1(&noise(oc * ic * k[0] * k[1], 7)).into_shape(&[oc, ic, k[0], k[1]]).unwrap();
        let kernel = m.add_const("k", kernel).unwrap();
        let bias = m.add_const("b", tensor1(&noise(oc, 8))).unwrap();
        let pool_spec = PoolSpec {
            data_format: DataFormat::NCHW,
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

    #[test]
    fn the_portable_loop_gives_the_vector_loops_numbers() {
        let [_, ours] = plans(3, 24, [256, 256], [5, 5], [2, 2], [1, 1, 2, 2]);
        let Some(op) = ours.nodes.iter().find_map(|n| n.op_as::<SpatialConv>()) else {
            eprintln!("skipped: no AVX2 and FMA here, so no SpatialConv in the plan");
            return;
        };
        assert!(!op.unfused.is_empty() && op.unfused.len() < op.oh * op.ow / 4, "{}", op.unfused.len());
        let x = noise(3 * 256 * 256, 3);
        let k = noise(24 * 75, 4);
        let b = noise(24, 5);
        let e = op.phases(&x);
        let mut fast = vec![f32::NAN; 24 * op.oh * op.ow];
        op.run(&x, &k, &b, &mut fast);
        let mut slow = vec![f32::NAN; fast.len()];
        op.fused_portable(&e, &k, &b, &mut slow);
        op.unfused_points(&e, &k, &b, &mut slow);
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&fast), bits(&slow));
    }
}

//! A 1 × 1 convolution over channels-first planes for tract plans: the expansions and projections of MobileNetV2's
//! blocks on its larger planes and BlazeFace's, with the bias, the residual sum and the ReLU that follow it.
//!
//! tract 0.23 runs each as a matrix product: it first packs the activations into panels (copying the whole input),
//! then its AVX2 kernel takes a panel of up to 40 points by two to eight output channels at a time. On the
//! classifier's large early planes (784 to 12544 points) with few input channels (16 to 192) that packing and the
//! narrow tiles left it at 35 to 50 GFLOP/s where its later layers reach 60 to 69 (about 78 is this 2.45 GHz core's
//! peak; 2026-12-07). This op reads the activations where they lie (a channel's points are contiguous in a
//! channels-first plane, so sixteen points of one channel are two vector loads) and keeps six output channels of
//! sixteen points in registers, each weight broadcast once for them. It is also faster on 14 × 14 planes with small
//! weight matrices, slower on larger ones (it reads the weights again for every sixteen points) and on 7 × 7 planes
//! (a third of the last vectors empty), so those stay tract's.
//!
//! Every output keeps tract's arithmetic: a fused multiply-add per input channel, in order, from zero (its kernels
//! clear their registers and fuse every multiply-add), then the bias added, then the residual, then the ReLU's
//! `max(·, 0)` — what tract's kernel store does with the same fused operations, and what its own separate sum and
//! `Max` do. So a plan gives the same numbers with either op. It goes in only where tract's product is that fused
//! kernel (x86-64 with AVX2 and FMA; [`super::spatial::tracts_kernel_is_fused`]).

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::einsum::EinSum;
use tract_onnx::tract_core::ops::math::Add;

/// Output channels kept in registers at once (and the weights' packing).
const CHANNELS: usize = 6;
/// Output points per vector pair.
#[cfg(target_arch = "x86_64")]
const POINTS: usize = 16;
/// Planes of at least this many points (on MobileNetV2's 7 × 7 ones tract's product is faster).
const MIN_POINTS: usize = 196;
/// At most this many weights (above it, on 14 × 14 planes, tract's product is faster; measured per layer).
const MAX_WEIGHTS: usize = 32 * 1024;

/// One 1 × 1 convolution of a channels-first picture: inputs `x` `[(1,) ic, h, w]`, the weights packed by
/// [`Pointwise::packed_weights`] (when the op is put in the plan), the bias (`oc` values), and, with `residual`, a
/// tensor of the output's shape added after the bias.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Pointwise {
    ic: usize,
    oc: usize,
    /// The input's shape: `[ic, h, w]`, `[1, ic, h, w]`, or `[1, h, w, ic]` with `channels_last`.
    shape: TVec<usize>,
    /// The input is channels last (its output still channels first, `[oc, h, w]`).
    channels_last: bool,
    residual: bool,
    relu: bool,
}

impl Pointwise {
    fn points(&self) -> usize {
        let hw = if self.channels_last { 1..3 } else { self.shape.len() - 2..self.shape.len() };
        self.shape[hw].iter().product()
    }

    fn output_shape(&self) -> TVec<usize> {
        if self.channels_last {
            return tvec![self.oc, self.shape[1], self.shape[2]];
        }
        let mut s = self.shape.clone();
        let at = s.len() - 3;
        s[at] = self.oc;
        s
    }

    /// Input channel `k` of point `q`.
    fn input_index(&self, k: usize, q: usize) -> usize {
        if self.channels_last { q * self.ic + k } else { k * self.points() + q }
    }

    /// The `[oc, ic]` weights `w` as `[group][k][CHANNELS]`, a short last group padded with zeros (never stored).
    fn packed_weights(&self, w: &[f32]) -> Vec<f32> {
        let mut wp = vec![0f32; self.packed_len()];
        for o in 0..self.oc {
            for k in 0..self.ic {
                wp[self.packed_at(o, k)] = w[o * self.ic + k];
            }
        }
        wp
    }

    /// How many values [`Pointwise::packed_weights`] gives.
    fn packed_len(&self) -> usize {
        self.oc.div_ceil(CHANNELS) * self.ic * CHANNELS
    }

    /// Where weight `[o][k]` is in [`Pointwise::packed_weights`].
    fn packed_at(&self, o: usize, k: usize) -> usize {
        ((o / CHANNELS) * self.ic + k) * CHANNELS + o % CHANNELS
    }

    /// `out[o][p] = max(Σ_k w[o][k] × x[k][p] + bias[o] + residual[o][p], 0)`, each sum fused from zero in k order;
    /// `wp` the weights as [`Pointwise::packed_weights`] gives them.
    fn run(&self, x: &[f32], wp: &[f32], bias: &[f32], residual: Option<&[f32]>, out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if super::spatial::tracts_kernel_is_fused() {
            // SAFETY: the CPU has AVX2 and FMA (that is what the check says).
            unsafe { self.run_fma(x, wp, bias, residual, out) };
            return;
        }
        self.run_portable(x, wp, bias, residual, out);
    }

    /// [`Pointwise::run`] a point at a time (`f32::mul_add`); for CPUs without FMA (the op is only put in plans
    /// where there is one, so this is for completeness and the test).
    fn run_portable(&self, x: &[f32], wp: &[f32], bias: &[f32], residual: Option<&[f32]>, out: &mut [f32]) {
        let (ic, p) = (self.ic, self.points());
        for o in 0..self.oc {
            for q in 0..p {
                let sum = (0..ic).fold(0f32, |acc, k| wp[self.packed_at(o, k)].mul_add(x[self.input_index(k, q)], acc));
                let mut v = sum + bias[o];
                if let Some(r) = residual {
                    v += r[o * p + q];
                }
                out[o * p + q] = if self.relu { v.max(0.0) } else { v };
            }
        }
    }

    /// [`Pointwise::run`], [`CHANNELS`] output channels × [`POINTS`] points at a time.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn run_fma(&self, x: &[f32], wp: &[f32], bias: &[f32], residual: Option<&[f32]>, out: &mut [f32]) {
        use std::arch::x86_64::*;
        let (ic, oc, p) = (self.ic, self.oc, self.points());
        let groups = oc.div_ceil(CHANNELS);
        // The last, partial block of points (or with a channels-last input, each block), copied out as
        // [k][POINTS] with zeros after its points.
        let mut tail = vec![0f32; ic * POINTS];
        let mut tile = [0f32; POINTS];
        for first in (0..p).step_by(POINTS) {
            let live = POINTS.min(p - first);
            let (src, stride) = if self.channels_last {
                tail.fill(0.0);
                for (j, px) in x[first * ic..][..live * ic].chunks_exact(ic).enumerate() {
                    for (k, &v) in px.iter().enumerate() {
                        tail[k * POINTS + j] = v;
                    }
                }
                (&tail[..], POINTS)
            } else if live == POINTS {
                (&x[first..], p)
            } else {
                for k in 0..ic {
                    tail[k * POINTS..][..live].copy_from_slice(&x[k * p + first..][..live]);
                }
                (&tail[..], POINTS)
            };
            for g in 0..groups {
                let wg = &wp[g * ic * CHANNELS..][..ic * CHANNELS];
                // SAFETY: `src` holds `ic` rows of at least POINTS values at `stride` apart (a whole block of
                // the plane, or the tail copy); wg holds ic × CHANNELS weights; the stores go to `tile` or to a
                // whole block of POINTS inside an output channel's row.
                unsafe {
                    let mut acc = [[_mm256_setzero_ps(); 2]; CHANNELS];
                    for k in 0..ic {
                        let xk = src.as_ptr().add(k * stride);
                        let (x0, x1) = (_mm256_loadu_ps(xk), _mm256_loadu_ps(xk.add(8)));
                        let wk = wg.as_ptr().add(k * CHANNELS);
                        for (c, a) in acc.iter_mut().enumerate() {
                            let b = _mm256_set1_ps(*wk.add(c));
                            a[0] = _mm256_fmadd_ps(x0, b, a[0]);
                            a[1] = _mm256_fmadd_ps(x1, b, a[1]);
                        }
                    }
                    let channels = CHANNELS.min(oc - g * CHANNELS);
                    for (c, a) in acc.iter().enumerate().take(channels) {
                        let o = g * CHANNELS + c;
                        let b = _mm256_set1_ps(bias[o]);
                        let mut v = [_mm256_add_ps(a[0], b), _mm256_add_ps(a[1], b)];
                        if live == POINTS {
                            if let Some(r) = residual {
                                let r = r[o * p + first..][..POINTS].as_ptr();
                                v = [
                                    _mm256_add_ps(v[0], _mm256_loadu_ps(r)),
                                    _mm256_add_ps(v[1], _mm256_loadu_ps(r.add(8))),
                                ];
                            }
                            if self.relu {
                                let z = _mm256_setzero_ps();
                                v = [_mm256_max_ps(v[0], z), _mm256_max_ps(v[1], z)];
                            }
                            let dst = out[o * p + first..][..POINTS].as_mut_ptr();
                            _mm256_storeu_ps(dst, v[0]);
                            _mm256_storeu_ps(dst.add(8), v[1]);
                        } else {
                            _mm256_storeu_ps(tile.as_mut_ptr(), v[0]);
                            _mm256_storeu_ps(tile.as_mut_ptr().add(8), v[1]);
                            for (i, (d, &t)) in out[o * p + first..][..live].iter_mut().zip(&tile).enumerate() {
                                let mut v = t;
                                if let Some(r) = residual {
                                    v += r[o * p + first + i];
                                }
                                *d = if self.relu { v.max(0.0) } else { v };
                            }
                        }
                    }
                }
            }
        }
    }
}

impl Op for Pointwise {
    fn name(&self) -> StaticName {
        "SibiPointwise".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "{} → {} channels on {} points{}{}",
            self.ic,
            self.oc,
            self.points(),
            if self.residual { ", + residual" } else { "" },
            if self.relu { ", ReLU" } else { "" }
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for Pointwise {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = &inputs[0];
        ensure!(x.shape() == &*self.shape, "pointwise: input shape {:?}", x.shape());
        let (xv, wv, bv) = (x.try_as_plain_ram()?, inputs[1].try_as_plain_ram()?, inputs[2].try_as_plain_ram()?);
        let (xs, ws, bs) = (xv.as_slice::<f32>()?, wv.as_slice::<f32>()?, bv.as_slice::<f32>()?);
        ensure!(ws.len() == self.packed_len() && bs.len() == self.oc, "pointwise: weights or bias of the wrong size");
        let out_shape = self.output_shape();
        let rv = if self.residual {
            ensure!(inputs.len() == 4 && inputs[3].shape() == &*out_shape, "pointwise: residual shape");
            Some(inputs[3].try_as_plain_ram()?)
        } else {
            None
        };
        let rs = rv.as_ref().map(|r| r.as_slice::<f32>()).transpose()?;
        // SAFETY: f32 has no invalid bit patterns, and `run` writes every output.
        let mut t = unsafe { Tensor::uninitialized::<f32>(&out_shape)? };
        {
            let mut view = t.try_as_plain_ram_mut()?;
            self.run(xs, ws, bs, rs, view.as_slice_mut::<f32>()?);
        }
        Ok(tvec!(t.into_tvalue()))
    }
}

impl TypedOp for Pointwise {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs[0].datum_type == f32::datum_type(), "pointwise: f32 only");
        Ok(tvec!(f32::fact(self.output_shape())))
    }

    as_op!();
}

/// Replace each float 1 × 1 convolution of `model` (decluttered, not yet optimised: an `EinSum` `IHW,OI->OHW`,
/// `NIHW,OI->NOHW` or `NHWI,OI->OHW` of a constant `[oc, ic]` weight matrix, then the `Add` of a constant
/// `[oc, 1, 1]` bias) on planes of at least 196 points with at most 32768 weights, with [`Pointwise`], taking in the
/// residual `Add` and the `Max(·, 0)` that follow it when each is the only reader of what comes before. Only on
/// x86-64 with AVX2 and FMA. Returns how many were replaced.
pub fn replace_pointwise(model: &mut TypedModel) -> TractResult<usize> {
    if !super::spatial::tracts_kernel_is_fused() {
        return Ok(0);
    }
    let mut replaced = 0;
    for id in model.eval_order()? {
        let Some((op, inputs, last)) = pointwise_for(model, id)? else { continue };
        let name = &model.node(id).name;
        let mut patch = TypedModelPatch::default();
        let mut taps = patch.taps(model, &inputs)?;
        // The weights packed once here rather than on every run.
        let w = model.outlet_fact(inputs[1])?.konst.clone().context("pointwise: constant weights")?;
        let packed = tensor1(&op.packed_weights(w.try_as_plain_ram()?.as_slice::<f32>()?));
        taps[1] = patch.add_const(format!("{name}.packed"), packed)?;
        let wire = patch.wire_node(name, op, &taps)?[0];
        patch.shunt_outside(model, OutletId::new(last, 0), wire)?;
        patch.obliterate(id)?;
        patch.apply(model)?;
        replaced += 1;
    }
    Ok(replaced)
}

/// The op for the 1 × 1 convolution whose `EinSum` is node `id`, its inputs, and the last node it stands for.
fn pointwise_for(model: &TypedModel, id: usize) -> TractResult<Option<(Pointwise, Vec<OutletId>, usize)>> {
    let node = model.node(id);
    let Some(einsum) = node.op_as::<EinSum>() else { return Ok(None) };
    let axes = einsum.axes.to_string();
    if einsum.q_params.is_some()
        || einsum.operating_dt != f32::datum_type()
        || !matches!(axes.as_str(), "IHW,OI->OHW" | "NIHW,OI->NOHW" | "NHWI,OI->OHW")
        || node.inputs.len() != 2
    {
        return Ok(None);
    }
    let x = model.outlet_fact(node.inputs[0])?;
    let w = model.outlet_fact(node.inputs[1])?;
    let Some(shape) = x.shape.as_concrete().map(|s| s.iter().copied().collect::<TVec<usize>>()) else {
        return Ok(None);
    };
    let plain_f32 = |f: &TypedFact| f.datum_type == f32::datum_type() && f.is_plain();
    let Some(wdims) = w.shape.as_concrete() else { return Ok(None) };
    if !plain_f32(x) || !plain_f32(w) || w.konst.is_none() || wdims.len() != 2 || (shape.len() == 4 && shape[0] != 1) {
        return Ok(None);
    }
    let (oc, ic) = (wdims[0], wdims[1]);
    let channels_last = axes.starts_with("NHWI");
    let op = Pointwise { ic, oc, shape, channels_last, residual: false, relu: false };
    let channels = if channels_last { op.shape[3] } else { op.shape[op.shape.len() - 3] };
    if channels != ic || op.points() < MIN_POINTS || oc * ic > MAX_WEIGHTS {
        return Ok(None);
    }
    // The bias: an Add of a constant with one value per output channel, the einsum's only reader.
    let Some((bias, add)) = single_add(model, id)? else { return Ok(None) };
    let Some(b) = model.outlet_fact(bias)?.konst.clone() else { return Ok(None) };
    let bias_shape: &[usize] = b.shape();
    if b.datum_type() != f32::datum_type()
        || b.len() != oc
        || bias_shape.len() < 3
        || bias_shape[bias_shape.len() - 3..] != [oc, 1, 1]
    {
        return Ok(None);
    }
    let mut inputs = vec![node.inputs[0], node.inputs[1], bias];
    let mut last = add;
    let mut op = op;
    // The residual: an Add of a non-constant tensor of the output's shape, the bias sum's only reader.
    if let Some((other, sum)) = single_add(model, last)?
        && model.outlet_fact(other)?.konst.is_none()
        && model.outlet_fact(other)? == model.outlet_fact(OutletId::new(last, 0))?
    {
        op.residual = true;
        inputs.push(other);
        last = sum;
    }
    if let Some((low, next)) = super::depthwise::clamp_after(model, last, true)?
        && low == 0.0
        && low.is_sign_positive()
    {
        op.relu = true;
        last = next;
    }
    Ok(Some((op, inputs, last)))
}

/// When node `id`'s single output is read only by an `Add` of the same shape, and is no model output: the other
/// input of that `Add` and its node.
fn single_add(model: &TypedModel, id: usize) -> TractResult<Option<(OutletId, usize)>> {
    let outlet = OutletId::new(id, 0);
    if model.node(id).outputs.len() != 1 || model.outputs.contains(&outlet) {
        return Ok(None);
    }
    let Some(next) = model.single_succ(id)? else { return Ok(None) };
    let Some(bin) = next.op_as::<TypedBinOp>() else { return Ok(None) };
    if bin.1.is_some() || !bin.0.is::<Add>() || next.inputs.len() != 2 {
        return Ok(None);
    }
    let other = match next.inputs.iter().position(|i| *i == outlet) {
        Some(at) => next.inputs[1 - at],
        None => return Ok(None),
    };
    if other == outlet || model.outlet_fact(OutletId::new(next.id, 0))? != model.outlet_fact(outlet)? {
        return Ok(None);
    }
    Ok(Some((other, next.id)))
}

#[cfg(test)]
mod tests {
    use super::super::depthwise::tests::noise;
    use super::*;
    use tract_onnx::tract_core::ops::math;

    struct Case {
        axes: &'static str,
        ic: usize,
        oc: usize,
        hw: [usize; 2],
        residual: bool,
        relu: bool,
    }

    impl Case {
        fn input_shape(&self) -> Vec<usize> {
            let [h, w] = self.hw;
            match &self.axes[..4] {
                "NIHW" => vec![1, self.ic, h, w],
                "NHWI" => vec![1, h, w, self.ic],
                _ => vec![self.ic, h, w],
            }
        }

        fn output_shape(&self) -> Vec<usize> {
            let [h, w] = self.hw;
            if self.axes.ends_with("NOHW") { vec![1, self.oc, h, w] } else { vec![self.oc, h, w] }
        }

        /// The 1 × 1 convolution as tract's decluttering leaves it (an einsum, the bias `Add`, then the residual
        /// `Add` and the ReLU's `Max` when asked for), with and without [`replace_pointwise`].
        fn plans(&self) -> [TypedModel; 2] {
            let mut m = TypedModel::default();
            let x = m.add_source("x", f32::fact(self.input_shape())).unwrap();
            let w = m.add_const("w", tensor1(&noise(self.oc * self.ic, 7)).into_shape(&[self.oc, self.ic]).unwrap());
            let out = self.output_shape();
            let mut bias_shape = vec![1; out.len()];
            bias_shape[out.len() - 3] = self.oc;
            let b = m.add_const("b", tensor1(&noise(self.oc, 8)).into_shape(&bias_shape).unwrap()).unwrap();
            let einsum = EinSum::new(self.axes.parse().unwrap(), f32::datum_type());
            let y = m.wire_node("einsum", einsum, &[x, w.unwrap()]).unwrap();
            let mut y = m.wire_node("bias", math::add(), &[y[0], b]).unwrap();
            if self.residual {
                let r = m.add_source("r", f32::fact(&out)).unwrap();
                y = m.wire_node("sum", math::add(), &[r, y[0]]).unwrap();
            }
            if self.relu {
                let zero = m.add_const("zero", tensor0(0f32).broadcast_into_rank(out.len()).unwrap()).unwrap();
                y = m.wire_node("relu", math::max(), &[y[0], zero]).unwrap();
            }
            m.select_output_outlets(&y).unwrap();
            let theirs = m.clone();
            let replaced = replace_pointwise(&mut m).unwrap();
            assert_eq!(replaced, usize::from(super::super::spatial::tracts_kernel_is_fused()), "{}", self.axes);
            [theirs, m]
        }

        fn inputs(&self, seed: u64) -> TVec<TValue> {
            let shape = self.input_shape();
            let n = shape.iter().product();
            let mut v = tvec![tensor1(&noise(n, seed)).into_shape(&shape).unwrap().into()];
            if self.residual {
                let out = self.output_shape();
                v.push(tensor1(&noise(out.iter().product(), seed + 1)).into_shape(&out).unwrap().into());
            }
            v
        }
    }

    fn cases() -> [Case; 6] {
        let case = |axes, ic, oc, hw, residual, relu| Case { axes, ic, oc, hw, residual, relu };
        [
            // MobileNetV2's first expansion, a projection with its residual, BlazeFace's block (residual and
            // ReLU), MobileNetV2's first projection (from a channels-last depthwise convolution), then planes that
            // end in a partial block of points with a partial group of output channels.
            case("IHW,OI->OHW", 16, 96, [112, 112], false, false),
            case("IHW,OI->OHW", 144, 24, [56, 56], true, false),
            case("NIHW,OI->NOHW", 24, 28, [64, 64], true, true),
            case("NHWI,OI->OHW", 32, 16, [112, 112], false, false),
            case("IHW,OI->OHW", 64, 38, [14, 15], true, true),
            case("NHWI,OI->OHW", 5, 7, [15, 14], false, true),
        ]
    }

    #[test]
    fn each_output_comes_out_as_tracts_matrix_product_computes_it() {
        if !super::super::spatial::tracts_kernel_is_fused() {
            eprintln!("skipped: tract's matrix product kernels are not the fused ones on this CPU");
            return;
        }
        for (i, case) in cases().iter().enumerate() {
            let [theirs, ours] = case.plans();
            let theirs = theirs.into_optimized().unwrap();
            assert!(theirs.nodes.iter().any(|n| n.op.name() == "OptMatMul"), "{}: {theirs}", case.axes);
            let ours = ours.into_optimized().unwrap();
            let op = ours.nodes.iter().find_map(|n| n.op_as::<Pointwise>()).expect("the op is in the plan");
            assert_eq!((op.residual, op.relu), (case.residual, case.relu), "{}", case.axes);
            let (theirs, ours) = (theirs.into_runnable().unwrap(), ours.into_runnable().unwrap());
            let a = theirs.run(case.inputs(i as u64 + 1)).unwrap().remove(0);
            let b = ours.run(case.inputs(i as u64 + 1)).unwrap().remove(0);
            let (a, b) = (a.to_plain_array_view::<f32>().unwrap(), b.to_plain_array_view::<f32>().unwrap());
            assert_eq!(a.shape(), b.shape());
            let differ = a.iter().zip(b.iter()).filter(|(p, q)| p.to_bits() != q.to_bits()).count();
            assert_eq!(differ, 0, "{} {:?}: {differ} of {} outputs differ", case.axes, case.hw, a.len());
        }
    }

    #[test]
    fn the_portable_loop_gives_the_vector_loops_numbers() {
        for (i, case) in cases().iter().enumerate() {
            let [_, ours] = case.plans();
            let Some(op) = ours.nodes.iter().find_map(|n| n.op_as::<Pointwise>()) else {
                eprintln!("skipped: no AVX2 and FMA here, so no Pointwise in the plan");
                return;
            };
            let x = noise(case.input_shape().iter().product(), i as u64 + 1);
            let (w, b) = (noise(case.oc * case.ic, 2), noise(case.oc, 3));
            let n: usize = case.output_shape().iter().product();
            let r = case.residual.then(|| noise(n, 4));
            let (mut fast, mut slow) = (vec![f32::NAN; n], vec![f32::NAN; n]);
            let wp = op.packed_weights(&w);
            op.run(&x, &wp, &b, r.as_deref(), &mut fast);
            op.run_portable(&x, &wp, &b, r.as_deref(), &mut slow);
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&fast), bits(&slow), "{} {:?}", case.axes, case.hw);
        }
    }
}

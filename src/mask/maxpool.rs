//! A max pool for tract plans (BlazeFace's 2 × 2, stride 2, channels-first pools on its residual branches).
//!
//! tract 0.23 runs a stride-2 pool through its general per-point walk, which checks every tap against the picture's
//! edges: 13 ns an output on BlazeFace, a third of the short-range detector's time in pools. Without padding no tap
//! falls outside, so this op walks each output row straight through its input rows. It takes each window's
//! maximum as tract does (from `f32::MIN`, `max` tap by tap, row by row), so a plan gives the same numbers with
//! either op.
//!
//! [`replace_maxpool`] swaps it in for every float, channels-first, unpadded `MaxPool` of a decluttered model, before
//! `into_optimized`.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::cnn::{MaxPool, PaddingSpec};
use tract_onnx::tract_core::ops::nn::DataFormat;

/// One max pool over each channel plane (NCHW, or CHW without `batch`), no padding.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PlaneMaxPool {
    /// A leading batch axis.
    batch: bool,
    kernel: [usize; 2],
    strides: [usize; 2],
}

impl PlaneMaxPool {
    /// `[planes, h, w, oh, ow]` for an input shape.
    fn geometry(&self, dims: &[usize]) -> TractResult<[usize; 5]> {
        ensure!(dims.len() == 3 + self.batch as usize, "max pool: a rank-{} input", dims.len());
        let planes = dims[..dims.len() - 2].iter().product();
        let (h, w) = (dims[dims.len() - 2], dims[dims.len() - 1]);
        let ([kh, kw], [sh, sw]) = (self.kernel, self.strides);
        ensure!(h >= kh && w >= kw, "max pool: picture smaller than the kernel");
        Ok([planes, h, w, (h - kh) / sh + 1, (w - kw) / sw + 1])
    }

    fn output_shape(&self, dims: &[usize], [_, _, _, oh, ow]: [usize; 5]) -> Vec<usize> {
        let mut shape = dims[..dims.len() - 2].to_vec();
        shape.extend([oh, ow]);
        shape
    }

    /// Pool `x` into `out` (every point written).
    fn run(&self, x: &[f32], [planes, h, w, oh, ow]: [usize; 5], out: &mut [f32]) {
        let ([kh, kw], [sh, sw]) = (self.kernel, self.strides);
        for p in 0..planes {
            let plane = &x[p * h * w..][..h * w];
            for (oy, orow) in out[p * oh * ow..][..oh * ow].chunks_exact_mut(ow).enumerate() {
                orow.fill(f32::MIN);
                for ky in 0..kh {
                    let row = &plane[(oy * sh + ky) * w..][..w];
                    if (kw, sw) == (2, 2) {
                        for (o, pair) in orow.iter_mut().zip(row.chunks_exact(2)) {
                            *o = o.max(pair[0]).max(pair[1]);
                        }
                    } else {
                        for (ox, o) in orow.iter_mut().enumerate() {
                            for v in &row[ox * sw..][..kw] {
                                *o = o.max(*v);
                            }
                        }
                    }
                }
            }
        }
    }
}

impl Op for PlaneMaxPool {
    fn name(&self) -> StaticName {
        "SibiMaxPool".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!("kernel {:?} strides {:?}", self.kernel, self.strides)])
    }

    op_as_typed_op!();
}

impl EvalOp for PlaneMaxPool {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = args_1!(inputs);
        let g = self.geometry(x.shape())?;
        let mut t = Tensor::zero::<f32>(&self.output_shape(x.shape(), g))?;
        {
            let xv = x.try_as_plain_ram()?;
            let mut view = t.try_as_plain_ram_mut()?;
            self.run(xv.as_slice::<f32>()?, g, view.as_slice_mut::<f32>()?);
        }
        Ok(tvec!(t.into_tvalue()))
    }
}

impl TypedOp for PlaneMaxPool {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs[0].datum_type == f32::datum_type(), "max pool: f32 only");
        let dims = inputs[0].shape.as_concrete().context("max pool: symbolic shape")?.to_vec();
        Ok(tvec!(f32::fact(self.output_shape(&dims, self.geometry(&dims)?))))
    }

    as_op!();
}

/// Replace every max pool of `model` (decluttered, not yet optimised) that [`PlaneMaxPool`] can run: f32, channels
/// first, two spatial axes, no padding, no dilation, no index output, a concrete input shape. Returns how many were
/// replaced; the others stay tract's.
pub fn replace_maxpool(model: &mut TypedModel) -> TractResult<usize> {
    let mut replaced = 0;
    for id in model.eval_order()? {
        let node = model.node(id);
        let Some(pool) = node.op_as::<MaxPool>() else { continue };
        let spec = &pool.pool_spec;
        let x = model.outlet_fact(node.inputs[0])?;
        let unpadded = match &spec.padding {
            PaddingSpec::Valid => true,
            PaddingSpec::Explicit(b, a) => b.iter().chain(a.iter()).all(|&p| p == 0),
            _ => false,
        };
        let batch = match spec.data_format {
            DataFormat::NCHW => true,
            DataFormat::CHW => false,
            DataFormat::NHWC | DataFormat::HWC => continue,
        };
        if pool.with_index_outputs.is_some()
            || !unpadded
            || spec.kernel_shape.len() != 2
            || spec.dilations.as_ref().is_some_and(|d| d.iter().any(|&d| d != 1))
            || x.datum_type != f32::datum_type()
            || !x.is_plain()
            || x.shape.as_concrete().is_none()
            || x.rank() != 3 + batch as usize
        {
            continue;
        }
        let strides = spec.strides.as_ref().map_or([1, 1], |s| [s[0], s[1]]);
        if strides.contains(&0) {
            continue;
        }
        let op = PlaneMaxPool { batch, kernel: [spec.kernel_shape[0], spec.kernel_shape[1]], strides };
        let patch = TypedModelPatch::replace_single_op(model, node, &node.inputs, op)?;
        patch.apply(model)?;
        replaced += 1;
    }
    Ok(replaced)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kernel_and_stride_takes_each_windows_maximum() {
        let mut cases = 0;
        for (kernel, strides) in [([2, 2], [2, 2]), ([3, 3], [2, 2]), ([2, 3], [1, 2]), ([1, 1], [1, 1])] {
            for (planes, h, w) in [(3, 8, 8), (2, 7, 9), (1, 4, 3)] {
                let op = PlaneMaxPool { batch: false, kernel, strides };
                let Ok(g) = op.geometry(&[planes, h, w]) else { continue };
                let [_, _, _, oh, ow] = g;
                let x: Vec<f32> = (0..planes * h * w).map(|i| ((i * 7919 + 13) % 101) as f32 - 50.0).collect();
                let mut got = vec![f32::NAN; planes * oh * ow];
                op.run(&x, g, &mut got);
                for p in 0..planes {
                    for oy in 0..oh {
                        for ox in 0..ow {
                            let want = (0..kernel[0])
                                .flat_map(|ky| {
                                    (0..kernel[1]).map(move |kx| (oy * strides[0] + ky, ox * strides[1] + kx))
                                })
                                .map(|(y, xx)| x[(p * h + y) * w + xx])
                                .fold(f32::MIN, f32::max);
                            assert_eq!(got[(p * oh + oy) * ow + ox], want, "{op:?} {g:?} at {p} {oy} {ox}");
                        }
                    }
                }
                cases += 1;
            }
        }
        assert!(cases >= 12, "{cases}");
    }
}

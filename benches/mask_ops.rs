//! The mask networks one at a time: tract's own plan vs sibi's (tract with `mask::depthwise` and `mask::maxpool` in
//! place of its depthwise convolution and max pool), and where sibi's plan spends its time, operator by operator.
//! The same input (a fixed pattern) for both; one thread; the models from `scripts/setup`. onnxruntime (the PyPI wheel
//! in the models venv, `benches/mask_ops_anchor.py`) runs each network on the same input beside them.
//!
//! Run: `cargo bench --bench mask_ops` (optionally `-- ROUNDS`, default 40). `cargo bench --bench mask` is the
//! figure that counts (whole judgements side by side with onnxruntime); this one says where the time goes.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::time::Instant;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::plan::SimpleState;

type Plan = std::sync::Arc<TypedSimplePlan>;

fn median_ms(plan: &Plan, input: &Tensor, rounds: usize) -> f64 {
    let mut t: Vec<f64> = (0..rounds)
        .map(|_| {
            let s = Instant::now();
            plan.run(tvec!(input.clone().into())).expect("the network runs");
            s.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[rounds / 2]
}

/// Mean ms per run of each operator kind in `plan` (by name; sibi's ops by their geometry too).
fn by_operator(plan: &Plan, input: &Tensor, rounds: usize) -> Vec<(String, f64)> {
    let mut by: BTreeMap<String, f64> = BTreeMap::new();
    let mut state = SimpleState::new(plan).expect("a state");
    for _ in 0..rounds {
        state
            .run_plan_with_eval(tvec!(input.clone().into()), |ctx, st, node, inputs| {
                let s = Instant::now();
                let r = tract_onnx::tract_core::plan::eval(ctx, st, node, inputs);
                let name = node.op().name();
                let key = if name.starts_with("Sibi") {
                    let shape = r.as_ref().map(|o| o[0].shape().to_vec()).unwrap_or_default();
                    format!("{name} → {shape:?} {}", node.op().info().unwrap_or_default().join(" "))
                } else {
                    name.to_string()
                };
                *by.entry(key).or_default() += s.elapsed().as_secs_f64() * 1e3;
                r
            })
            .expect("the network runs");
    }
    let mut v: Vec<(String, f64)> = by.into_iter().map(|(k, ms)| (k, ms / rounds as f64)).collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1));
    v
}

#[path = "common/anchor.rs"]
mod anchor;

fn main() {
    let rounds: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(40).max(1);
    let dir = match sibi::mask::Models::locate(None) {
        Ok(dir) => dir,
        Err(e) => {
            eprintln!("mask_ops: {e} (scripts/setup prepares the models)");
            return;
        }
    };
    let nets = [
        (sibi::mask::CLASSIFIER_FILE, 224usize),
        (sibi::mask::DETECTOR_FILE, 128),
        (sibi::mask::FAR_DETECTOR_FILE, 256),
    ];
    let mut rows = Vec::new();
    let mut profiles = Vec::new();
    for (file, side) in nets {
        let typed = tract_onnx::onnx().model_for_path(dir.join(file)).and_then(|m| m.into_typed()).expect("loads");
        let (ours, _) = sibi::mask::with_sibis_ops(typed.clone()).expect("sibi's ops");
        let theirs = typed.into_optimized().and_then(|m| m.into_runnable()).expect("optimises");
        let ours = ours.into_optimized().and_then(|m| m.into_runnable()).expect("optimises");
        let data: Vec<f32> = (0..side * side * 3).map(|i| ((i * 7919) % 255) as f32 / 127.5 - 1.0).collect();
        let input: Tensor = tract_ndarray::Array4::from_shape_vec((1, side, side, 3), data).expect("shape").into();
        let (t, s) = (median_ms(&theirs, &input, rounds), median_ms(&ours, &input, rounds));
        rows.push((file, t, s));
        profiles.push((file, by_operator(&ours, &input, rounds.min(20))));
    }
    let mut args: Vec<OsString> = vec![dir.clone().into(), rounds.to_string().into()];
    args.extend(nets.iter().map(|(f, s)| format!("{f}:{s}").into()));
    let ort = anchor::run("benches/mask_ops_anchor.py", &args).unwrap_or_else(|e| {
        eprintln!("mask_ops: no onnxruntime anchor ({e})");
        serde_json::Value::Null
    });
    println!("one thread, median of {rounds} runs each, the same input");
    println!("| network | tract's own plan | sibi's plan | sibi / tract | onnxruntime | sibi / onnxruntime |");
    println!("|---|---|---|---|---|---|");
    for (file, t, s) in rows {
        let o = ort[file].as_f64().map_or("- | -".into(), |o| format!("{o:.2} ms | {:.2}", s / o));
        println!("| {file} | {t:.2} ms | {s:.2} ms | {:.2} | {o} |", s / t);
    }
    for (file, ops) in profiles {
        println!("\n{file}, sibi's plan, mean ms per run by operator (the ten largest):");
        for (op, ms) in ops.iter().take(10) {
            println!("  {ms:6.2}  {op}");
        }
    }
}

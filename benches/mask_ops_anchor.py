"""Speed anchor for benches/mask_ops.rs: each mask network alone in onnxruntime (one thread, sequential), on the same
fixed-pattern input as the Rust side. Usage: mask_ops_anchor.py MODELS_DIR ROUNDS FILE:SIDE... Prints one JSON object:
file -> median ms per run."""
import json, sys, time

import numpy as np
import onnxruntime as ort

models, rounds = sys.argv[1], int(sys.argv[2])
out = {}
for spec in sys.argv[3:]:
    name, side = spec.rsplit(":", 1)
    side = int(side)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    session = ort.InferenceSession(f"{models}/{name}", opts, providers=["CPUExecutionProvider"])
    # The Rust side's pattern: ((i * 7919) % 255) / 127.5 - 1, NHWC.
    x = ((np.arange(side * side * 3, dtype=np.int64) * 7919) % 255).astype(np.float32) / 127.5 - 1.0
    feed = {session.get_inputs()[0].name: x.reshape(1, side, side, 3)}
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        session.run(None, feed)
        times.append((time.perf_counter() - t) * 1000)
    out[name] = float(np.median(times))
print(json.dumps(out))

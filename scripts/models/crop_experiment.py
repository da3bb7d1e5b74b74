"""Measure crop augmentation and test-time averaging for sibi's mask head (an experiment, not part of the build;
its result is in README's mask accuracy part: sibi does not use either).

Run inside the models venv, after scripts/models/prepare:
    ~/.cache/sibi/models/venv-*/bin/python scripts/models/crop_experiment.py [FEATURES.npz]

It extracts, once (about 4 min on 2 cores; cached in FEATURES.npz, default ~/.cache/sibi/crop-experiment.npz), the
head's band features of 12 views of every annotated face: five crops (grow, shift) each plain and mirrored (views 2k,
2k+1), and the 1.5/0.1 crop rotated so BlazeFace's eye keypoints are level, plain and mirrored (views 10, 11); the
short-range detector only. It then repeats train_head.py's procedure for each variant (thresholds from the training
half's 5-fold out-of-fold scores, 0.5 logit above the highest negative of 40 px or more; a first look and a second
look for the unsure band) and prints counts [worn, not_worn, unsure] of faces of 40 px or more: out of fold on the
training half (N % 4 == 0; the only figures to choose by) and on the held-out half (N % 4 == 2).

Variants: "TRAIN/LOOKS". aug-all trains on all 12 views, aug5 on the ten crop views, base on view 0 and its mirror;
base looks keep the gate's rule (view 0, then the mean with its mirror for the unsure), tta-all averages all 12 views
at once, mirror-first averages 0 and 1 first and the training views second, aligned uses views 10 and 11.
Last run (2026-12-04; ~4 min to extract, 23 min in all): see README's mask accuracy part.
"""
import csv, os, sys, time, math

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_head as th

VARIANTS = [(1.5, 0.1), (1.35, 0.1), (1.65, 0.1), (1.5, 0.0), (1.5, 0.2)]

def extract(path):
    here = os.path.dirname(os.path.abspath(__file__))
    shared = os.path.normpath(os.path.join(here, "..", "..", "..", "shared", "testdata", "masks"))
    pipe = th.Pipeline(os.path.expanduser("~/.cache/sibi/models/current"))
    rows = list(csv.DictReader(open(os.path.join(shared, "faces.tsv")), delimiter="\t"))
    images = {}
    N, L, S, F, FOUND = [], [], [], [], []
    t0 = time.time()
    for k, r in enumerate(rows):
        f = r["file"]
        if f not in images: images[f] = Image.open(os.path.join(shared, f)).convert("RGB")
        crop = th.protocol_crop(images[f], r)
        faces = pipe.detect(crop, keypoints=True)
        N.append(int(f.split("-")[1].split(".")[0])); L.append(r["label"])
        S.append(min(int(r["xmax"]) - int(r["xmin"]), int(r["ymax"]) - int(r["ymin"])))
        if not faces:
            FOUND.append(False); F.append(np.zeros((len(VARIANTS) * 2 + 2, 3840), np.float32)); continue
        _, box, kp = max(faces, key=lambda fb: fb[1][2] * fb[1][3])
        (rx, ry), (lx, ly) = kp[0], kp[1]
        ang = math.atan2(ly - ry, lx - rx)
        views = lambda **kw: [pipe.features(crop, box, m, **kw)[1] for m in (False, True)]
        vs = [v for g, sh in VARIANTS for v in views(grow=g, shift=sh)] + views(angle=ang)
        FOUND.append(True); F.append(np.stack(vs).astype(np.float32))
        if k % 200 == 0: print(k, time.time() - t0, file=sys.stderr, flush=True)
    np.savez(path, N=np.array(N), L=np.array(L), S=np.array(S), F=np.stack(F), FOUND=np.array(FOUND))


path = sys.argv[1] if len(sys.argv) > 1 else os.path.expanduser("~/.cache/sibi/crop-experiment.npz")
if not os.path.exists(path):
    extract(path)
d = np.load(path)
N, L, S, F, FOUND = d["N"], d["L"], d["S"], d["F"].astype(np.float64), d["FOUND"]
y = (L == "with_mask").astype(float)
extra = np.where(L == "mask_weared_incorrect", th.INCORRECT_WEIGHT, 1.0)
tr = (N % 4 == 0) & FOUND
ho = (N % 4 == 2)
folds = (N // 4) % 5

def fit(sel, views):
    X = np.vstack([F[sel, v] for v in views]); Y = np.concatenate([y[sel]] * len(views)); E = np.concatenate([extra[sel]] * len(views))
    return th.train(X, Y, E)

def scores(m, idx, views):
    return np.stack([th.predict(m, F[idx, v]) for v in views])  # views x n

def logit(p): return np.log(p / (1 - p))

def run(name, train_views, first_views, second_views, margin=0.5):
    A = lambda s: s.mean(0)  # the mean score over the views looked at
    idx = np.arange(len(y))
    oof1, oof2 = np.full(len(y), np.nan), np.full(len(y), np.nan)
    for k in range(5):
        a, b = tr & (folds != k), tr & (folds == k)
        m = fit(a, train_views)
        oof1[b] = A(scores(m, idx[b], first_views)); oof2[b] = A(scores(m, idx[b], second_views))
    neg = tr & (y == 0) & (S >= 40); pos = tr & (y == 1)
    def above(s):
        top = float(np.max(s)); return 1 / (1 + np.exp(-(logit(top) + margin)))
    worn = above(oof1[neg]); nw = min(0.5, np.quantile(oof1[pos], 0.02))
    sec = neg & (oof1 < worn) & (oof1 > nw)
    worn2 = above(oof2[sec]) if sec.any() else 0.999; nw2 = min(0.5, np.quantile(oof2[pos], 0.02))
    def verdict(p1, p2):
        return np.where(p1 >= worn, 0, np.where(p1 <= nw, 1, np.where(p2 >= worn2, 0, np.where(p2 <= nw2, 1, 2))))
    oofv = verdict(oof1, oof2)
    m = fit(tr, train_views)
    p1 = A(scores(m, idx, first_views)); p2 = A(scores(m, idx, second_views))
    v = np.where(FOUND, verdict(p1, p2), 2)
    out = [name, f"thr {worn:.4f}/{worn2:.4f}"]
    big = S >= 40
    c = lambda sel: np.bincount(v[sel], minlength=3).tolist()
    co = lambda sel: np.bincount(oofv[sel], minlength=3).tolist()
    out.append(f"OOF tr masked {co(tr & big & (y==1))} unm {co(tr & big & (L=='without_mask'))} inc {co(tr & big & (L=='mask_weared_incorrect'))}")
    out.append(f"HO masked {c(ho & big & (L=='with_mask'))} unm {c(ho & big & (L=='without_mask'))} inc {c(ho & big & (L=='mask_weared_incorrect'))}")
    print(" | ".join(out), flush=True)

# views: 2k = variant k, 2k+1 its mirror; 10, 11 aligned
base = [0, 1]
run("baseline", base, [0], [0, 1])
allv = list(range(12))
run("aug-all/base", allv, [0], [0, 1])
run("aug-all/tta-all", allv, allv, allv)
run("aug-all/mirror-first", allv, [0, 1], allv)
run("base/tta-all", base, allv, allv)
run("aligned", [10, 11], [10], [10, 11])
run("aug-all/aligned", allv, [10], [10, 11])
aug5 = list(range(10))
run("aug5/base", aug5, [0], [0, 1])
run("aug5/mirror-first", aug5, [0, 1], aug5)
# The same procedure cannot bring the badly worn masks back: a stricter worn threshold, a heavier weight on them.
run("aug5/base margin 1.0", aug5, [0], [0, 1], margin=1.0)
extra[:] = np.where(L == "mask_weared_incorrect", 8.0, 1.0)
run("aug5/base incorrect x8", aug5, [0], [0, 1])

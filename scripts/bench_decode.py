"""Side-by-side QR decode benchmark; see scripts/bench-decode."""
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np
import zxingcpp
from PIL import Image
from pyzbar import pyzbar

EXTS = (".png", ".jpg", ".jpeg", ".webp")


def sets(root):
    for name in sorted(os.listdir(root)):
        d = os.path.join(root, name)
        if not os.path.isdir(d):
            continue
        items = []
        for f in sorted(os.listdir(d)):
            stem, ext = os.path.splitext(f)
            if ext.lower() in EXTS and os.path.exists(os.path.join(d, stem + ".txt")):
                with open(os.path.join(d, stem + ".txt"), "rb") as t:
                    items.append((os.path.join(d, f), t.read()))
        if items:
            yield name, items


# Every decoder decodes each image REPEAT times; its time for the image is the median of those.
REPEAT = 5


def timed(decode):
    times, found = [], []
    for _ in range(REPEAT):
        t = time.perf_counter()
        found = decode()
        times.append((time.perf_counter() - t) * 1000)
    return found, statistics.median(times)


def anchor_zxing(gray):
    found, ms = timed(
        lambda: zxingcpp.read_barcodes(gray, formats=zxingcpp.BarcodeFormat.QRCode, try_rotate=True, try_invert=True)
    )
    return [b.text.encode("utf-8") for b in found], ms


def anchor_zbar(gray):
    found, ms = timed(lambda: pyzbar.decode(gray, symbols=[pyzbar.ZBarSymbol.QRCODE]))
    return [b.data for b in found], ms


def ours(binary, backend, files):
    out = subprocess.run([binary, "code", "scan", "--decoder", backend, "--repeat", str(REPEAT), *files], capture_output=True, check=False)
    rows = {}
    for line in out.stdout.decode().splitlines():
        v = json.loads(line)
        rows[v["file"]] = ([c.encode("utf-8") for c in v["codes"]], v["ms"])
    return rows


def p95(xs):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(0.95 * (len(xs) - 1)))]


def main():
    root, binary = sys.argv[1], sys.argv[2]
    backends = ["sibi zxing", "sibi rqrr", "zxing-cpp (PyPI)", "ZBar (pyzbar)"]
    print(f"| set | images | " + " | ".join(f"{b}: ok / median / p95 ms" for b in backends) + " |")
    print("|---|---|" + "---|" * len(backends))
    totals = {b: [0, 0] for b in backends}
    for name, items in sets(root):
        files = [f for f, _ in items]
        expected = dict(items)
        results = {"sibi zxing": ours(binary, "zxing", files), "sibi rqrr": ours(binary, "rqrr", files)}
        za, zb = {}, {}
        for f in files:
            gray = np.asarray(Image.open(f).convert("L"))
            za[f] = anchor_zxing(gray)
            zb[f] = anchor_zbar(gray)
        results["zxing-cpp (PyPI)"] = za
        results["ZBar (pyzbar)"] = zb
        cells = []
        for b in backends:
            r = results[b]
            ok = sum(1 for f in files if f in r and expected[f] in r[f][0])
            ms = [r[f][1] for f in files if f in r]
            totals[b][0] += ok
            totals[b][1] += len(files)
            cells.append(f"{ok} ({100 * ok / len(files):.0f}%) / {statistics.median(ms):.2f} / {p95(ms):.2f}")
        print(f"| {name} | {len(files)} | " + " | ".join(cells) + " |")
    print("| all | " + str(totals[backends[0]][1]) + " | " + " | ".join(
        f"{t[0]} ({100 * t[0] / t[1]:.0f}%)" for t in totals.values()) + " |")


if __name__ == "__main__":
    main()

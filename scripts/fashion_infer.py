#!/usr/bin/env python3
"""The README's Fashion-MNIST figures for `flowc complete` and `flowc score`.

Usage: scripts/fashion_infer.py RUN [--n 500] [--steps 50] [--lr 0.1] [--flowc target/release/flowc]

Needs numpy and the Fashion-MNIST IDX files (Debian's dataset-fashion-mnist,
or $FLOWC_DATA/fashion-mnist). For the center and the right-half masks, it
completes the first N test images with `flowc complete --method map` and
prints the mean squared error on the missing pixels (values in [0, 1])
against two baselines: the training set's mean image, and the training image
nearest on the observed pixels. It writes docs/fashion_inpaint_{center,right}.png
(input, masked input, completion; 8 test images) and prints the mean bits/dim
`flowc score` gives test images, vertically flipped test images and uniform
noise (the out-of-distribution pitfall of Nalisnick et al. 2019).
"""
import argparse
import gzip
import os
import subprocess
import sys
import tempfile

import numpy as np


def idx_images(folder, stem):
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        path = os.path.join(folder, name)
        if os.path.exists(path):
            raw = gzip.open(path).read() if path.endswith(".gz") else open(path, "rb").read()
            n, h, w = (int.from_bytes(raw[i:i + 4], "big") for i in (4, 8, 12))
            return np.frombuffer(raw[16:], np.uint8).reshape(n, h, w)
    sys.exit(f"no {stem} in {folder}")


def find_data():
    for d in (os.path.join(os.environ.get("FLOWC_DATA", "data"), "fashion-mnist"), "/usr/share/datasets/fashion-mnist"):
        if os.path.isdir(d):
            return d
    sys.exit("Fashion-MNIST not found")


def run(cmd):
    print("+", " ".join(cmd), file=sys.stderr)
    subprocess.run(cmd, check=True)


def npy_payload(path):
    return np.load(path)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--flowc", default="target/release/flowc")
    a = ap.parse_args()
    folder = find_data()
    train = idx_images(folder, "train-images-idx3-ubyte").astype(np.float32) / 255.0
    test = idx_images(folder, "t10k-images-idx3-ubyte")[: a.n]
    tmp = tempfile.mkdtemp()
    inputs = os.path.join(tmp, "test.npy")
    np.save(inputs, test[:, None])
    truth = test.astype(np.float32) / 255.0
    mean_image = train.mean(0)
    print(f"| mask | missing pixels | flowc complete (map, {a.steps} steps, lr {a.lr}) | training mean image | nearest training image |")
    print("| --- | --- | --- | --- | --- |")
    for mask in ("center", "right"):
        out = os.path.join(tmp, f"{mask}.npy")
        run([a.flowc, "complete", a.run, "--input", inputs, "--mask", mask, "--steps", str(a.steps), "--lr", str(a.lr), "-o", out])
        first8 = os.path.join(tmp, "first8.npy")
        np.save(first8, test[:8, None])
        run([a.flowc, "complete", a.run, "--input", first8, "--mask", mask, "--steps", str(a.steps),
             "--lr", str(a.lr), "-o", os.path.join(tmp, "f8.npy"), "--grid", f"docs/fashion_inpaint_{mask}.png"])
        done = np.load(out)[:, 0].astype(np.float32) / 255.0
        h, w = test.shape[1:]
        missing = np.zeros((h, w), bool)
        if mask == "center":
            missing[h // 4: h - h // 4, w // 4: w - w // 4] = True
        else:
            missing[:, w - w // 2:] = True
        obs = ~missing
        mse = lambda est: float(((est - truth)[:, missing] ** 2).mean())
        # Nearest training image on the observed pixels, by |a - b|^2 = a.a - 2 a.b + b.b.
        to = truth[:, obs]
        tr = train[:, obs]
        d = (to ** 2).sum(1)[:, None] - 2 * to @ tr.T + (tr ** 2).sum(1)[None, :]
        nearest = train[d.argmin(1)]
        print(f"| {mask} | {int(missing.sum())} of {h * w} | {mse(done):.4f} | {mse(np.broadcast_to(mean_image, truth.shape)):.4f} | {mse(nearest):.4f} |")
    # Scores: test images, flipped test images, noise.
    rng = np.random.default_rng(0)
    sets = {
        "Fashion-MNIST test images": test[:, None],
        "the same, flipped upside down": test[:, None, ::-1, :].copy(),
        "uniform noise": rng.integers(0, 256, size=test[:, None].shape, dtype=np.uint8),
    }
    print()
    print("| images | mean bits/dim (`flowc score`) |")
    print("| --- | --- |")
    for name, x in sets.items():
        path = os.path.join(tmp, "score.npy")
        np.save(path, x)
        csv = subprocess.run([a.flowc, "score", a.run, "--input", path], check=True, capture_output=True, text=True).stdout
        bpd = np.array([float(l.split(",")[2]) for l in csv.strip().split("\n")[1:]])
        print(f"| {name} | {bpd.mean():.3f} |")


if __name__ == "__main__":
    main()

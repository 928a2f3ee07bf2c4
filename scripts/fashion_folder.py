#!/usr/bin/env python3
"""Writes Fashion-MNIST as a folder of PNG files, one subfolder per class,
the layout `flowc train --data folder:PATH` reads (as torchvision's
ImageFolder): the README's worked example on a folder of images.

Usage: scripts/fashion_folder.py OUT [--train 6000] [--test 1000]
Needs numpy and the IDX files (Debian's dataset-fashion-mnist, or
$FLOWC_DATA/fashion-mnist). Writes OUT/train/<class>/NNNNN.png and
OUT/test/<class>/NNNNN.png; PNG by hand (zlib), no imaging library needed.
"""
import argparse
import gzip
import os
import struct
import sys
import zlib

import numpy as np

CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot"]


def idx(folder, stem):
    for name in (stem + ".gz", stem):
        path = os.path.join(folder, name)
        if os.path.exists(path):
            raw = gzip.open(path).read() if path.endswith(".gz") else open(path, "rb").read()
            dims = raw[3]
            shape = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims)]
            return np.frombuffer(raw[4 + 4 * dims:], np.uint8).reshape(shape)
    sys.exit(f"no {stem} in {folder}")


def png(path, grey):
    h, w = grey.shape
    rows = b"".join(b"\x00" + grey[y].tobytes() for y in range(h))
    chunk = lambda kind, data: struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--train", type=int, default=6000)
    ap.add_argument("--test", type=int, default=1000)
    a = ap.parse_args()
    folder = next((d for d in (os.path.join(os.environ.get("FLOWC_DATA", "data"), "fashion-mnist"),
                               "/usr/share/datasets/fashion-mnist") if os.path.isdir(d)), None) or sys.exit("Fashion-MNIST not found")
    for split, prefix, n in (("train", "train", a.train), ("test", "t10k", a.test)):
        images, labels = idx(folder, f"{prefix}-images-idx3-ubyte"), idx(folder, f"{prefix}-labels-idx1-ubyte")
        for c in CLASSES:
            os.makedirs(os.path.join(a.out, split, c), exist_ok=True)
        for i in range(n):
            png(os.path.join(a.out, split, CLASSES[labels[i]], f"{i:05d}.png"), images[i])
    print(f"wrote {a.train} + {a.test} PNG files under {a.out}/{{train,test}}/<class>/")


if __name__ == "__main__":
    main()

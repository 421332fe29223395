"""Inference on 10,000 images of the course CNN: cnnc's predict against ONNX Runtime running
the model cnnc.export.to_onnx writes.

    python benchmarks/onnx_inference.py [--rounds 5] [--markdown]

Both run on as many threads as cnnc's compiled loops and take turns each round; each
column is the median over rounds. A ratio cnnc / onnxruntime below 1 means cnnc is faster.
"""
import argparse
import os
import statistics
import tempfile
import time

import numpy as np

import cnnc
from common import cpu_name, table
from suite import ARCHITECTURES, cnnc_network, data

IMAGES, BATCH = 10_000, 1000


def contenders(net, x, path):
    """The timed calls, by column name, after checking that both give the same logits."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = cnnc.get_num_threads()
    session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])

    def run(batch):
        return np.concatenate([session.run(["output"], {"input": x[i:i + batch]})[0]
                               for i in range(0, len(x), batch)])

    difference = float(np.abs(run(BATCH) - net.predict(x, batch_size=BATCH)).max())
    if not difference <= 1e-4:
        raise SystemExit(f"ONNX Runtime and cnnc logits differ by up to {difference:.2e}")
    return {"cnnc": lambda: net.predict(x, batch_size=BATCH),
            "onnxruntime": lambda: run(BATCH),
            "onnxruntime whole": lambda: run(len(x))}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    arch = ARCHITECTURES["course"]
    net = cnnc_network(arch)
    x, _ = data(arch, IMAGES)
    with tempfile.TemporaryDirectory() as directory:
        path = cnnc.export.to_onnx(net, os.path.join(directory, "course_cnn.onnx"), arch.input_shape)
        calls = contenders(net, x, path)
    times = {name: [] for name in calls}
    for _ in range(args.rounds + 1):        # the first round warms up, untimed
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(t[1:]) for name, t in times.items()}
    print(f"{cpu_name()}, {cnnc.get_num_threads()} threads; {arch.name}, {IMAGES:,} images, "
          f"batches of {BATCH:,} (whole: one batch of {IMAGES:,}); median of {args.rounds} rounds")
    print(table({f"{arch.name}, inference": medians}, list(calls),
                [("cnnc", "onnxruntime"), ("cnnc", "onnxruntime whole")], args.markdown))


if __name__ == "__main__":
    main()

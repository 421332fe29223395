"""The course CNN trained in cnnc, handed over to ONNX Runtime (for serving) and to PyTorch
(for training at scale), both giving the predictions cnnc gives.

    python examples/export.py [--epochs 1] [--out DIR]

Needs the extras: pip install 'cnnc[onnx]' 'cnnc[torch]'.
"""
import argparse
import os
import tempfile

import numpy as np

from cnnc import export

import mnist_data
from cnnc.models import course_cnn


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--out", metavar="DIR", help="where to write course_cnn.onnx (default: a "
                        "temporary directory, removed at the end)")
    mnist_data.add_data_option(parser)
    args = parser.parse_args()
    try:
        import onnxruntime
        import torch
    except ImportError as error:
        raise SystemExit(f"{error.name} is missing: pip install 'cnnc[onnx]' 'cnnc[torch]'")
    ((x_train, y_train), (x_test, y_test)), source = mnist_data.load(args.data)
    print(f"training the course CNN on {source}")
    np.random.seed(0)
    net = course_cnn(pooling=True)
    net.fit(x_train, y_train, epochs=args.epochs, batch_size=50, lr=1e-3, seed=0)
    ours = net.predict(x_test)
    print(f"cnnc: test accuracy {100 * np.mean(ours.argmax(1) == y_test):.2f}%")

    with tempfile.TemporaryDirectory() as scratch:
        path = export.to_onnx(net, os.path.join(args.out or scratch, "course_cnn.onnx"))
        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        served = session.run(["output"], {"input": x_test})[0]
    print(f"ONNX Runtime ({path}): largest difference from cnnc {np.abs(served - ours).max():.2e}, "
          f"same classes for {100 * np.mean(served.argmax(1) == ours.argmax(1)):.2f}% of images")

    model = export.to_torch(net)
    with torch.no_grad():
        theirs = model(torch.from_numpy(x_test.transpose(0, 3, 1, 2).copy())).numpy()
    print(f"PyTorch ({type(model).__name__} of {len(model)} modules): largest difference from "
          f"cnnc {np.abs(theirs - ours).max():.2e}, same classes for "
          f"{100 * np.mean(theirs.argmax(1) == ours.argmax(1)):.2f}% of images")
    back = export.from_torch(model, input_shape=(28, 28, 1))
    print(f"and back to cnnc: {'the same' if np.array_equal(back.predict(x_test), ours) else 'DIFFERENT'} "
          "predictions")


if __name__ == "__main__":
    main()

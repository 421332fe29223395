"""Networks to start from: the CNN of the course project cnnc grew out of."""
from __future__ import annotations

from typing import Callable, Sequence

from numpy.typing import ArrayLike, DTypeLike

from . import init
from .activations import AbstractActivation, leaky_relu, linear, relu
from .layers import Conv, Flatten, FullyConnected, MaxPool
from .losses import SoftmaxCrossEntropy
from .network import Network


def course_cnn(pooling: bool = True,
               dense_activation: AbstractActivation | type[AbstractActivation] | str = relu,
               inits: Sequence[Callable[[tuple[int, ...]], ArrayLike]] | None = None,
               dtype: DTypeLike | None = None) -> Network:
    """The course project's MNIST CNN, one Adam optimizer per layer:

        Conv 3x3, 16 filters - leaky ReLU - Conv 4x4, 32 filters, stride 2 - leaky ReLU
        - [max pool 2x2] - Flatten - FullyConnected 256 - ReLU - FullyConnected 10

    for 28x28x1 images, trained on logits with SoftmaxCrossEntropy.

    pooling: keep the 2x2 max pool (the project ran its CNN with and without it).
    dense_activation: the activation of the hidden FullyConnected layer (an activation,
        its class or its name).
    inits: four initializers, one for each weighted layer in order; by default He normal
        (fan-in from the filter shape) for the first three and Xavier normal for the last.
    dtype: float32 or float64 for every layer; None takes cnnc's default dtype.
    """
    conv1, conv2, dense1, dense2 = inits or (init.he_normal,) * 3 + (init.xavier_normal,)
    side = 6 if pooling else 12
    return Network([
        Conv((3, 3, 1, 16), activation=leaky_relu, filter_init=conv1, dtype=dtype),
        Conv((4, 4, 16, 32), strides=2, activation=leaky_relu, filter_init=conv2, dtype=dtype),
        *([MaxPool(2)] if pooling else []),
        Flatten((side, side, 32)),
        FullyConnected((side * side * 32, 256), activation=dense_activation,
                       weight_init=dense1, dtype=dtype),
        FullyConnected((256, 10), activation=linear, weight_init=dense2, dtype=dtype),
    ], loss=SoftmaxCrossEntropy())

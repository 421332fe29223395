"""Handing a cnnc network over to ONNX Runtime and PyTorch, with nothing lost.

Each conversion carries every attribute of every layer or module it takes, or refuses with
a ValueError naming the layer or module and the attribute: the README's "What converts"
lists them.

onnx and torch are optional: each function imports what it needs when called, and says
which extra to install (pip install 'cnnc[onnx]', 'cnnc[torch]') when it is missing.
"""
from ._onnx import to_onnx
from ._torch import from_torch, to_torch

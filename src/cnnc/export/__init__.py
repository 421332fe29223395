"""Handing a cnnc network over to ONNX Runtime and PyTorch, with nothing lost."""
from ._onnx import to_onnx
from ._torch import from_torch, to_torch

# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Compiled cnnc kernels: the same functions, with the same signatures, as _numpy_kernels.

Every entry point runs the shared argument checks (_checks) before it touches memory.
The loops release the GIL and run in parallel where the build found OpenMP; matrix
products call the OpenBLAS of NumPy's wheel from those threads (numpy.matmul elsewhere).
"""
import contextlib
import ctypes
import glob
import os
import threading

import numpy as np

cimport numpy as cnp
from cpython.pycapsule cimport PyCapsule_New
from cpython.pythread cimport (WAIT_LOCK, PyThread_acquire_lock, PyThread_allocate_lock,
                               PyThread_release_lock, PyThread_type_lock)
from cython.parallel cimport parallel, prange, threadid
from libc.math cimport fma, sqrt
from libc.stdint cimport int32_t, int64_t, uint8_t
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memcpy, memset, strncpy

from . import _checks

# The kernels' element type: each cdef kernel on it is compiled for float32 and float64.
ctypedef fused real:
    float
    double

# The module is these files, each included in order after those it uses.
include "_threads.pxi"              # how many threads the loops run on; fork safety
include "_loops.pxi"                # copy, zero, add, sum in float64: vectorized runs shared by the kernels
include "_scratch.pxi"              # work arrays each Python thread reuses
include "_blas.pxi"                 # NumPy's OpenBLAS called from these threads; matmul
include "_direct_convolution.pxi"   # direct convolution loops for thin products
include "_winograd.pxi"             # Winograd F(4x4 or 2x2, 3x3) for 3x3 stride-1 passes
include "_convolution.pxi"          # im2col + GEMM convolution; conv2d_forward and gradients
include "_pooling.pxi"              # max and average pooling, forward and backward
include "_conv_maxpool.pxi"         # a convolution and its max pool in one pass, for inference
include "_batchnorm.pxi"            # batch normalization: training forward and backward, inference
include "_adam.pxi"                 # adam_update
include "_elementwise.pxi"          # leaky_relu and its gradient
include "_memory_pool.pxi"          # NumPy allocator that reuses freed arrays; memory_pool

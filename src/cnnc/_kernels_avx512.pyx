# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""cnnc._kernels built for x86-64 CPUs with AVX-512 (F, DQ, VL, BW), AVX2 and FMA: the same
source, vectors four times as wide as the baseline's (cnnc._builds)."""

include "_kernels.pyx"

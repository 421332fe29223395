# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""cnnc._kernels built for x86-64 CPUs with AVX2 and FMA: the same source, vectors twice as
wide as the baseline's (cnnc._builds)."""

include "_kernels.pyx"

# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""cnnc._kernels built for x86-64 CPUs with AVX2 and FMA: the same source, vectors twice as
wide. cnnc.kernels takes it where the CPU has both; CNNC_AVX2=0 keeps the baseline build."""

include "_kernels.pyx"

# Which instructions the CPU runs: cnnc.kernels loads the AVX2 build where it has AVX2 and FMA.

cdef extern from *:
    """
    #if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
    static int cnnc_cpu_has_avx2_fma(void) {
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    }
    #else
    static int cnnc_cpu_has_avx2_fma(void) { return 0; }
    #endif
    """
    int cnnc_cpu_has_avx2_fma()


def _cpu_has_avx2_fma():
    """Whether this CPU (and its operating system) runs AVX2 and FMA instructions."""
    return bool(cnnc_cpu_has_avx2_fma())

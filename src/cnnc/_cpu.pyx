# cython: language_level=3
"""Which instruction sets this CPU (and its operating system) runs, so that cnnc.kernels
loads the one compiled build that fits without loading the others to ask."""

cdef extern from *:
    """
    #include <string.h>
    #if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
    #define CNNC_FEATURE(name) \
        if (strcmp(feature, #name) == 0) return __builtin_cpu_supports(#name) ? 1 : 0;
    static int cnnc_cpu_supports(const char* feature) {
        __builtin_cpu_init();
        CNNC_FEATURE(avx2) CNNC_FEATURE(fma) CNNC_FEATURE(avx512f) CNNC_FEATURE(avx512dq)
        CNNC_FEATURE(avx512vl) CNNC_FEATURE(avx512bw)
        return -1;
    }
    #else
    static int cnnc_cpu_supports(const char* feature) { (void)feature; return 0; }
    #endif
    """
    int cnnc_cpu_supports(const char* feature)


def supports(feature):
    """Whether the CPU runs the x86-64 feature named (as GCC's __builtin_cpu_supports names
    it: "avx2", "fma", "avx512f", ...); False on other processors and compilers."""
    answer = cnnc_cpu_supports(feature.encode("ascii"))
    if answer < 0:
        raise ValueError(f"cnnc does not look for the CPU feature {feature!r}")
    return bool(answer)

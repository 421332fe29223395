"""The compiled builds of cnnc's kernels: one source compiled once per instruction set.

setup.py compiles every build its compiler can; cnnc.kernels loads the best one the CPU
runs (or the one CNNC_ISA names). A new instruction set is a new row here and a .pyx of
three lines that includes _kernels.pyx. setup.py reads this file without importing cnnc,
so it imports nothing.
"""
from collections import namedtuple

Build = namedtuple("Build", "isa module flags features")
Build.__doc__ = """One build: its name for CNNC_ISA, its module, the compiler flags that
make it, and the CPU features (as cnnc._cpu.supports names them) it needs to run."""

# From the most basic to the best: the baseline runs on every CPU the compiler targets.
BUILDS = (
    Build("baseline", "cnnc._kernels", (), ()),
    Build("avx2", "cnnc._kernels_avx2", ("-mavx2", "-mfma"), ("avx2", "fma")),
    Build("avx512", "cnnc._kernels_avx512",
          ("-mavx2", "-mfma", "-mavx512f", "-mavx512dq", "-mavx512vl", "-mavx512bw"),
          ("avx2", "fma", "avx512f", "avx512dq", "avx512vl", "avx512bw")),
)

# The module that tells which features the CPU has: built plainly, loaded before any build.
CPU_MODULE = "cnnc._cpu"

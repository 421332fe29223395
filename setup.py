"""Build cnnc. The compiled kernels are optional: where Cython or a C compiler is
missing, the install still succeeds, says so, and cnnc runs on its NumPy kernels."""
import os
import platform
import sys
import tempfile

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

KERNELS = os.path.join("src", "cnnc", "_kernels.pyx")
# The same kernels again for x86-64 CPUs with AVX2 and FMA, chosen at import where the CPU
# has them: one wheel, no instruction the machine lacks, vectors twice as wide where it can.
KERNELS_AVX2 = os.path.join("src", "cnnc", "_kernels_avx2.pyx")
AVX2 = ["-mavx2", "-mfma"]
AVX2_TEST = ("#include <immintrin.h>\nint main(void) { __m256 a = _mm256_set1_ps(1.0f);\n"
             "return _mm256_cvtss_f32(_mm256_fmadd_ps(a, a, a)) == 2.0f ? 0 : 1; }\n")
# Strict IEEE arithmetic: no fused multiply-adds the source does not write, so results do
# not depend on the compiler's mood (and match the NumPy twin operation for operation).
STRICT_MATH = ["-O3", "-ffp-contract=off", "-fno-math-errno", "-fno-trapping-math"]
OPENMP_TEST = "#include <omp.h>\nint main(void) { return omp_get_max_threads() > 0 ? 0 : 1; }\n"


def _warn(message):
    sys.stderr.write(f"\nWARNING (cnnc): {message}\ncnnc will run on its NumPy kernels.\n\n")


class OptionalBuildExt(build_ext):
    """build_ext that adds OpenMP where the compiler has it and reports a failed build
    instead of failing the install."""

    def run(self):
        try:
            super().run()
        except Exception as error:  # no compiler at all: setuptools fails before any file
            _warn(f"the compiled kernels could not be built ({error}).")

    def build_extensions(self):
        unix = self.compiler.compiler_type == "unix"
        flags = STRICT_MATH if unix else []
        openmp = ["-fopenmp"] if unix and self._compiles(OPENMP_TEST, ["-fopenmp"]) else []
        avx2 = unix and platform.machine().lower() in ("x86_64", "amd64") and self._compiles(
            AVX2_TEST, AVX2)
        sys.stderr.write(f"cnnc: building the compiled kernels {'with' if openmp else 'without'} "
                         f"OpenMP, {'with' if avx2 else 'without'} the AVX2 build\n")
        if not avx2:
            self.extensions = [ext for ext in self.extensions if ext.name != "cnnc._kernels_avx2"]
        for ext in self.extensions:
            ext.extra_compile_args += flags + openmp + (AVX2 if ext.name == "cnnc._kernels_avx2" else [])
            ext.extra_link_args += openmp
        super().build_extensions()

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as error:
            _warn(f"building {ext.name} failed ({error}).")

    def _compiles(self, source, flags):
        """Whether a C program compiles and links with these flags."""
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "check.c")
            with open(path, "w") as handle:
                handle.write(source)
            try:
                objects = self.compiler.compile([path], output_dir=tmp, extra_postargs=flags)
                self.compiler.link_executable(objects, os.path.join(tmp, "check"), extra_postargs=flags)
            except Exception:
                return False
        return True


def extensions():
    if not os.path.exists(KERNELS):
        return []
    try:
        import numpy
        from Cython.Build import cythonize
    except ImportError as error:
        _warn(f"Cython and NumPy are needed to build the compiled kernels ({error}).")
        return []
    options = dict(include_dirs=[numpy.get_include()],
                   define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_9_API_VERSION"),
                                  ("NPY_TARGET_VERSION", "NPY_1_23_API_VERSION")])
    return cythonize([Extension("cnnc._kernels", [KERNELS], **options),
                      Extension("cnnc._kernels_avx2", [KERNELS_AVX2], **options)], language_level=3)


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})

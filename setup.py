"""Build cnnc. The compiled kernels are optional: where Cython or a C compiler is
missing, the install still succeeds, says so, and cnnc runs on its NumPy kernels."""
import os
import sys
import tempfile

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

KERNELS = os.path.join("src", "cnnc", "_kernels.pyx")
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
        sys.stderr.write(f"cnnc: building the compiled kernels {'with' if openmp else 'without'} OpenMP\n")
        for ext in self.extensions:
            ext.extra_compile_args += flags + openmp
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
    extension = Extension("cnnc._kernels", [KERNELS], include_dirs=[numpy.get_include()],
                          define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_9_API_VERSION"),
                                         ("NPY_TARGET_VERSION", "NPY_1_23_API_VERSION")])
    return cythonize([extension], language_level=3)


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})

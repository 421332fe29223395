"""Build cnnc. The compiled kernels are optional: where Cython or a C compiler is
missing, the install still succeeds, says so, and cnnc runs on its NumPy kernels."""
import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

KERNELS = os.path.join("src", "cnnc", "_kernels.pyx")


def _warn(message):
    sys.stderr.write(f"\nWARNING (cnnc): {message}\ncnnc will run on its NumPy kernels.\n\n")


class OptionalBuildExt(build_ext):
    """build_ext that reports a failed compile instead of failing the install."""

    def run(self):
        try:
            super().run()
        except Exception as error:  # no compiler at all: setuptools fails before any file
            _warn(f"the compiled kernels could not be built ({error}).")

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as error:
            _warn(f"building {ext.name} failed ({error}).")


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
                          define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_9_API_VERSION")])
    return cythonize([extension], language_level=3)


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})

"""Build cnnc and its compiled kernels.

The kernels are Cython sources, turned into C inside the build directory, so no generated
file lives beside them. Where they cannot be built (no C compiler, a compile error) the
install still succeeds, says so on the terminal, and cnnc runs on its NumPy kernels; the
reason goes into the package for cnnc's import-time warning. Two switches:
CNNC_REQUIRE_COMPILED=1 makes such a build fail instead (for packagers and CI), and
CNNC_DEBUG_BUILD=1 keeps debug information, which release builds leave out.
"""
import glob
import os
import platform
import runpy
import sys
import tempfile

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

SOURCES = os.path.join("src", "cnnc")
# The builds: the baseline, then the same kernels for wider x86-64 instruction sets, chosen
# at import by what the CPU runs (one wheel, no instruction the machine lacks).
_TABLE = runpy.run_path(os.path.join(SOURCES, "_builds.py"))
BUILDS = {build.module: build for build in _TABLE["BUILDS"]}
BASELINE = _TABLE["BUILDS"][0].module
CPU_MODULE = _TABLE["CPU_MODULE"]
# Read by cnnc.kernels when the baseline extension is missing.
FAILURE_NOTE = "_build_failure.txt"

# Strict IEEE arithmetic: no fused multiply-adds the source does not write, so results do
# not depend on the compiler's mood (and match the NumPy twin operation for operation).
STRICT_MATH = ["-O3", "-ffp-contract=off", "-fno-math-errno", "-fno-trapping-math"]
OPENMP = {"unix": ["-fopenmp"], "msvc": ["/openmp"]}
NUMPY_MACROS = [("NPY_NO_DEPRECATED_API", "NPY_1_9_API_VERSION"),
                ("NPY_TARGET_VERSION", "NPY_1_23_API_VERSION")]

C_TEST = "int main(void) { return 0; }\n"
OPENMP_TEST = "#include <omp.h>\nint main(void) { return omp_get_max_threads() > 0 ? 0 : 1; }\n"
# A build for an instruction set compiles where the compiler takes its flags and header.
ISA_TEST = "#include <immintrin.h>\nint main(void) { return 0; }\n"


def _tell(line):
    """Print a line the user sees. pip shows a successful build's output only with -v, so
    the line also goes straight to the terminal, where there is one."""
    sys.stderr.write(line + "\n")
    if sys.stderr.isatty():
        return
    try:
        with open("/dev/tty", "w") as terminal:
            terminal.write(line + "\n")
    except OSError:
        pass


def _required():
    return os.environ.get("CNNC_REQUIRE_COMPILED", "").strip() == "1"


class KernelsNotBuilt(Exception):
    """The compiled kernels could not be built and CNNC_REQUIRE_COMPILED=1 asks for them."""


class BuildKernels(build_ext):
    """build_ext for the kernels: OpenMP and the instruction-set builds where the compiler
    has them, release flags, C remade only when a Cython source changes, the builds compiled
    side by side, and a failed build reported (or fatal under CNNC_REQUIRE_COMPILED=1)."""

    def finalize_options(self):
        super().finalize_options()
        if self.parallel is None:
            self.parallel = os.cpu_count() or 1

    def run(self):
        note = self._failure_note()
        if os.path.exists(note):
            os.remove(note)
        try:
            super().run()
        except KernelsNotBuilt:
            raise
        except Exception as error:      # setuptools found no compiler before building anything
            self._not_built(f"no C compiler could be set up ({error})")

    def build_extensions(self):
        try:
            import numpy
            from Cython.Build import cythonize
        except ImportError as error:
            return self._not_built(f"Cython and NumPy are needed to build them ({error})")
        kind = self.compiler.compiler_type
        if not self._compiles(C_TEST, []):
            compiler = getattr(self.compiler, "compiler_so", None) or [kind]
            return self._not_built(f"the C compiler ({compiler[0]}) cannot compile a test program")
        openmp = OPENMP.get(kind, [])
        if not (openmp and self._compiles(OPENMP_TEST, openmp)):
            openmp = []
            _tell("WARNING (cnnc): the C compiler has no OpenMP; the compiled kernels will run "
                  "on one core.")
        x86 = kind == "unix" and platform.machine().lower() in ("x86_64", "amd64")
        self.extensions = [ext for ext in self.extensions
                           if ext.name not in BUILDS or not BUILDS[ext.name].flags
                           or (x86 and self._compiles(ISA_TEST, list(BUILDS[ext.name].flags)))]
        debug = self.debug or os.environ.get("CNNC_DEBUG_BUILD", "").strip() == "1"
        compile_args, link_args = list(openmp), list(openmp)
        if kind == "unix":
            compile_args += STRICT_MATH + (["-g"] if debug else ["-g0"])
            if sys.platform.startswith("linux") and not debug:
                link_args.append("-s")          # nor a symbol table: Python finds PyInit_* by its dynamic one
        for ext in self.extensions:
            ext.include_dirs.append(numpy.get_include())
            ext.define_macros += NUMPY_MACROS
            isa = list(BUILDS[ext.name].flags) if ext.name in BUILDS else []
            ext.extra_compile_args += compile_args + isa
            ext.extra_link_args += link_args
        sys.stderr.write(f"cnnc: building {', '.join(ext.name for ext in self.extensions)} "
                         f"({'with' if openmp else 'without'} OpenMP, "
                         f"{'debug' if debug else 'release'})\n")
        self._rebuild_if_flags_changed(compile_args + link_args)
        try:
            self._cythonize(cythonize)
        except Exception as error:
            return self._not_built(f"Cython could not translate them ({type(error).__name__}: "
                                   f"{error}; pip install -v shows Cython's messages)")
        super().build_extensions()

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as error:
            reason = f"compiling {ext.name} failed ({error}; pip install -v shows the compiler's output)"
            if ext.name in (BASELINE, CPU_MODULE):
                self._not_built(reason)
            elif _required():
                raise KernelsNotBuilt(f"cnnc: {reason}") from error
            else:
                _tell(f"WARNING (cnnc): {reason}; cnnc will run its baseline build.")

    def _not_built(self, reason):
        """Fail under CNNC_REQUIRE_COMPILED=1; otherwise say so and leave the reason where
        cnnc's import-time warning finds it."""
        if _required():
            raise KernelsNotBuilt(f"cnnc: the compiled kernels could not be built: {reason} "
                                  "(CNNC_REQUIRE_COMPILED=1 makes that an error)")
        _tell(f"WARNING (cnnc): the compiled kernels could not be built: {reason}. cnnc will run "
              "on its NumPy kernels, several times slower.")
        note = self._failure_note()
        os.makedirs(os.path.dirname(note), exist_ok=True)
        with open(note, "w") as handle:
            handle.write(reason + "\n")

    def _failure_note(self):
        return os.path.join(os.path.dirname(self.get_ext_fullpath(BASELINE)), FAILURE_NOTE)

    def _rebuild_if_flags_changed(self, flags):
        """Compile everything again when the flags differ from the last build here (a debug
        build after a release one, a compiler that gained OpenMP)."""
        stamp = os.path.join(self.build_temp, "cnnc-flags.txt")
        flags = " ".join(flags) + "\n"
        previous = None
        if os.path.exists(stamp):
            with open(stamp) as handle:
                previous = handle.read()
        if previous != flags:
            self.force = True
            os.makedirs(self.build_temp, exist_ok=True)
            with open(stamp, "w") as handle:
                handle.write(flags)

    def _cythonize(self, cythonize):
        """Turn each .pyx into C in the build directory, again only when a source of cnnc's
        kernels changed: a .pyx, a Cython include (.pxi) or a C header (Cython copies the
        headers there too). Cython would also count NumPy's .pxd files, which every isolated
        build environment installs anew, and so recompile on every pip install."""
        out = os.path.join(self.build_temp, "cython")
        newest = max(os.path.getmtime(path) for pattern in ("*.pyx", "*.pxi", "*.h")
                     for path in glob.glob(os.path.join(SOURCES, pattern)))

        def c_file(ext):
            return os.path.join(out, os.path.splitext(ext.sources[0])[0] + ".c")

        if self.force or any(not os.path.exists(c_file(ext)) or os.path.getmtime(c_file(ext)) < newest
                             for ext in self.extensions):
            workers = min(self.parallel or 1, len(self.extensions))
            cythonize(self.extensions, build_dir=out, force=True, language_level=3,
                      nthreads=workers if workers > 1 else 0)
        for ext in self.extensions:
            ext.sources = [c_file(ext)]

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


# What each build reads besides its .pyx: the C headers, and the Cython includes (.pxi)
# that _kernels.pyx is made of.
HEADERS = sorted(glob.glob(os.path.join(SOURCES, "*.h")) + glob.glob(os.path.join(SOURCES, "*.pxi")))


def _extension(module):
    """The Extension of a module of cnnc: its .pyx beside the package's Python files."""
    source = os.path.join(SOURCES, module.split(".")[-1] + ".pyx")
    return Extension(module, [source], include_dirs=[SOURCES], depends=HEADERS)


setup(ext_modules=[_extension(CPU_MODULE)] + [_extension(module) for module in BUILDS],
      cmdclass={"build_ext": BuildKernels})

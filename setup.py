"""Builds the Cython extensions in ext/; all metadata lives in pyproject.toml.

A machine without Cython or a C compiler still installs: the build of each extension may
fail with a warning, and the pure-Python twins in mailforge.speedups take over (see
mailforge/speedups/__init__.py, which says so in one line at import).
"""
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import CCompilerError, CompileError, ExecError, LinkError, PlatformError

EXTENSIONS = sorted(Path("ext").glob("_*.pyx"))
BUILD_ERRORS = (CCompilerError, CompileError, ExecError, LinkError, PlatformError, OSError)


class OptionalBuildExt(build_ext):
    """A compiler that is missing or fails costs speed, not the install (as msgpack's did)."""

    def run(self):
        try:
            super().run()
        except BUILD_ERRORS as exc:
            self.warn(f"mailforge: C extensions not built ({exc}); the pure-Python twins run")

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except BUILD_ERRORS as exc:
            self.warn(f"mailforge: {ext.name} not built ({exc}); the pure-Python twins run")


def cython_extensions():
    if not EXTENSIONS:
        return []
    try:
        from Cython.Build import cythonize
        from setuptools import Extension
    except ImportError:
        return []
    # Compiled under their short names so Cython finds each one's .pxd beside it in the flat
    # ext/ (a dotted name would send it looking in ext/mailforge/speedups/), then installed
    # in the package: the init function, PyInit_<stem>, is the same either way.
    modules = cythonize([Extension(pyx.stem, [str(pyx)], extra_compile_args=["-O2"])
                         for pyx in EXTENSIONS], language_level=3, include_path=["ext"])
    for module in modules:
        module.name = f"mailforge.speedups.{module.name}"
    return modules


setup(ext_modules=cython_extensions(), cmdclass={"build_ext": OptionalBuildExt})

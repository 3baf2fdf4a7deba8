"""Builds the Cython extensions in ext/; all metadata lives in pyproject.toml.

A machine without Cython or a C compiler still installs: the pure-Python twins in
mailforge.speedups take over (see mailforge/speedups/__init__.py).
"""
from pathlib import Path

from setuptools import setup

EXTENSIONS = sorted(Path("ext").glob("_*.pyx"))


def cython_extensions():
    if not EXTENSIONS:
        return []
    try:
        from Cython.Build import cythonize
        from setuptools import Extension
    except ImportError:
        return []
    modules = [
        Extension(f"mailforge.speedups.{pyx.stem}", [str(pyx)], extra_compile_args=["-O2"])
        for pyx in EXTENSIONS
    ]
    return cythonize(modules, language_level=3, include_path=["ext"])


setup(ext_modules=cython_extensions())

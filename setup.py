"""Builds the Cython modules in fastpath/ (each has a pure-Python twin).

The compiled twins are optional at run time: `fastpath.<name>` falls back to
the pure module on ImportError, and TALLY_NO_EXTENSIONS=1 forces the pure one.
"""

from Cython.Build import cythonize
from setuptools import Extension, setup

EXTENSIONS = [
    Extension("fastpath._codec_c", ["fastpath/_codec_c.pyx"]),
    Extension("fastpath._kernel_c", ["fastpath/_kernel_c.pyx"]),
]

setup(
    ext_modules=cythonize(
        EXTENSIONS,
        compiler_directives={"language_level": "3", "boundscheck": False, "wraparound": False},
    ),
)

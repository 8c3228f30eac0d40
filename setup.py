"""Build matchcore: its source folders install as one namespace, ``matchcore.*``.

The Cython extensions are compiled here (numpy headers on the include path). Set
``MATCHCORE_DEBUG=1`` to build with bounds checks and internal assertions on.
"""
import os

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("MATCHCORE_DEBUG") == "1"

# Source folder -> import package. ``matchcore`` itself is a namespace (PEP 420), so
# nothing plainly named ``core`` lands in site-packages.
PACKAGE_DIRS = {
    "matchcore": "matchcore",          # a namespace portion holding only errors.py
    "matchcore.core": "core",
    "matchcore.protocol": "protocol",
    "matchcore.gateway": "gateway",
    "matchcore.persistence": "persistence",
    "matchcore.client": "client",
    "matchcore.cli": "cli",
    "matchcore.bench": "bench",        # its pytest files (bench/tests/) are not a package: not shipped
}
INCLUDE_DIRS = ["core", "protocol", "persistence"]


def extension(name: str, source: str) -> Extension:
    macros = [("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")]
    if not DEBUG:
        macros.append(("CYTHON_WITHOUT_ASSERTIONS", "1"))
    return Extension(
        name,
        [source],
        include_dirs=[numpy.get_include(), *INCLUDE_DIRS],
        define_macros=macros,
        extra_compile_args=["-O3", "-std=c11"] if not DEBUG else ["-O0", "-g"],
    )


EXTENSIONS = [
    extension("matchcore.core._core", "core/_core.pyx"),
    extension("matchcore.protocol._codec", "protocol/_codec.pyx"),
    extension("matchcore.persistence._checksum", "persistence/_checksum.pyx"),
]

setup(
    package_dir=PACKAGE_DIRS,
    packages=list(PACKAGE_DIRS),
    package_data={
        "matchcore.core": ["*.pxd", "*.pyx", "*.pxi", "*.h", "*.pyi", "py.typed"],
        "matchcore.protocol": ["*.pyx", "*.pyi", "py.typed"],
        "matchcore.gateway": ["py.typed"],
        "matchcore.persistence": ["*.pyx", "*.h", "*.pyi"],
        "matchcore.client": ["py.typed"],
        "matchcore.cli": ["py.typed"],
    },
    ext_modules=cythonize(
        EXTENSIONS,
        compiler_directives={
            "language_level": "3",
            "boundscheck": DEBUG,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": DEBUG,
        },
        include_path=INCLUDE_DIRS,
    ),
    zip_safe=False,
)

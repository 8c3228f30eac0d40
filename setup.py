"""Build matchcore: its source folders install as one namespace, ``matchcore.*``.

The Cython extensions are compiled here (numpy headers on the include path). Set
``MATCHCORE_DEBUG=1`` for the debug build: -O0 -g, bounds checks, Cython's asserts, and the
expensive internal checks of core/atomics.h (MC_DEBUG_BUILD: the engine's invariants after
every command). The cheap checks (mc_check) are on in both builds. A debug build keeps its
generated C and objects under build/debug, so it never reuses the release build's (nor the
other way round): both decide what to rebuild by timestamps only, not by flags.
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


def cython_package_layout() -> str:
    """A folder holding matchcore/<package> -> <source folder> symlinks; its path.

    Cython finds a module's own .pxd (core/_core.pxd declares the fields and cdef methods of
    matchcore.core._core's classes) by the module's qualified name, in the package layout
    under an include directory: matchcore/core/_core.pxd. Our folders become packages only
    through package_dir, so that layout is given to Cython as symlinks under build/.
    """
    root = os.path.join("build", "cython-packages")
    namespace = os.path.join(root, "matchcore")
    os.makedirs(namespace, exist_ok=True)
    for package, folder in PACKAGE_DIRS.items():
        if package == "matchcore":
            continue  # the namespace itself (errors.py) has no Cython declarations
        link = os.path.join(namespace, package.rpartition(".")[2])
        target = os.path.relpath(folder, namespace)
        if os.path.islink(link) and os.readlink(link) == target:
            continue
        if os.path.lexists(link):
            os.remove(link)
        os.symlink(target, link)
    return root


def extension(name: str, source: str) -> Extension:
    macros = [("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")]
    if DEBUG:
        macros.append(("MATCHCORE_DEBUG", "1"))
    else:
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
        include_path=[*INCLUDE_DIRS, cython_package_layout()],
        build_dir=os.path.join("build", "debug", "cython") if DEBUG else None,
    ),
    options={"build": {"build_base": os.path.join("build", "debug")}} if DEBUG else {},
    zip_safe=False,
)

"""What every benchmark prints first: the machine, the versions, the parameters."""
from __future__ import annotations

import os
import platform
import sys


def machine_info() -> dict:
    """Machine and software facts that a figure is meaningless without."""
    import numpy

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        from importlib.metadata import version

        cython_version = version("cython")
    except Exception:  # Cython is a build dependency only; absence is not an error
        cython_version = "n/a"
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": sys.version.split()[0],
        "numpy": numpy.__version__,
        "cython": cython_version,
        "platform": platform.platform(),
    }


def print_header(title: str, parameters: dict) -> None:
    info = machine_info()
    print(f"# {title}")
    print(f"machine: {info['cpu']}, {info['cores']} cores, {info['platform']}")
    print(f"versions: python {info['python']}, numpy {info['numpy']}, cython {info['cython']}")
    print("parameters: " + ", ".join(f"{k}={v}" for k, v in parameters.items()))

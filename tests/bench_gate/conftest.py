"""ci/gate.py loaded as a module, one instance per test module (they patch its globals)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def gate(request):
    name = "matchcore_ci_gate_" + request.module.__name__.rpartition(".")[2]
    spec = importlib.util.spec_from_file_location(name, ROOT / "ci" / "gate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

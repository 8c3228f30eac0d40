"""The performance gate works: it passes an unchanged build of this tree 3 times in a row and
fails a build with a slowdown planted in Engine.apply_one (ci/gate_selftest.sh).

About 3 minutes (two builds of the extensions, four gate runs under valgrind), so it runs only
when asked: ``MATCHCORE_GATE_SELFTEST=1 python -m pytest -q tests/bench_gate``.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("MATCHCORE_GATE_SELFTEST") != "1",
                    reason="about 3 minutes: set MATCHCORE_GATE_SELFTEST=1 to run it")
@pytest.mark.skipif(shutil.which("valgrind") is None, reason="needs valgrind")
@pytest.mark.skipif(not (ROOT / ".git").exists(), reason="needs the git checkout it copies")
def test_gate_passes_unchanged_tree_and_fails_planted_slowdown():
    completed = subprocess.run(["bash", str(ROOT / "ci" / "gate_selftest.sh")],
                               env=dict(os.environ, PYTHON=sys.executable),
                               capture_output=True, text=True, timeout=1200)
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output[-6000:]
    assert "selftest PASSED" in completed.stdout
    assert completed.stdout.count("\nPASS\n") == 3
    assert "REGRESSED" in completed.stdout

"""The gate refuses a stale build, reports the wall-clock ratio without a verdict, and names the functions that moved in a kept callgrind output (ci/gate.py, without running valgrind)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest


def test_the_speed_ratio_is_reported_without_a_verdict(gate):
    name = "engine_speedup_vs_reference"
    base = {"figures": {name: {"value": 164.0, "direction": "higher", "threshold_pct": 50.0}}}
    for current in (382.0, 60.0):  # the same code, a loaded and a quiet run
        (row,) = gate.compare(base, {"figures": {name: current}})
        assert row["verdict"] == "report only", current


def make_tree(root: Path) -> tuple[Path, Path]:
    for folder in gate_folders():
        (root / folder).mkdir(parents=True)
    source = root / "core" / "engine.pxi"
    source.write_text("# engine\n")
    (root / "core" / "_core.pyx").write_text("include 'engine.pxi'\n")
    (root / "core" / "_core.c").write_text("/* generated */\n")
    extension = root / "core" / "_core.cpython-311-x86_64-linux-gnu.so"
    extension.write_bytes(b"\x7fELF")
    return source, extension


def gate_folders():
    return ("core", "protocol", "persistence")


def test_an_extension_older_than_a_source_is_refused(gate, tmp_path, monkeypatch):
    source, extension = make_tree(tmp_path)
    os.utime(source, ns=(2_000_000_000_000_000_000,) * 2)       # edited after the build
    os.utime(extension, ns=(1_000_000_000_000_000_000,) * 2)
    monkeypatch.setattr(gate, "extension_paths", lambda python, env: {"matchcore.core._core": extension})
    with pytest.raises(gate.GateError, match="stale.*engine.pxi.*Rebuild"):
        gate.refuse_stale_build("python", {}, tmp_path)
    os.utime(extension, ns=(3_000_000_000_000_000_000,) * 2)     # rebuilt
    gate.refuse_stale_build("python", {}, tmp_path)


def test_the_generated_c_file_does_not_count_as_a_source(gate, tmp_path):
    make_tree(tmp_path)
    names = {path.name for path in gate.native_sources(tmp_path)}
    assert names == {"engine.pxi", "_core.pyx"}


@pytest.mark.skipif(shutil.which("callgrind_annotate") is None, reason="needs valgrind's callgrind_annotate")
def test_a_regression_names_the_functions_that_moved(gate, tmp_path, monkeypatch):
    monkeypatch.setattr(gate, "CALLGRIND_KEPT", tmp_path)
    profile = "events: Ir\nfl=core/_core.c\nfn=apply_one\n1 {apply}\nfn=match\n2 {match}\ntotals: {total}\n"
    (tmp_path / "engine_apply.out").write_text(profile.format(apply=1000, match=900, total=1900))
    assert "no passing run" in gate.moved_functions("engine_apply")[0]
    gate.mark_passing_run()
    (tmp_path / "engine_apply.out").write_text(profile.format(apply=1500, match=890, total=2390))
    moved = gate.moved_functions("engine_apply")
    assert moved == ["+500 Ir  core/_core.c:apply_one", "-10 Ir  core/_core.c:match"]

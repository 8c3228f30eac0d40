"""The gate's verdicts: a figure beyond its threshold in its bad direction fails, noise and
improvements do not, a figure the baseline has but the run lacks fails, and updating the
baseline keeps its thresholds (ci/gate.py, without running valgrind)."""
from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def baseline(**figures):
    return {"figures": {name: {"value": value, "direction": direction, "threshold_pct": threshold}
                        for name, (value, direction, threshold) in figures.items()}}


def measured(**figures):
    return {"figures": figures, "checksums": {}, "toolchain": {}}


def verdicts(gate, base, current):
    return {row["figure"]: row["verdict"] for row in gate.compare(base, current)}


def test_counts_fail_beyond_their_threshold_only(gate):
    base = baseline(a=(1000.0, "lower", 3.0), b=(1000.0, "lower", 3.0), c=(1000.0, "lower", 3.0))
    result = verdicts(gate, base, measured(a=1100.0, b=1029.0, c=900.0))
    assert result == {"a": "REGRESSED", "b": "ok", "c": "improved"}


def test_ratios_fail_when_they_fall(gate):
    base = baseline(speedup=(200.0, "higher", 50.0))
    assert verdicts(gate, base, measured(speedup=99.0)) == {"speedup": "REGRESSED"}
    assert verdicts(gate, base, measured(speedup=101.0)) == {"speedup": "ok"}
    assert verdicts(gate, base, measured(speedup=400.0)) == {"speedup": "improved"}


def test_missing_figures_fail_and_new_ones_do_not(gate):
    base = baseline(old=(10.0, "lower", 3.0))
    assert verdicts(gate, base, measured(new=5.0)) == {"old": "MISSING", "new": "new"}


def test_update_keeps_thresholds_and_notes(gate):
    name = "engine_apply_instructions_per_command"
    base = {"figures": {name: {"value": 1.0, "direction": "lower", "threshold_pct": 7.5,
                               "measured": "a note", "unit": "instructions/command"}}}
    run = {"figures": {name: 1234.56}, "checksums": {name: "abcd"}, "toolchain": {"binaries": {}}}
    figure = gate.updated_baseline(base, run)["figures"][name]
    assert figure["value"] == 1234.6 and figure["threshold_pct"] == 7.5
    assert figure["measured"] == "a note" and figure["checksum"] == "abcd"


def test_the_committed_baseline_is_complete(gate):
    import json

    committed = json.loads((ROOT / "ci" / "baseline.json").read_text())
    assert set(committed["figures"]) == set(gate.FIGURES)
    for figure in committed["figures"].values():
        assert figure["value"] > 0 and figure["threshold_pct"] > 0
        assert figure["direction"] in ("lower", "higher")


def test_callgrind_totals_are_read_from_the_summary(gate, tmp_path):
    out = tmp_path / "callgrind.out"
    out.write_text("# callgrind format\nevents: Ir Dr\nsummary: 29924012 7518613\n"
                   "fn=(1) x\n1 5 6\ntotals: 29924012 7518613\n")
    assert gate.callgrind_totals(out) == {"Ir": 29924012, "Dr": 7518613}

"""``bench report`` stays runnable: a quick report (tiny sizes, every stage that exists here,
the journal stages on the embedded server) writes a page naming every target.

Not in the default test run (``tests/`` is). Run: ``pytest bench/test_bench_report.py``.
"""
from __future__ import annotations

import json

from matchcore.bench.report import TARGETS, run_report


def test_quick_report(tmp_path):
    gate_latest = tmp_path / "gate-latest.json"
    gate_latest.write_text(json.dumps({
        "time": "now", "baseline": "ci/baseline.json", "toolchain": {"compiler": "gcc"},
        "rows": [{"figure": "engine_apply_instructions_per_command", "baseline": 100.0,
                  "current": 101.0, "change_pct": 1.0, "limit_pct": 3.0, "verdict": "ok"}]}))
    page = run_report(tmp_path / "report.md", quick=True, gate_latest=gate_latest)
    assert (tmp_path / "report.md").read_text() == page
    for _, _, _, _, what, _ in TARGETS:
        assert what in page
    assert "engine_apply_instructions_per_command" in page
    results = json.loads((tmp_path / "report.json").read_text())
    # every stage either measured or says why not; the core always measures
    assert all("figures" in r or r.get("error") for r in results.values())
    assert "figures" in results["core"] and "figures" in results["memory"]

"""Every metric family the server exports is tabled in docs/operations.md with its exact type and
HELP text, and a real scrape of the registry holds them all (plus the process collector and
build_info), so the doc, the code and the dashboards cannot drift apart."""
from __future__ import annotations

import re
from pathlib import Path

from prometheus_client import generate_latest

from matchcore.gateway.metrics import METRICS, GatewayMetrics

DOC = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


def documented() -> dict[str, tuple[str, str]]:
    text = DOC.read_text(encoding="utf-8")
    block = text[text.index("<!-- metrics:"):text.index("<!-- /metrics -->")]
    rows = re.findall(r"^\| `(matchcore_\w+)` \| (\w+) \| (.+) \|$", block, re.M)
    return {name.removesuffix("_total") if kind == "counter" else name: (kind, help_) for name, kind, help_ in rows}


def test_the_doc_tables_every_metric_with_its_help_text():
    assert documented() == METRICS


def test_a_scrape_holds_every_documented_family_with_that_help():
    metrics = GatewayMetrics()
    text = generate_latest(metrics.registry()).decode()
    for name, (kind, help_) in METRICS.items():
        assert f"# HELP {name + ('_total' if kind == 'counter' else '')} {help_}\n" in text \
            or f"# HELP {name} {help_}\n" in text, name
        assert f"# TYPE {name} {kind}\n" in text or f"# TYPE {name}_total {kind}\n" in text, name
    assert "process_cpu_seconds_total" in text and 'build="release"' in text

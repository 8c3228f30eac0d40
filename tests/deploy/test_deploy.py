"""What deploy/ ships works: promtool accepts the alert rules, every metric the rules and the
dashboard name is one the server exports, and under systemd's Type=notify a real server says
READY=1 once it listens and STOPPING=1 when its stop sequence begins."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

from matchcore.gateway.metrics import METRICS

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
RULES = DEPLOY / "prometheus" / "matchcore-alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "matchcore-dashboard.json"
UNIT = DEPLOY / "systemd" / "matchcore.service"
#: families that come from elsewhere: Prometheus itself, prometheus-client, node_exporter
FOREIGN = re.compile(r"^(up|process_\w+|python_\w+|node_\w+)$")


def _exported(name: str) -> bool:
    for suffix in ("_total", "_bucket", "_sum", "_count"):
        if name.endswith(suffix) and name.removesuffix(suffix) in METRICS:
            return True
    return name in METRICS or bool(FOREIGN.match(name))


def _metric_names(expr: str) -> set[str]:
    names = set(re.findall(r"\b(matchcore_\w+|process_\w+|node_\w+|up)\b(?=\s*[{\[)\s<>=*/+-]|$)", expr))
    return names


def test_promtool_accepts_the_alert_rules():
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing: ci/env.sh installs Debian's prometheus package")
        pytest.skip("promtool not installed (ci/env.sh installs it as root)")
    result = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_rules_and_dashboard_name_only_exported_metrics():
    expressions = re.findall(r"^\s*expr:\s*(.+)$", RULES.read_text(), re.M)
    dashboard = json.loads(DASHBOARD.read_text())
    expressions += [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    assert len(expressions) > 15
    used = set().union(*(_metric_names(expr) for expr in expressions))
    assert {name for name in used if not _exported(name)} == set()
    assert {"matchcore_journal_lag_commands", "matchcore_commit_latency_seconds_bucket"} <= used


def test_the_unit_is_type_notify_and_runs_serve():
    text = UNIT.read_text()
    assert "Type=notify" in text and re.search(r"^ExecStart=\S+matchcore serve", text, re.M)


def _scrape(port: int) -> str:
    import time
    import urllib.request

    deadline = time.monotonic() + 5
    while True:  # the metrics text is cached up to metrics_cache_ms
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        value = re.search(r"^matchcore_released_seq (\S+)$", text, re.M)
        if (value and float(value.group(1)) > 0) or time.monotonic() > deadline:
            return text
        time.sleep(0.2)


def test_a_server_notifies_ready_then_stopping(pg_server, monkeypatch):
    from tests.e2e.conftest import ServerProcess, run

    folder = Path(tempfile.mkdtemp(prefix="matchcore-notify-"))
    folder.chmod(0o755)
    path = folder / "notify"
    channel = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    channel.bind(str(path))
    channel.settimeout(30)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    server = ServerProcess(pg_server, folder)
    try:
        server.start()
        ready = channel.recv(4096).decode()
        assert "READY=1" in ready and f"MAINPID={server.process.pid}" in ready and str(server.port) in ready
        run(server.market())
        scraped = _scrape(server.metrics_port)
        assert float(re.search(r"^matchcore_released_seq (\S+)$", scraped, re.M).group(1)) > 0
        assert re.search(r"^matchcore_journal_commit_age_seconds \S+$", scraped, re.M)
        assert 'matchcore_build_info{' in scraped and "process_resident_memory_bytes" in scraped
        server.process.send_signal(signal.SIGTERM)
        assert "STOPPING=1" in channel.recv(4096).decode()
        assert server.process.wait(30) == 0
    finally:
        channel.close()
        server.drop()
        shutil.rmtree(folder, ignore_errors=True)

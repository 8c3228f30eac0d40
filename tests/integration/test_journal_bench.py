"""The journal benchmark runs end to end on the real server (tiny, so it cannot rot)."""
from __future__ import annotations

from matchcore.bench.journal_bench import main, run_journal_bench


def test_journal_bench_tiny(pg_server, capsys) -> None:
    result = run_journal_bench(5_000, 1_024, warmup_commands=1_024, dsn=pg_server.admin_dsn)
    assert result["parameters"]["commands"] == 5_120  # whole batches
    assert result["commands"] == 5_120 and result["rows"] == 5
    assert result["journal_cmds_per_s"] > 0
    assert result["commit_latency_p50_ms"] <= result["commit_latency_p99_ms"]
    assert result["journal_read_cmds_per_s"] > 0
    assert len(result["checksum"]) == 8
    assert main(["--commands", "2048", "--batch", "1024", "--warmup-commands", "0",
                 "--dsn", pg_server.admin_dsn]) == 0
    printed = capsys.readouterr().out
    assert printed.index("machine") < printed.index("checksum") < printed.index("journal_cmds_per_s")

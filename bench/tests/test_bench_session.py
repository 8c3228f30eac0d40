"""The session bench runs tiny (so it cannot rot) and its replies are what each kind must get."""
from __future__ import annotations

from matchcore.bench.session_bench import KINDS, run_session_bench


def test_session_bench_tiny():
    result = run_session_bench(frames=200, repeats=1, as_json=True)
    assert set(result["kinds"]) == set(KINDS)
    kinds = result["kinds"]
    assert kinds["new_order"]["reply_bytes"] == 0 and kinds["heartbeat"]["reply_bytes"] == 0
    for refused in ("refused_admin", "wrong_account"):
        assert kinds[refused]["reply_bytes"] == 16 * 200  # one SESSION_REJECT each
    assert kinds["over_rate"]["reply_bytes"] == 16 * 199  # the burst of 1 takes the first

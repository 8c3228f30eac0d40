"""pytest-benchmark: Engine.apply on the mixed workload (tiny by default; MATCHCORE_BENCH_FULL=1
for full size). Prints figures; asserts only that the work was real (events equal the reference)."""
import os

import pytest

from matchcore.bench.workload import mixed_workload
from matchcore.core import Engine, commands as c
from matchcore.core.reference import ReferenceEngine

COMMANDS = 1_000_000 if os.environ.get("MATCHCORE_BENCH_FULL") == "1" else 20_000


@pytest.fixture(scope="module")
def workload():
    w = mixed_workload(COMMANDS, seed=1)
    return w, c.number(w.setup.copy()), c.number(w.commands.copy(), first_seq=len(w.setup) + 1)


def test_engine_apply_mixed(benchmark, workload):
    w, setup, measured = workload

    def fresh():
        engine = Engine(w.config)
        engine.apply(setup)
        return (engine,), {}

    events = benchmark.pedantic(lambda engine: engine.apply(measured), setup=fresh, rounds=5)
    reference = ReferenceEngine(w.config)
    reference.apply(setup)
    prefix = min(COMMANDS, 5_000)
    check = Engine(w.config)
    check.apply(setup)
    assert check.apply(measured[:prefix]).tobytes() == reference.apply(measured[:prefix]).tobytes()
    benchmark.extra_info["commands"] = COMMANDS
    benchmark.extra_info["events"] = len(events)

"""pytest-benchmark: the pipeline (input ring -> core thread -> output ring) on the mixed workload,
tiny by default (MATCHCORE_BENCH_FULL=1 for full size); asserts the events equal Engine.apply's.

Not in the default test run (``tests/`` is). Run: ``pytest bench/test_bench_pipeline.py``.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

from matchcore.bench.pipeline_bench import pump
from matchcore.bench.workload import mixed_workload
from matchcore.core import Engine, commands as c
from matchcore.core._core import Pipeline, split_output

COMMANDS = 2_000_000 if os.environ.get("MATCHCORE_BENCH_FULL") == "1" else 20_000


@pytest.fixture(scope="module")
def workload():
    w = mixed_workload(COMMANDS, seed=1)
    return w, c.number(w.setup.copy()), w.commands


def test_pipeline_mixed(benchmark, workload):
    w, setup, measured = workload

    def run():
        engine = Engine(w.config)
        engine.apply(setup)
        pipeline = Pipeline(engine, next_seq=len(setup) + 1)
        pipeline.start()
        collected: list = []
        try:
            pump(pipeline, measured, collect=collected)
        finally:
            pipeline.stop()
        return collected

    collected = benchmark.pedantic(run, rounds=3)
    _, events, _ = split_output(np.concatenate(collected))
    direct = Engine(w.config)
    direct.apply(setup)
    expected = direct.apply(c.number(measured.copy(), first_seq=len(setup) + 1))
    assert events.tobytes() == expected.tobytes()
    benchmark.extra_info["commands"] = COMMANDS
    benchmark.extra_info["events"] = len(events)

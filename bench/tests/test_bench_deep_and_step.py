"""Tiny runs of ``matchcore-bench core --workload deep`` and ``matchcore-bench step`` (full
size with MATCHCORE_BENCH_FULL=1): the deep-book generator keeps its book deep and every
cancel live, both benches check their work (events equal the reference's, the stepper's equal
apply()'s) and print their figures. No time is asserted."""
import os

import numpy as np

from matchcore.bench.core_bench import run_core_bench
from matchcore.bench.deep_workload import LEVELS_PER_SIDE, ORDERS_PER_LEVEL, deep_workload
from matchcore.bench.step_bench import run_step_bench
from matchcore.core import CommandKind, Engine, EventKind, commands as c

FULL = os.environ.get("MATCHCORE_BENCH_FULL") == "1"


def test_deep_workload_keeps_a_deep_book_and_cancels_only_live_orders():
    workload = deep_workload(20_000, seed=1)
    engine = Engine(workload.config)
    engine.apply(c.number(workload.setup.copy()))
    events = engine.apply(c.number(workload.commands.copy(), first_seq=len(workload.setup) + 1))
    assert not (events["kind"] == EventKind.REJECTED).any()
    depth = np.concatenate([engine.depth(0, side, LEVELS_PER_SIDE) for side in (1, 2)])
    assert len(depth) == 2 * LEVELS_PER_SIDE
    assert (depth[:, 2] > ORDERS_PER_LEVEL * 0.8).all() and (depth[:, 2] < ORDERS_PER_LEVEL * 1.2).all()
    # one account per order: no account id is used by two new orders
    orders = workload.commands[workload.commands["kind"] == CommandKind.NEW_ORDER]
    assert len(np.unique(orders["account_id"])) == len(orders)


def test_core_bench_deep(capsys):
    result = run_core_bench(commands=1_000_000 if FULL else 5_000, reference_commands=2_000,
                            repeats=3 if FULL else 1, workload_name="deep")
    assert result["workload"] == "deep" and result["events"] > 0
    assert "ratio:" in capsys.readouterr().out


def test_step_bench(capsys):
    result = run_step_bench(commands=200_000 if FULL else 3_000, apply_commands=1_000,
                            repeats=3 if FULL else 1)
    assert result["events"] > 0 and result["step_us_per_call"] > 0
    assert "overhead" in capsys.readouterr().out

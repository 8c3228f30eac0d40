"""The pipeline (input ring -> core thread -> output ring) gives exactly Engine.apply's events,
applies backpressure instead of dropping, stops and restarts cleanly, reports core-thread
errors to Python, and wakes an asyncio consumer through its eventfd."""
import asyncio
import time

import numpy as np
import pytest

from matchcore.bench.pipeline_bench import pump
from matchcore.bench.workload import mixed_workload
from matchcore.core import Engine, commands as c
from matchcore.core._core import CoreThreadError, Pipeline, split_output


def prepared(commands=20_000, seed=3):
    workload = mixed_workload(commands, seed=seed, accounts=100, instruments=3)
    setup = c.number(workload.setup.copy())
    engine = Engine(workload.config)
    engine.apply(setup)
    return workload, setup, engine


def test_pipeline_events_equal_engine_apply():
    workload, setup, engine = prepared()
    pipeline = Pipeline(engine, input_ring_capacity_records=1024, output_ring_capacity_records=4096, next_seq=len(setup) + 1)
    pipeline.start()
    drained = []
    _, _, slots_count = pump(pipeline, workload.commands, chunk=700, drain_max=999,
                             collect=drained, timestamp_ns=7)
    pipeline.stop()
    twin = Engine(workload.config)
    twin.apply(setup)
    stamped = c.number(workload.commands.copy(), first_seq=len(setup) + 1, timestamp_ns=7)
    expected = twin.apply(stamped)
    commands, events, _ = split_output(np.concatenate(drained))
    assert commands.tobytes() == stamped.tobytes()
    assert events.tobytes() == expected.tobytes()
    assert engine.state_hash() == twin.state_hash()
    assert slots_count == len(workload.commands) + len(expected)


def test_output_slots_interleave_each_command_with_its_events():
    workload, setup, engine = prepared(commands=3_000)
    pipeline = Pipeline(engine, input_ring_capacity_records=256, output_ring_capacity_records=1 << 14, next_seq=len(setup) + 1)
    pipeline.start()
    assert pipeline.submit(workload.commands[:200], timestamp_ns=42) == 200
    deadline = time.monotonic() + 10
    while pipeline.commands_applied < 200 and time.monotonic() < deadline:
        time.sleep(0.001)
    pipeline.stop()
    slots = pipeline.drain(1 << 14)
    commands, events, owner = split_output(slots)
    twin = Engine(workload.config)
    twin.apply(setup)
    stamped = c.number(workload.commands[:200].copy(), first_seq=len(setup) + 1, timestamp_ns=42)
    assert commands.tobytes() == stamped.tobytes()
    assert events.tobytes() == twin.apply(stamped).tobytes()
    assert (events["seq"] == commands["seq"][owner]).all()


def test_full_rings_are_backpressure_not_loss():
    workload, setup, engine = prepared(commands=5_000)
    pipeline = Pipeline(engine, input_ring_capacity_records=64, output_ring_capacity_records=128, next_seq=len(setup) + 1)
    pipeline.start()
    offered = workload.commands[:2_000]
    accepted = 0
    for _ in range(50):
        accepted += pipeline.submit(offered[accepted:])
        time.sleep(0.002)
    assert accepted < len(offered), "nobody drains: the rings must fill and refuse"
    assert pipeline.output_depth == pipeline.output_ring_capacity_records
    slots = []
    while accepted < len(offered) or pipeline.commands_applied < len(offered):
        accepted += pipeline.submit(offered[accepted:])
        slots.append(pipeline.drain(100))
    pipeline.stop()
    slots.append(pipeline.drain(1 << 12))
    commands, events, _ = split_output(np.concatenate(slots))
    assert len(commands) == len(offered)
    assert (np.diff(commands["seq"].astype(np.int64)) == 1).all()


def test_stop_and_restart_many_times():
    workload, setup, engine = prepared(commands=4_000)
    pipeline = Pipeline(engine, next_seq=len(setup) + 1)
    done = 0
    for round_index in range(25):
        pipeline.start()
        chunk = workload.commands[done:done + 160]
        pipeline.submit_all(chunk)
        done += len(chunk)
        pipeline.stop()
        assert not pipeline.running
        assert pipeline.commands_applied == done
    twin = Engine(workload.config)
    twin.apply(setup)
    twin.apply(c.number(workload.commands[:done].copy(), first_seq=len(setup) + 1))
    assert twin.state_hash() == engine.state_hash()


def test_idle_core_thread_blocks_and_submit_wakes_it():
    """An idle core thread blocks on its eventfd (its poll times out only every 10 ms as a
    safety net): a submit must wake it at once, and stop/pause must reach it while blocked."""
    workload, setup, engine = prepared(commands=200)
    pipeline = Pipeline(engine, next_seq=len(setup) + 1)
    pipeline.start()
    waits = []
    for command in workload.commands[:20]:
        time.sleep(0.02)  # long enough for the core thread to block
        started = time.perf_counter()
        assert pipeline.submit(command.reshape(1)) == 1
        while pipeline.output_depth == 0:
            time.sleep(0.00005)  # not a busy loop: it could hold the CPU the core thread needs
        waits.append(time.perf_counter() - started)
        pipeline.drain()
    # woken by the submit: far below the 5 ms a timeout-only wake-up would average
    assert sorted(waits)[len(waits) // 2] < 0.002, waits
    time.sleep(0.02)
    pipeline.pause()
    pipeline.resume()
    time.sleep(0.02)
    started = time.perf_counter()
    pipeline.stop()
    assert time.perf_counter() - started < 1.0
    assert pipeline.commands_applied == 20


def test_core_thread_error_surfaces_in_python():
    workload, setup, engine = prepared(commands=1_000)
    pipeline = Pipeline(engine, next_seq=len(setup) + 1)
    pipeline.inject_fault_after(100)
    pipeline.start()
    pipeline.submit(workload.commands[:500])
    deadline = time.monotonic() + 10
    while pipeline.running and time.monotonic() < deadline:
        time.sleep(0.001)
    with pytest.raises(CoreThreadError, match="injected fault"):
        pipeline.drain(1 << 16)
        pipeline.drain(1 << 16)
    with pytest.raises(CoreThreadError):
        pipeline.submit(workload.commands[500:510])


def test_asyncio_consumer_is_woken_by_the_eventfd():
    workload, setup, engine = prepared(commands=1_000)
    pipeline = Pipeline(engine, next_seq=len(setup) + 1)
    pipeline.start()

    async def consume():
        loop = asyncio.get_running_loop()
        woken = asyncio.Event()
        loop.add_reader(pipeline.wake_fd, woken.set)
        try:
            assert pipeline.arm_wakeup() == 0
            loop.call_later(0.05, pipeline.submit, workload.commands[:10])
            await asyncio.wait_for(woken.wait(), 5)
            pipeline.clear_wakeup()
        finally:
            loop.remove_reader(pipeline.wake_fd)
        got = 0
        while got < 10:
            slots = pipeline.drain(1000)
            got += int(np.count_nonzero(slots[:, 16] < 64))
            await asyncio.sleep(0.001)
        return got

    assert asyncio.run(consume()) == 10
    pipeline.stop()


def test_pause_gives_a_consistent_snapshot_point():
    workload, setup, engine = prepared(commands=20_000)
    pipeline = Pipeline(engine, next_seq=len(setup) + 1)
    pipeline.start()
    drained = []
    pipeline.submit(workload.commands[:10_000], timestamp_ns=5)
    while pipeline.commands_applied < 100:
        time.sleep(0.0001)
    seq = pipeline.pause()
    snapshot = engine.snapshot()
    pipeline.resume()
    pump(pipeline, workload.commands[10_000:], collect=drained, timestamp_ns=5)
    pipeline.stop()
    # the snapshot equals an engine that applied exactly the commands up to seq
    twin = Engine(workload.config)
    twin.apply(setup)
    stamped = c.number(workload.commands.copy(), first_seq=len(setup) + 1, timestamp_ns=5)
    twin.apply(stamped[stamped["seq"] <= seq])
    assert twin.snapshot() == snapshot
    assert seq >= len(setup) + 100

"""The per-command path (Engine.stepper / ReferenceEngine.stepper): one command of a
caller-owned array per step, the events of apply() in a reusable array, its limits checked."""
from __future__ import annotations

import numpy as np
import pytest

from matchcore.core import COMMAND_DTYPE, EVENT_DTYPE, EngineConfig
from matchcore.core import commands as c

CONFIG = EngineConfig(max_accounts=8, max_assets=2, max_instruments=1, max_orders=64,
                      max_price_levels=8)
SETUP = [c.add_asset(0), c.add_asset(1), c.add_instrument(0, 1, 0)]
SETUP += [c.add_account(a) for a in (1, 2)]
SETUP += [c.deposit(a, asset, 10**9, 1 + asset) for a in (1, 2) for asset in (0, 1)]


def test_a_reused_command_record_gives_the_events_of_apply(engine_cls):
    stream = c.number(c.pack(SETUP + [c.limit(1, 0, 1, c.SELL, 100, 5), c.limit(1, 0, 2, c.SELL, 101, 5),
                                      c.limit(2, 0, 1, c.BUY, 101, 8), c.cancel(1, 2)]))
    expected = engine_cls(CONFIG).apply(stream)
    engine = engine_cls(CONFIG)
    record = np.zeros(1, dtype=COMMAND_DTYPE)     # the caller writes each command here
    stepper = engine.stepper(record)
    got = []
    for command in stream:
        record[0] = command
        count = stepper.step()
        got.append(stepper.events[:count].copy())
    assert np.concatenate(got).tobytes() == expected.tobytes()


def test_events_array_grows_when_one_command_outgrows_it(engine_cls):
    orders = [c.limit(1, 0, k, c.SELL, 100, 1) for k in range(1, 6)]
    stream = c.number(c.pack(SETUP + orders + [c.limit(2, 0, 1, c.BUY, 100, 5)]))
    engine = engine_cls(CONFIG)
    engine.apply(stream[:-1])
    given = np.zeros(2, dtype=EVENT_DTYPE)
    stepper = engine.stepper(stream, given)
    count = stepper.step(len(stream) - 1)
    assert count == 6       # ACCEPTED and five FILLs
    assert len(stepper.events) >= 6 and stepper.events is not given
    assert (stepper.events[1:count]["kind"] == stepper.events[1]["kind"]).all()


def test_stepper_refuses_bad_arrays_and_indices(engine_cls):
    engine = engine_cls(CONFIG)
    with pytest.raises(TypeError):
        engine.stepper(np.zeros(2, dtype=EVENT_DTYPE))
    with pytest.raises(TypeError):
        engine.stepper(np.zeros(4, dtype=COMMAND_DTYPE)[::2])
    with pytest.raises(TypeError):
        engine.stepper(np.zeros(1, dtype=COMMAND_DTYPE), np.zeros(0, dtype=EVENT_DTYPE))
    stepper = engine.stepper(np.zeros(1, dtype=COMMAND_DTYPE))
    with pytest.raises(IndexError):
        stepper.step(1)
    with pytest.raises(IndexError):
        stepper.step(-1)

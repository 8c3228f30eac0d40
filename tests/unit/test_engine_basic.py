"""Engine is ReferenceEngine's twin on random command streams (events, state hash, snapshot
bytes, queries), restores its own and the reference's snapshots, and rejects malformed ones."""
from __future__ import annotations

import numpy as np
import pytest

from matchcore.core import ALL_INSTRUMENTS, COMMAND_DTYPE, EVENT_DTYPE, Engine, EngineConfig
from matchcore.core import commands as c
from matchcore.core.codes import CommandKind
from matchcore.core.reference import ReferenceEngine
from matchcore.core.snapshot_format import SnapshotError

CONFIG = EngineConfig(max_accounts=8, max_assets=3, max_instruments=3, max_orders=60,
                      max_price_levels=8, fee_account_id=0)
ACCOUNTS = range(1, 7)
EXTREMES = [0, -1, (1 << 62), (1 << 63) - 1]


def setup_commands() -> np.ndarray:
    records = [c.add_asset(a) for a in range(3)] + [c.add_account(a) for a in ACCOUNTS]
    records += [c.add_instrument(0, 0, 1, tick_size=5, lot_size=3, max_order_lots=1000),
                c.add_instrument(1, 2, 1, tick_size=1, lot_size=1, max_order_lots=50),
                c.set_fees(0, 5, 30), c.set_fees(1, 0, 10000)]
    transfer_id = 1
    for account in ACCOUNTS:
        for asset in range(3):
            records.append(c.deposit(account, asset, 20_000, transfer_id))
            transfer_id += 1
    return c.pack(records)


def random_commands(rng: np.random.Generator, count: int, live: list) -> np.ndarray:
    """Mostly plausible orders, cancels and replaces around a mid of 50, with every other
    command kind and garbage field values mixed in."""
    out = np.zeros(count, dtype=COMMAND_DTYPE)
    for record in out:
        roll = rng.random()
        account = int(rng.choice(list(ACCOUNTS) + [0, 9]))
        if roll < 0.05:
            kind = int(rng.integers(1, 10))
            record["kind"] = kind
            record["account_id"] = account
            record["asset_id"] = int(rng.integers(0, 4))
            record["instrument_id"] = int(rng.integers(0, 4))
            record["client_id"] = int(rng.integers(0, 50))
            record["price"] = int(rng.choice([1, 5, 40, 10000] + EXTREMES))
            record["quantity"] = int(rng.choice([2, 10, 100, 5000] + EXTREMES))
            record["limit"] = int(rng.choice([0, 80, 1000, (1 << 63) - 1]))
            if kind == CommandKind.HALT_INSTRUMENT and rng.random() < 0.7:
                record["kind"] = CommandKind.RESUME_INSTRUMENT
        elif roll < 0.08:
            record["kind"] = int(rng.choice([CommandKind.MASS_CANCEL, 0, 16, 99]))
            record["account_id"] = account
            record["instrument_id"] = int(rng.choice([0, 1, 3, ALL_INSTRUMENTS]))
        elif roll < 0.35 and live:
            account, client_id, price = live[int(rng.integers(0, len(live)))]
            cancel = rng.random() < 0.5
            record["kind"] = CommandKind.CANCEL if cancel else CommandKind.REPLACE
            record["account_id"] = account
            record["client_id"] = client_id
            record["price"] = price + 5 * int(rng.integers(-2, 3))
            record["quantity"] = int(rng.choice([1, 3, 8, 20, 0]))
        else:
            record["kind"] = CommandKind.NEW_ORDER
            record["account_id"] = account
            record["instrument_id"] = int(rng.choice([0, 0, 1, 2]))
            record["side"] = int(rng.choice([1, 2, 1, 2, 0]))
            market = rng.random() < 0.15
            record["order_type"] = 2 if market else int(rng.choice([1, 1, 1, 3]))
            record["time_in_force"] = int(rng.choice([2, 3])) if market else int(rng.choice([1, 1, 1, 2, 3]))
            record["stp_mode"] = int(rng.choice([1, 2, 3]))
            record["flags"] = int(rng.choice([0, 0, 0, 1, 2]))
            price = 5 * int(rng.integers(6, 15))
            record["price"] = 0 if market and rng.random() < 0.5 else price
            record["quantity"] = int(rng.integers(1, 12)) if rng.random() < 0.95 else int(rng.choice(EXTREMES))
            if market and record["side"] == 1 and rng.random() < 0.6:
                record["limit"] = int(rng.choice([60, 400, 10**6]))
            client_id = int(rng.integers(1, 10**6))
            record["client_id"] = client_id
            live.append((int(record["account_id"]), client_id, price))
    return out


def assert_twins(reference: ReferenceEngine, engine: Engine) -> None:
    engine.check_invariants()
    assert engine.state_hash() == reference.state_hash()
    assert engine.snapshot() == reference.snapshot()
    assert np.array_equal(engine.balances_array(), reference.balances_array())
    assert engine.live_order_count() == reference.live_order_count()
    for instrument in range(4):
        for side in (1, 2):
            assert np.array_equal(engine.depth(instrument, side, 20),
                                  reference.depth(instrument, side, 20))
    for account, client_id in list(reference.orders)[:20]:
        assert engine.order(account, client_id) == reference.order(account, client_id)
    for asset in range(4):
        assert engine.totals(asset) == reference.totals(asset)


@pytest.mark.parametrize("seed", range(6))
def test_random_stream_matches_reference_through_snapshots(seed):
    rng = np.random.default_rng(seed)
    reference, engine = ReferenceEngine(CONFIG), Engine(CONFIG)
    commands = c.number(setup_commands())
    assert engine.apply(commands).tobytes() == reference.apply(commands).tobytes()
    live: list = []
    seq = len(commands) + 1
    for batch in range(6):
        commands = c.number(random_commands(rng, 60, live), first_seq=seq, timestamp_ns=seq)
        seq += len(commands)
        events = engine.apply(commands)
        assert events.dtype == EVENT_DTYPE
        assert events.tobytes() == reference.apply(commands).tobytes(), f"batch {batch}"
        assert_twins(reference, engine)
        if batch % 2 == 1:
            engine = Engine.restore(engine.snapshot())
            reference = ReferenceEngine.restore(reference.snapshot())
            assert_twins(reference, engine)
        elif batch == 2:
            engine = Engine.restore(reference.snapshot())
            assert_twins(reference, engine)


def test_engine_without_prefault_is_the_same_engine():
    """prefault=False (tables left to the kernel to fault in, as replays build them) changes
    when pages are touched, nothing else; tables big enough to take the huge-page path."""
    big = EngineConfig(max_accounts=8, max_assets=3, max_instruments=3, max_orders=300_000,
                       max_price_levels=8, fee_account_id=0)
    eager, lazy = Engine(big), Engine(big, prefault=False)
    rng, live = np.random.default_rng(11), []
    commands = c.number(setup_commands())
    seq = len(commands) + 1
    assert eager.apply(commands).tobytes() == lazy.apply(commands).tobytes()
    for _ in range(5):
        commands = c.number(random_commands(rng, 200, live), first_seq=seq, timestamp_ns=seq)
        seq += len(commands)
        assert eager.apply(commands).tobytes() == lazy.apply(commands).tobytes()
    assert eager.state_hash() == lazy.state_hash()
    assert eager.snapshot() == lazy.snapshot()
    restored = Engine.restore(eager.snapshot(), prefault=False)
    assert restored.state_hash() == eager.state_hash()
    restored.check_invariants()


def test_empty_batch_and_wrong_dtype():
    engine = Engine(CONFIG)
    assert len(engine.apply(np.zeros(0, dtype=COMMAND_DTYPE))) == 0
    with pytest.raises(TypeError):
        engine.apply(np.zeros(3, dtype=np.int64))


def test_ids_above_2_pow_63_survive_a_restore():
    """Snapshot words are read signed; client order and transfer ids are unsigned (this
    was a bug of the reference's restore, fixed in both engines)."""
    big = (1 << 63) + 5
    commands = c.number(c.pack([c.add_asset(0), c.add_asset(1), c.add_account(1),
                                c.add_instrument(0, 0, 1), c.deposit(1, 1, 1000, big),
                                c.limit(1, 0, big, 1, 10, 5)]))
    for cls in (ReferenceEngine, Engine):
        engine = cls(CONFIG)
        engine.apply(commands)
        restored = cls.restore(engine.snapshot())
        assert restored.snapshot() == engine.snapshot()
        resend = restored.apply(c.number(c.pack([c.deposit(1, 1, 1000, big),
                                                 c.cancel(1, big)]), first_seq=10))
        assert list(resend["kind"]) == [69, 67]       # the original outcome, then the cancel
        assert restored.balance(1, 1) == (1000, 0)


#: snapshot_format.py: magic, version, six config words, two id counters; words per order
HEADER_WORDS, ORDER_WORDS = 10, 11


@pytest.mark.parametrize("damage", ["truncate", "magic", "trailing", "hold", "count", "level"])
def test_restore_rejects_malformed_snapshots(damage):
    engine = Engine(CONFIG)
    engine.apply(c.number(setup_commands()))
    engine.apply(c.number(c.pack([c.limit(1, 0, 1, 1, 50, 4), c.limit(2, 0, 1, 1, 45, 4)]),
                          first_seq=100))
    words = np.frombuffer(engine.snapshot(), dtype="<i8").copy()
    # the bids of instrument 0: 2 levels, price 50 with order 1, then price 45 with order 2
    bids = next(i for i in range(len(words)) if list(words[i:i + 4]) == [2, 50, 1, 1])
    if damage == "truncate":
        data = words[:-3].tobytes()
    elif damage == "magic":
        words[0] ^= 1
        data = words.tobytes()
    elif damage == "trailing":
        data = np.append(words, 0).tobytes()
    elif damage == "hold":
        words[bids + 3 + ORDER_WORDS + 2 + 4] += 1      # the hold of order 2
        data = words.tobytes()
    elif damage == "count":
        words[HEADER_WORDS] = 1 << 40         # the asset count
        data = words.tobytes()
    else:
        words[bids + 3 + ORDER_WORDS] = 55    # the second bid level now above the best
        data = words.tobytes()
    with pytest.raises(SnapshotError):
        Engine.restore(data)

"""Engine and ReferenceEngine agree on random command streams (valid and invalid), and the
invariants hold after every batch: money conserved, no negative balance, no crossed book,
holds equal what resting orders need; replay is deterministic and snapshots continue exactly."""
from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings, strategies as st

from matchcore.core import commands as c
from matchcore.core.codes import ALL_INSTRUMENTS, CommandKind, Side
from matchcore.core.config import EngineConfig
from matchcore.core.reference import ReferenceEngine, fee_of
from tests.conftest import engine_class

CONFIG = EngineConfig(max_accounts=6, max_assets=3, max_instruments=3, max_orders=40,
                      max_price_levels=6, fee_account_id=0)
ACCOUNTS = st.integers(0, 6)          # 6 is unknown (and out of range)
ASSETS = st.integers(0, 3)
INSTRUMENTS = st.sampled_from([0, 1, 2, 3, ALL_INSTRUMENTS])
PRICES = st.one_of(st.integers(8, 14).map(lambda p: p * 5), st.integers(-3, 80),
                   st.sampled_from([0, (1 << 62), (1 << 63) - 1]))
QUANTITIES = st.one_of(st.integers(1, 12), st.integers(-2, 0), st.sampled_from([10**6, (1 << 62)]))
CLIENT_IDS = st.integers(0, 40)

SETUP = [c.add_asset(0), c.add_asset(1), c.add_asset(2)]
SETUP += [c.add_account(a) for a in range(5)]
SETUP += [c.add_instrument(0, 0, 1, tick_size=5, lot_size=3, max_order_lots=1000),
          c.add_instrument(1, 2, 1, tick_size=1, lot_size=1, max_order_lots=50),
          c.set_fees(0, 5, 30), c.set_fees(1, 0, 10)]
SETUP += [c.deposit(a, asset, 5_000, 1 + asset) for a in range(1, 5) for asset in range(3)]


#: commands are stamped STAMP_STEP_NS apart (``stamped``); a GTD order drawn with expiry k
#: (1-40) expires k commands after it (``resolve``); larger drawn expiries are kept as they are
STAMP_START_NS, STAMP_STEP_NS = 1_000_000, 1_000
EXPIRIES = st.one_of(st.just(0), st.integers(1, 40), st.sampled_from([-5, 1 << 62]))


def order_fields(accounts, instruments, sides, types, tifs, stps, flags, prices, quantities, limits,
                 expiries=st.just(0), triggers=st.just(0), displays=st.just(0)):
    return st.builds(
        lambda account, instrument, client_id, side, order_type, tif, stp, flag, price, qty, limit,
        expiry, trigger, display: c.command(
            CommandKind.NEW_ORDER, account_id=account, instrument_id=instrument, client_id=client_id,
            side=side, order_type=order_type, time_in_force=tif, stp_mode=stp, flags=flag,
            price=price, quantity=qty, limit=limit, expire_time_ns=expiry, trigger_price=trigger,
            display_quantity=display),
        accounts, instruments, CLIENT_IDS, sides, types, tifs, stps, flags, prices, quantities,
        limits, expiries, triggers, displays)


def iceberg_order():
    """Resting limit orders (some GTD) showing 1-4 lots at a time."""
    return order_fields(st.integers(1, 4), st.sampled_from([0, 0, 1]), st.sampled_from([1, 2]),
                        st.just(1), st.sampled_from([1, 1, 4]), st.sampled_from([1, 2, 3, 4]),
                        st.sampled_from([0, 1]), st.integers(9, 13).map(lambda p: p * 5),
                        st.integers(1, 12), st.just(0), st.sampled_from([0, 0, 20]), st.just(0),
                        st.integers(1, 4))


def stop_order():
    """Stop-market (IOC/FOK) and stop-limit orders triggered around the mid price of 55."""
    return st.one_of(
        order_fields(st.integers(1, 4), st.sampled_from([0, 0, 1]), st.sampled_from([1, 2]), st.just(3),
                     st.sampled_from([2, 3]), st.sampled_from([1, 2, 3, 4]), st.just(0),
                     st.integers(8, 14).map(lambda p: p * 5), st.integers(1, 12), st.just(0),
                     st.just(0), st.integers(8, 14).map(lambda p: p * 5)),
        order_fields(st.integers(1, 4), st.sampled_from([0, 0, 1]), st.sampled_from([1, 2]), st.just(4),
                     st.sampled_from([1, 1, 2, 3, 4]), st.sampled_from([1, 2, 3, 4]), st.just(0),
                     st.integers(8, 14).map(lambda p: p * 5), st.integers(1, 12), st.just(0),
                     st.sampled_from([0, 0, 0, 5]), st.integers(8, 14).map(lambda p: p * 5)))


def gtd_order():
    """Resting limit orders good till a few commands ahead."""
    return order_fields(st.integers(1, 4), st.sampled_from([0, 0, 1]), st.sampled_from([1, 2]),
                        st.just(1), st.just(4), st.sampled_from([1, 2, 3, 4]), st.sampled_from([0, 1]),
                        st.integers(9, 13).map(lambda p: p * 5), st.integers(1, 12), st.just(0),
                        st.integers(1, 40))


def plausible_order():
    """Mostly valid orders around a mid price of 55, on the two live instruments."""
    limit_type = st.sampled_from([1, 1, 1, 1, 2])
    return order_fields(st.integers(1, 4), st.sampled_from([0, 0, 1]), st.sampled_from([1, 2]),
                        limit_type, st.sampled_from([1, 1, 1, 2, 3]), st.sampled_from([1, 2, 3, 4]),
                        st.sampled_from([0, 0, 0, 1]), st.integers(9, 13).map(lambda p: p * 5),
                        st.integers(1, 12), st.just(0))


def garbage_order():
    return order_fields(ACCOUNTS, INSTRUMENTS, st.sampled_from([1, 2, 0, 3]),
                        st.sampled_from([1, 2, 0, 3, 4, 5]), st.sampled_from([1, 2, 3, 4, 0]),
                        st.sampled_from([1, 2, 3, 4, 0, 5]), st.sampled_from([0, 1, 2]), PRICES,
                        QUANTITIES, st.one_of(st.just(0), st.integers(-1, 400)), EXPIRIES,
                        st.sampled_from([0, 0, 50, -5, 51]), st.sampled_from([0, 0, 0, 2, -1]))


def any_command():
    """Commands; NEW_ORDER client ids, CANCEL and REPLACE targets are resolved by ``resolve``."""
    plausible = plausible_order()
    cancel = st.builds(c.cancel, ACCOUNTS, CLIENT_IDS)
    near_replace = st.builds(c.replace, ACCOUNTS, CLIENT_IDS, st.integers(9, 13).map(lambda p: p * 5),
                             st.integers(1, 12))
    # sampled_from over repeated strategies weights them: mostly plausible trading
    return st.sampled_from([plausible] * 24 + [cancel] * 8 + [near_replace] * 3 + [gtd_order()] * 4 + [stop_order()] * 5 + [iceberg_order()] * 4 + [
        st.builds(c.clock), st.builds(c.clock),
        garbage_order(),
        st.builds(c.market, st.integers(1, 4), st.just(0), CLIENT_IDS, st.sampled_from([1, 2]),
                  st.integers(1, 12), st.sampled_from([0, 45, 65]), st.sampled_from([0, 200]),
                  st.sampled_from([2, 3]), st.sampled_from([1, 2, 3, 4])),
        st.builds(c.replace, ACCOUNTS, CLIENT_IDS, PRICES, QUANTITIES),
        st.builds(c.mass_cancel, ACCOUNTS, INSTRUMENTS),
        st.builds(c.deposit, ACCOUNTS, ASSETS, QUANTITIES, st.integers(0, 12)),
        st.builds(c.withdraw, ACCOUNTS, ASSETS, QUANTITIES, st.integers(0, 12)),
        st.builds(c.halt, INSTRUMENTS), st.builds(c.resume, INSTRUMENTS),
        st.builds(c.pause, INSTRUMENTS), st.builds(c.pause, st.just(0)), st.builds(c.resume, st.just(0)),
        st.builds(c.set_fees, INSTRUMENTS, st.integers(-1, 60), st.integers(0, 60)),
        st.builds(c.set_price_band, INSTRUMENTS, PRICES, PRICES),
        st.builds(c.add_account, st.integers(4, 7)),
        st.builds(c.add_instrument, st.integers(1, 3), ASSETS, ASSETS, st.integers(0, 5),
                  st.integers(0, 4), st.integers(0, 100)),
        st.builds(lambda kind: c.command(kind), st.sampled_from([0, 16, 63, 64, 255])),
    ]).flatmap(lambda strategy: strategy)


def resolve(stream: list) -> list:
    """Give new orders rising client ids (a few reuse old ones: duplicates), and aim most
    cancels and replaces at an earlier order of the stream (drawn id = how far back)."""
    placed = []
    out = []
    for position, record in enumerate(stream):
        record = record.copy()
        drawn = int(record["client_id"])
        expiry = int(record["expire_time_ns"])
        if 0 < expiry <= 40:  # k commands after this one (SETUP comes first)
            record["expire_time_ns"] = STAMP_START_NS + STAMP_STEP_NS * (len(SETUP) + position + expiry)
        if record["kind"] == CommandKind.NEW_ORDER:
            if drawn % 9 != 1 or not placed:
                record["client_id"] = 1000 + position
            else:
                record["client_id"] = placed[drawn % len(placed)][1]
            placed.append((int(record["account_id"]), int(record["client_id"])))
        elif record["kind"] in (CommandKind.CANCEL, CommandKind.REPLACE) and placed and drawn % 5:
            account, client_id = placed[-1 - drawn % len(placed)]
            record["account_id"], record["client_id"] = account, client_id
        out.append(record)
    return out


def stamped(commands: np.ndarray) -> np.ndarray:
    """Rising stamps, STAMP_STEP_NS apart (the engine reads time only from them)."""
    commands["timestamp_ns"] = STAMP_START_NS + STAMP_STEP_NS * np.arange(len(commands))
    return commands


def check_invariants(ref: ReferenceEngine) -> None:
    balances = ref.balances_array()
    assert (balances >= 0).all(), "negative balance"
    for asset_id in ref.assets:
        deposited, withdrawn = ref.totals(asset_id)
        assert balances[:, asset_id, :].sum() == deposited - withdrawn, "money not conserved"
    held = {}
    for order in ref.orders.values():
        ins = ref.instruments[order.instrument_id]
        if order.side == Side.BUY:
            notional = order.price * order.leaves
            assert order.hold == notional + fee_of(notional, order.fee_cap_bps), "buy hold"
            key = (order.account_id, ins.quote_asset)
        else:
            assert order.hold == order.leaves * ins.lot_size, "sell hold"
            key = (order.account_id, ins.base_asset)
        held[key] = held.get(key, 0) + order.hold
    for (account_id, asset_id), (_, held_amount) in ref.balances.items():
        assert held_amount == held.get((account_id, asset_id), 0), "held != what orders need"
    for instrument_id, ins in ref.instruments.items():
        if ins.bids and ins.asks:
            assert ins.bids[0].price < ins.asks[0].price, "crossed book"


def batches(draw_list, size):
    return [draw_list[i:i + size] for i in range(0, len(draw_list), size)]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stream=st.lists(any_command(), min_size=30, max_size=200), batch=st.integers(1, 40))
def test_engine_matches_reference_and_invariants_hold(stream, batch):
    Engine = engine_class("engine")
    ref, fast = ReferenceEngine(CONFIG), Engine(CONFIG)
    commands = stamped(c.number(c.pack(SETUP + resolve(stream))))
    for part in batches(commands, batch):
        expected, got = ref.apply(part), fast.apply(part)
        assert expected.tobytes() == got.tobytes(), _first_difference(expected, got)
        assert ref.state_hash() == fast.state_hash()
        check_invariants(ref)
        assert np.array_equal(ref.balances_array(), fast.balances_array())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stream=st.lists(any_command(), min_size=30, max_size=200), cut=st.floats(0, 1))
def test_snapshot_restore_continues_identically_and_replay_is_deterministic(stream, cut):
    Engine = engine_class("engine")
    commands = stamped(c.number(c.pack(SETUP + resolve(stream))))
    split = len(SETUP) + int(len(stream) * cut)
    first, rest = commands[:split], commands[split:]
    fast = Engine(CONFIG)
    fast.apply(first)
    snapshot = fast.snapshot()
    reference_copy = ReferenceEngine(CONFIG)
    reference_copy.apply(first)
    assert reference_copy.snapshot() == snapshot
    continued = Engine.restore(snapshot)
    cross = ReferenceEngine.restore(snapshot)
    tail_fast, tail_restored, tail_cross = fast.apply(rest), continued.apply(rest), cross.apply(rest)
    assert tail_fast.tobytes() == tail_restored.tobytes() == tail_cross.tobytes()
    assert fast.state_hash() == continued.state_hash() == cross.state_hash()
    again = Engine(CONFIG)
    again.apply(commands)
    assert again.state_hash() == fast.state_hash()


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stream=st.lists(any_command(), min_size=30, max_size=200),
       capacity=st.sampled_from([1, 2, 64]))
def test_stepper_gives_the_events_of_apply(stream, capacity):
    """The per-command path (stepper) of both engines: per command, exactly apply()'s events,
    also when a command's events outgrow the events array; the same state after the stream."""
    Engine = engine_class("engine")
    commands = stamped(c.number(c.pack(SETUP + resolve(stream))))
    batch = Engine(CONFIG)
    expected = batch.apply(commands)
    for engine in (Engine(CONFIG), ReferenceEngine(CONFIG)):
        stepper = engine.stepper(commands, np.zeros(capacity, dtype=expected.dtype))
        got = []
        for index in range(len(commands)):
            count = stepper.step(index)
            got.append(stepper.events[:count].copy())
            assert (stepper.events[:count]["seq"] == commands["seq"][index]).all()
        got = np.concatenate(got)
        assert expected.tobytes() == got.tobytes(), _first_difference(expected, got)
        assert engine.state_hash() == batch.state_hash()


def _first_difference(expected, got) -> str:
    for index, (a, b) in enumerate(zip(expected, got)):
        if a.tobytes() != b.tobytes():
            return f"event {index}: reference {a} engine {b}"
    return f"lengths differ: reference {len(expected)} engine {len(got)}"

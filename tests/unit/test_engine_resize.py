"""Both engines restore a snapshot into another config: a larger one takes the state as it is
(same events afterwards, only the config words of the state hash change), a too small one or
another fee account is refused with a SnapshotError naming the field, the value and the use."""
from __future__ import annotations

import msgspec
import pytest

from matchcore.core import Engine, EngineConfig
from matchcore.core import commands as c
from matchcore.core.codes import EventKind, RejectReason, Side
from matchcore.core.reference import ReferenceEngine
from matchcore.core.snapshot_format import SnapshotError, capacity_in_use

SMALL = EngineConfig(max_accounts=4, max_assets=2, max_instruments=1, max_orders=4,
                     max_price_levels=3, fee_account_id=0)
LARGE = msgspec.structs.replace(SMALL, max_accounts=64, max_orders=100, max_price_levels=16)
ENGINES = [Engine, ReferenceEngine]


def filled(engine_class):
    engine = engine_class(SMALL)
    records = [c.add_asset(0), c.add_asset(1), c.add_instrument(0, 0, 1)]
    records += [c.add_account(a) for a in (1, 2, 3)]
    records += [c.deposit(a, asset, 1_000_000, 10 * a + asset) for a in (1, 2) for asset in (0, 1)]
    records += [c.limit(1, 0, 1, Side.BUY, 10, 5), c.limit(1, 0, 2, Side.BUY, 11, 5),
                c.limit(2, 0, 1, Side.SELL, 20, 5)]
    engine.apply(c.number(c.pack(records)))
    return engine, len(records)


def reason_of(events) -> int:
    rejected = [int(e["reason"]) for e in events if e["kind"] == EventKind.REJECTED]
    return rejected[0] if rejected else 0


@pytest.mark.parametrize("engine_class", ENGINES)
def test_grow_keeps_the_state_and_lifts_the_limit(engine_class):
    engine, seq = filled(engine_class)
    refused = engine.apply(c.number(c.pack([c.add_account(4)]), first_seq=seq + 1))
    assert reason_of(refused) == RejectReason.ACCOUNT_CAPACITY
    state = engine.snapshot()
    grown = engine_class.restore(state, config=LARGE)
    assert grown.config == LARGE
    # the state is the same but for the config words of the header, which the hash covers
    assert grown.snapshot()[72:] == state[72:]
    assert grown.state_hash() != engine.state_hash()
    assert engine_class.restore(grown.snapshot()).state_hash() == grown.state_hash()
    accepted = grown.apply(c.number(c.pack([c.add_account(4), c.add_account(63)]), first_seq=seq + 2))
    assert reason_of(accepted) == 0
    # without config= the header's config is kept
    assert engine_class.restore(state).config == SMALL


@pytest.mark.parametrize("engine_class", ENGINES)
def test_both_engines_resize_alike(engine_class):
    engine, _ = filled(engine_class)
    twin, _ = filled(ReferenceEngine)
    assert engine_class.restore(engine.snapshot(), config=LARGE).snapshot() == \
        ReferenceEngine.restore(twin.snapshot(), config=LARGE).snapshot()


def test_capacity_in_use():
    engine, _ = filled(Engine)
    assert capacity_in_use(engine.snapshot()) == {
        "max_accounts": 4, "max_assets": 2, "max_instruments": 1, "max_orders": 3,
        "max_price_levels": 2}


@pytest.mark.parametrize("engine_class", ENGINES)
@pytest.mark.parametrize("field, value, in_use", [
    ("max_accounts", 3, 4), ("max_assets", 1, 2), ("max_orders", 2, 3),
    ("max_price_levels", 1, 2)])
def test_too_small_is_refused_naming_the_field(engine_class, field, value, in_use):
    engine, _ = filled(engine_class)
    small = msgspec.structs.replace(SMALL, **{field: value})
    with pytest.raises(SnapshotError, match=rf"{field}={value} .*{in_use} in use"):
        engine_class.restore(engine.snapshot(), config=small)


@pytest.mark.parametrize("engine_class", ENGINES)
def test_lower_but_above_use_is_allowed(engine_class):
    engine, _ = filled(engine_class)
    lower = msgspec.structs.replace(SMALL, max_orders=3, max_price_levels=2)
    assert engine_class.restore(engine.snapshot(), config=lower).config == lower


@pytest.mark.parametrize("engine_class", ENGINES)
def test_fee_account_cannot_change(engine_class):
    engine, _ = filled(engine_class)
    other = msgspec.structs.replace(LARGE, fee_account_id=3)
    with pytest.raises(SnapshotError, match="fee_account_id cannot change"):
        engine_class.restore(engine.snapshot(), config=other)

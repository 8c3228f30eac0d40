"""Book changes (what market data is made of) agree between Engine and ReferenceEngine on random
streams, and rebuild every book exactly: applying the LEVEL changes to an empty book gives the
engine's depth after each batch, TOP is its best bid and offer, STATUS its state; the queries
(instruments, open orders, last transfer) agree too, also after a snapshot and restore."""
from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings, strategies as st

from matchcore.core import commands as c
from matchcore.core.codes import BookChangeKind, CommandKind, Side
from matchcore.core.reference import ReferenceEngine
from tests.conftest import engine_class
from tests.property.test_engine_differential import CONFIG, SETUP, any_command, batches, resolve, stamped


def apply_changes(books: dict, changes: np.ndarray) -> None:
    """books: instrument -> {side: {price: (quantity, orders)}}; LEVEL records applied in order."""
    for change in changes[changes["kind"] == BookChangeKind.LEVEL]:
        side = books.setdefault(int(change["instrument_id"]), {1: {}, 2: {}})[int(change["side"])]
        if change["quantity"] == 0:
            assert change["order_count"] == 0
            assert side.pop(int(change["price"]), None) is not None, "a level removed that was not there"
        else:
            assert change["order_count"] > 0
            side[int(change["price"])] = (int(change["quantity"]), int(change["order_count"]))


def assert_books_match(books: dict, engine) -> None:
    for instrument_id in engine.instrument_ids():
        for side in (Side.BUY, Side.SELL):
            depth = engine.depth(instrument_id, side, 10_000)
            mine = books.get(instrument_id, {1: {}, 2: {}})[int(side)]
            ordered = sorted(mine.items(), reverse=side == Side.BUY)
            assert [(p, q, n) for p, (q, n) in ordered] == [tuple(map(int, row)) for row in depth]


def assert_tops_and_status(changes: np.ndarray, commands: np.ndarray, engine) -> None:
    last_top = {}
    for change in changes[changes["kind"] == BookChangeKind.TOP]:
        last_top[int(change["instrument_id"])] = change
    for instrument_id, top in last_top.items():
        bid, ask = engine.depth(instrument_id, Side.BUY, 1), engine.depth(instrument_id, Side.SELL, 1)
        assert (int(top["price"]), int(top["quantity"])) == ((int(bid[0, 0]), int(bid[0, 1])) if len(bid) else (0, 0))
        assert (int(top["other_price"]), int(top["other_quantity"])) == (
            (int(ask[0, 0]), int(ask[0, 1])) if len(ask) else (0, 0))
    statuses = changes[changes["kind"] == BookChangeKind.STATUS]
    admin = np.isin(commands["kind"], [CommandKind.ADD_INSTRUMENT, CommandKind.SET_FEES, CommandKind.HALT_INSTRUMENT,
                                       CommandKind.PAUSE_INSTRUMENT, CommandKind.RESUME_INSTRUMENT,
                                       CommandKind.SET_PRICE_BAND])
    assert len(statuses) <= int(admin.sum())
    for status in statuses:
        info = engine.instrument(int(status["instrument_id"]))
        later = statuses[(statuses["instrument_id"] == status["instrument_id"]) & (statuses["seq"] > status["seq"])]
        if len(later) == 0:
            assert (int(status["state"]), int(status["price"]), int(status["quantity"]),
                    int(status["other_price"]), int(status["other_quantity"])) == (
                info["state"], info["band_min"], info["band_max"], info["maker_bps"], info["taker_bps"])


def assert_queries_agree(ref: ReferenceEngine, fast) -> None:
    assert ref.instrument_ids() == fast.instrument_ids()
    for instrument_id in ref.instrument_ids():
        assert ref.instrument(instrument_id) == fast.instrument(instrument_id)
    for account_id in range(CONFIG.max_accounts):
        assert ref.open_orders(account_id, 0, 1000) == fast.open_orders(account_id, 0, 1000)
        everything = fast.open_orders(account_id, 0, 1000)
        paged, after = [], 0
        while True:
            page = fast.open_orders(account_id, after, 3)
            paged += page
            if len(page) < 3:
                break
            after = page[-1]["order_id"]
        assert paged == everything
        assert ref.last_transfer(account_id) == fast.last_transfer(account_id)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stream=st.lists(any_command(), min_size=30, max_size=200), batch=st.integers(1, 40))
def test_book_changes_match_the_reference_and_rebuild_the_books(stream, batch):
    Engine = engine_class("engine")
    ref, fast = ReferenceEngine(CONFIG), Engine(CONFIG)
    ref.enable_book_changes()
    fast.enable_book_changes()
    books: dict = {}
    commands = stamped(c.number(c.pack(SETUP + resolve(stream))))
    for part in batches(commands, batch):
        ref.apply(part)
        fast.apply(part)
        expected, got = ref.take_book_changes(), fast.take_book_changes()
        assert expected.tobytes() == got.tobytes(), _first_difference(expected, got)
        assert (np.diff(got["seq"].astype(np.int64)) >= 0).all()
        apply_changes(books, got)
        assert_books_match(books, fast)
        assert_tops_and_status(got, part, fast)
    assert_queries_agree(ref, fast)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stream=st.lists(any_command(), min_size=30, max_size=200), cut=st.floats(0, 1))
def test_a_restored_engine_continues_the_same_book_changes(stream, cut):
    Engine = engine_class("engine")
    commands = stamped(c.number(c.pack(SETUP + resolve(stream))))
    split = len(SETUP) + int(len(stream) * cut)
    fast = Engine(CONFIG)
    fast.enable_book_changes()
    fast.apply(commands[:split])
    books: dict = {}
    apply_changes(books, fast.take_book_changes())
    continued = Engine.restore(fast.snapshot())
    continued.enable_book_changes()
    cross = ReferenceEngine.restore(fast.snapshot())
    cross.enable_book_changes()
    fast.apply(commands[split:])
    continued.apply(commands[split:])
    cross.apply(commands[split:])
    tail = fast.take_book_changes()
    assert tail.tobytes() == continued.take_book_changes().tobytes() == cross.take_book_changes().tobytes()
    apply_changes(books, tail)
    assert_books_match(books, continued)
    assert_queries_agree(cross, continued)


def test_an_iceberg_shows_its_peak_and_each_refill():
    Engine = engine_class("engine")
    engine = Engine(CONFIG)
    engine.apply(stamped(c.number(c.pack(SETUP))))
    engine.enable_book_changes()
    engine.take_book_changes()
    stream = [c.limit(1, 0, 1, Side.SELL, 50, 9, display_quantity=2),
              c.limit(2, 0, 1, Side.SELL, 50, 1),
              c.limit(3, 0, 1, Side.BUY, 50, 3)]
    commands = c.number(c.pack(stream), first_seq=len(SETUP) + 1, timestamp_ns=10**9)
    engine.apply(commands)
    changes = engine.take_book_changes()
    levels = changes[changes["kind"] == BookChangeKind.LEVEL]
    # the iceberg rests showing 2 of 9; the plain order joins (3 shown, 2 orders); the buy of 3
    # takes the peak (2), the plain order (1) behind it, and the iceberg shows a fresh peak of 2
    assert [(int(l["price"]), int(l["quantity"]), int(l["order_count"])) for l in levels] == [
        (50, 2, 1), (50, 3, 2), (50, 2, 1)]


def _first_difference(expected, got) -> str:
    for index, (a, b) in enumerate(zip(expected, got)):
        if a.tobytes() != b.tobytes():
            return f"change {index}: reference {a} engine {b}"
    return f"lengths differ: reference {len(expected)} engine {len(got)}"

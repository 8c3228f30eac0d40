"""Contract 2 on both engines: trading pause, STP decrement, a replace on a full book side, GTD,
stop orders."""
import itertools

from matchcore.core import commands as c
from matchcore.core.codes import CancelReason as C, EventKind as K, RejectReason as R, StpMode
from matchcore.core.config import EngineConfig
from tests.conftest import ALICE, BOB, CAROL, BASE, QUOTE, FUNDS, INSTRUMENT as I, funded_market

BUY, SELL = c.BUY, c.SELL


def kinds(events) -> list[int]:
    return [int(k) for k in events["kind"]]


def test_pause_keeps_the_book_refuses_new_orders_and_replaces_allows_cancels(engine_cls):
    m = funded_market(engine_cls)
    m.run(c.limit(ALICE, I, 1, BUY, 100, 5), c.limit(ALICE, I, 2, BUY, 99, 5),
          c.limit(BOB, I, 1, SELL, 105, 5))
    assert kinds(m.one(c.pause(I))) == [K.COMMAND_DONE]
    assert m.engine.live_order_count() == 3
    for refused in (c.limit(BOB, I, 2, SELL, 100, 1), c.replace(ALICE, 1, 101, 5),
                    c.market(BOB, I, 3, SELL, 1, worst_price=1)):
        before = m.engine.state_hash()
        ev = m.one(refused)
        assert kinds(ev) == [K.REJECTED] and int(ev[0]["reason"]) == R.INSTRUMENT_PAUSED
        assert m.engine.state_hash() == before
    assert int(m.one(c.pause(I))[0]["reason"]) == R.INSTRUMENT_PAUSED
    ev = m.one(c.cancel(ALICE, 2))
    assert kinds(ev) == [K.CANCELED] and int(ev[0]["reason"]) == C.USER
    assert kinds(m.one(c.resume(I))) == [K.COMMAND_DONE]
    # the book is intact after the resume: Bob's sell crosses Alice's resting bid
    ev = m.one(c.limit(BOB, I, 4, SELL, 100, 2))
    assert kinds(ev) == [K.ACCEPTED, K.FILL] and int(ev[1]["counter_account_id"]) == ALICE
    assert m.engine.depth(I, BUY).tolist() == [[100, 3, 1]]


def test_halt_of_a_paused_instrument_cancels_its_book_and_pause_of_a_halted_one_is_refused(engine_cls):
    m = funded_market(engine_cls)
    m.run(c.limit(ALICE, I, 1, BUY, 100, 5), c.pause(I))
    ev = m.one(c.halt(I))
    assert kinds(ev) == [K.CANCELED, K.COMMAND_DONE] and int(ev[0]["reason"]) == C.HALT
    assert int(m.one(c.pause(I))[0]["reason"]) == R.INSTRUMENT_HALTED
    assert kinds(m.one(c.resume(I))) == [K.COMMAND_DONE]
    assert int(m.one(c.resume(I))[0]["reason"]) == R.INSTRUMENT_NOT_HALTED


def test_a_paused_book_survives_a_snapshot(engine_cls):
    m = funded_market(engine_cls)
    m.run(c.limit(ALICE, I, 1, BUY, 100, 5), c.pause(I))
    restored = type(m.engine).restore(m.engine.snapshot())
    assert restored.state_hash() == m.engine.state_hash()
    assert restored.depth(I, BUY).tolist() == [[100, 5, 1]]


def test_stp_decrement_a_larger_maker_loses_the_taker_quantity_and_keeps_priority(engine_cls):
    m = funded_market(engine_cls)
    m.run(c.limit(ALICE, I, 1, SELL, 100, 10), c.limit(BOB, I, 1, SELL, 100, 4))
    ev = m.one(c.limit(ALICE, I, 2, BUY, 100, 3, stp=StpMode.DECREMENT))
    assert kinds(ev) == [K.ACCEPTED, K.REPLACED, K.CANCELED]
    reduced, canceled = ev[1], ev[2]
    assert int(reduced["client_id"]) == 1 and int(reduced["quantity"]) == 7
    assert int(reduced["reason"]) == C.SELF_TRADE
    assert int(canceled["client_id"]) == 2 and int(canceled["quantity"]) == 3
    assert int(canceled["reason"]) == C.SELF_TRADE
    # Alice's sell still heads the level with 7 lots; its hold follows: 7 base lots held
    assert m.engine.depth(I, SELL).tolist() == [[100, 11, 2]]
    assert m.engine.balance(ALICE, BASE) == (FUNDS - 7, 7)
    assert m.engine.balance(ALICE, QUOTE) == (FUNDS, 0)


def test_stp_decrement_a_larger_taker_cancels_the_maker_and_trades_on(engine_cls):
    m = funded_market(engine_cls)
    m.run(c.limit(ALICE, I, 1, SELL, 100, 2), c.limit(BOB, I, 1, SELL, 101, 4))
    ev = m.one(c.limit(ALICE, I, 2, BUY, 101, 5, stp=StpMode.DECREMENT))
    assert kinds(ev) == [K.ACCEPTED, K.CANCELED, K.REPLACED, K.FILL]
    assert int(ev[1]["client_id"]) == 1 and int(ev[1]["reason"]) == C.SELF_TRADE
    assert int(ev[2]["client_id"]) == 2 and int(ev[2]["quantity"]) == 3
    assert int(ev[3]["quantity"]) == 3 and int(ev[3]["price"]) == 101
    assert m.engine.order(ALICE, 2) is None
    assert m.engine.balance(ALICE, QUOTE) == (FUNDS - 303, 0)


def test_stp_decrement_equal_quantities_cancel_both_maker_first(engine_cls):
    m = funded_market(engine_cls)
    m.run(c.limit(ALICE, I, 1, SELL, 100, 3))
    ev = m.one(c.limit(ALICE, I, 2, BUY, 100, 3, stp=StpMode.DECREMENT))
    assert kinds(ev) == [K.ACCEPTED, K.CANCELED, K.CANCELED]
    assert [int(e["client_id"]) for e in ev[1:]] == [1, 2]
    assert m.engine.live_order_count() == 0
    assert m.engine.balance(ALICE, QUOTE) == (FUNDS, 0) and m.engine.balance(ALICE, BASE) == (FUNDS, 0)


def test_stp_decrement_of_a_resting_buy_releases_its_excess_hold(engine_cls):
    m = funded_market(engine_cls, maker_bps=10, taker_bps=20)
    m.run(c.limit(ALICE, I, 1, BUY, 1000, 10))
    held = m.engine.balance(ALICE, QUOTE)[1]
    ev = m.one(c.limit(ALICE, I, 2, SELL, 1000, 4, stp=StpMode.DECREMENT))
    assert kinds(ev) == [K.ACCEPTED, K.REPLACED, K.CANCELED]
    assert m.engine.balance(ALICE, QUOTE)[1] == 6000 + 6000 * 20 // 10_000 < held


def test_replace_on_a_full_side_that_frees_its_own_level_is_allowed(engine_cls):
    config = EngineConfig(max_accounts=16, max_assets=4, max_instruments=4, max_orders=64,
                          max_price_levels=2)
    m = funded_market(engine_cls, config)
    m.run(c.limit(ALICE, I, 1, BUY, 100, 5), c.limit(ALICE, I, 2, BUY, 99, 5))
    ev = m.one(c.replace(ALICE, 2, 98, 5))     # alone at 99: the side stays at two levels
    assert kinds(ev) == [K.REPLACED]
    assert m.engine.depth(I, BUY).tolist() == [[100, 5, 1], [98, 5, 1]]
    m.one(c.limit(BOB, I, 1, BUY, 100, 5))
    ev = m.one(c.replace(ALICE, 1, 97, 5))     # not alone at 100: a third level is refused
    assert int(ev[0]["reason"]) == R.PRICE_LEVEL_CAPACITY


def test_every_orders_price_times_size_fits_int64_a_sell_too(engine_cls):
    """Contract 1 accepted a sell of 2 lots at 2**62 (its notional, 2**63, leaves int64)
    because a sell holds only base; now price * size is checked on both sides."""
    m = funded_market(engine_cls)
    for refused in (c.limit(BOB, I, 1, SELL, 1 << 62, 2),
                    c.market(BOB, I, 2, SELL, 2, worst_price=1 << 62)):
        ev = m.one(refused)
        assert kinds(ev) == [K.REJECTED] and int(ev[0]["reason"]) == R.AMOUNT_OVERFLOW
    assert kinds(m.one(c.limit(BOB, I, 3, SELL, 1 << 62, 1))) == [K.ACCEPTED]
    ev = m.one(c.replace(BOB, 3, 1 << 62, 2))
    assert kinds(ev) == [K.REJECTED] and int(ev[0]["reason"]) == R.AMOUNT_OVERFLOW


# ---- GTD: good till a time, expired by the stamps of the commands the engine applies

T0 = 1_800_000_000_000_000_000


def test_gtd_orders_expire_at_the_first_command_stamped_at_or_after_their_expiry(engine_cls):
    m = funded_market(engine_cls)
    m.at(T0, c.limit(ALICE, I, 1, BUY, 100, 5, expire_time_ns=T0 + 50),
         c.limit(BOB, I, 1, BUY, 99, 5, expire_time_ns=T0 + 20),
         c.limit(ALICE, I, 2, BUY, 98, 5, expire_time_ns=T0 + 20),
         c.limit(ALICE, I, 3, BUY, 97, 5))
    assert kinds(m.at(T0 + 19, c.clock())) == [K.COMMAND_DONE]
    assert m.engine.live_order_count() == 4
    # earliest expiry first, then ascending order id; the command's own event comes last
    ev = m.at(T0 + 20, c.limit(CAROL, I, 1, SELL, 105, 1))
    assert kinds(ev) == [K.CANCELED, K.CANCELED, K.ACCEPTED]
    assert [(int(e["account_id"]), int(e["client_id"]), int(e["reason"])) for e in ev[:2]] == [
        (BOB, 1, C.EXPIRED), (ALICE, 2, C.EXPIRED)]
    assert m.engine.balance(BOB, QUOTE) == (FUNDS, 0)
    ev = m.at(T0 + 60, c.cancel(ALICE, 1))     # expired before the cancel is applied
    assert kinds(ev) == [K.CANCELED, K.REJECTED]
    assert int(ev[0]["reason"]) == C.EXPIRED and int(ev[1]["reason"]) == R.UNKNOWN_ORDER
    assert m.engine.order(ALICE, 3) is not None            # GTC: never expires


def test_gtd_validation(engine_cls):
    m = funded_market(engine_cls)
    for bad in (c.limit(ALICE, I, 1, BUY, 100, 5, expire_time_ns=T0),        # not after the stamp
                c.limit(ALICE, I, 1, BUY, 100, 5, expire_time_ns=T0 - 1),
                c.limit(ALICE, I, 1, BUY, 100, 5, tif=4),                     # GTD without expiry
                c.limit(ALICE, I, 1, BUY, 100, 5, tif=2, expire_time_ns=T0 + 5)):   # IOC with one
        ev = m.at(T0, bad)
        assert int(ev[0]["reason"]) == R.INVALID_EXPIRE_TIME, bad
    ev = m.at(T0, c.command(10, account_id=ALICE, instrument_id=I, client_id=1, side=BUY,
                            order_type=2, time_in_force=4, stp_mode=1, price=100, quantity=1,
                            expire_time_ns=T0 + 5))
    assert int(ev[0]["reason"]) == R.INVALID_TIME_IN_FORCE               # a market order is never GTD


def test_a_gtd_order_that_fills_or_is_replaced_or_canceled_leaves_no_expiry_behind(engine_cls):
    m = funded_market(engine_cls)
    m.at(T0, c.limit(ALICE, I, 1, BUY, 100, 5, expire_time_ns=T0 + 10),
         c.limit(ALICE, I, 2, BUY, 99, 5, expire_time_ns=T0 + 10),
         c.limit(ALICE, I, 3, BUY, 98, 5, expire_time_ns=T0 + 10))
    m.at(T0 + 1, c.limit(BOB, I, 1, SELL, 100, 5), c.cancel(ALICE, 2), c.replace(ALICE, 3, 97, 4))
    # order 3 keeps its expiry through the replace; 1 filled and 2 was canceled
    ev = m.at(T0 + 10, c.clock())
    assert kinds(ev) == [K.CANCELED, K.COMMAND_DONE] and int(ev[0]["client_id"]) == 3
    assert m.engine.live_order_count() == 0


def test_gtd_orders_survive_a_snapshot_and_expire_after_it(engine_cls):
    m = funded_market(engine_cls)
    m.at(T0, c.limit(ALICE, I, 1, BUY, 100, 5, expire_time_ns=T0 + 30),
         c.limit(BOB, I, 1, SELL, 110, 5, expire_time_ns=T0 + 10))
    restored = type(m.engine).restore(m.engine.snapshot())
    assert restored.state_hash() == m.engine.state_hash()
    stamps = c.pack([c.clock(), c.clock()])
    c.number(stamps, first_seq=m.seq)
    stamps["timestamp_ns"] = [T0 + 10, T0 + 30]
    ev = restored.apply(stamps)
    assert kinds(ev) == [K.CANCELED, K.COMMAND_DONE, K.CANCELED, K.COMMAND_DONE]
    assert [int(e["account_id"]) for e in ev[::2]] == [BOB, ALICE]


# ---- stop orders: triggered by the last trade price


def stop(account, client_id, side, trigger, price, quantity, *, limit=True, tif=None):
    from matchcore.core.codes import OrderType, TimeInForce
    return c.command(10, account_id=account, instrument_id=I, client_id=client_id, side=side,
                     order_type=OrderType.STOP_LIMIT if limit else OrderType.STOP_MARKET,
                     time_in_force=tif or (TimeInForce.GTC if limit else TimeInForce.IOC),
                     stp_mode=1, price=price, quantity=quantity, trigger_price=trigger)


_TRADE_IDS = itertools.count(1000)


def trade_at(m, price, _unused=None):
    """One lot traded between Bob (sell, resting) and Carol (buy) at ``price``."""
    client_id = next(_TRADE_IDS)
    return m.run(c.limit(BOB, I, client_id, SELL, price, 1), c.limit(CAROL, I, client_id, BUY, price, 1))


def test_a_stop_is_held_off_the_book_until_the_last_trade_reaches_its_trigger(engine_cls):
    m = funded_market(engine_cls)
    trade_at(m, 100, 1)
    ev = m.one(stop(ALICE, 1, BUY, 105, 110, 3))          # buy stop-limit: at 105 or above
    assert kinds(ev) == [K.ACCEPTED]
    assert m.engine.depth(I, BUY).tolist() == [] and m.engine.order(ALICE, 1) is not None
    assert m.engine.balance(ALICE, QUOTE) == (FUNDS - 330, 330)  # held at acceptance
    m.run(c.limit(BOB, I, next(_TRADE_IDS), SELL, 107, 10))   # liquidity above
    trade_at(m, 104, 2)                                     # below the trigger: nothing
    assert m.engine.order(ALICE, 1) is not None
    ev = trade_at(m, 105, 3)                                # reaches it: triggered, then it buys
    # Carol's fill at 105, then the stop: TRIGGERED and its one fill (3 lots at 107)
    assert kinds(ev)[-3:] == [K.FILL, K.TRIGGERED, K.FILL]
    fills = ev[ev["kind"] == K.FILL]
    assert int(fills[-1]["account_id"]) == ALICE and int(fills[-1]["price"]) == 107
    assert int(fills[-1]["leaves"]) == 0 and m.engine.order(ALICE, 1) is None
    assert m.engine.balance(ALICE, QUOTE) == (FUNDS - 321, 0)


def test_stop_validation_and_would_trigger(engine_cls):
    from matchcore.core.codes import OrderType
    m = funded_market(engine_cls)
    assert int(m.one(stop(ALICE, 1, BUY, 0, 110, 3))[0]["reason"]) == R.INVALID_TRIGGER_PRICE
    assert int(m.one(c.command(10, account_id=ALICE, instrument_id=I, client_id=1, side=BUY,
                               order_type=OrderType.LIMIT, time_in_force=1, stp_mode=1, price=100,
                               quantity=1, trigger_price=90))[0]["reason"]) == R.INVALID_TRIGGER_PRICE
    assert int(m.one(stop(ALICE, 1, BUY, 105, 0, 3, limit=False))[0]["reason"]) == \
        R.MARKET_PROTECTION_REQUIRED
    assert int(m.one(stop(ALICE, 1, BUY, 105, 110, 3, limit=False, tif=1))[0]["reason"]) == \
        R.INVALID_TIME_IN_FORCE
    trade_at(m, 100, 1)
    # a buy stop at or below the last price, a sell stop at or above it, would trigger at once
    assert int(m.one(stop(ALICE, 1, BUY, 100, 110, 3))[0]["reason"]) == R.STOP_WOULD_TRIGGER
    assert int(m.one(stop(ALICE, 1, SELL, 101, 90, 3))[0]["reason"]) == R.STOP_WOULD_TRIGGER
    assert kinds(m.one(stop(ALICE, 1, SELL, 99, 90, 3))) == [K.ACCEPTED]


def test_stops_cascade_in_ascending_order_id(engine_cls):
    """A trade at 95 triggers a sell stop-market; its fill at 90 triggers a second one, which
    enters after the first has finished and finds no bid left."""
    m = funded_market(engine_cls)
    trade_at(m, 100)
    m.run(c.limit(CAROL, I, next(_TRADE_IDS), BUY, 95, 1), c.limit(CAROL, I, next(_TRADE_IDS), BUY, 90, 2))
    m.run(stop(ALICE, 1, SELL, 95, 90, 2, limit=False),      # sells 2 at 90 or better
          stop(ALICE, 2, SELL, 92, 85, 1, limit=False))      # triggered by that trade at 90
    ev = m.one(c.limit(BOB, I, next(_TRADE_IDS), SELL, 95, 1))   # trades with Carol's bid at 95
    mine = [(int(e["kind"]), int(e["client_id"]), int(e["price"]), int(e["quantity"]))
            for e in ev if e["account_id"] == ALICE]
    assert mine == [(K.TRIGGERED, 1, 90, 2), (K.FILL, 1, 90, 2), (K.TRIGGERED, 2, 85, 1),
                    (K.CANCELED, 2, 85, 1)]
    assert int(ev[-1]["reason"]) == C.IOC_REMAINDER
    assert m.engine.live_order_count() == 0
    assert m.engine.balance(ALICE, BASE) == (FUNDS - 2, 0)


def test_an_untriggered_stop_can_be_replaced_and_canceled_and_halt_cancels_it(engine_cls):
    m = funded_market(engine_cls)
    trade_at(m, 100, 1)
    m.run(stop(ALICE, 1, BUY, 105, 110, 3), stop(ALICE, 2, BUY, 106, 110, 3))
    ev = m.one(c.replace(ALICE, 1, 120, 2))
    assert kinds(ev) == [K.REPLACED]
    assert m.engine.balance(ALICE, QUOTE) == (FUNDS - 240 - 330, 240 + 330)
    assert kinds(m.one(c.cancel(ALICE, 1))) == [K.CANCELED]
    restored = type(m.engine).restore(m.engine.snapshot())
    assert restored.state_hash() == m.engine.state_hash()
    ev = m.one(c.halt(I))
    assert kinds(ev) == [K.CANCELED, K.COMMAND_DONE] and int(ev[0]["reason"]) == C.HALT
    assert m.engine.balance(ALICE, QUOTE) == (FUNDS, 0)


# ---- icebergs: only the displayed part is shown; each refill goes to the back of its level


def test_an_iceberg_shows_its_peak_trades_it_then_refills_at_the_back(engine_cls):
    m = funded_market(engine_cls)
    m.run(c.limit(ALICE, I, 1, SELL, 100, 10, display_quantity=3), c.limit(BOB, I, 1, SELL, 100, 2))
    assert m.engine.depth(I, SELL).tolist() == [[100, 5, 2]]     # 3 shown of 10, plus Bob's 2
    assert m.engine.balance(ALICE, BASE) == (FUNDS - 10, 10)     # the whole quantity is held
    # a buy of 4: Alice's peak of 3, then (her refill at the back) Bob's 2 before her again
    ev = m.one(c.limit(CAROL, I, 1, BUY, 100, 4))
    fills = ev[ev["kind"] == K.FILL]
    assert [(int(f["counter_account_id"]), int(f["quantity"])) for f in fills] == [(ALICE, 3), (BOB, 1)]
    assert int(fills[0]["counter_leaves"]) == 7
    assert m.engine.depth(I, SELL).tolist() == [[100, 4, 2]]     # Bob's 1, then Alice's new 3
    ev = m.one(c.limit(CAROL, I, 2, BUY, 100, 2))
    fills = ev[ev["kind"] == K.FILL]
    assert [(int(f["counter_account_id"]), int(f["quantity"])) for f in fills] == [(BOB, 1), (ALICE, 1)]
    restored = type(m.engine).restore(m.engine.snapshot())
    assert restored.state_hash() == m.engine.state_hash()
    assert restored.depth(I, SELL).tolist() == [[100, 2, 1]]
    # a large taker takes the hidden quantity too, one peak at a time
    ev = m.one(c.limit(CAROL, I, 3, BUY, 100, 20, tif=2))
    assert int(ev[ev["kind"] == K.FILL]["quantity"].sum()) == 6 and m.engine.order(ALICE, 1) is None

"""Each order type behaves as specified, on both engines: limit GTC, IOC, FOK, post-only,
market with protection, cancel, replace (priority rules), mass cancel, halt/resume."""
import pytest

from matchcore.core import commands as c
from matchcore.core.codes import CancelReason, EventKind as K, RejectReason as R, StpMode, TimeInForce
from tests.conftest import ALICE, BOB, CAROL, BASE, QUOTE, FUNDS, INSTRUMENT as I, funded_market

BUY, SELL = c.BUY, c.SELL


def kinds(events):
    return [int(k) for k in events["kind"]]


def test_limit_gtc_rests_then_fills_at_maker_price(market):
    ev = market.one(c.limit(ALICE, I, 1, SELL, 100, 10))
    assert kinds(ev) == [K.ACCEPTED]
    ev = market.one(c.limit(BOB, I, 1, BUY, 105, 4))
    assert kinds(ev) == [K.ACCEPTED, K.FILL]
    fill = ev[1]
    assert (fill["price"], fill["quantity"]) == (100, 4)
    assert (fill["account_id"], fill["counter_account_id"]) == (BOB, ALICE)
    assert fill["trade_id"] == 1
    # price improvement: Bob holds nothing after a full fill at 100
    assert market.engine.balance(BOB, QUOTE) == (FUNDS - 400, 0)
    assert market.engine.balance(BOB, BASE) == (FUNDS + 4, 0)
    assert market.engine.balance(ALICE, BASE) == (FUNDS - 10, 6)
    assert market.engine.order(ALICE, 1)["leaves"] == 6


def test_price_time_priority(market):
    market.run(c.limit(ALICE, I, 1, SELL, 101, 5), c.limit(BOB, I, 1, SELL, 100, 5),
               c.limit(CAROL, I, 1, SELL, 100, 5))
    ev = market.one(c.limit(ALICE, I, 2, BUY, 101, 12))
    fills = ev[ev["kind"] == K.FILL]
    assert [(f["counter_account_id"], f["price"], f["quantity"]) for f in fills] == [
        (BOB, 100, 5), (CAROL, 100, 5)]
    # Alice's own ask at 101 is next: self-trade prevention cancels the taker remainder
    assert int(ev[-1]["kind"]) == K.CANCELED and int(ev[-1]["reason"]) == CancelReason.SELF_TRADE


def test_ioc_remainder_is_canceled_and_hold_released(market):
    market.one(c.limit(ALICE, I, 1, SELL, 100, 3))
    ev = market.one(c.limit(BOB, I, 1, BUY, 100, 10, tif=TimeInForce.IOC))
    assert kinds(ev) == [K.ACCEPTED, K.FILL, K.CANCELED]
    assert int(ev[2]["reason"]) == CancelReason.IOC_REMAINDER and ev[2]["quantity"] == 7
    assert market.engine.balance(BOB, QUOTE) == (FUNDS - 300, 0)
    assert market.engine.order(BOB, 1) is None


def test_fok_all_or_nothing(market):
    market.one(c.limit(ALICE, I, 1, SELL, 100, 3))
    ev = market.one(c.limit(BOB, I, 1, BUY, 100, 4, tif=TimeInForce.FOK))
    assert kinds(ev) == [K.ACCEPTED, K.CANCELED]
    assert int(ev[1]["reason"]) == CancelReason.FOK_UNFILLED
    assert market.engine.balance(BOB, QUOTE) == (FUNDS, 0)
    ev = market.one(c.limit(BOB, I, 2, BUY, 100, 3, tif=TimeInForce.FOK))
    assert kinds(ev) == [K.ACCEPTED, K.FILL]


def test_post_only_rests_or_is_rejected(market):
    market.one(c.limit(ALICE, I, 1, SELL, 100, 3))
    ev = market.one(c.limit(BOB, I, 1, BUY, 100, 1, post_only=True))
    assert kinds(ev) == [K.REJECTED] and int(ev[0]["reason"]) == R.POST_ONLY_WOULD_CROSS
    ev = market.one(c.limit(BOB, I, 2, BUY, 99, 1, post_only=True))
    assert kinds(ev) == [K.ACCEPTED]


def test_market_buy_with_max_cost_stops_at_protection(market):
    market.run(c.limit(ALICE, I, 1, SELL, 100, 2), c.limit(ALICE, I, 2, SELL, 110, 5))
    ev = market.one(c.market(BOB, I, 1, BUY, 10, max_cost=530))
    fills = ev[ev["kind"] == K.FILL]
    assert [(f["price"], f["quantity"]) for f in fills] == [(100, 2), (110, 3)]
    assert int(ev[-1]["reason"]) == CancelReason.MARKET_PROTECTION
    assert market.engine.balance(BOB, QUOTE) == (FUNDS - 530, 0)


def test_market_sell_with_worst_price(market):
    market.run(c.limit(ALICE, I, 1, BUY, 100, 2), c.limit(ALICE, I, 2, BUY, 90, 5))
    ev = market.one(c.market(BOB, I, 1, SELL, 10, worst_price=95))
    fills = ev[ev["kind"] == K.FILL]
    assert [(f["price"], f["quantity"]) for f in fills] == [(100, 2)]
    assert int(ev[-1]["reason"]) == CancelReason.IOC_REMAINDER and ev[-1]["quantity"] == 8
    assert market.engine.balance(BOB, BASE) == (FUNDS - 2, 0)


def test_cancel_releases_the_hold(market):
    market.one(c.limit(ALICE, I, 1, BUY, 100, 10))
    assert market.engine.balance(ALICE, QUOTE) == (FUNDS - 1000, 1000)
    ev = market.one(c.cancel(ALICE, 1))
    assert kinds(ev) == [K.CANCELED] and int(ev[0]["reason"]) == CancelReason.USER
    assert market.engine.balance(ALICE, QUOTE) == (FUNDS, 0)
    ev = market.one(c.cancel(ALICE, 1))
    assert int(ev[0]["reason"]) == R.UNKNOWN_ORDER


def test_replace_size_down_keeps_priority_price_change_loses_it(market):
    market.run(c.limit(ALICE, I, 1, SELL, 100, 5), c.limit(BOB, I, 1, SELL, 100, 5))
    ev = market.one(c.replace(ALICE, 1, 100, 3))
    assert kinds(ev) == [K.REPLACED]
    ev = market.one(c.limit(CAROL, I, 1, BUY, 100, 1))
    assert ev[1]["counter_account_id"] == ALICE  # still first
    market.one(c.replace(ALICE, 1, 100, 4))  # size up: to the back
    ev = market.one(c.limit(CAROL, I, 2, BUY, 100, 1))
    assert ev[1]["counter_account_id"] == BOB
    market.one(c.replace(BOB, 1, 101, 4))  # price change: new level, back of queue
    assert market.engine.depth(I, SELL).tolist() == [[100, 4, 1], [101, 4, 1]]


def test_replace_to_crossing_price_matches(market):
    market.run(c.limit(ALICE, I, 1, SELL, 100, 5), c.limit(BOB, I, 1, BUY, 90, 5))
    ev = market.one(c.replace(BOB, 1, 100, 5))
    assert kinds(ev) == [K.REPLACED, K.FILL]
    assert market.engine.balance(BOB, QUOTE) == (FUNDS - 500, 0)


def test_mass_cancel_by_account_and_instrument(engine_cls):
    m = funded_market(engine_cls)
    m.run(c.limit(ALICE, I, 1, BUY, 90, 1), c.limit(ALICE, I, 2, SELL, 110, 1),
          c.limit(BOB, I, 1, BUY, 91, 1))
    ev = m.one(c.mass_cancel(ALICE, I))
    assert kinds(ev) == [K.CANCELED, K.CANCELED, K.COMMAND_DONE]
    assert [int(r) for r in ev["reason"][:2]] == [CancelReason.MASS_CANCEL] * 2
    assert list(ev["client_id"][:2]) == [1, 2]
    assert m.engine.live_order_count() == 1


def test_halt_cancels_the_book_and_blocks_orders_until_resume(market):
    market.run(c.limit(ALICE, I, 1, BUY, 90, 1), c.limit(BOB, I, 1, SELL, 110, 1))
    ev = market.one(c.halt(I))
    assert kinds(ev) == [K.CANCELED, K.CANCELED, K.COMMAND_DONE]
    assert all(int(r) == CancelReason.HALT for r in ev["reason"][:2])
    ev = market.one(c.limit(ALICE, I, 2, BUY, 90, 1))
    assert int(ev[0]["reason"]) == R.INSTRUMENT_HALTED
    assert int(market.one(c.halt(I))[0]["reason"]) == R.INSTRUMENT_HALTED
    assert kinds(market.one(c.resume(I))) == [K.COMMAND_DONE]
    assert int(market.one(c.resume(I))[0]["reason"]) == R.INSTRUMENT_NOT_HALTED
    assert kinds(market.one(c.limit(ALICE, I, 3, BUY, 90, 1))) == [K.ACCEPTED]


@pytest.mark.parametrize("mode,expected", [
    (StpMode.CANCEL_TAKER, ["taker"]),
    (StpMode.CANCEL_MAKER, ["maker", "fill"]),
    (StpMode.CANCEL_BOTH, ["maker", "taker"]),
])
def test_self_trade_prevention_modes(market, mode, expected):
    market.run(c.limit(ALICE, I, 1, SELL, 100, 5), c.limit(BOB, I, 1, SELL, 100, 5))
    ev = market.one(c.limit(ALICE, I, 2, BUY, 100, 5, stp=mode))
    seen = []
    for e in ev[1:]:
        if int(e["kind"]) == K.FILL:
            seen.append("fill")
        elif int(e["kind"]) == K.CANCELED:
            assert int(e["reason"]) == CancelReason.SELF_TRADE
            seen.append("maker" if e["client_id"] == 1 else "taker")
    assert seen == expected


def test_fees_settle_by_double_entry(engine_cls):
    m = funded_market(engine_cls, maker_bps=10, taker_bps=25)
    m.one(c.limit(ALICE, I, 1, SELL, 1000, 10))
    ev = m.one(c.limit(BOB, I, 1, BUY, 1000, 10))
    fill = ev[1]
    assert (fill["fee"], fill["counter_fee"]) == (25, 10)
    assert m.engine.balance(0, QUOTE) == (35, 0)
    assert m.engine.balance(BOB, QUOTE) == (FUNDS - 10_000 - 25, 0)
    assert m.engine.balance(ALICE, QUOTE) == (FUNDS + 10_000 - 10, 0)


def test_lot_size_scales_base_amounts(engine_cls):
    m = funded_market(engine_cls, lot_size=100, tick_size=5)
    m.one(c.limit(ALICE, I, 1, SELL, 50, 3))
    assert m.engine.balance(ALICE, BASE) == (FUNDS - 300, 300)
    m.one(c.limit(BOB, I, 1, BUY, 50, 3))
    assert m.engine.balance(BOB, BASE) == (FUNDS + 300, 0)
    assert m.engine.balance(BOB, QUOTE) == (FUNDS - 150, 0)

"""Contract 2 on both engines: trading pause, STP decrement, a replace on a full book side."""
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

"""Every RejectReason is reachable, typed, and leaves the state exactly as it was."""
import pytest

from matchcore.core import commands as c
from matchcore.core.codes import ALL_INSTRUMENTS, CommandKind, EventKind as K, OrderType, RejectReason as R, TimeInForce
from matchcore.core.config import EngineConfig
from tests.conftest import ALICE, BOB, BASE, QUOTE, FUNDS, INSTRUMENT as I, funded_market

BUY, SELL = c.BUY, c.SELL
INT64_MAX = (1 << 63) - 1
TIGHT = EngineConfig(max_accounts=5, max_assets=3, max_instruments=2, max_orders=3,
                     max_price_levels=2)


def order(**fields):
    base = dict(account_id=ALICE, instrument_id=I, client_id=50, side=BUY, order_type=OrderType.LIMIT,
                time_in_force=TimeInForce.GTC, stp_mode=1, price=100, quantity=1)
    base.update(fields)
    return c.command(CommandKind.NEW_ORDER, **base)


CASES = {
    R.UNKNOWN_COMMAND: ([], c.command(0)),
    R.INVALID_SIDE: ([], order(side=3)),
    R.INVALID_ORDER_TYPE: ([], order(order_type=9)),
    R.INVALID_TIME_IN_FORCE: ([], order(order_type=OrderType.MARKET, time_in_force=TimeInForce.GTC)),
    R.INVALID_STP_MODE: ([], order(stp_mode=0)),
    R.INVALID_FLAGS: ([], order(flags=2)),
    R.INVALID_QUANTITY: ([], order(quantity=0)),
    R.INVALID_PRICE: ([], order(price=-5)),
    R.INVALID_LIMIT: ([], order(limit=10)),
    R.POST_ONLY_NOT_ALLOWED: ([], order(flags=1, time_in_force=TimeInForce.IOC)),
    R.MARKET_PROTECTION_REQUIRED: ([], order(order_type=OrderType.MARKET, time_in_force=TimeInForce.IOC, price=0)),
    R.INVALID_EXPIRE_TIME: ([], order(time_in_force=TimeInForce.GTD, expire_time_ns=5)),
    R.INVALID_TRIGGER_PRICE: ([], order(order_type=OrderType.STOP_LIMIT)),
    R.INVALID_DISPLAY_QUANTITY: ([], order(time_in_force=TimeInForce.IOC, display_quantity=1)),
    R.STOP_WOULD_TRIGGER: ([order(account_id=BOB, side=SELL, client_id=1), order(client_id=2)],
                           order(client_id=3, order_type=OrderType.STOP_LIMIT, trigger_price=100)),
    R.INVALID_FEE: ([], c.set_fees(I, 10_001, 0)),
    R.INVALID_INSTRUMENT_SPEC: ([], c.add_instrument(1, BASE, BASE)),
    R.INVALID_PRICE_BAND: ([], c.set_price_band(I, 10, 5)),
    R.UNKNOWN_ACCOUNT: ([], order(account_id=4)),
    R.UNKNOWN_ASSET: ([], c.add_instrument(1, BASE, 2)),
    R.UNKNOWN_INSTRUMENT: ([], order(instrument_id=1)),
    R.ACCOUNT_EXISTS: ([], c.add_account(ALICE)),
    R.ASSET_EXISTS: ([], c.add_asset(BASE)),
    R.INSTRUMENT_EXISTS: ([], c.add_instrument(I, BASE, QUOTE)),
    R.INSTRUMENT_HALTED: ([c.halt(I)], order()),
    R.INSTRUMENT_NOT_HALTED: ([], c.resume(I)),
    R.INSTRUMENT_PAUSED: ([c.pause(I)], order()),
    R.PRICE_OFF_TICK: ([], order(price=101)),
    R.PRICE_OUT_OF_BAND: ([c.set_price_band(I, 50, 200)], order(price=250)),
    R.QUANTITY_ABOVE_MAXIMUM: ([], order(quantity=1001)),
    R.DUPLICATE_CLIENT_ORDER_ID: ([order(client_id=7)], order(client_id=7)),
    R.UNKNOWN_ORDER: ([], c.cancel(ALICE, 99)),
    R.POST_ONLY_WOULD_CROSS: ([order(account_id=BOB, side=SELL, client_id=1)], order(flags=1)),
    R.REPLACE_NO_CHANGE: ([order(client_id=7)], c.replace(ALICE, 7, 100, 1)),
    R.TRANSFER_ID_REUSED: ([c.deposit(ALICE, BASE, 5, 900)], c.deposit(ALICE, BASE, 6, 900)),
    R.DUPLICATE_TRANSFER_ID: ([c.deposit(ALICE, BASE, 5, 900)], c.deposit(ALICE, BASE, 5, 899)),
    R.INSUFFICIENT_FUNDS: ([], order(quantity=1000, price=FUNDS)),
    R.AMOUNT_OVERFLOW: ([], order(quantity=1000, price=INT64_MAX - INT64_MAX % 2)),
    R.ORDER_CAPACITY: ([order(client_id=k, price=2) for k in (1, 2, 3)], order(client_id=4, price=2)),
    R.ACCOUNT_CAPACITY: ([], c.add_account(5)),
    R.ASSET_CAPACITY: ([], c.add_asset(3)),
    R.INSTRUMENT_CAPACITY: ([], c.add_instrument(2, BASE, QUOTE)),
    R.PRICE_LEVEL_CAPACITY: ([order(client_id=1, price=2), order(client_id=2, price=4)], order(client_id=3, price=6)),
}


def tight_market(engine_cls):
    m = funded_market(engine_cls, TIGHT, tick_size=2, max_order_lots=1000)
    return m


def test_every_reject_reason_has_a_case():
    transfer_only = {R.INVALID_AMOUNT}
    assert set(R) - set(CASES) == transfer_only


@pytest.mark.parametrize("reason", list(CASES), ids=lambda r: r.name)
def test_reject_is_typed_and_changes_nothing(engine_cls, reason):
    m = tight_market(engine_cls)
    setup, bad = CASES[reason]
    if setup:
        m.run(*setup)
    before = m.engine.state_hash()
    ev = m.one(bad)
    assert [int(k) for k in ev["kind"]] in ([K.REJECTED], [K.TRANSFER_REJECTED]), ev
    assert int(ev[0]["reason"]) == reason
    assert m.engine.state_hash() == before


def test_transfer_rejects(engine_cls):
    m = tight_market(engine_cls)
    ev = m.one(c.deposit(ALICE, BASE, 0, 1000))
    assert int(ev[0]["kind"]) == K.TRANSFER_REJECTED and int(ev[0]["reason"]) == R.INVALID_AMOUNT
    ev = m.one(c.withdraw(ALICE, BASE, FUNDS + 1, 1001))
    assert int(ev[0]["reason"]) == R.INSUFFICIENT_FUNDS
    # transfer ids rise per account: an older one is a duplicate, whatever its content
    for transfer_id in (1000, 999, 1):
        before = m.engine.state_hash()
        ev = m.one(c.deposit(ALICE, BASE, 1, transfer_id))
        assert int(ev[0]["reason"]) == R.DUPLICATE_TRANSFER_ID
        assert m.engine.state_hash() == before
    # ... and per account: Bob's ids are his own
    assert int(m.one(c.deposit(BOB, BASE, 1, 1001))[0]["kind"]) == K.TRANSFER_DONE


def test_a_refused_transfer_is_remembered_as_the_last_one(engine_cls):
    """A withdrawal refused for funds stays refused when resent after funding (the
    resend gets the original outcome); a new transfer id is a new request."""
    m = tight_market(engine_cls)
    refused = m.one(c.withdraw(ALICE, BASE, FUNDS + 1, 2000))
    assert int(refused[0]["reason"]) == R.INSUFFICIENT_FUNDS
    assert int(m.one(c.deposit(ALICE, BASE, 1, 2001))[0]["kind"]) == K.TRANSFER_DONE
    assert int(m.one(c.withdraw(ALICE, BASE, FUNDS + 1, 2000))[0]["reason"]) == R.DUPLICATE_TRANSFER_ID
    assert int(m.one(c.withdraw(ALICE, BASE, FUNDS + 1, 2002))[0]["kind"]) == K.TRANSFER_DONE
    resend = m.one(c.withdraw(ALICE, BASE, FUNDS + 1, 2002))
    assert int(resend[0]["kind"]) == K.TRANSFER_DONE
    assert m.engine.balance(ALICE, BASE) == (0, 0)


def test_transfers_have_no_lifetime_capacity(engine_cls):
    """The defect of contract 1: the venue's 100,001st transfer was refused
    TRANSFER_CAPACITY forever. Now transfers take no memory per id: the state (snapshot)
    is as large after many transfers as after one."""
    m = tight_market(engine_cls)
    count = 120_000 if engine_cls.__name__ == "Engine" else 3_000
    m.one(c.deposit(ALICE, BASE, 1, 10))
    size = len(m.engine.snapshot())
    records = [c.deposit(ALICE if k % 2 else BOB, BASE, 1, 11 + k) for k in range(count)]
    events = m.engine.apply(c.number(c.pack(records), first_seq=1_000))
    assert len(events) == count and set(int(k) for k in events["kind"]) == {K.TRANSFER_DONE}
    assert len(m.engine.snapshot()) == size


def test_transfer_repeat_returns_the_original_outcome(engine_cls):
    m = tight_market(engine_cls)
    first = m.one(c.withdraw(ALICE, QUOTE, 10, 500))
    before = m.engine.state_hash()
    again = m.one(c.withdraw(ALICE, QUOTE, 10, 500))
    assert int(again[0]["kind"]) == int(first[0]["kind"]) == K.TRANSFER_DONE
    assert m.engine.state_hash() == before
    assert m.engine.balance(ALICE, QUOTE) == (FUNDS - 10, 0)
    failed = m.one(c.withdraw(ALICE, QUOTE, FUNDS * 2, 501))
    assert int(m.one(c.withdraw(ALICE, QUOTE, FUNDS * 2, 501))[0]["reason"]) == int(failed[0]["reason"])


def test_mass_cancel_of_all_instruments_needs_a_known_account(engine_cls):
    m = tight_market(engine_cls)
    assert int(m.one(c.mass_cancel(4, ALL_INSTRUMENTS))[0]["reason"]) == R.UNKNOWN_ACCOUNT
    assert int(m.one(c.mass_cancel(ALICE, 3))[0]["reason"]) == R.UNKNOWN_INSTRUMENT

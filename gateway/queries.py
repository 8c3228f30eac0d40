"""Answers to the account and venue queries and market data snapshots, made in the replica's
thread from released state (``replica.Replica.ask``): each is the frames to send, ending with
QUERY_DONE (or the MD_SNAPSHOT and its levels), stating the journal seq it is consistent with.
A session acts only for its own account; TRANSFER_QUERY of another account needs an admin
session (the session checks that before asking)."""
from __future__ import annotations

from matchcore import protocol as p
from matchcore.core.codes import ALL_INSTRUMENTS, CommandKind, EventKind, Side
from matchcore.persistence.marketdata import MarketDataFeed

__all__ = ["balances", "open_orders", "instruments", "transfer", "snapshots"]


def balances(feed: MarketDataFeed, account_id: int, request_id: int) -> bytes:
    engine, as_of = feed.engine, feed.last_seq
    table = engine.balances_array()
    frames = []
    if 0 <= account_id < table.shape[0]:
        for asset_id in range(table.shape[1]):
            available, held = int(table[account_id, asset_id, 0]), int(table[account_id, asset_id, 1])
            if available or held:
                frames.append(p.Balance(asset_id, account_id, request_id, as_of, available, held).encode())
    frames.append(p.QueryDone(p.MessageType.BALANCES_QUERY, len(frames), request_id, as_of).encode())
    return b"".join(frames)


def open_orders(feed: MarketDataFeed, account_id: int, query: p.OpenOrdersQuery, page_max: int) -> bytes:
    """One page, ascending order id; QUERY_DONE.next_after_id says where the next starts."""
    engine, as_of = feed.engine, feed.last_seq
    wanted = max(1, min(query.max_orders or page_max, page_max))
    frames, after, more, last_sent = [], query.after_order_id, False, 0
    while len(frames) < wanted:
        page = engine.open_orders(account_id, after, wanted + 1)
        if not page:
            break
        for order in page:
            after = order["order_id"]
            if query.instrument_id != ALL_INSTRUMENTS and order["instrument_id"] != query.instrument_id:
                continue
            if len(frames) == wanted:
                more = True
                break
            frames.append(p.OpenOrder(order["side"], order["order_type"], order["time_in_force"],
                                      order["instrument_id"], query.request_id, order["order_id"],
                                      order["client_id"], order["price"], order["leaves"], order["shown"],
                                      order["trigger_price"], order["expire_time_ns"],
                                      order["display_quantity"]).encode())
            last_sent = order["order_id"]
        if more or len(page) <= wanted:
            break
    frames.append(p.QueryDone(p.MessageType.OPEN_ORDERS_QUERY, len(frames), query.request_id, as_of,
                              last_sent if more else 0).encode())
    return b"".join(frames)


def instruments(feed: MarketDataFeed, request_id: int) -> bytes:
    engine, as_of = feed.engine, feed.last_seq
    frames = []
    for instrument_id in engine.instrument_ids():
        i = engine.instrument(instrument_id)
        frames.append(p.InstrumentInfo(i["state"], i["base_asset_id"], instrument_id, i["quote_asset_id"], request_id,
                                       i["tick_size"], i["lot_size"], i["max_order_lots"], i["band_min"],
                                       i["band_max"], i["maker_bps"], i["taker_bps"], i["last_price"]).encode())
    frames.append(p.QueryDone(p.MessageType.INSTRUMENTS_QUERY, len(frames), request_id, as_of).encode())
    return b"".join(frames)


def transfer(feed: MarketDataFeed, query: p.TransferQuery) -> bytes:
    """The engine keeps each account's last transfer: its outcome; an older id: SUPERSEDED (the
    account's event stream has it); a newer one: UNKNOWN (never applied)."""
    last = feed.engine.last_transfer(query.account_id)
    state, kind, reason, asset_id, amount = p.TransferState.UNKNOWN, 0, 0, 0, 0
    if last is not None and query.transfer_id == last["transfer_id"]:
        done = last["event_kind"] == EventKind.TRANSFER_DONE
        state = p.TransferState.DONE if done else p.TransferState.REJECTED
        kind, reason, asset_id, amount = last["kind"], last["reason"], last["asset_id"], last["amount"]
    elif last is not None and 0 < query.transfer_id < last["transfer_id"]:
        state = p.TransferState.SUPERSEDED
    assert kind in (0, CommandKind.DEPOSIT, CommandKind.WITHDRAW)
    return p.TransferStatus(state, kind, reason, query.account_id, asset_id, query.request_id, query.transfer_id,
                            amount, feed.last_seq).encode()


def snapshots(feed: MarketDataFeed, instrument_ids: list[int], depth_levels: int, request_id: int) -> bytes | None:
    """MD_SNAPSHOT and its MD_SNAPSHOT_LEVELs per instrument, then QUERY_DONE (count: the
    snapshots); None: an instrument is unknown."""
    engine, frames = feed.engine, []
    for instrument_id in instrument_ids:
        i = engine.instrument(instrument_id)
        if i is None:
            return None
        levels = depth_levels if depth_levels > 0 else engine.config.max_price_levels
        bids, asks = engine.depth(instrument_id, Side.BUY, levels), engine.depth(instrument_id, Side.SELL, levels)
        md_seq = int(feed.md_seqs[instrument_id])
        frames.append(p.MdSnapshot(i["state"], instrument_id, len(bids), md_seq, feed.last_seq, request_id,
                                   i["band_min"], i["band_max"], i["maker_bps"], i["taker_bps"], len(asks),
                                   depth_levels, i["last_price"]).encode())
        for side, rows in ((Side.BUY, bids), (Side.SELL, asks)):
            for price, quantity, count in rows.tolist():
                frames.append(p.MdLevel(1, int(side), instrument_id, count, md_seq, feed.last_seq, 0, price,
                                        quantity).encode())
    frames.append(p.QueryDone(p.MessageType.MD_SUBSCRIBE, len(instrument_ids), request_id, feed.last_seq).encode())
    return b"".join(frames)

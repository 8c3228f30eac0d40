"""Market data and account queries against a real server and PostgreSQL: a market-data-only key
keeps a local book equal to the engine's (icebergs show their peak), the feed it received is
byte for byte the feed regenerated from the journal (also across a restart, from checkpoints),
queries answer from durable state, and a subscriber that does not read is conflated while
order entry goes on."""
from __future__ import annotations

import asyncio
import socket
import struct
import time

import numpy as np
import pytest

from matchcore import protocol as p
from matchcore.client import keys as client_keys
from matchcore.client.connection import Client, QueryRefused
from matchcore.core.codes import ALL_INSTRUMENTS, InstrumentState, Side
from matchcore.gateway.key_store import PgKeyRegistry
from matchcore.persistence.journal import Journal
from matchcore.persistence.marketdata import book_at, feed_from_journal, trade_tape
from matchcore.persistence.replay import replay

from .conftest import ADMIN, ALICE, BOB, INSTRUMENT, ServerProcess, run

I = INSTRUMENT


class Recording(Client):
    """A client that keeps the bytes of every market data increment it is sent."""

    __slots__ = ("recorded",)

    def __init__(self, *args, **kw) -> None:
        super().__init__(*args, **kw)
        self.recorded = bytearray()

    def _on_market_data(self, message) -> None:
        if isinstance(message, (p.MdTrade, p.MdBbo, p.MdStatus)) or (isinstance(message, p.MdLevel)
                                                                      and not message.snapshot):
            self.recorded += message.encode()
        super()._on_market_data(message)


async def _market_data_key(server: ServerProcess, account: int) -> tuple[int, client_keys.PrivateKey]:
    registry = await PgKeyRegistry.connect(server.dsn)
    try:
        key = client_keys.generate_key()
        record = await registry.add(account, key.public_key, market_data_only=True)
        return record.key_id, key
    finally:
        await registry.close()


async def _until(condition, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


def _regenerated(dsn: str) -> bytes:
    with Journal(dsn) as journal:
        return b"".join(frames.tobytes() for _, frames in feed_from_journal(journal))


def _engine_book(dsn: str) -> tuple[list, list]:
    with Journal(dsn) as journal:
        engine = replay(journal).engine
    return ([tuple(row) for row in engine.depth(I, Side.BUY, 1000).tolist()],
            [tuple(row) for row in engine.depth(I, Side.SELL, 1000).tolist()])


def _levels(book, side) -> list:
    return [(level.price, level.quantity, level.order_count) for level in book.depth(side, 1000)]


async def _trade_and_check(server: ServerProcess, watcher: Recording) -> None:
    async with server.client(ALICE) as alice, server.client(BOB) as bob, server.client(ADMIN) as admin:
        iceberg = await bob.new_order(I, Side.SELL, 101, 9, display_quantity=2, timeout_s=10)
        assert iceberg.accepted
        assert (await bob.new_order(I, Side.SELL, 101, 1, timeout_s=10)).accepted
        assert (await alice.new_order(I, Side.BUY, 101, 3, timeout_s=10)).accepted  # takes the peak and 1
        assert (await bob.new_order(I, Side.SELL, 102, 5, timeout_s=10)).accepted
        bid = await alice.new_order(I, Side.BUY, 99, 4, timeout_s=10)
        assert (await alice.replace(bid.event.client_id, 98, 6, timeout_s=10)).accepted
        assert (await alice.new_order(I, Side.BUY, 97, 2, timeout_s=10)).accepted
        assert (await admin.request(p.SetFees(I, 7, 2, 5), timeout_s=10)).accepted
        assert (await admin.request(p.PauseInstrument(I, 8), timeout_s=10)).accepted
        assert (await admin.request(p.ResumeInstrument(I, 9), timeout_s=10)).accepted
        last_seq = await server.journal_last_seq()
        book = watcher.books[I]
        await _until(lambda: book.command_seq >= last_seq - 1 and book.maker_bps == 2)

        bids, asks = _engine_book(server.dsn)
        assert _levels(book, Side.BUY) == bids == [(98, 6, 1), (97, 2, 1)]
        assert _levels(book, Side.SELL) == asks and asks[0] == (101, 2, 1)  # the iceberg shows its peak
        assert book.state == InstrumentState.TRADING and (book.maker_bps, book.taker_bps) == (2, 5)

        balances = await alice.balances(timeout_s=10)
        with Journal(server.dsn) as journal:
            engine = replay(journal).engine
        for asset_id, balance in balances.items():
            assert (balance.available, balance.held) == engine.balance(ALICE, asset_id)
            assert balance.as_of_seq >= last_seq - 1
        orders = await alice.open_orders(page_size=1, timeout_s=10)  # pages of one
        assert [(o.price, o.open_quantity, o.side) for o in orders] == [(98, 6, Side.BUY), (97, 2, Side.BUY)]
        (instrument,) = await alice.instruments(timeout_s=10)
        assert (instrument.instrument_id, instrument.maker_bps, instrument.last_price) == (I, 2, 101)
        mine = await admin.transfer_status(2, account_id=ALICE, timeout_s=10)
        assert mine.state == p.TransferState.DONE and mine.amount > 0
        older = await admin.transfer_status(1, account_id=ALICE, timeout_s=10)
        assert older.state == p.TransferState.SUPERSEDED
        assert (await admin.transfer_status(99, account_id=ALICE, timeout_s=10)).state == p.TransferState.UNKNOWN
        with pytest.raises(QueryRefused) as refused:
            await alice.transfer_status(1, account_id=BOB, timeout_s=10)
        assert refused.value.reason == p.SessionReason.WRONG_ACCOUNT


def test_a_market_data_key_keeps_the_book_and_the_feed_is_the_journals(pg_server, work_dir):
    server = ServerProcess(pg_server, work_dir, snapshot_every_commands=7).start()
    try:
        run(server.market())

        async def scenario():
            key_id, key = await _market_data_key(server, ALICE)
            watcher = Recording("127.0.0.1", server.port, account_id=ALICE, key_id=key_id, private_key=key)
            await watcher.connect()
            try:
                books = await watcher.subscribe(ALL_INSTRUMENTS, timeout_s=10)
                assert list(books) == [I] and books[I].synced
                start_md_seq = books[I].md_seq
                assert start_md_seq >= 1  # ADD_INSTRUMENT's status at least
                # a market-data-only key: no order entry
                refused = await watcher.new_order(I, Side.BUY, 100, 1, timeout_s=10)
                assert refused.reject is not None and refused.reject.reason == p.SessionReason.NOT_AUTHORIZED
                with pytest.raises(QueryRefused):
                    await watcher.subscribe(77, timeout_s=10)  # no such instrument
                await _trade_and_check(server, watcher)
                trades = []
                while not watcher._trades.empty():
                    trades.append(watcher._trades.get_nowait())
                assert [(t.price, t.quantity, t.aggressor_side) for t in trades] == [(101, 2, Side.BUY),
                                                                                       (101, 1, Side.BUY)]
                return start_md_seq, bytes(watcher.recorded), books[I].md_seq
            finally:
                await watcher.close()

        start_md_seq, recorded, end_md_seq = run(scenario())
        regenerated = _regenerated(server.dsn)
        # what the subscriber got after its snapshot is the tail of the journal's feed, byte for byte
        assert recorded and regenerated.endswith(recorded)
        assert len(regenerated) // p.MD_FRAME_SIZE == end_md_seq
        with Journal(server.dsn) as journal:
            tape = trade_tape(journal)
            assert tape["price"].tolist() == [101, 101] and tape["quantity"].tolist() == [2, 1]
            last = journal.last_seq()
            l2 = book_at(journal, last, I)
        assert [(int(r["side"]), int(r["price"]), int(r["quantity"])) for r in l2] == [
            (1, 98, 6), (1, 97, 2), (2, 101, 2), (2, 102, 5)]

        # a restart (checkpoints every 7 commands): the feed goes on with the same numbering
        assert server.stop() == 0
        server.start()

        async def after_restart():
            async with server.client(BOB) as bob:
                books = await bob.subscribe(I, timeout_s=10)
                assert books[I].md_seq == end_md_seq
                assert (await bob.new_order(I, Side.SELL, 103, 1, timeout_s=10)).accepted
                await _until(lambda: bob.books[I].md_seq > end_md_seq)
                return bob.books[I].md_seq

        md_seq = run(after_restart())
        assert len(_regenerated(server.dsn)) // p.MD_FRAME_SIZE == md_seq
    finally:
        server.drop()


def test_a_subscriber_that_does_not_read_is_conflated_and_order_entry_goes_on(pg_server, work_dir):
    server = ServerProcess(pg_server, work_dir, **{"limits.md_conflate_bytes": 4096,
                                                   "limits.socket_send_buffer_bytes": 8192}).start()
    try:
        run(server.market())

        async def scenario():
            key_id, key = await _market_data_key(server, BOB)
            slow = Client("127.0.0.1", server.port, account_id=BOB, key_id=key_id, private_key=key,
                          receive_buffer_bytes=4096)
            await slow.connect()
            await slow.subscribe(ALL_INSTRUMENTS, timeout_s=10)
            slow._reader._transport.pause_reading()  # the client stops reading its socket
            async with server.client(ALICE) as alice:
                for round_ in range(60):
                    sends = [alice.new_order(I, Side.BUY, 10 + (round_ * 50 + k) % 200, 1, timeout_s=20)
                             for k in range(50)]
                    outcomes = await asyncio.gather(*sends)
                    assert all(o.accepted for o in outcomes)
                metrics = _scrape(server.metrics_port)
                assert _metric(metrics, "matchcore_md_conflations") >= 1
                slow._reader._transport.resume_reading()
                # once it reads again it gets a fresh snapshot and its book is right
                last_seq = await server.journal_last_seq()
                await _until(lambda: slow.books[I].synced and slow.books[I].command_seq >= last_seq, 20)
                assert slow.resnapshots == 0  # the server re-sent the snapshot: no gap was seen
                bids, _ = _engine_book(server.dsn)
                assert _levels(slow.books[I], Side.BUY) == bids
            await slow.close()

        run(scenario())
    finally:
        server.drop()


def _scrape(port: int) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        chunks = []
        while chunk := connection.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode()


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "_total "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not scraped")

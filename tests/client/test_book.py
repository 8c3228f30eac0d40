"""The client's local book: a snapshot then increments in md_seq order keep it exact; an
increment that is not the next md_seq is a gap (the book stops until a fresh snapshot)."""
from __future__ import annotations

from matchcore import protocol as p
from matchcore.client.marketdata import Book, Level
from matchcore.core.codes import Side


def _snapshot(md_seq: int, levels: list[tuple[int, int, int, int]]) -> tuple[p.MdSnapshot, list[p.MdLevel]]:
    frames = [p.MdLevel(1, side, 0, count, md_seq, 9, 0, price, quantity) for side, price, quantity, count in levels]
    bids = sum(1 for f in frames if f.side == Side.BUY)
    return p.MdSnapshot(0, 0, bids, md_seq, 9, 1, 1, 1000, 0, 0, len(frames) - bids, 0, 100), frames


def test_a_book_follows_its_increments_and_stops_at_a_gap():
    book = Book(0)
    book.apply(p.MdLevel(0, Side.BUY, 0, 1, 3, 10, 0, 99, 5))  # before any snapshot: ignored
    assert not book.synced and not book.bids
    book.load(*_snapshot(5, [(Side.BUY, 99, 5, 1), (Side.SELL, 101, 2, 1)]))
    assert book.mid() == 100 and book.best_ask() == Level(101, 2, 1)
    assert book.apply(p.MdLevel(0, Side.BUY, 0, 1, 4, 10, 0, 98, 7))  # already in the snapshot: skipped
    assert 98 not in book.bids
    assert book.apply(p.MdLevel(0, Side.SELL, 0, 0, 6, 11, 0, 101, 0))  # the ask is gone
    assert book.apply(p.MdTrade(Side.BUY, 0, 7, 11, 0, 1, 101, 2))
    assert book.best_ask() is None and book.last_price == 101 and book.md_seq == 7
    assert not book.apply(p.MdLevel(0, Side.BUY, 0, 1, 9, 12, 0, 97, 1))  # 8 is missing
    assert not book.synced
    assert book.apply(p.MdLevel(0, Side.BUY, 0, 1, 10, 12, 0, 96, 1)) and 96 not in book.bids  # waits
    book.load(*_snapshot(10, [(Side.BUY, 99, 5, 1), (Side.BUY, 97, 1, 1), (Side.BUY, 96, 1, 1)]))
    assert [level.price for level in book.depth(Side.BUY)] == [99, 97, 96] and book.synced

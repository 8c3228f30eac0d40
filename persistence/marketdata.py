"""The market data feed: one deterministic function of the journal, live and in replay.

``MarketDataFeed`` is a replica Engine that records book changes plus the feed's state (each
instrument's md_seq and last published BBO). ``apply(commands, events)`` applies one run of
journaled commands and returns its frames (``protocol._codec.encode_market_data``): trades
from the FILL events, level updates, BBOs and statuses from the book changes. The gateway
runs it on released batches only; ``feed_from_journal`` runs it on journal rows, so the
frames it yields are byte for byte the live feed (a test proves it).

The feed's state after a seq is a pure function of the journal up to it; it is checkpointed
(``marketdata_checkpoint``: the replica's snapshot and the feed state) so a restart continues
the numbering without replaying from seq 1. Regenerating from seq 1 gives the same bytes.

For quants: ``trade_tape`` (a structured array of every trade) and ``book_at`` (the L2 book of
an instrument at any seq), both from the feed's frames.
"""
from __future__ import annotations

from typing import AsyncIterator, Iterator

import numpy as np

from matchcore.core import Engine, EngineConfig
from matchcore.protocol import _codec
from matchcore.protocol.messages import MD_FRAME_SIZE, MessageType
from matchcore.persistence.replay import (CONFIG_META_KEY, ConfigEpoch, apply_epochs, read_epochs,
                                          read_epochs_async, resize)

__all__ = ["MarketDataFeed", "feed_from_journal", "feed_from_journal_async", "trade_tape", "book_at",
           "TRADE_DTYPE", "LEVEL_DTYPE", "frame_instruments"]

#: one trade of the tape (``trade_tape``)
TRADE_DTYPE = np.dtype([("command_seq", "<u8"), ("timestamp_ns", "<i8"), ("instrument_id", "<u4"),
                        ("aggressor_side", "u1"), ("trade_id", "<u8"), ("price", "<i8"), ("quantity", "<i8"),
                        ("md_seq", "<u8")])
#: one level of ``book_at``
LEVEL_DTYPE = np.dtype([("side", "u1"), ("price", "<i8"), ("quantity", "<i8"), ("order_count", "<u4")])

# the shared increment layout (protocol.MD_INCREMENT_TYPES), read straight from frames
_INCREMENT = np.dtype({"names": ["type", "small", "instrument_id", "word", "md_seq", "command_seq", "timestamp_ns",
                                 "a", "b", "c", "d"],
                       "formats": ["u1", "u1", "<u4", "<u4", "<u8", "<u8", "<i8", "<i8", "<i8", "<i8", "<i8"],
                       "offsets": [2, 4, 8, 12, 16, 24, 32, 40, 48, 56, 64], "itemsize": MD_FRAME_SIZE})


class MarketDataFeed:
    """A replica engine and the feed state; ``apply`` makes the frames of each run of commands."""

    __slots__ = ("engine", "md_seqs", "tops", "last_seq")

    def __init__(self, engine: Engine, md_seqs: np.ndarray | None = None, tops: np.ndarray | None = None,
                 last_seq: int = 0) -> None:
        self.engine = engine
        engine.enable_book_changes()
        instruments = engine.config.max_instruments
        self.md_seqs = np.zeros(instruments, np.uint64) if md_seqs is None else md_seqs
        self.tops = np.zeros((instruments, 4), np.int64) if tops is None else tops
        self.last_seq = last_seq
        self._fit(instruments)

    def _fit(self, instruments: int) -> None:
        """The state arrays cover every instrument of the engine's config (it may have grown)."""
        if len(self.md_seqs) < instruments:
            grown_seqs = np.zeros(instruments, np.uint64)
            grown_seqs[:len(self.md_seqs)] = self.md_seqs
            grown_tops = np.zeros((instruments, 4), np.int64)
            grown_tops[:len(self.tops)] = self.tops
            self.md_seqs, self.tops = grown_seqs, grown_tops

    def apply(self, commands: np.ndarray, events: np.ndarray | None = None) -> np.ndarray:
        """Apply journaled commands (in order, after ``last_seq``); their frames, (n, 72) uint8.
        ``events``: the journaled events (the replica's own are used when None)."""
        produced = self.engine.apply(commands)
        return self.frames_of(commands, produced if events is None else events)

    def frames_of(self, commands: np.ndarray, events: np.ndarray) -> np.ndarray:
        """The frames of commands the engine has just applied (the book changes it recorded)."""
        if len(commands):
            self.last_seq = int(commands["seq"][-1])
        return _codec.encode_market_data(np.ascontiguousarray(events), self.engine.take_book_changes(),
                                         self.md_seqs, self.tops)

    def resized(self, config: EngineConfig) -> None:
        """Move the replica into another config (a config epoch of the journal)."""
        self.engine = resize(self.engine, config)
        self.engine.enable_book_changes()
        self._fit(config.max_instruments)

    # ---- checkpoints

    def feed_state(self) -> bytes:
        return len(self.md_seqs).to_bytes(8, "little") + self.md_seqs.tobytes() + self.tops.tobytes()

    @staticmethod
    def state_arrays(feed_state: bytes) -> tuple[np.ndarray, np.ndarray]:
        count = int.from_bytes(feed_state[:8], "little")
        md_seqs = np.frombuffer(feed_state, np.uint64, count, 8).copy()
        tops = np.frombuffer(feed_state, np.int64, 4 * count, 8 + 8 * count).reshape(count, 4).copy()
        return md_seqs, tops

    @classmethod
    def from_checkpoint(cls, checkpoint: tuple[int, bytes, bytes] | None, config: EngineConfig) -> "MarketDataFeed":
        if checkpoint is None:
            return cls(Engine(config, prefault=False))
        seq, engine_state, feed_state = checkpoint
        md_seqs, tops = cls.state_arrays(feed_state)
        return cls(Engine.restore(engine_state, prefault=False), md_seqs, tops, seq)


def _replay_into(feed: MarketDataFeed, rows, epochs: list[ConfigEpoch], until_seq: int | None, out: list) -> None:
    def applied(engine, commands, events):
        feed.engine = engine
        feed._fit(engine.config.max_instruments)
        out.append((commands, feed.frames_of(commands, events)))
    engine, last, _, _ = apply_epochs(feed.engine, rows, feed.last_seq, epochs, until_seq, verify=True,
                                      prefault=False, on_applied=applied)
    if engine is not feed.engine:
        feed.engine = engine
        engine.enable_book_changes()
        feed._fit(engine.config.max_instruments)


def advance_feed(feed: MarketDataFeed, batches: list, epochs: list[ConfigEpoch]) -> None:
    """Apply journal rows after ``feed.last_seq`` to the feed (frames not kept), ending in the
    config of the command after the last: a standby keeping its replica warm."""
    _replay_into(feed, batches, epochs, None, [])
    from matchcore.persistence.replay import config_at
    config = config_at(epochs, feed.last_seq + 1)
    if config != feed.engine.config:
        feed.resized(config)


def feed_from_journal(journal, from_seq: int = 1, until_seq: int | None = None,
                      *, use_checkpoints: bool = False) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(commands, frames) per journal row (the part after ``from_seq``), regenerated by the
    live feed's function from seq 1 (or, ``use_checkpoints``, from the newest market data
    checkpoint before ``from_seq``); frames are (n, 72) uint8 rows, verified replay."""
    epochs = read_epochs(journal)
    checkpoint = journal.latest_marketdata_checkpoint(from_seq - 1) if use_checkpoints else None
    feed = MarketDataFeed.from_checkpoint(checkpoint, epochs[0].config)
    for batch in journal.batches(from_seq=feed.last_seq + 1, to_seq=until_seq):
        out: list = []
        _replay_into(feed, (batch,), epochs, until_seq, out)
        for commands, frames in out:
            if len(commands) and int(commands["seq"][-1]) >= from_seq:
                keep = frames[_frame_seqs(frames) >= from_seq] if int(commands["seq"][0]) < from_seq else frames
                yield commands, keep


async def feed_from_journal_async(journal, until_seq: int | None = None,
                                  config: EngineConfig | None = None) -> MarketDataFeed:
    """The feed (replica and state) after ``until_seq`` (default: the end), from the newest
    checkpoint (or seq 1): what the server recovers at start. Frames are not kept. A journal
    no core has written to yet (no engine config stored) is empty: ``config`` is used."""
    if config is not None and await journal.read_meta(CONFIG_META_KEY) is None:
        return MarketDataFeed(Engine(config, prefault=False))
    epochs = await read_epochs_async(journal)
    checkpoint = await journal.latest_marketdata_checkpoint(until_seq)
    feed = MarketDataFeed.from_checkpoint(checkpoint, epochs[0].config)
    pending: list = []
    async for batch in journal.batches(from_seq=feed.last_seq + 1, to_seq=until_seq, read_ahead=True):
        pending.append(batch)
        if len(pending) >= 64:
            _replay_into(feed, pending, epochs, until_seq, [])
            pending = []
    _replay_into(feed, pending, epochs, until_seq, [])
    if until_seq is None:
        from matchcore.persistence.replay import config_at
        config = config_at(epochs, feed.last_seq + 1)
        if config != feed.engine.config:
            feed.resized(config)
    return feed


def _frame_seqs(frames: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(frames).view(_INCREMENT)["command_seq"].reshape(-1)


def frame_instruments(frames: np.ndarray) -> np.ndarray:
    """The instrument id of each row of ``frames`` (n, 72), read through the shared layout."""
    return np.ascontiguousarray(frames).view(_INCREMENT)["instrument_id"].reshape(-1)


def trade_tape(journal, from_seq: int = 1, until_seq: int | None = None, instrument_id: int | None = None) -> np.ndarray:
    """Every trade (TRADE_DTYPE) from the feed regenerated from the journal, in order."""
    parts = []
    for _, frames in feed_from_journal(journal, from_seq, until_seq):
        rows = np.ascontiguousarray(frames).view(_INCREMENT).reshape(-1)
        rows = rows[rows["type"] == MessageType.MD_TRADE]
        if instrument_id is not None:
            rows = rows[rows["instrument_id"] == instrument_id]
        tape = np.zeros(len(rows), TRADE_DTYPE)
        tape["command_seq"], tape["timestamp_ns"], tape["instrument_id"] = rows["command_seq"], rows["timestamp_ns"], rows["instrument_id"]
        tape["aggressor_side"], tape["trade_id"], tape["price"] = rows["small"], rows["a"], rows["b"]
        tape["quantity"], tape["md_seq"] = rows["c"], rows["md_seq"]
        parts.append(tape)
    return np.concatenate(parts) if parts else np.zeros(0, TRADE_DTYPE)


def book_at(journal, seq: int, instrument_id: int) -> np.ndarray:
    """The L2 book of an instrument after command ``seq`` (LEVEL_DTYPE: bids best first, then
    asks best first), built by applying the feed's level updates from seq 1."""
    levels: dict[tuple[int, int], tuple[int, int]] = {}
    for _, frames in feed_from_journal(journal, 1, seq):
        rows = np.ascontiguousarray(frames).view(_INCREMENT).reshape(-1)
        rows = rows[(rows["type"] == MessageType.MD_LEVEL) & (rows["instrument_id"] == instrument_id)]
        for side, price, quantity, count in zip(rows["small"].tolist(), rows["a"].tolist(), rows["b"].tolist(),
                                                rows["word"].tolist()):
            if quantity == 0:
                levels.pop((side, price), None)
            else:
                levels[(side, price)] = (quantity, count)
    bids = sorted(((p, q, n) for (s, p), (q, n) in levels.items() if s == 1), reverse=True)
    asks = sorted((p, q, n) for (s, p), (q, n) in levels.items() if s == 2)
    out = np.zeros(len(bids) + len(asks), LEVEL_DTYPE)
    for index, (side, (price, quantity, count)) in enumerate([(1, b) for b in bids] + [(2, a) for a in asks]):
        out[index] = (side, price, quantity, count)
    return out

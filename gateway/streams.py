"""Account event streams: who gets each durable event, its event sequence number, and recovery.

Every account has one stream (docs/protocol.md 3.2): the events that concern it, in journal
order, numbered 1, 2, 3, ... The numbering is a pure function of the journal, so it is the
same after a restart: ``route`` decides the recipients of a batch from its commands and
events alone, and ``AccountStreams.rebuild`` replays the journal through it at start.

Recipients of an event (``route``):

- the event's ``account_id`` (the order's owner, the account a transfer credits or debits),
  except the COMMAND_DONE of the engine clock's CLOCK command, which goes to no one;
- a FILL's ``counter_account_id`` too (the maker);
- for admin commands, the admin session that sent it. The gateway records the sender in the
  command itself (``stamp_sender``), in a field the engine ignores for that kind: ``limit``
  for ADD_ACCOUNT, DEPOSIT and WITHDRAW, ``account_id`` for the others (whose events then
  name it). ADD_ACCOUNT's outcome goes to the sender only, not to the new account.

Recent frames live in one bounded ring shared by all accounts (``recent_frames`` frames, each
encoded once for its recipient and numbered), so memory does not grow with the number of
accounts. Older events are read back from the journal: a sparse index per account (the
account's event count before every ``INDEX_EVERY_EVENTS``-th event, with the journal row it
falls in) tells where to start reading.
"""
from __future__ import annotations

import bisect
import contextlib
from typing import AsyncIterator, Callable

import numpy as np

from matchcore.core.codes import CommandKind, EventKind
from matchcore.core.records import EVENT_DTYPE
from matchcore.protocol import _codec
from matchcore.protocol import EVENT_FRAME_SIZE

__all__ = ["route", "stamp_sender", "AccountStreams", "SENDER_IN_LIMIT", "NO_RECIPIENT"]

#: Admin kinds whose sender is recorded in ``limit`` (``account_id`` is theirs to use).
SENDER_IN_LIMIT = (CommandKind.ADD_ACCOUNT, CommandKind.DEPOSIT, CommandKind.WITHDRAW)
#: Ring slots not holding a frame.
NO_RECIPIENT = np.uint64(1 << 40)
_EVENT_BYTES = np.dtype((np.void, EVENT_DTYPE.itemsize))
#: One index entry per this many events of an account.
INDEX_EVERY_EVENTS = 4096

_FIRST_ORDER_ENTRY = int(CommandKind.NEW_ORDER)


def stamp_sender(commands: np.ndarray, sender_account_id: int) -> None:
    """Record the admin session's account in its admin commands, in place (see module doc)."""
    kinds = commands["kind"]
    admin = kinds < _FIRST_ORDER_ENTRY
    if not admin.any():
        return
    in_limit = admin & np.isin(kinds, SENDER_IN_LIMIT)
    commands["limit"][in_limit] = sender_account_id
    commands["account_id"][admin & ~in_limit] = sender_account_id


def route(commands: np.ndarray, events: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Recipients of a batch's events: ``(accounts, event_indexes)``, sorted by account, then
    by event order, so each account's share is one run in stream order."""
    if len(events) == 0:
        empty = np.empty(0, np.int64)
        return empty, empty
    command_index = (events["seq"] - commands["seq"][0]).astype(np.int64)
    command_kind = commands["kind"][command_index]
    sender = commands["limit"][command_index].astype(np.int64) & 0xFFFFFFFF
    primary = events["account_id"].astype(np.int64)
    add_account = command_kind == CommandKind.ADD_ACCOUNT
    primary[add_account] = sender[add_account]
    # the engine clock's own COMMAND_DONE concerns no one (the expiries it causes do)
    primary[(command_kind == CommandKind.CLOCK) & (events["kind"] == EventKind.COMMAND_DONE)] = -1
    secondary = np.where(events["kind"] == EventKind.FILL, events["counter_account_id"].astype(np.int64), -1)
    transfer = (command_kind == CommandKind.DEPOSIT) | (command_kind == CommandKind.WITHDRAW)
    secondary[transfer] = sender[transfer]
    second = (secondary >= 0) & (secondary != primary)
    first = primary >= 0
    accounts = np.concatenate([primary[first], secondary[second]])
    indexes = np.concatenate([np.flatnonzero(first), np.flatnonzero(second)])
    # one sort of (account, index) packed in 64 bits: accounts are u32, indexes < 2**31
    keys = np.sort((accounts << 32) | indexes)
    return keys >> 32, keys & 0xFFFFFFFF


def take_events(events: np.ndarray, indexes: np.ndarray) -> np.ndarray:
    """``events[indexes]`` as one copy of 128-byte items (numpy's structured-dtype path is
    several times slower)."""
    raw = np.ascontiguousarray(events).view(_EVENT_BYTES)
    return raw[indexes].view(EVENT_DTYPE)


def _pieces(accounts: np.ndarray, capacity: int) -> list[tuple[int, int]]:
    """Cut sorted recipients into runs of at most ``capacity`` frames, between accounts where
    possible (an account with more frames than that is cut alone): usually one piece."""
    total = len(accounts)
    if total <= capacity:
        return [(0, total)] if total else []
    bounds = np.flatnonzero(np.concatenate(([True], accounts[1:] != accounts[:-1]))).tolist() + [total]
    pieces, begin = [], 0
    for run_start, run_end in zip(bounds, bounds[1:]):
        if run_end - begin > capacity and run_start > begin:
            pieces.append((begin, run_start))
            begin = run_start
        while run_end - begin > capacity:
            pieces.append((begin, begin + capacity))
            begin += capacity
    pieces.append((begin, total))
    return pieces


class AccountStreams:
    """Per-account event counters, the ring of recent frames, and the journal index."""

    __slots__ = ("capacity", "last", "_frames", "_view", "_recipient", "_event_seq", "_position",
                 "_index")

    def __init__(self, recent_frames: int) -> None:
        if recent_frames <= 0:
            raise ValueError("recent_frames must be positive")
        self.capacity = recent_frames
        #: account -> its last event sequence number
        self.last: dict[int, int] = {}
        self._frames = np.zeros(recent_frames * EVENT_FRAME_SIZE, np.uint8)
        self._view = memoryview(self._frames)  # slices of it go to deliver()
        self._recipient = np.full(recent_frames, NO_RECIPIENT, np.uint64)
        self._event_seq = np.zeros(recent_frames, np.uint64)
        self._position = 0
        #: account -> [(events before, first seq of the journal row)], rising
        self._index: dict[int, list[tuple[int, int]]] = {}

    def last_event_seq(self, account_id: int) -> int:
        return self.last.get(account_id, 0)

    def counters(self) -> tuple[np.ndarray, np.ndarray]:
        """Every account's last event sequence number: (accounts, counts), by account."""
        accounts = np.fromiter(self.last.keys(), np.uint32, len(self.last))
        counts = np.fromiter(self.last.values(), np.uint64, len(self.last))
        order = np.argsort(accounts)
        return accounts[order], counts[order]

    def load_counters(self, accounts: np.ndarray, counts: np.ndarray, seq: int) -> None:
        """Start from a checkpoint's counters as of command ``seq`` (before any append); the
        journal index starts there too (older events: read from seq 1)."""
        assert not self.last, "counters are loaded before any event"
        self.last = dict(zip(accounts.tolist(), counts.tolist()))
        self._index = {account: [(count, seq + 1)] for account, count in self.last.items()}

    # ------------------------------------------------------------------ appending

    def append(self, commands: np.ndarray, events: np.ndarray,
               deliver: Callable[[int, int, int, memoryview], None] | None = None) -> int:
        """Number a durable batch's events for their recipients, keep the frames, and call
        ``deliver(account, first_event_seq, last_event_seq, frames)`` per account (``frames``
        is valid only during the call). Returns the frames made."""
        accounts, indexes = route(commands, events)
        batch_first_seq = int(commands["seq"][0]) if len(commands) else 0
        for begin, end in _pieces(accounts, self.capacity):
            self._append_piece(accounts[begin:end], indexes[begin:end], events, batch_first_seq, deliver)
        return len(accounts)

    def _append_piece(self, accounts: np.ndarray, indexes: np.ndarray, events: np.ndarray,
                      batch_first_seq: int, deliver) -> None:
        """At most ``capacity`` routed frames (sorted by account): numbered, encoded in one
        codec call into contiguous ring slots, then delivered an account's run at a time."""
        count = len(accounts)
        starts = np.flatnonzero(np.concatenate(([True], accounts[1:] != accounts[:-1])))
        runs = np.diff(np.append(starts, count))
        recipients = accounts[starts].tolist()
        befores = [self.last.get(account, 0) for account in recipients]
        event_seqs = (np.repeat(np.asarray(befores, np.int64) + 1 - starts, runs)
                      + np.arange(count)).astype(np.uint64)
        position = self._claim(count)
        _codec.encode_routed_events(events, indexes, accounts, event_seqs, self._frames,
                                    position * EVENT_FRAME_SIZE)
        self._recipient[position:position + count] = accounts
        self._event_seq[position:position + count] = event_seqs
        for account, before, start, run in zip(recipients, befores, starts.tolist(), runs.tolist()):
            self._index_note(account, before, run, batch_first_seq)
            self.last[account] = before + run
            if deliver is not None:
                first = (position + start) * EVENT_FRAME_SIZE
                deliver(account, before + 1, before + run, self._view[first:first + run * EVENT_FRAME_SIZE])

    def _index_note(self, account: int, before: int, count: int, batch_first_seq: int) -> None:
        if before // INDEX_EVERY_EVENTS != (before + count) // INDEX_EVERY_EVENTS or before == 0:
            self._index.setdefault(account, []).append((before, batch_first_seq))

    def _claim(self, count: int) -> int:
        """``count`` contiguous ring slots (wrapping to 0 when they do not fit before the end)."""
        position = self._position
        if position + count > self.capacity:
            self._recipient[position:] = NO_RECIPIENT
            position = 0
        self._position = position + count
        if self._position == self.capacity:
            self._position = 0
        return position

    # ------------------------------------------------------------------ reading back

    def recent(self, account_id: int, from_event_seq: int, max_frames: int) -> tuple[bytes, int] | None:
        """Frames ``from_event_seq``.. (at most ``max_frames``) from memory, with the last event
        seq they hold; None when the ring no longer holds ``from_event_seq``."""
        last = self.last.get(account_id, 0)
        if from_event_seq > last:
            return b"", from_event_seq - 1
        slots = np.flatnonzero(self._recipient == account_id)
        if len(slots) == 0:
            return None
        seqs = self._event_seq[slots]
        order = np.argsort(seqs, kind="stable")
        slots, seqs = slots[order], seqs[order]
        begin = int(np.searchsorted(seqs, from_event_seq))
        if begin >= len(seqs) or int(seqs[begin]) != from_event_seq:
            return None
        chosen = slots[begin:begin + max_frames]
        frames = self._frames.reshape(-1, EVENT_FRAME_SIZE)[chosen]
        return frames.tobytes(), int(seqs[begin + len(chosen) - 1])

    def journal_start(self, account_id: int, from_event_seq: int) -> tuple[int, int]:
        """Where to start reading the journal for ``from_event_seq``: (events before, seq)."""
        entries = self._index.get(account_id, [])
        position = bisect.bisect_left(entries, (from_event_seq, 0)) - 1
        if position < 0:
            return 0, 1
        return entries[position]

    async def from_journal(self, batches: Callable[[int], AsyncIterator], account_id: int,
                           from_event_seq: int, max_frames: int) -> tuple[bytes, int]:
        """Frames ``from_event_seq``.. of ``account_id`` (at most ``max_frames``) re-made from
        the journal; ``batches(from_seq)`` iterates journal rows."""
        count, start_seq = self.journal_start(account_id, from_event_seq)
        out = bytearray()
        through = from_event_seq - 1
        last = self.last.get(account_id, 0)
        async with contextlib.aclosing(batches(start_seq)) as rows:  # its connection back at once
            async for batch in rows:
                count, piece = self._journal_piece(batch, account_id, count, from_event_seq,
                                                   max_frames - (through - from_event_seq + 1))
                if piece is None:
                    continue
                frames, through = piece
                out += frames
                if through - from_event_seq + 1 >= max_frames or through >= last:
                    break
        return bytes(out), through

    @staticmethod
    def _journal_piece(batch, account_id: int, count: int, from_event_seq: int,
                       room_frames: int) -> tuple[int, tuple[bytearray, int] | None]:
        """One journal row for ``account_id``, ``count`` of its events before the row:
        (events counted through the row, (frames from ``from_event_seq`` on, at most
        ``room_frames``, and the last event seq among them) or None when none is due)."""
        accounts, indexes = route(batch.commands, batch.events)
        mine = indexes[accounts == account_id]
        first = count + 1
        count += len(mine)
        if len(mine) == 0 or count < from_event_seq:
            return count, None
        skip = max(0, from_event_seq - first)
        chosen = take_events(batch.events, mine[skip:skip + room_frames])
        frames = bytearray(len(chosen) * EVENT_FRAME_SIZE)
        _codec.encode_events(chosen, frames, 0, account_id, first + skip)
        return count, (frames, first + skip + len(chosen) - 1)

    def rebuild_from(self, commands: np.ndarray, events: np.ndarray) -> None:
        """Count (and keep in the ring) a journal row's events at start."""
        self.append(commands, events, None)


"""The journal's unit: one batch of commands and their events, packed, with its checksum.

A batch covers the commands with sequence numbers ``first_seq..last_seq`` (all of them, in
order, none twice) and every event those commands produced (an event carries the seq of its
command, so events are sorted by seq and lie in the same range). It is stored as one row of the
``journal`` table: the two arrays as raw little-endian bytes of ``COMMAND_DTYPE`` (96 bytes) and
``EVENT_DTYPE`` (128 bytes) records, so a reader gets them back with ``np.frombuffer``, no copy.

Checksum: a CRC over

    header   = little-endian u64 first_seq, u64 last_seq, u32 command_count, u32 event_count
    payload  = the command bytes, then the event bytes

so a row whose key, counts or payload changed fails it. The value (0..2**32-1) is stored in a
bigint column, its algorithm in ``checksum_kind``: ``CRC32C`` (2; Castagnoli, reflected
polynomial 0x82F63B78, as iSCSI and ext4 use it; ``matchcore.persistence._checksum``, the CPU's
crc32 instruction where it has one: ~14 GB/s here), which rows are written with since schema
version 2, or ``CRC32`` (1; ``zlib.crc32``, the IEEE 802.3 polynomial: ~4 GB/s here), which
rows written before carry and are still checked with.
"""
from __future__ import annotations

import struct
import zlib

import numpy as np

from matchcore.core.records import COMMAND_DTYPE, EVENT_DTYPE
from matchcore.persistence._checksum import crc32c
from matchcore.persistence.errors import ChecksumError, JournalIntegrityError

__all__ = ["Batch", "CRC32", "CRC32C", "batch_checksum", "seq_slice", "split_point"]

_HEADER = struct.Struct("<QQII")

#: ``checksum_kind`` of rows checked with zlib's CRC-32 (written before schema version 2).
CRC32 = 1
#: ``checksum_kind`` of rows checked with CRC-32C: what is written.
CRC32C = 2
_CRC = {CRC32: zlib.crc32, CRC32C: crc32c}


def batch_checksum(first_seq: int, last_seq: int, commands: object, events: object,
                   kind: int = CRC32C) -> int:
    """The CRC (``kind``: CRC32C or CRC32) of a batch's header and payload;
    ``commands``/``events`` are bytes-like (or contiguous arrays)."""
    crc = _CRC[kind]
    command_bytes = memoryview(commands).nbytes  # type: ignore[arg-type]
    event_bytes = memoryview(events).nbytes  # type: ignore[arg-type]
    header = _HEADER.pack(first_seq, last_seq, command_bytes // COMMAND_DTYPE.itemsize,
                          event_bytes // EVENT_DTYPE.itemsize)
    value = crc(commands, crc(header))
    return value if event_bytes == 0 else crc(events, value)


class Batch:
    """Commands ``first_seq..last_seq`` and their events, as numpy structured arrays.

    The arrays are not copied: a batch built from slices of a larger array shares its memory,
    and one read from the journal shares the fetched bytes (and is read-only).
    """

    __slots__ = ("first_seq", "last_seq", "commands", "events", "_checksum")

    def __init__(self, commands: np.ndarray, events: np.ndarray, *, checksum: int | None = None):
        if commands.dtype != COMMAND_DTYPE:
            raise TypeError(f"commands have dtype {commands.dtype}, expected COMMAND_DTYPE")
        if events.dtype != EVENT_DTYPE:
            raise TypeError(f"events have dtype {events.dtype}, expected EVENT_DTYPE")
        if commands.ndim != 1 or events.ndim != 1:
            raise ValueError("commands and events must be one-dimensional")
        if len(commands) == 0:
            raise ValueError("a batch holds at least one command")
        if not commands.flags.c_contiguous or not events.flags.c_contiguous:
            raise ValueError("commands and events must be contiguous arrays")
        self.commands = commands
        self.events = events
        self.first_seq = int(commands[0]["seq"])
        self.last_seq = int(commands[-1]["seq"])
        self._checksum = checksum

    @property
    def command_count(self) -> int:
        return len(self.commands)

    @property
    def event_count(self) -> int:
        return len(self.events)

    @property
    def record_count(self) -> int:
        return len(self.commands) + len(self.events)

    @property
    def checksum(self) -> int:
        """The CRC-32C of this batch (computed once, on first use)."""
        if self._checksum is None:
            self._checksum = batch_checksum(self.first_seq, self.last_seq, self.commands, self.events)
        return self._checksum

    def validate(self) -> "Batch":
        """Raise JournalIntegrityError unless the seqs are as the module doc says; return self.

        O(n) in numpy: commands are exactly first_seq..last_seq, events sorted within it.
        """
        seqs = self.commands["seq"]
        if self.last_seq - self.first_seq + 1 != len(seqs):
            raise JournalIntegrityError(self.first_seq, f"batch {self.first_seq}..{self.last_seq} "
                                        f"holds {len(seqs)} commands: seqs are not contiguous")
        if len(seqs) > 1 and not np.all(np.diff(seqs) == 1):
            bad = int(seqs[1:][np.diff(seqs) != 1][0])
            raise JournalIntegrityError(bad, f"command seq {bad} breaks the order of batch "
                                        f"{self.first_seq}..{self.last_seq}")
        event_seqs = self.events["seq"]
        if len(event_seqs):
            if int(event_seqs[0]) < self.first_seq or int(event_seqs[-1]) > self.last_seq:
                raise JournalIntegrityError(self.first_seq, f"events of batch {self.first_seq}.."
                                            f"{self.last_seq} carry seqs outside it")
            if len(event_seqs) > 1 and not np.all(np.diff(event_seqs.astype(np.int64)) >= 0):
                raise JournalIntegrityError(self.first_seq, f"events of batch {self.first_seq}.."
                                            f"{self.last_seq} are not in seq order")
        return self

    @classmethod
    def from_row(cls, first_seq: int, last_seq: int, command_count: int, event_count: int,
                 commands: bytes, events: bytes, checksum: int, checksum_kind: int = CRC32C, *,
                 verify: bool = True) -> "Batch":
        """A batch over a journal row's bytes, zero-copy. With ``verify``, the checksum (of
        algorithm ``checksum_kind``) and the row's columns are checked first (ChecksumError
        naming ``first_seq``)."""
        if checksum_kind not in _CRC:
            raise ChecksumError(first_seq, f"journal row {first_seq}..{last_seq} has an unknown "
                                f"checksum kind {checksum_kind}")
        if verify:
            actual = batch_checksum(first_seq, last_seq, commands, events, checksum_kind)
            if actual != checksum:
                raise ChecksumError(first_seq, f"journal row {first_seq}..{last_seq} fails its "
                                    f"checksum (stored {checksum:#010x}, computed {actual:#010x})")
        if len(commands) != command_count * COMMAND_DTYPE.itemsize or \
                len(events) != event_count * EVENT_DTYPE.itemsize:
            raise ChecksumError(first_seq, f"journal row {first_seq}..{last_seq}: payload sizes "
                                f"disagree with its counts")
        batch = cls(np.frombuffer(commands, COMMAND_DTYPE), np.frombuffer(events, EVENT_DTYPE),
                    checksum=checksum if checksum_kind == CRC32C else None)
        if batch.first_seq != first_seq or batch.last_seq != last_seq:
            raise JournalIntegrityError(first_seq, f"journal row {first_seq}..{last_seq} holds "
                                        f"commands {batch.first_seq}..{batch.last_seq}")
        return batch

    def __repr__(self) -> str:
        return (f"Batch({self.first_seq}..{self.last_seq}, commands={len(self.commands)}, "
                f"events={len(self.events)})")


def split_point(commands: np.ndarray, events: np.ndarray, room_records: int) -> tuple[int, int]:
    """How many leading commands (and their events) fit in ``room_records`` records.

    Returns ``(command_count, event_count)``; ``command_count`` is 0 when not even the first
    command with its events fits. Events are sorted by seq, each carrying its command's seq.
    """
    if room_records <= 0 or len(commands) == 0:
        return 0, 0
    commands = commands[:room_records]  # each command is at least one record
    events_through = np.searchsorted(events["seq"], commands["seq"], side="right")
    records_through = np.arange(1, len(commands) + 1) + events_through
    command_count = int(np.searchsorted(records_through, room_records, side="right"))
    if command_count == 0:
        return 0, 0
    return command_count, int(events_through[command_count - 1])


def seq_slice(records: np.ndarray, from_seq: int | None, to_seq: int | None) -> np.ndarray:
    """The records (sorted by seq) with from_seq <= seq <= to_seq; a view."""
    seqs = records["seq"]
    low = 0 if from_seq is None else int(np.searchsorted(seqs, from_seq, side="left"))
    high = len(records) if to_seq is None else int(np.searchsorted(seqs, to_seq, side="right"))
    return records[low:high]

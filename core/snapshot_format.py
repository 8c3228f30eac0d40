"""The canonical state format shared by ``Engine`` and ``ReferenceEngine``.

A snapshot is a flat sequence of little-endian 64-bit words (signed values in two's
complement). ``state_hash`` is a 64-bit hash over the same words, so equal hashes mean
equal canonical states whatever the in-memory layout. Layout, in order:

  MAGIC, FORMAT_VERSION, six config words (max_accounts, max_assets, max_instruments,
  max_orders, max_price_levels, fee_account_id), next_order_id, next_trade_id;
  asset count, then per asset (ascending id): id, decimals, deposited, withdrawn;
  account count, then per account (ascending id): id, last client order id, the last
  transfer (transfer id, command kind, asset, amount, event kind, reject reason; six zeros
  before the account's first transfer), then per asset (ascending id): available, held;
  instrument count, then per instrument (ascending id): id, base asset, quote asset,
  tick size, lot size, max order lots, band min, band max, maker bps, taker bps, state (InstrumentState: 0 trading, 1 halted, 2 paused);
  then bids and asks, each: level count, then per level best first: price, order count,
  then per order in time priority: order id, account, client order id, leaves, hold,
  fee cap bps, stp mode, flags, expire time ns (0: none).

Format 2 (contract 2): no transfer table; each account carries its last transfer.
"""
from __future__ import annotations

import numpy as np

from matchcore.core.config import EngineConfig
from matchcore.errors import MatchcoreError

__all__ = ["MAGIC", "FORMAT_VERSION", "SnapshotWriter", "SnapshotReader", "SnapshotError", "hash_words"]

MAGIC = 0x4D43534E41503031  # "MCSNAP01"
FORMAT_VERSION = 2
_MASK = (1 << 64) - 1
HASH_SEED = 0xCBF29CE484222325
HASH_PRIME = 0x100000001B3
CONFIG_FIELDS = ("max_accounts", "max_assets", "max_instruments", "max_orders",
                 "max_price_levels", "fee_account_id")


class SnapshotError(MatchcoreError, ValueError):
    """A snapshot is truncated, of another format, or inconsistent."""


def hash_words(words) -> int:
    """64-bit hash of a word sequence: per word h = (h ^ w) * P; h ^= h >> 32 (mod 2^64)."""
    h = HASH_SEED
    for w in (words.values if isinstance(words, SnapshotWriter) else words):
        h = ((h ^ (int(w) & _MASK)) * HASH_PRIME) & _MASK
        h ^= h >> 32
    return h


class SnapshotWriter:
    """Collects the canonical state words."""

    def __init__(self):
        self.values: list[int] = []

    def header(self, config: EngineConfig, next_order_id: int, next_trade_id: int) -> None:
        self.words(MAGIC, FORMAT_VERSION, *(getattr(config, f) for f in CONFIG_FIELDS),
                   next_order_id, next_trade_id)

    def count(self, n: int) -> None:
        self.values.append(n)

    def words(self, *values: int) -> None:
        self.values.extend(values)

    def to_bytes(self) -> bytes:
        return np.array([v & _MASK for v in self.values], dtype="<u8").tobytes()


class SnapshotReader:
    """Reads the canonical state words back, with bounds checks."""

    def __init__(self, data: bytes):
        if len(data) % 8:
            raise SnapshotError("snapshot length is not a multiple of 8 bytes")
        self._words = np.frombuffer(data, dtype="<i8")
        self._index = 0

    def words(self, n: int) -> list[int]:
        if self._index + n > len(self._words):
            raise SnapshotError("snapshot is truncated")
        out = [int(w) for w in self._words[self._index:self._index + n]]
        self._index += n
        return out

    def count(self) -> int:
        (n,) = self.words(1)
        if n < 0 or n > len(self._words):
            raise SnapshotError(f"implausible count {n}")
        return n

    def header(self) -> tuple[EngineConfig, int, int]:
        magic, version = self.words(2)
        if (magic & _MASK) != MAGIC:
            raise SnapshotError("not a matchcore snapshot")
        if version != FORMAT_VERSION:
            raise SnapshotError(f"snapshot format {version}, this code reads {FORMAT_VERSION}")
        values = self.words(len(CONFIG_FIELDS))
        config = EngineConfig(**dict(zip(CONFIG_FIELDS, values))).validate()
        next_order_id, next_trade_id = self.words(2)
        return config, next_order_id, next_trade_id

    def finish(self) -> None:
        if self._index != len(self._words):
            raise SnapshotError("trailing words after the snapshot")

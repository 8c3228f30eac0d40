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
  tick size, lot size, max order lots, band min, band max, maker bps, taker bps, state (InstrumentState: 0 trading, 1 halted, 2 paused), last trade price (0: none yet);
  then bids and asks, each: level count, then per level best first: price, order count,
  then per order in time priority: order id, account, client order id, leaves, hold,
  fee cap bps, stp mode, flags, expire time ns (0: none), display quantity and visible lots
  (icebergs; 0 and 0 otherwise); then the untriggered stop orders: count, then per stop in
  ascending order id: the same eleven order words, then side, order type, time in force,
  price, trigger price.

Format 2 (contract 2): no transfer table; each account carries its last transfer.
"""
from __future__ import annotations

import numpy as np

from matchcore.core.config import EngineConfig
from matchcore.errors import MatchcoreError

__all__ = ["MAGIC", "FORMAT_VERSION", "SnapshotWriter", "SnapshotReader", "SnapshotError", "hash_words",
           "capacity_in_use", "check_fits"]

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


#: words before the asset count: magic, version, the config words, the two id counters
HEADER_WORDS = 4 + len(CONFIG_FIELDS)
_ACCOUNT_WORDS = 8
_ORDER_WORDS = 11
_INSTRUMENT_WORDS = 12
_STOP_WORDS = 16
#: what each capacity counts, for messages (``top``: the value in use less one)
_CAPACITY_UNITS = {"max_accounts": "account ids 0..{top}", "max_assets": "asset ids 0..{top}",
                   "max_instruments": "instrument ids 0..{top}", "max_orders": "live orders",
                   "max_price_levels": "price levels on the fullest book side"}


def capacity_in_use(data: bytes) -> dict[str, int]:
    """The least value of each ``max_*`` config field that holds a snapshot's state. Ids are
    dense indices, so an id capacity must exceed the highest id in use, not only the count.
    Reads only counts and ids (skips balances and orders by their fixed widths), so it costs
    a loop over the price levels, not over the orders."""
    words = SnapshotReader(data)._words
    index = HEADER_WORDS

    def take(position: int) -> int:
        if not 0 <= position < len(words):
            raise SnapshotError("snapshot is truncated")
        return int(words[position])

    asset_count = take(index)
    assets = take(index + 1 + 4 * (asset_count - 1)) + 1 if asset_count else 0
    index += 1 + 4 * asset_count
    account_count = take(index)
    stride = _ACCOUNT_WORDS + 2 * asset_count
    accounts = take(index + 1 + stride * (account_count - 1)) + 1 if account_count else 0
    index += 1 + stride * account_count
    instrument_count = take(index)
    index += 1
    instruments = orders = levels = 0
    for _ in range(instrument_count):
        instruments = take(index) + 1
        index += _INSTRUMENT_WORDS
        for _side in range(2):
            level_count = take(index)
            levels = max(levels, level_count)
            index += 1
            for _level in range(level_count):
                order_count = take(index + 1)
                orders += order_count
                index += 2 + _ORDER_WORDS * order_count
        stop_count = take(index)
        orders += stop_count
        index += 1 + _STOP_WORDS * stop_count
    if index != len(words):
        raise SnapshotError("snapshot length disagrees with its counts")
    return {"max_accounts": accounts, "max_assets": assets, "max_instruments": instruments,
            "max_orders": orders, "max_price_levels": levels}


def check_fits(data: bytes, config: EngineConfig) -> None:
    """SnapshotError unless a snapshot's state fits ``config`` (restore into another config):
    the message names the first field too small, the value asked and what is in use. The fee
    account cannot change: fees already credited to it would change owner."""
    stored = SnapshotReader(data).header()[0]
    if config.fee_account_id != stored.fee_account_id:
        raise SnapshotError(f"fee_account_id cannot change: the state has {stored.fee_account_id}, "
                            f"asked {config.fee_account_id}")
    for field, in_use in capacity_in_use(data).items():
        asked = getattr(config, field)
        if asked < in_use:
            what = _CAPACITY_UNITS[field].format(top=in_use - 1)
            raise SnapshotError(f"{field}={asked} is too small for this state: {in_use} in use "
                                f"({what}); ask at least {in_use}")

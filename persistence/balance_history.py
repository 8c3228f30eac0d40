"""One account's balance of one asset after each command that changed it, from the journal.

The events carry no balances, and working them out from fills would repeat the engine's
settlement rules (holds, releases, fees, rebates). So the history is replayed: an engine is
rebuilt at the seq before the range (newest snapshot + replay, as ``replay`` does), then each
row of the range is applied in runs that end at every command which may touch the account
(its own commands; commands with an event naming it as account or counterparty; every fill
when it is the fee account), and the balance is read after each run. A row is kept when the
balance differs from the one before: the balance before the first row is the state at the
range's start (``(0, 0)`` from seq 1).
"""
from __future__ import annotations

import numpy as np

from matchcore.core import Engine
from matchcore.core.codes import EventKind
from matchcore.persistence.batch import seq_slice
from matchcore.persistence.replay import CONFIG_META_KEY, config_from_meta, replay

__all__ = ["BALANCE_HISTORY_DTYPE", "balance_history"]

#: One change: the command's seq and stamp, then the balance after it (minor units).
BALANCE_HISTORY_DTYPE = np.dtype([("seq", "<u8"), ("timestamp_ns", "<i8"), ("available", "<i8"),
                                  ("held", "<i8")])


def balance_history(journal, account_id: int, asset_id: int, from_seq: int | None = None,
                    to_seq: int | None = None, *, since=None, until=None) -> np.ndarray:
    """The changes of ``account_id``'s ``asset_id`` balance by commands ``from_seq..to_seq``
    stamped in ``[since, until)``, for a blocking ``Journal``; a BALANCE_HISTORY_DTYPE array."""
    lower, upper = journal.seq_range(from_seq, to_seq, since=since, until=until)
    if lower > upper:
        return np.empty(0, BALANCE_HISTORY_DTYPE)
    config = config_from_meta(journal.read_meta(CONFIG_META_KEY))
    engine = replay(journal, until_seq=lower - 1, verify=False, config=config).engine
    watch = _Watch(engine, account_id, asset_id, account_id == config.fee_account_id)
    for batch in journal.batches(lower, upper):
        watch.apply(seq_slice(batch.commands, lower, upper), seq_slice(batch.events, lower, upper))
    return watch.history()


class _Watch:
    """Applies commands to an engine, noting the watched balance after each that changed it."""

    __slots__ = ("engine", "account_id", "asset_id", "fee_account", "last", "rows")

    def __init__(self, engine: Engine, account_id: int, asset_id: int, fee_account: bool):
        self.engine = engine
        self.account_id = account_id
        self.asset_id = asset_id
        self.fee_account = fee_account
        self.last = engine.balance(account_id, asset_id)
        self.rows: list[tuple[int, int, int, int]] = []

    def apply(self, commands: np.ndarray, events: np.ndarray) -> None:
        seqs = commands["seq"]
        named = (events["account_id"] == self.account_id) | \
            (events["counter_account_id"] == self.account_id)
        if self.fee_account:
            named |= events["kind"] == EventKind.FILL
        candidates = np.union1d(seqs[commands["account_id"] == self.account_id], events["seq"][named])
        ends = np.searchsorted(seqs, candidates, side="right")  # each run ends with a candidate
        start = 0
        for end in ends.tolist():
            self.engine.apply(commands[start:end])
            start = end
            now = self.engine.balance(self.account_id, self.asset_id)
            if now != self.last:
                self.rows.append((int(seqs[end - 1]), int(commands["timestamp_ns"][end - 1]), *now))
                self.last = now
        if start < len(commands):
            self.engine.apply(commands[start:])

    def history(self) -> np.ndarray:
        return np.array(self.rows, dtype=BALANCE_HISTORY_DTYPE)

"""Synthetic journal traffic for tests and benchmarks: well-formed records, not engine output.

Commands carry consecutive seqs and random fields; each command gets ``1 + Poisson(0.2)``
events (1.2 on average, like a venue where one order in five trades), the first an ACCEPTED
or REJECTED, the rest FILLs. The journal never interprets fields other than seq, so this is
enough to exercise it; replay against a real engine needs real commands.
"""
from __future__ import annotations

import numpy as np

from matchcore.core.codes import CommandKind, EventKind
from matchcore.core.records import COMMAND_DTYPE, EVENT_DTYPE

__all__ = ["EXTRA_EVENTS_PER_COMMAND_MEAN", "synthetic_chunk"]

EXTRA_EVENTS_PER_COMMAND_MEAN = 0.2
ACCOUNT_COUNT = 64


def synthetic_chunk(rng: np.random.Generator, first_seq: int,
                    command_count: int) -> tuple[np.ndarray, np.ndarray]:
    """Commands ``first_seq..first_seq + command_count - 1`` and their events."""
    if command_count < 1:
        raise ValueError(f"command_count={command_count} must be positive")
    commands = np.zeros(command_count, COMMAND_DTYPE)
    seqs = np.arange(first_seq, first_seq + command_count, dtype=np.uint64)
    commands["seq"] = seqs
    commands["timestamp_ns"] = 1_700_000_000_000_000_000 + seqs.astype(np.int64) * 1000
    commands["kind"] = rng.choice([CommandKind.NEW_ORDER, CommandKind.CANCEL, CommandKind.DEPOSIT],
                                  size=command_count, p=[0.8, 0.15, 0.05])
    commands["side"] = rng.integers(1, 3, command_count)
    commands["account_id"] = rng.integers(0, ACCOUNT_COUNT, command_count)
    commands["instrument_id"] = rng.integers(0, 4, command_count)
    commands["client_id"] = seqs
    commands["price"] = rng.integers(9_900, 10_100, command_count)
    commands["quantity"] = rng.integers(1, 1_000, command_count)

    per_command = 1 + rng.poisson(EXTRA_EVENTS_PER_COMMAND_MEAN, command_count)
    events = np.zeros(int(per_command.sum()), EVENT_DTYPE)
    owner = np.repeat(np.arange(command_count), per_command)
    first_of_command = np.ones(len(events), dtype=bool)
    first_of_command[1:] = owner[1:] != owner[:-1]
    events["seq"] = seqs[owner]
    events["timestamp_ns"] = commands["timestamp_ns"][owner]
    events["kind"] = np.where(first_of_command, EventKind.ACCEPTED, EventKind.FILL)
    rejected = first_of_command & (rng.random(len(events)) < 0.02)
    events["kind"][rejected] = EventKind.REJECTED
    events["side"] = commands["side"][owner]
    events["account_id"] = commands["account_id"][owner]
    events["instrument_id"] = commands["instrument_id"][owner]
    events["client_id"] = commands["client_id"][owner]
    events["order_id"] = seqs[owner]
    fills = events["kind"] == EventKind.FILL
    events["counter_account_id"][fills] = rng.integers(0, ACCOUNT_COUNT, int(fills.sum()))
    events["trade_id"][fills] = np.arange(1, int(fills.sum()) + 1) + first_seq * 4
    events["price"] = commands["price"][owner]
    events["quantity"] = commands["quantity"][owner]
    return commands, events

"""Account streams: who receives each event, per-account numbering, the ring of recent frames, and
the admin sender recorded in the command."""
from __future__ import annotations

import numpy as np
import pytest

from matchcore.core import Engine, EngineConfig
from matchcore.core import commands as c
from matchcore.core.codes import EventKind
from matchcore.protocol import _codec
from matchcore import protocol as p
from matchcore.gateway.metrics import GatewayMetrics
from matchcore.gateway.streams import AccountStreams, _pieces, route, stamp_sender

ADMIN, ALICE, BOB = 0, 1, 2


def _batch():
    commands = c.pack([c.add_asset(0), c.add_asset(1), c.add_account(ALICE), c.add_account(BOB),
                       c.add_instrument(0, 0, 1), c.deposit(ALICE, 1, 10**6, 1), c.deposit(BOB, 0, 100, 1),
                       c.limit(BOB, 0, client_id=1, side=c.SELL, price=10, quantity=5),
                       c.limit(ALICE, 0, client_id=1, side=c.BUY, price=10, quantity=3)])
    stamp_sender(commands[:7], ADMIN)
    c.number(commands)
    return commands, Engine(EngineConfig(max_accounts=8, max_orders=64)).apply(commands)


def test_recipients_of_admin_commands_transfers_and_fills():
    commands, events = _batch()
    accounts, indexes = route(commands, events)
    by_account = {a: [int(events[i]["kind"]) for i in indexes[accounts == a]] for a in set(accounts.tolist())}
    assert by_account[ADMIN] == [EventKind.COMMAND_DONE] * 5 + [EventKind.TRANSFER_DONE] * 2
    assert by_account[ALICE] == [EventKind.TRANSFER_DONE, EventKind.ACCEPTED, EventKind.FILL]
    assert by_account[BOB] == [EventKind.TRANSFER_DONE, EventKind.ACCEPTED, EventKind.FILL]


def test_numbering_ring_and_recovery_from_memory():
    commands, events = _batch()
    streams = AccountStreams(recent_frames=8)
    delivered = []
    streams.append(commands, events, lambda a, first, last, frames: delivered.append((a, first, last, bytes(frames))))
    assert streams.last_event_seq(ADMIN) == 7 and streams.last_event_seq(ALICE) == 3
    alice = [d for d in delivered if d[0] == ALICE][0]
    frames, _ = p.split_frames(alice[3])
    messages = [p.decode(f) for f in frames]
    assert [m.event_seq for m in messages] == [1, 2, 3]
    assert messages[2].liquidity == p.Liquidity.TAKER
    assert streams.recent(ALICE, 2, 10) == (b"".join(frames[1:]), 3)
    assert streams.recent(ADMIN, 1, 10) is None  # the 8-frame ring no longer holds the admin's first events
    assert streams.recent(BOB, 4, 10) == (b"", 3)


def test_metrics_count_by_kind_and_reason():
    commands, events = _batch()
    metrics = GatewayMetrics()
    metrics.batch_released(commands, events, int(commands["timestamp_ns"][-1]) + 2_000_000)
    text = {m.name: m for m in metrics.collect()}
    kinds = {s.labels["kind"]: s.value for s in text["matchcore_commands"].samples if s.name.endswith("_total")}
    assert kinds["NEW_ORDER"] == 2 and kinds["DEPOSIT"] == 2
    assert metrics.ack_latency_s.observed == len(commands)


def test_counters_round_trip_through_a_checkpoint():
    commands, events = _batch()
    streams = AccountStreams(recent_frames=64)
    streams.append(commands, events)
    accounts, counts = streams.counters()
    restored = AccountStreams(recent_frames=64)
    restored.load_counters(accounts, counts, int(commands["seq"][-1]))
    assert restored.last == streams.last
    assert restored.journal_start(ALICE, 4) == (3, int(commands["seq"][-1]) + 1)
    assert restored.journal_start(ALICE, 2) == (0, 1)


def test_routed_encoding_is_per_frame_encoding_and_refuses_bad_input():
    commands, events = _batch()
    events.flags.writeable = False  # journal rows are read-only views
    accounts, indexes = route(commands, events)
    seqs = np.arange(100, 100 + len(accounts), dtype=np.uint64)
    out = bytearray(len(accounts) * p.EVENT_FRAME_SIZE)
    assert _codec.encode_routed_events(events, indexes, accounts, seqs, out, 0) == len(accounts)
    for frame, (account, index, seq) in enumerate(zip(accounts, indexes, seqs)):
        one = bytearray(p.EVENT_FRAME_SIZE)
        _codec.encode_events(np.ascontiguousarray(events[index:index + 1]), one, 0, int(account), int(seq))
        assert out[frame * p.EVENT_FRAME_SIZE:(frame + 1) * p.EVENT_FRAME_SIZE] == one
    with pytest.raises(IndexError):  # no room
        _codec.encode_routed_events(events, indexes, accounts, seqs, out, p.EVENT_FRAME_SIZE)
    bad = indexes.copy()
    bad[3] = len(events)
    with pytest.raises(IndexError):
        _codec.encode_routed_events(events, bad, accounts, seqs, out, 0)
    with pytest.raises(ValueError):
        _codec.encode_routed_events(events, indexes, accounts[1:], seqs, out, 0)


def test_a_batch_larger_than_the_ring_is_cut_between_accounts():
    assert _pieces(np.array([1] * 7 + [2] * 3 + [3] * 3), 8) == [(0, 7), (7, 13)]
    assert _pieces(np.array([1] * 20 + [2] * 3), 8) == [(0, 8), (8, 16), (16, 23)]
    assert _pieces(np.array([5, 5]), 8) == [(0, 2)]
    assert _pieces(np.array([], np.int64), 8) == []

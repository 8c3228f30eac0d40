"""Test helpers: a fake transport, and an in-process venue (an Engine behind the session layer).

``EngineSink`` stands in for the pipeline that comes later: it numbers commands, applies them
to the Cython ``Engine`` at once, and keeps each account's event stream (every event that
concerns it, numbered 1, 2, 3, ...), sending new events to the account's live sessions and
replaying a stream from a session's ``next_event_seq`` at login.
"""
from __future__ import annotations

import numpy as np

from matchcore.core import Engine, EngineConfig
from matchcore.core.codes import CommandKind, EventKind
from matchcore.core.records import EVENT_DTYPE
from matchcore import protocol as p
from matchcore.gateway import sessions


class FakeTransport:
    def __init__(self) -> None:
        self.written = bytearray()
        self.closed = False

    def write(self, data: bytes) -> None:
        assert not self.closed, "write after close"
        self.written += data

    def close(self) -> None:
        self.closed = True

    def messages(self) -> list[p.Message]:
        frames, used = p.split_frames(self.written)
        assert used == len(self.written)
        return [p.decode(frame) for frame in frames]

    def take(self) -> list[p.Message]:
        messages = self.messages()
        self.written.clear()
        return messages


ADMIN_KINDS = {int(k) for k in CommandKind} - {CommandKind.NEW_ORDER, CommandKind.CANCEL, CommandKind.REPLACE,
                                                CommandKind.MASS_CANCEL}


class EngineSink:
    """CommandSink + dispatcher over an in-memory Engine. ``capacity``: commands taken per
    submit (the rest are refused BUSY), to test backpressure."""

    def __init__(self, config: EngineConfig | None = None, capacity: int = 1 << 30) -> None:
        self.engine = Engine(config or EngineConfig(max_accounts=64, max_assets=4, max_instruments=4,
                                                    max_orders=4096, max_price_levels=256))
        self.capacity = capacity
        self.seq = 0
        self.streams: dict[int, list] = {}
        self.sessions: list[sessions.Session] = []
        self.submitted: list[np.ndarray] = []

    def submit(self, session: sessions.Session, commands: np.ndarray) -> int:
        taken = commands[: self.capacity].copy()
        if not len(taken):
            return 0
        taken["seq"] = np.arange(self.seq + 1, self.seq + 1 + len(taken), dtype=np.uint64)
        taken["timestamp_ns"] = 1_700_000_000_000_000_000 + self.seq
        self.seq += len(taken)
        self.submitted.append(taken)
        kinds = {int(c["seq"]): int(c["kind"]) for c in taken}
        for event in self.engine.apply(taken):
            for account in self._concerned(event, session.account_id, kinds[int(event["seq"])]):
                self._append(account, event)
        return len(taken)

    @staticmethod
    def _concerned(event, submitter: int, command_kind: int) -> set[int]:
        accounts = {submitter}
        if command_kind not in ADMIN_KINDS or event["kind"] in (EventKind.TRANSFER_DONE, EventKind.TRANSFER_REJECTED):
            accounts.add(int(event["account_id"]))
        if event["kind"] == EventKind.FILL:
            accounts.add(int(event["counter_account_id"]))
        return accounts

    def _append(self, account: int, event) -> None:
        stream = self.streams.setdefault(account, [])
        stream.append(event)
        for session in self.sessions:
            if session.account_id == account and session.state == sessions.SessionState.ACTIVE:
                self._send(session, [event], len(stream))

    @staticmethod
    def _send(session: sessions.Session, events: list, first_event_seq: int) -> None:
        array = np.zeros(len(events), EVENT_DTYPE)
        for index, event in enumerate(events):
            array[index] = event
        session.send_events(array, first_event_seq, 0)

    def last_event_seq_of(self, account: int) -> int:
        return len(self.streams.get(account, ()))

    def on_active(self, session: sessions.Session) -> None:
        self.sessions = [s for s in self.sessions if s.state == sessions.SessionState.ACTIVE]
        self.sessions.append(session)
        stream = self.streams.get(session.account_id, [])
        missed = stream[session.next_event_seq - 1:]
        if missed:
            self._send(session, missed, session.next_event_seq)

"""Replay: rebuild an Engine from the journal, at its end or at any past sequence number.

Recovery and the quants' ``replay`` share one path: start from the newest snapshot at or
before the target (or an empty engine with the journal's stored config), apply the journaled
commands after it and, with ``verify``, check that every batch gives exactly the journaled
events, byte for byte. A mismatch is a ``ReplayMismatchError`` naming the command's seq.

Capacities can grow: the journal's meta holds its config epochs (``EPOCHS_META_KEY``, a list
of ``{"from_seq": N, "config": {...}}``, N the first seq applied under that config). Replay
applies each command in the config in force for it: before the first command of an epoch the
engine is resized (snapshot, then ``Engine.restore(config=...)``). A journal with only
``CONFIG_META_KEY`` is one epoch from seq 1.
"""
from __future__ import annotations

import queue
import threading
from contextlib import aclosing
from typing import Iterable, Iterator

import numpy as np

import msgspec

from matchcore.core import Engine, EngineConfig
from matchcore.core.codes import CONTRACT_VERSION
from matchcore.persistence.batch import Batch, seq_slice
from matchcore.persistence.errors import ContractVersionError, JournalIntegrityError, PersistenceError

__all__ = ["ReplayMismatchError", "ReplayResult", "ConfigEpoch", "apply_batches", "apply_epochs",
           "engine_from_snapshot", "replay", "replay_async", "resize", "read_epochs", "read_epochs_async",
           "epochs_to_meta", "config_from_meta", "config_to_meta",
           "CONFIG_META_KEY", "EPOCHS_META_KEY"]

#: the config of seq 1 (written at the journal's first start, never rewritten)
CONFIG_META_KEY = "engine_config"
#: the config epochs, oldest first (written at a start whose config differs from the last)
EPOCHS_META_KEY = "engine_config_epochs"


class ReplayMismatchError(JournalIntegrityError):
    """Replaying the journal gave other events than it holds."""


class ReplayResult:
    """What replay rebuilt: the engine, the last seq applied, and counts."""

    __slots__ = ("engine", "last_seq", "commands", "batches", "snapshot_seq")

    def __init__(self, engine: Engine, last_seq: int, commands: int, batches: int, snapshot_seq: int):
        self.engine = engine
        self.last_seq = last_seq
        self.commands = commands
        self.batches = batches
        self.snapshot_seq = snapshot_seq


def config_to_meta(config: EngineConfig) -> dict:
    """The meta value stored under CONFIG_META_KEY: the config and the engine contract."""
    return {"contract": CONTRACT_VERSION, **msgspec.structs.asdict(config)}


def config_from_meta(value: dict | None) -> EngineConfig:
    """The stored engine config; ContractVersionError when another contract wrote the
    journal (a value without "contract" is contract 1's, which stored none)."""
    if value is None:
        raise PersistenceError(f"the journal holds no engine config (meta key {CONFIG_META_KEY!r}): "
                               "it was never written by a matchcore core")
    fields = dict(value)
    contract = fields.pop("contract", 1)
    if contract != CONTRACT_VERSION:
        raise ContractVersionError(contract, CONTRACT_VERSION)
    return EngineConfig(**fields).validate()


class ConfigEpoch(msgspec.Struct, frozen=True, kw_only=True):
    """The engine config in force from command ``from_seq`` on (until the next epoch)."""

    from_seq: int
    config: EngineConfig


def epochs_from_meta(epochs: list | None, config: dict | None) -> list[ConfigEpoch]:
    """The journal's epochs from its meta values; a journal older than epochs (only
    ``CONFIG_META_KEY``) is one epoch from seq 1."""
    first = config_from_meta(config)  # checks the contract that wrote the journal
    if epochs is None:
        return [ConfigEpoch(from_seq=1, config=first)]
    try:
        out = [msgspec.convert(epoch, ConfigEpoch) for epoch in epochs]
    except msgspec.ValidationError as error:
        raise PersistenceError(f"the journal's {EPOCHS_META_KEY!r} is malformed: {error}") from None
    if not out or out[0].from_seq != 1 or any(b.from_seq < a.from_seq for a, b in zip(out, out[1:])):
        raise PersistenceError(f"the journal's {EPOCHS_META_KEY!r} must start at seq 1 and ascend")
    for epoch in out:
        epoch.config.validate()
    return out


def epochs_to_meta(epochs: list[ConfigEpoch]) -> list[dict]:
    return [{"from_seq": e.from_seq, "config": msgspec.structs.asdict(e.config)} for e in epochs]


def read_epochs(journal) -> list[ConfigEpoch]:
    """The config epochs of a blocking ``Journal``."""
    return epochs_from_meta(journal.read_meta(EPOCHS_META_KEY), journal.read_meta(CONFIG_META_KEY))


async def read_epochs_async(journal) -> list[ConfigEpoch]:
    """The config epochs of an ``AsyncJournal``."""
    return epochs_from_meta(await journal.read_meta(EPOCHS_META_KEY), await journal.read_meta(CONFIG_META_KEY))


def config_at(epochs: list[ConfigEpoch], seq: int) -> EngineConfig:
    """The config command ``seq`` is applied in."""
    config = epochs[0].config
    for epoch in epochs:
        if epoch.from_seq > seq:
            break
        config = epoch.config
    return config


def _next_boundary(epochs: list[ConfigEpoch], seq: int) -> int | None:
    """The first epoch start after ``seq``, if any."""
    return next((e.from_seq for e in epochs if e.from_seq > seq), None)


def resize(engine: Engine, config: EngineConfig, *, prefault: bool = True) -> Engine:
    """``engine`` in ``config`` (itself when already in it): its snapshot restored into the
    new config. SnapshotError naming the field when the state does not fit. The state hash
    changes (it covers the config words); the state itself does not."""
    if engine.config == config:
        return engine
    return type(engine).restore(engine.snapshot(), config=config, prefault=prefault)


def apply_epochs(engine: Engine, batches: Iterable[Batch], after_seq: int, epochs: list[ConfigEpoch],
                 until_seq: int | None = None, verify: bool = True,
                 prefault: bool = True, on_applied=None) -> tuple[Engine, int, int, int]:
    """``apply_batches`` across config epochs: each command is applied in the config in force
    for it, resizing (a new engine) at each boundary, inside a batch as well. Returns (the
    engine, last seq, commands, batches). Without ``until_seq`` the engine ends in the config
    of the command after the last (recovery: the epoch that starts next is already in force)."""
    last, commands, batches_seen = after_seq, 0, 0
    for batch in batches:
        if batch.last_seq <= last:
            continue
        applied = False
        while batch.last_seq > last and (until_seq is None or last < until_seq):
            engine = resize(engine, config_at(epochs, last + 1), prefault=prefault)
            boundary = _next_boundary(epochs, last + 1)
            stops = [s for s in (until_seq, None if boundary is None else boundary - 1) if s is not None]
            new_last, n, _ = apply_batches(engine, (batch,), last, min(stops) if stops else None, verify,
                                           on_applied=on_applied)
            if n == 0:
                break
            last, commands, applied = new_last, commands + n, True
        batches_seen += applied
        if until_seq is not None and last >= until_seq:
            break
    if until_seq is None:
        engine = resize(engine, config_at(epochs, last + 1), prefault=prefault)
    return engine, last, commands, batches_seen


def engine_from_snapshot(snapshot, config: EngineConfig, *,
                         prefault: bool = True) -> tuple[Engine, int]:
    """An engine from a journal Snapshot (checked against its stored hash), or a fresh one.
    ``prefault`` as for ``Engine``: a core that goes on serving wants it."""
    if snapshot is None:
        return Engine(config, prefault=prefault), 0
    engine = Engine.restore(snapshot.state, prefault=prefault)
    if engine.state_hash() != snapshot.state_hash:
        raise JournalIntegrityError(snapshot.seq, f"snapshot at seq {snapshot.seq} restores to "
                                    f"another state hash than was stored")
    return engine, snapshot.seq


def apply_batches(engine: Engine, batches: Iterable[Batch], after_seq: int,
                  until_seq: int | None = None, verify: bool = True,
                  on_applied=None) -> tuple[int, int, int]:
    """Apply the commands with after_seq < seq <= until_seq; returns (last seq, commands,
    batches). With verify, each batch's events must equal the journaled ones.
    ``on_applied(engine, commands, events)`` after each apply (market data: the engine then
    records book changes, turned on here)."""
    if on_applied is not None:
        engine.enable_book_changes()
    last_seq, commands_applied, batches_seen = after_seq, 0, 0
    for batch in batches:
        if batch.last_seq <= after_seq:
            continue
        commands, events = batch.commands, batch.events
        if batch.first_seq <= after_seq or (until_seq is not None and batch.last_seq > until_seq):
            commands = seq_slice(commands, after_seq + 1, until_seq)
            events = seq_slice(events, after_seq + 1, until_seq)
        if len(commands) == 0:
            break
        if on_applied is not None:  # market data needs the events: the compare stays in Python
            produced = engine.apply(commands)
            if verify and not _same_records(produced, events):
                raise ReplayMismatchError(_first_mismatch_seq(produced, events),
                                          "replayed events differ from the journal")
            on_applied(engine, commands, produced)
        elif verify:
            # applied and compared in C, no events array made: see Engine.apply_verified
            mismatch = _apply_verified(engine, commands, events)
            if mismatch is not None:
                raise ReplayMismatchError(mismatch, "replayed events differ from the journal")
        else:
            engine.apply(commands)
        last_seq = int(commands["seq"][-1])
        commands_applied += len(commands)
        batches_seen += 1
        if until_seq is not None and last_seq >= until_seq:
            break
    return last_seq, commands_applied, batches_seen


def _apply_verified(engine, commands: np.ndarray, journaled: np.ndarray) -> int | None:
    """Apply; None when the events are the journaled ones byte for byte, else the seq of
    the first that differs. Engine does it in C; another engine (ReferenceEngine, in tests)
    by comparing apply()'s array."""
    apply_verified = getattr(engine, "apply_verified", None)
    if apply_verified is not None:
        return apply_verified(commands, journaled)
    produced = engine.apply(commands)
    return None if _same_records(produced, journaled) else _first_mismatch_seq(produced, journaled)


def _same_records(produced: np.ndarray, journaled: np.ndarray) -> bool:
    """Byte-for-byte equality without copies (events are 128 bytes: sixteen 64-bit words)."""
    if len(produced) != len(journaled):
        return False
    return bool(np.array_equal(produced.view(np.uint64), np.ascontiguousarray(journaled).view(np.uint64)))


def _first_mismatch_seq(produced: np.ndarray, journaled: np.ndarray) -> int:
    for a, b in zip(produced, journaled):
        if a.tobytes() != b.tobytes():
            return int(b["seq"])
    shorter = produced if len(produced) < len(journaled) else journaled
    longer = journaled if shorter is produced else produced
    return int(longer[len(shorter)]["seq"])


def replay(journal, until_seq: int | None = None, *, verify: bool = True,
           config: EngineConfig | None = None, from_seq: int | None = None,
           epochs: list[ConfigEpoch] | None = None) -> ReplayResult:
    """An Engine at ``until_seq`` (default: the journal's end), from the nearest snapshot at
    or before it, for a blocking ``Journal``. Read book depth, balances and orders from it.
    With ``from_seq``, the replay starts from the newest snapshot before command
    ``from_seq`` instead, so it applies (and with ``verify`` checks) every command from
    ``from_seq`` to ``until_seq``; ``from_seq=1`` replays the whole journal.

    The engine's tables are not prefaulted: a replay touches a small part of a large config's
    capacity, and building a 1M-order engine with every page faulted in takes 15-150 ms here,
    a large part of replaying a million commands. Its page faults on the command path do not
    matter for reading state; a core that goes on serving is built by recovery instead.

    Each command is applied in the config in force for it (the journal's epochs; ``config``:
    that one config for the whole journal, as before epochs). At ``until_seq`` the engine is
    in the config of that command; without it, in the config of the next command."""
    if from_seq is not None and (from_seq < 1 or (until_seq is not None and from_seq > until_seq)):
        raise ValueError(f"from_seq={from_seq} must be between 1 and until_seq={until_seq}")
    if epochs is None:
        epochs = [ConfigEpoch(from_seq=1, config=config)] if config is not None else read_epochs(journal)
    snapshot = journal.latest_snapshot(before_seq=until_seq if from_seq is None else from_seq - 1)
    start = 0 if snapshot is None else snapshot.seq
    # rows start arriving while the engine is built (restoring a snapshot takes a while)
    rows = _Prefetch(journal.batches(from_seq=start + 1, to_seq=until_seq))
    try:
        engine, start = engine_from_snapshot(snapshot, epochs[0].config, prefault=False)
        engine, last, commands, batches = apply_epochs(engine, rows, start, epochs, until_seq, verify,
                                                       prefault=False)
    finally:
        rows.close()  # now, while the journal's loop runs; not later from the garbage collector
    return ReplayResult(engine, last, commands, batches, start)


_PREFETCH_BATCHES = 8
_END = object()


class _Prefetch:
    """Fetch and checksum the next rows in a thread while the engine applies (without the
    GIL) the current ones. At most _PREFETCH_BATCHES rows wait in memory. The thread starts
    at construction, not at the first ``next``; ``close`` stops and joins it."""

    def __init__(self, rows: Iterator[Batch]):
        self._rows = rows
        self._ready: queue.Queue = queue.Queue(_PREFETCH_BATCHES)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._fetch, name="matchcore-replay-fetch", daemon=True)
        self._thread.start()

    def _fetch(self) -> None:
        try:
            for batch in self._rows:
                if not self._put(batch):
                    break
            self._put(_END)
        except BaseException as error:  # handed to the consumer, raised there
            self._put(error)
        finally:
            self._rows.close()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._ready.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> "_Prefetch":
        return self

    def __next__(self) -> Batch:
        item = self._ready.get()
        if item is _END:
            self._ready.put(_END)  # later calls end too
            raise StopIteration
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._ready.get(timeout=0.05)
            except queue.Empty:
                pass
        self._thread.join()


async def replay_async(journal, config: EngineConfig | None = None, *, verify: bool = True,
                       epochs: list[ConfigEpoch] | None = None) -> ReplayResult:
    """The same, to the journal's end, for an ``AsyncJournal`` (recovery at start)."""
    if epochs is None:
        epochs = [ConfigEpoch(from_seq=1, config=config)] if config is not None else await read_epochs_async(journal)
    engine, start = engine_from_snapshot(await journal.latest_snapshot(), epochs[0].config)
    last, commands, batches = start, 0, 0
    pending: list[Batch] = []
    async with aclosing(journal.batches(from_seq=start + 1, read_ahead=True)) as rows:
        async for batch in rows:
            pending.append(batch)
            if len(pending) >= 64:
                engine, last, n, b = apply_epochs(engine, pending, last, epochs, None, verify)
                commands, batches, pending = commands + n, batches + b, []
    engine, last, n, b = apply_epochs(engine, pending, last, epochs, None, verify)
    return ReplayResult(engine, last, commands + n, batches + b, start)

"""``matchcore serve``: the gateway, the durable core and the dispatcher, wired together.

The path of one order, as DESIGN.md draws it::

    socket -> SessionProtocol -> Session (Cython decode into command records)
           -> Admission (held while the input ring is full)  -> DurableCore.submit
           -> core thread -> output ring -> journal writer -> PostgreSQL commit
           -> Dispatcher.on_release -> AccountStreams (number, encode once) -> sockets

Start: the key table is created if missing, every account's event counter is rebuilt from
the newest checkpoint and the journal rows after it (the numbering is a function of the
journal; ``checkpoints``), the core recovers (snapshot + verified replay), a replica engine
for order status is copied from it, then the port opens.
Stop (SIGTERM, SIGINT): the port closes, sessions stop being read, cancel-on-disconnect
runs for the sessions that asked for it, everything submitted is journaled and its events
sent, then each session gets LOGOUT SERVER_SHUTDOWN.
"""
from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import signal
import ssl
import time

import asyncpg
import msgspec

from matchcore.core import Engine
from matchcore.core.commands import mass_cancels
from matchcore.gateway import checkpoints, keys
from matchcore import protocol as p
from matchcore.gateway.config import ServerConfig
from matchcore.gateway.dispatch import Dispatcher
from matchcore.gateway.order_view import OrderView
from matchcore.gateway.key_store import PgKeyRegistry
from matchcore.gateway.logs import redact_dsn
from matchcore.gateway.metrics import GatewayMetrics
from matchcore.gateway.admission import Admission
from matchcore.gateway.sessions import Session, SessionState, SessionTable
from matchcore.gateway.streams import AccountStreams

__all__ = ["GatewayServer", "run_server"]

_log = logging.getLogger("matchcore.gateway")
#: allocations between two young-generation collections (CPython's default is 700)
GC_YOUNG_THRESHOLD = 50_000


class GatewayServer:
    """One server. ``await start()``, then ``await serve_until_stopped()`` or ``await stop()``."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config.validate()
        self.dsn: str | None = None
        self.embedded = None
        self.metrics = GatewayMetrics()
        self.streams = AccountStreams(config.recent_event_frames)
        self.service = None
        self.registry: PgKeyRegistry | None = None
        self.table: SessionTable | None = None
        self.dispatcher: Dispatcher | None = None
        self.sequencer: Admission | None = None
        self.port = 0
        self.metrics_port = 0
        self._journal = None
        self._server: asyncio.AbstractServer | None = None
        self._clock: asyncio.Task | None = None
        self._metrics_server = None
        self._stopped = asyncio.Event()
        self._stopping = False
        self._checkpoint_connection: asyncpg.Connection | None = None
        self._checkpoint_task: asyncio.Task | None = None
        self._checkpointed_seq = 0

    # ------------------------------------------------------------------ start

    async def start(self) -> None:
        from matchcore.persistence.journal import AsyncJournal
        from matchcore.gateway.durable_core import DurableCore, DurableCoreConfig
        from matchcore.persistence.writer import WriterConfig

        config = self.config
        self.dsn = config.dsn or await asyncio.get_running_loop().run_in_executor(None, self._start_embedded)
        self.registry = await PgKeyRegistry.connect(self.dsn)
        self._journal = await AsyncJournal.connect(self.dsn, apply=True)
        self._checkpoint_connection = await asyncpg.connect(
            self.dsn, server_settings={"application_name": "matchcore-gateway"})
        rebuilt_through = await self._rebuild_streams()
        self.dispatcher = Dispatcher(self.streams, self.metrics, self._journal_batches,
                                     replay_chunk_frames=config.limits.replay_chunk_frames)
        service_config = DurableCoreConfig(
            input_ring_capacity_records=config.input_ring_capacity_records, output_ring_capacity_records=config.output_ring_capacity_records,
            snapshot_every_commands=config.snapshot_every_commands,
            writer=WriterConfig(journal_batch_records_max=config.journal_batch_records_max,
                                journal_batch_delay_ms_max=config.journal_batch_delay_ms_max))
        self.service = DurableCore(self.dsn, config.engine, config=service_config, on_release=self._on_release,
                                   on_commit=lambda batch, latency_s: self.metrics.commit_latency_s.observe(latency_s))
        recovered = await self.service.start()
        if recovered.last_seq != rebuilt_through:
            raise RuntimeError(f"journal changed during start ({rebuilt_through} != {recovered.last_seq})")
        # Nothing is submitted yet: the core thread idles, so the state can be copied.
        self.dispatcher.order_view = OrderView(Engine.restore(self.service.engine.snapshot()))
        self.sequencer = Admission(self.service)
        self.table = SessionTable(config.limits, self.sequencer, self.registry,
                                  last_event_seq_of=self.streams.last_event_seq,
                                  order_status=self.dispatcher.order_status,
                                  on_active=self._on_active, observer=self)
        self._start_metrics()
        # Everything made so far lives as long as the server: keep it out of the collector's
        # scans, and collect the young generation less often (fewer, shorter pauses).
        gc.collect()
        gc.freeze()
        gc.set_threshold(GC_YOUNG_THRESHOLD, 20, 20)
        self._server = await asyncio.get_running_loop().create_server(
            self.table.protocol_factory, config.listen_host, config.listen_port, **self._tls_options(),
            backlog=1024, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]
        self._clock = asyncio.create_task(self.table.run_clock(config.clock_tick_ms), name="matchcore-clock")
        _log.info("listening", extra={"host": config.listen_host, "port": self.port, "tls": config.tls_cert is not None,
                                      "metrics_port": self.metrics_port, "dsn": redact_dsn(self.dsn),
                                      "last_seq": recovered.last_seq, "accounts_with_events": len(self.streams.last)})

    def _start_embedded(self) -> str:
        from matchcore.persistence.embedded import EmbeddedPostgres

        embedded = EmbeddedPostgres(self.config.data_dir)
        already_running = embedded.is_running()
        dsn = embedded.start()
        if not already_running:
            self.embedded = embedded  # stopped again at stop
        return dsn

    async def _rebuild_streams(self) -> int:
        """Every account's event counter (and the recent frames): the newest checkpoint, then
        the journal rows after it."""
        started = time.perf_counter()
        await checkpoints.ensure_schema(self._checkpoint_connection)
        journal_last_seq = await self._journal.last_seq()
        checkpoint = await checkpoints.read_latest(self._checkpoint_connection, journal_last_seq)
        last_seq = 0
        if checkpoint is not None:
            last_seq, accounts, counts = checkpoint
            self.streams.load_counters(accounts, counts, last_seq)
        checkpoint_seq, rows = last_seq, 0
        async for batch in self._journal.batches(last_seq + 1):
            self.streams.rebuild_from(batch.commands, batch.events)
            last_seq, rows = batch.last_seq, rows + 1
        self._checkpointed_seq = last_seq
        _log.info("event streams rebuilt", extra={"checkpoint_seq": checkpoint_seq, "journal_rows": rows,
                                                  "last_seq": last_seq,
                                                  "seconds": round(time.perf_counter() - started, 3)})
        return last_seq

    def _on_release(self, batch) -> None:
        self.dispatcher.on_release(batch)
        every = self.config.stream_checkpoint_every_commands
        if every and batch.last_seq - self._checkpointed_seq >= every and self._checkpoint_task is None:
            self._checkpoint_task = asyncio.get_running_loop().create_task(
                self._write_checkpoint(batch.last_seq, *self.streams.counters()))

    async def _write_checkpoint(self, seq: int, accounts, counts) -> None:
        try:
            await checkpoints.write(self._checkpoint_connection, seq, accounts, counts)
            self._checkpointed_seq = seq
        except Exception:  # a later checkpoint, or a longer start, makes up for it
            _log.exception("stream checkpoint not written", extra={"seq": seq})
        finally:
            self._checkpoint_task = None

    def _journal_batches(self, from_seq: int):
        return self._journal.batches(from_seq)

    def _ssl_context(self) -> ssl.SSLContext | None:
        if self.config.tls_cert is None:
            return None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.config.tls_cert, self.config.tls_key)
        return context

    def _tls_options(self) -> dict:
        """TLS for create_server: the context, and a handshake bounded by the login timeout
        (asyncio's and uvloop's default is 60 s); the table counts handshakes under way."""
        context = self._ssl_context()
        if context is None:
            return {"ssl": None}
        timeout_ms = self.config.limits.login_timeout_ms
        self.table.expect_tls(timeout_ms)
        return {"ssl": context, "ssl_handshake_timeout": timeout_ms / 1000}

    def _start_metrics(self) -> None:
        self.metrics.connections = lambda: len(self.table.sessions)
        self.metrics.sessions = lambda: self.table.slots.in_use
        self.metrics.ring_depths = self._ring_depths
        self.metrics.door = self._door_counts
        if self.config.metrics_port < 0:
            return
        from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

        from matchcore.gateway.http_status import DatabaseCheck, ReadinessSampler, StatusConfig, StatusServer

        config = self.config
        status_config = msgspec.convert({name: getattr(config, name) for name in StatusConfig.__struct_fields__},
                                        StatusConfig)
        registry = self.metrics.registry()
        sampler = ReadinessSampler(self._readiness_sample)
        check = DatabaseCheck(self.dsn, min(1_000, config.readiness_database_check_ms)) if self.dsn else None
        self._metrics_server = StatusServer(status_config, lambda: generate_latest(registry), CONTENT_TYPE_LATEST,
                                            sampler, check)
        self._metrics_server.start()
        sampler.start(asyncio.get_running_loop())
        self.metrics_port = self._metrics_server.server_port

    def _readiness_sample(self, now_ns: int):
        """On the trading loop, for /readyz (see gateway/http_status.py)."""
        from matchcore.gateway.http_status import ReadinessSample

        service = self.service
        problem = ""
        if self._stopping:
            problem = "stopping"
        elif self._server is None or not self._server.is_serving():
            problem = "the core is recovering (the trading port is not open yet)"
        elif service is None or service.pipeline is None:
            problem = "the durable core is not running"
        else:
            try:
                service.check()
            except BaseException as error:  # a failed core thread or journal writer
                problem = f"the durable core failed: {type(error).__name__}: {error}"
        if problem or service is None or service.pipeline is None:
            return ReadinessSample(now_ns, problem, 0, 0)
        uncommitted = service.next_seq - 1 - service.released_seq
        return ReadinessSample(now_ns, problem, max(uncommitted, 0), service.released_seq)

    def _door_counts(self) -> dict[str, int]:
        table, status = self.table, self._metrics_server
        handshakes = table.handshakes
        return {"pending_logins": table.pending.count,
                "refused_pending_logins": table.pending.refused_total,
                "refused_pending_logins_per_address": table.pending.refused_per_address,
                "tls_handshakes": len(handshakes) if handshakes is not None else 0,
                "tls_handshakes_unfinished": handshakes.expired_total if handshakes is not None else 0,
                "status_http_refused": status.refused_total if status is not None else 0,
                "status_http_collections": status.collections_total if status is not None else 0}

    def _ring_depths(self) -> tuple[int, int]:
        pipeline = self.service.pipeline if self.service is not None else None
        if pipeline is None:
            return 0, 0
        return int(pipeline.input_depth), int(pipeline.output_depth)

    # ------------------------------------------------------------------ session observer

    def _on_active(self, session: Session) -> None:
        self.dispatcher.attach(session)

    def session_login(self, session: Session, reason: p.SessionReason, record: keys.KeyRecord | None) -> None:
        fields = {"session_id": session.session_id, "account_id": session.account_id, "peer": session.peer}
        if record is not None:
            fields.update(key_id=record.key_id, key=record.fingerprint, admin=record.admin)
        if reason == p.SessionReason.NONE:
            _log.info("login accepted", extra=fields)
        else:
            _log.warning("login rejected", extra={**fields, "reason": reason.name})

    def session_reject(self, session: Session, reason: int) -> None:
        self.metrics.session_reject(reason)

    def session_closed(self, session: Session) -> None:
        self.dispatcher.detach(session)
        reason = session.close_reason
        self.metrics.session_closed(int(reason))
        if session.account_id or reason != p.SessionReason.NONE:
            _log.info("session closed", extra={"session_id": session.session_id, "account_id": session.account_id,
                                               "reason": p.SessionReason(reason).name, "peer": session.peer,
                                               "cancel_on_disconnect": session.cancel_on_disconnect})

    # ------------------------------------------------------------------ stop

    def request_stop(self) -> None:
        if not self._stopping:
            self._stopping = True
            asyncio.get_running_loop().create_task(self.stop())

    async def serve_until_stopped(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.request_stop)
        await self._stopped.wait()

    async def stop(self) -> None:
        """Drain and stop; see the module docstring for the order."""
        self._stopping = True
        _log.info("stopping")
        if self._server is not None:
            self._server.close()
        sessions = list(self.table.sessions.values()) if self.table else []
        for session in sessions:
            pause = getattr(session.transport, "pause_reading", None)
            if pause is not None and session.state != SessionState.CLOSED:
                try:
                    pause()
                except RuntimeError:
                    pass
        if self.sequencer is not None:
            self._cancel_on_shutdown(sessions)
            while self.sequencer.held_records:
                await asyncio.sleep(0.001)
        if self.service is not None:
            await self.service.stop()
        if self._clock is not None:
            self._clock.cancel()
        if self.dispatcher is not None:
            await self.dispatcher.stop()
            if self.dispatcher.order_view is not None:
                self.dispatcher.order_view.stop()
        now_ns = time.time_ns()
        for session in sessions:
            if session.state == SessionState.ACTIVE:
                session.cancel_on_disconnect = False
                session.logout(p.SessionReason.SERVER_SHUTDOWN, now_ns)
        deadline = time.monotonic() + self.config.shutdown_grace_ms / 1000
        while time.monotonic() < deadline and self.table is not None and self.table.sessions:  # until flushed
            await asyncio.sleep(0.01)
        await self._final_checkpoint()
        if self._journal is not None:
            await self._journal.close()
        if self.registry is not None:
            await self.registry.close()
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
        if self.embedded is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.embedded.stop)
        _log.info("stopped", extra={"released_seq": self.service.released_seq if self.service else 0})
        self._stopped.set()

    async def _final_checkpoint(self) -> None:
        if self._checkpoint_task is not None:
            await self._checkpoint_task
        if self._checkpoint_connection is None:
            return
        released = self.service.released_seq if self.service is not None else 0
        if self.dispatcher is not None and released > self._checkpointed_seq:
            await self._write_checkpoint(released, *self.streams.counters())
        await self._checkpoint_connection.close()

    def _cancel_on_shutdown(self, sessions: list[Session]) -> None:
        accounts = sorted({s.account_id for s in sessions
                           if s.state == SessionState.ACTIVE and s.cancel_on_disconnect})
        for session in sessions:
            session.cancel_on_disconnect = False
        if not accounts:
            return
        self.sequencer.submit_system(mass_cancels(accounts))


def write_ready_file(path: str, server: GatewayServer) -> None:
    """Tell a parent process where the server listens (atomically: write, then rename)."""
    temporary = f"{path}.tmp{os.getpid()}"
    with open(temporary, "w") as handle:
        json.dump({"port": server.port, "metrics_port": server.metrics_port, "pid": os.getpid()}, handle)
    os.replace(temporary, path)


async def _serve(config: ServerConfig, ready_file: str | None) -> None:
    server = GatewayServer(config)
    try:
        await server.start()
    except BaseException:
        await server.stop()
        raise
    if ready_file:
        write_ready_file(ready_file, server)
    await server.serve_until_stopped()


def raise_open_file_limit() -> tuple[int, int]:
    """Raise this process's soft limit of open files to its hard limit (each connection is
    a file: at the common soft limit of 1,024 an accept fails with EMFILE long before
    ``max_sessions`` + ``max_pending_logins``); logs both. Returns (soft, hard) in force."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    raised = soft
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            raised = hard
        except (ValueError, OSError) as error:  # e.g. a hard limit of "unlimited" the kernel caps
            _log.warning("open file limit not raised", extra={"soft": soft, "hard": hard, "error": str(error)})
    _log.info("open file limit", extra={"soft_at_start": soft, "hard": hard, "soft": raised})
    return raised, hard


def run_server(config: ServerConfig, ready_file: str | None = None) -> int:
    """Run until SIGTERM or SIGINT, on uvloop."""
    import uvloop

    raise_open_file_limit()
    uvloop.run(_serve(config, ready_file))
    return 0

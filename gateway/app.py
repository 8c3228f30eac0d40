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
import fcntl
import gc
import json
import logging
import os
import signal
import socket
import ssl
import time

import msgspec

from matchcore.core import Engine
from matchcore.core.codes import CommandKind
from matchcore.core.commands import mass_cancels
from matchcore.gateway.cod import CancelOnDisconnectRows
from matchcore.gateway import checkpoints, keys
from matchcore import protocol as p
from matchcore.gateway.config import ServerConfig
from matchcore.gateway.dispatch import Dispatcher
from matchcore.gateway.market_data import MarketData
from matchcore.gateway.replica import Replica
from matchcore.persistence.marketdata import feed_from_journal_async
from matchcore.persistence.journal import DATABASE_ERRORS
from matchcore.gateway.key_store import KEY_CHANGED_CHANNEL, PgKeyRegistry
from matchcore.gateway.key_watch import KeyWatch
from matchcore.gateway.logs import redact_dsn
from matchcore.gateway.metrics import GatewayMetrics
from matchcore.gateway.admission import Admission
from matchcore.gateway.sessions import Session, SessionState, SessionTable
from matchcore.gateway.streams import AccountStreams

__all__ = ["GatewayServer", "run_server"]

_log = logging.getLogger("matchcore.gateway")
#: OpenSSL cipher list for TLS 1.2 (TLS 1.3 suites are not chosen by it, and are all AEAD).
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL"
#: allocations between two young-generation collections (CPython's default is 700)
GC_YOUNG_THRESHOLD = 50_000
#: connections of the gateway's pool (catch-up replays from the journal, checkpoints)
GATEWAY_POOL_CONNECTIONS_MAX = 4
#: one query of the gateway's (a page of journal rows, a checkpoint) may take this long
GATEWAY_QUERY_TIMEOUT_S = 30.0
#: after a failed checkpoint, the next one is tried no sooner than this
CHECKPOINT_RETRY_S = 5.0
#: SIGTERM: what the database must still do (journal the last commands, the last snapshot
#: and checkpoint) gets this long beyond shutdown_grace_ms; then the server stops anyway
STOP_DATABASE_BOUND_S = 10.0
#: market data checkpoints kept (the newest is what a start needs; one more in case)
MD_CHECKPOINTS_KEPT = 2


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
        self._md_clock: asyncio.Task | None = None
        self._metrics_server = None
        self._stopped = asyncio.Event()
        self._stopping = False
        self._checkpoint_task: asyncio.Task | None = None
        self._checkpointed_seq = 0
        self._checkpoint_not_before = 0.0  # monotonic seconds: the retry back-off
        #: set when the server stopped because the journal writer failed (exit status 1)
        self.failed: BaseException | None = None
        self.cod: CancelOnDisconnectRows | None = None
        #: account -> COD sessions closed whose MASS_CANCEL is not released yet
        self._cod_closing: dict[int, list[str]] = {}
        self._cod_rows: set[int] = set()  # session ids with a row written
        self._background: set[asyncio.Task] = set()
        self._serve_lock: int | None = None  # the fd of data_dir/serve.lock (embedded server)
        self.key_watch: KeyWatch | None = None
        self.market_data: MarketData | None = None

    # ------------------------------------------------------------------ start

    async def start(self, warm=None) -> None:
        """Start (recovering from the journal), or continue from ``warm``, the state a hot
        standby kept (gateway/standby.py) with the journal's epoch it took."""
        from matchcore.persistence.journal import AsyncJournal
        from matchcore.gateway.durable_core import DurableCore, DurableCoreConfig
        from matchcore.persistence.writer import WriterConfig

        config = self.config
        if config.dsn and warm is None:
            from matchcore.gateway.standby import refuse_a_standby

            await refuse_a_standby(config.dsn)
        self.dsn = config.dsn or await asyncio.get_running_loop().run_in_executor(None, self._start_embedded)
        self.registry = await PgKeyRegistry.connect(self.dsn)
        # Catch-up replays and checkpoints share one pool: a connection the database closed
        # (restart, disk full, terminate) is replaced at the next use, and replays run side by side.
        self._journal = await AsyncJournal.connect_pool(
            self.dsn, apply=True, connections_max=GATEWAY_POOL_CONNECTIONS_MAX,
            application_name="matchcore-gateway", command_timeout_s=GATEWAY_QUERY_TIMEOUT_S)
        self.cod = CancelOnDisconnectRows(self._journal.pool)
        await self.cod.ensure_schema()
        # the journal is ours before anything reads it: an old active can append nothing more
        epoch = warm.epoch if warm is not None else await self._take_journal()
        rebuilt_through = await self._rebuild_streams() if warm is None else await self._warm_streams(warm)
        self.dispatcher = Dispatcher(self.streams, self.metrics, self._journal_batches,
                                     replay_chunk_frames=config.limits.replay_chunk_frames,
                                     catch_up_stall_ms_max=config.limits.catch_up_stall_ms_max)
        service_config = DurableCoreConfig(
            input_ring_capacity_records=config.input_ring_capacity_records, output_ring_capacity_records=config.output_ring_capacity_records,
            snapshot_every_commands=config.snapshot_every_commands,
            clock_interval_ms=config.engine_clock_ms,
            writer=WriterConfig(journal_batch_records_max=config.journal_batch_records_max,
                                journal_batch_delay_ms_max=config.journal_batch_delay_ms_max,
                                journal_rows_in_flight_max=config.journal_rows_in_flight_max))
        self.service = DurableCore(self.dsn, config.engine, config=service_config, on_release=self._on_release,
                                   on_commit=lambda batch, latency_s: self.metrics.commit_latency_s.observe(latency_s),
                                   on_failure=self._core_failed, epoch=epoch)
        # the feed's replica first: nothing journals until the core starts, and from then on
        # every release must reach it
        feed = await feed_from_journal_async(self._journal, config=config.engine) if warm is None else warm.feed
        recovered = await self.service.start(None if warm is None else warm.core)
        self._start_replica(feed, recovered.last_seq)
        if recovered.last_seq != rebuilt_through:
            raise RuntimeError(f"journal changed during start ({rebuilt_through} != {recovered.last_seq})")
        await self._cancel_after_crash()
        self.sequencer = Admission(self.service)
        self.table = SessionTable(config.limits, self.sequencer, self.registry,
                                  last_event_seq_of=self.streams.last_event_seq,
                                  order_status=self.dispatcher.order_status,
                                  on_active=self._on_active, observer=self,
                                  before_accept=self._before_accept)
        self.table.venue = self.market_data
        await self._start_key_watch()
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
        self._md_clock = asyncio.create_task(self.market_data.run_clock(config.clock_tick_ms),
                                             name="matchcore-market-data-clock")
        _log.info("listening", extra={"host": config.listen_host, "port": self.port, "tls": config.tls_cert is not None,
                                      "metrics_port": self.metrics_port, "dsn": redact_dsn(self.dsn),
                                      "last_seq": recovered.last_seq, "accounts_with_events": len(self.streams.last)})

    def _start_replica(self, feed, last_seq: int) -> None:
        """The replica (order status, queries, market data): the feed recovered from its newest
        checkpoint and the journal after it, which must end in the core's state. Called right
        after the core's start, before anything is submitted."""
        if feed.engine.config != self.service.engine_config:  # the core resized at start
            feed.resized(self.service.engine_config)
        if feed.last_seq != last_seq or feed.engine.state_hash() != self.service.engine.state_hash():
            raise RuntimeError(f"the market data replica recovered to seq {feed.last_seq}, not the core's state "
                               f"at seq {last_seq}")
        limits = self.config.limits
        self.dispatcher.order_view = Replica(feed, self._replica_output,
                                             checkpoint_every_commands=self.config.snapshot_every_commands)
        self.market_data = MarketData(self.dispatcher.order_view, self.metrics,
                                      subscriptions_max=limits.md_subscriptions_max,
                                      conflate_bytes=min(limits.md_conflate_bytes,
                                                         limits.output_buffer_bytes_max // 2),
                                      conflations_per_minute_max=limits.md_conflations_per_minute_max,
                                      open_orders_page_max=limits.open_orders_page_max,
                                      snapshots_per_s_max=limits.md_snapshots_per_s_max,
                                      output_bytes_max=limits.output_buffer_bytes_max,
                                      direct=limits.md_direct)
        self.metrics.md_subscribers = lambda: len(self.market_data.subscribers) + len(self.market_data.direct_sessions)
        replica = self.dispatcher.order_view
        self.metrics.md_direct = lambda: (replica.direct_frames_sent, replica.direct_conflations)

    def _replica_output(self, kind: str, *payload) -> None:
        """On the loop, in order: a batch's market data frames, or a checkpoint to store."""
        if kind == "frames":
            last_seq, frames = payload
            self.metrics.md_frames_made += len(frames)
            self.market_data.on_frames(last_seq, frames)
        elif kind == "slow":  # a direct subscriber that does not keep up
            (session,) = payload
            session.logout(p.SessionReason.SLOW_CONSUMER, time.time_ns())
        elif kind == "checkpoint":
            task = asyncio.get_running_loop().create_task(self._write_md_checkpoint(*payload))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _write_md_checkpoint(self, seq: int, engine_state: bytes, feed_state: bytes) -> None:
        try:
            await self._journal.write_marketdata_checkpoint(seq, engine_state, feed_state)
            await self._journal.prune_marketdata_checkpoints(MD_CHECKPOINTS_KEPT)
        except DATABASE_ERRORS as error:
            _log.warning("market data checkpoint not written", extra={
                "seq": seq, "error": repr(error), "effect": "the next start replays more of the journal"})

    async def _cancel_after_crash(self) -> None:
        """Accounts whose cancel-on-disconnect sessions ended in a crash: their MASS_CANCELs
        are journaled (and released, so the order view sees them) before the port opens."""
        accounts = await self.cod.left_open()
        if accounts:
            last_seq = self.service.next_seq + len(accounts) - 1
            await self.service.submit_all(mass_cancels(accounts))
            await self.service.wait_released(last_seq)
            _log.warning("cancel-on-disconnect after an unclean stop", extra={
                "accounts": accounts, "through_seq": last_seq})
        await self.cod.forget_all_but_mine()

    async def _before_accept(self, session: Session, login: p.Login) -> None:
        """Before LOGIN_ACCEPTED: a cancel-on-disconnect session is written down (cod.py)."""
        if login.login_flags & p.LoginFlags.CANCEL_ON_DISCONNECT:
            await self.cod.open(session.session_id, login.account_id)
            self._cod_rows.add(session.session_id)

    def _start_embedded(self) -> str:
        """The embedded server of ``data_dir``: started, or adopted when a server that died
        (kill -9) left it running; either way stopped again at a clean stop. A lock held for
        the server's life makes sure no other live ``matchcore serve`` uses that folder."""
        from matchcore.persistence.embedded import EmbeddedPostgres

        embedded = EmbeddedPostgres(self.config.data_dir)
        self._serve_lock = hold_serve_lock(embedded.data_dir)
        already_running = embedded.is_running()
        dsn = embedded.start()
        if already_running:
            _log.warning("adopted a running embedded PostgreSQL (left by an unclean stop)",
                         extra={"data_dir": str(embedded.data_dir), "dsn": redact_dsn(dsn)})
        self.embedded = embedded  # stopped again at stop
        return dsn

    async def _start_key_watch(self) -> None:
        """Open sessions end when their key is revoked (NOTIFY, periodic recheck) or too old."""
        limits = self.config.limits
        self.key_watch = KeyWatch(self.dsn, KEY_CHANGED_CHANNEL, self.registry.lookup_many,
                                  recheck_interval_ms=limits.key_recheck_interval_ms,
                                  session_age_ms_max=limits.session_age_ms_max)
        await self.key_watch.start()

    async def _rebuild_streams(self) -> int:
        """Every account's event counter (and the recent frames): the newest checkpoint, then
        the journal rows after it."""
        started = time.perf_counter()
        async with self._journal.acquire() as connection:
            await checkpoints.ensure_schema(connection)
            journal_last_seq = await self._journal.last_seq()
            checkpoint = await checkpoints.read_latest(connection, journal_last_seq)
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

    async def _take_journal(self) -> int:
        from matchcore.persistence.writer import take_journal

        holder = f"matchcore {socket.gethostname()} pid {os.getpid()} port {self.config.listen_port}"
        async with self._journal.acquire() as connection:
            epoch = await take_journal(connection, holder)
        _log.info("journal taken", extra={"epoch": epoch})
        return epoch

    async def _warm_streams(self, warm) -> int:
        """The event counters a standby kept; they must reach the journal's end."""
        async with self._journal.acquire() as connection:
            await checkpoints.ensure_schema(connection)
        journal_last_seq = await self._journal.last_seq()
        if warm.streams_seq != journal_last_seq:
            raise RuntimeError(f"the standby's event counters end at seq {warm.streams_seq}, the journal at "
                               f"{journal_last_seq}")
        self.streams = warm.streams
        self._checkpointed_seq = warm.streams_checkpointed_seq
        _log.info("event streams kept warm by the standby", extra={"last_seq": warm.streams_seq})
        return warm.streams_seq

    def _on_release(self, batch) -> None:
        self.dispatcher.on_release(batch)
        if self.sequencer is not None:  # the batch's commands are answered: their sessions' credit
            self.sequencer.released(batch.last_seq)
        if self._cod_closing:
            self._cod_released(batch.commands)
        every = self.config.stream_checkpoint_every_commands
        if (every and batch.last_seq - self._checkpointed_seq >= every and self._checkpoint_task is None
                and time.monotonic() >= self._checkpoint_not_before):
            self._checkpoint_task = asyncio.get_running_loop().create_task(
                self._write_checkpoint(batch.last_seq, *self.streams.counters()))

    async def _write_checkpoint(self, seq: int, accounts, counts) -> bool:
        """True when written. A failure is one log line and a back-off: a later checkpoint,
        or a longer start, makes up for it."""
        try:
            async with self._journal.acquire() as connection:
                await checkpoints.write(connection, seq, accounts, counts)
            self._checkpointed_seq = seq
            return True
        except DATABASE_ERRORS as error:
            self._checkpoint_not_before = time.monotonic() + CHECKPOINT_RETRY_S
            _log.warning("stream checkpoint not written", extra={"seq": seq, "error": repr(error),
                                                                 "retry_in_s": CHECKPOINT_RETRY_S})
            return False
        finally:
            self._checkpoint_task = None

    def _journal_batches(self, from_seq: int):
        return self._journal.batches(from_seq)

    def _ssl_context(self) -> ssl.SSLContext | None:
        """TLS 1.3 when the client has it (every 1.3 suite is AEAD); TLS 1.2 only with
        ECDHE (forward secrecy) and AEAD suites: AES-GCM, ChaCha20-Poly1305; no CBC, no RSA
        key exchange, no compression, no renegotiation."""
        if self.config.tls_cert is None:
            return None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.set_ciphers(TLS12_CIPHERS)
        context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_RENEGOTIATION
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
        self.metrics.journal = self._journal_figures
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

    def _journal_figures(self) -> dict[str, float]:
        figures = self.service.journal_figures() if self.service is not None else {}
        view = self.dispatcher.order_view if self.dispatcher is not None else None
        figures["order_view_lag_batches"] = view.lag_batches if view is not None else 0
        figures["commands_in_flight_max_seen"] = self.sequencer.in_flight_max_seen if self.sequencer is not None else 0
        return figures

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
            if self.key_watch is not None:
                self.key_watch.track(session, record, time.time_ns())
        elif reason == p.SessionReason.LOGIN_THROTTLED:  # "login throttled" was logged once, at the start
            _log.debug("login rejected", extra={**fields, "reason": reason.name})
        else:
            _log.warning("login rejected", extra={**fields, "reason": reason.name})

    def session_reject(self, session: Session, reason: int, count: int = 1) -> None:
        self.metrics.session_reject(reason, count)

    def _cod_released(self, commands) -> None:
        """Rows of COD sessions whose MASS_CANCEL is in this released batch are deleted."""
        mass = commands[commands["kind"] == CommandKind.MASS_CANCEL]
        done = [key for account in set(mass["account_id"].tolist()) for key in self._cod_closing.pop(account, ())]
        if done:
            self._forget_cod_now(done)

    def _forget_cod_now(self, keys_: list[str]) -> None:
        task = asyncio.get_running_loop().create_task(self._cod_forget(keys_))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _cod_forget(self, keys_: list[str]) -> None:
        try:
            await self.cod.closed(keys_)
        except DATABASE_ERRORS as error:
            # Left behind, the rows only mean an extra MASS_CANCEL at an unclean restart.
            _log.warning("cancel-on-disconnect rows not deleted", extra={"error": repr(error)})

    def session_closed(self, session: Session) -> None:
        if session.session_id in self._cod_rows:
            self._cod_rows.discard(session.session_id)
            key = self.cod.session_key(session.session_id)
            if session.cancel_on_disconnect:  # its MASS_CANCEL is submitted: forget it once released
                self._cod_closing.setdefault(session.account_id, []).append(key)
            elif session.close_reason != p.SessionReason.SERVER_SHUTDOWN and not self._stopping:
                self._forget_cod_now([key])  # refused after the row was written: never active
        if self.key_watch is not None:
            self.key_watch.forget(session)
        self.dispatcher.detach(session)
        reason = session.close_reason
        self.metrics.session_closed(int(reason))
        if session.account_id or reason != p.SessionReason.NONE:
            _log.info("session closed", extra={"session_id": session.session_id, "account_id": session.account_id,
                                               "reason": p.SessionReason(reason).name, "peer": session.peer,
                                               "cancel_on_disconnect": session.cancel_on_disconnect})

    # ------------------------------------------------------------------ stop

    def request_stop(self, reason: str = "requested") -> None:
        if not self._stopping:
            self._stopping = True
            _log.info("stop requested", extra={"reason": reason})
            asyncio.get_running_loop().create_task(self.stop())

    def _core_failed(self, error: BaseException) -> None:
        """Fail-stop: the journal writer died (logged by DurableCore), so nothing more can be
        acknowledged; stop (exit status 1) and let the supervisor restart and recover."""
        self.failed = error
        self.request_stop("journal writer failed")

    async def serve_until_stopped(self) -> None:
        loop = asyncio.get_running_loop()
        # SIGHUP (a closed terminal, a supervisor's reload) runs the same stop sequence.
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(signum, self.request_stop, signal.Signals(signum).name)
        await self._stopped.wait()

    async def stop(self) -> None:
        """Drain and stop, within ``shutdown_grace_ms`` + ``STOP_DATABASE_BOUND_S`` whatever
        the database does; see the module docstring for the order."""
        self._stopping = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.shutdown_grace_ms / 1000 + STOP_DATABASE_BOUND_S
        _log.info("stopping")
        notify_service_manager("STOPPING=1")
        if self._server is not None:
            self._server.close()
        sessions = list(self.table.sessions.values()) if self.table else []
        self._pause_reading(sessions)
        if self.sequencer is not None:
            self._cancel_on_shutdown(sessions)
            while self.sequencer.held_records and loop.time() < deadline:
                await asyncio.sleep(0.001)
            if self.sequencer.held_records:
                _log.error("stopped with commands never admitted", extra={
                    "held_records": self.sequencer.held_records, "reason": "the input ring stayed full"})
        if self.service is not None:
            await self.service.stop(timeout_s=max(0.0, deadline - loop.time()))
        if self._clock is not None:
            self._clock.cancel()
        if self._md_clock is not None:
            self._md_clock.cancel()
        if self.dispatcher is not None:
            await self.dispatcher.stop()
            if self.dispatcher.order_view is not None:
                self.dispatcher.order_view.stop()
        await self._logout_all(sessions, loop.time() + self.config.shutdown_grace_ms / 1000)
        await self._final_checkpoint(max(0.5, deadline - loop.time()))
        await self._forget_cod_rows(max(0.5, deadline - loop.time()))
        await self._close_database(max(0.5, deadline - loop.time()))
        _log.info("stopped", extra={"released_seq": self.service.released_seq if self.service else 0})
        self._stopped.set()

    @staticmethod
    def _pause_reading(sessions: list[Session]) -> None:
        for session in sessions:
            pause = getattr(session.transport, "pause_reading", None)
            if pause is not None and session.state != SessionState.CLOSED:
                try:
                    pause()
                except RuntimeError:
                    pass

    async def _logout_all(self, sessions: list[Session], until: float) -> None:
        now_ns = time.time_ns()
        for session in sessions:
            if session.state == SessionState.ACTIVE:
                session.cancel_on_disconnect = False
                session.logout(p.SessionReason.SERVER_SHUTDOWN, now_ns)
        loop = asyncio.get_running_loop()
        while loop.time() < until and self.table is not None and self.table.sessions:  # until flushed
            await asyncio.sleep(0.01)

    async def _forget_cod_rows(self, timeout_s: float) -> None:
        """A clean stop journaled every MASS_CANCEL of its COD sessions: their rows go. An
        unclean one keeps them, so the next start cancels those accounts' orders."""
        if self.cod is None or self.service is None or not self.service.stopped_cleanly:
            return
        try:
            await asyncio.wait_for(self.cod.forget_mine(), timeout_s)
        except DATABASE_ERRORS as error:
            _log.warning("cancel-on-disconnect rows not deleted at stop", extra={"error": repr(error)})

    async def _close_database(self, timeout_s: float) -> None:
        if self._journal is not None:
            await self._journal.close(timeout_s=min(timeout_s, 5.0))
        if self.key_watch is not None:
            try:
                await asyncio.wait_for(self.key_watch.stop(), min(timeout_s, 5.0))
            except DATABASE_ERRORS as error:
                _log.warning("key watch not stopped cleanly", extra={"error": repr(error)})
        if self.registry is not None:
            try:
                await asyncio.wait_for(self.registry.close(), min(timeout_s, 5.0))
            except DATABASE_ERRORS as error:
                _log.warning("key registry not closed cleanly", extra={"error": repr(error)})
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
        if self.embedded is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.embedded.stop)
        if self._serve_lock is not None:
            os.close(self._serve_lock)
            self._serve_lock = None

    async def _final_checkpoint(self, timeout_s: float) -> None:
        try:
            if self._checkpoint_task is not None:
                await asyncio.wait_for(asyncio.shield(self._checkpoint_task), timeout_s)
            released = self.service.released_seq if self.service is not None else 0
            if self._journal is not None and self.dispatcher is not None and released > self._checkpointed_seq:
                self._checkpoint_not_before = 0.0
                await asyncio.wait_for(self._write_checkpoint(released, *self.streams.counters()), timeout_s)
        except asyncio.TimeoutError:
            _log.warning("last stream checkpoint not written", extra={
                "reason": "the database did not answer in time", "effect": "the next start scans more rows"})

    def _cancel_on_shutdown(self, sessions: list[Session]) -> None:
        accounts = sorted({s.account_id for s in sessions
                           if s.state == SessionState.ACTIVE and s.cancel_on_disconnect})
        for session in sessions:
            session.cancel_on_disconnect = False
        if not accounts:
            return
        self.sequencer.submit_system(mass_cancels(accounts))


def hold_serve_lock(data_dir) -> int:
    """An exclusive lock on ``data_dir/serve.lock`` for this process's life (its fd); a
    PersistenceError naming the holder when another live ``matchcore serve`` has it."""
    from pathlib import Path

    from matchcore.persistence.errors import PersistenceError

    folder = Path(data_dir)
    if not folder.exists():
        folder.mkdir(parents=True)
        folder.chmod(0o755 if os.geteuid() == 0 else 0o700)  # as EmbeddedPostgres makes it
    path = folder / "serve.lock"
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(descriptor, 32, 0).decode(errors="replace").strip() or "?"
        os.close(descriptor)
        raise PersistenceError(f"another matchcore serve (pid {holder}) uses the data folder {folder}") from None
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, f"{os.getpid()}\n".encode(), 0)
    return descriptor


def notify_service_manager(state: str) -> bool:
    """sd_notify: send ``state`` to systemd's ``NOTIFY_SOCKET`` (a unix datagram socket; a
    leading ``@`` is the abstract namespace). False when there is none or it cannot be sent."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as channel:
            channel.sendto(state.encode(), address)
        return True
    except OSError as error:
        _log.warning("service manager not notified", extra={"error": repr(error)})
        return False


def write_ready_file(path: str, server: GatewayServer) -> None:
    """Tell a parent process where the server listens (atomically: write, then rename)."""
    temporary = f"{path}.tmp{os.getpid()}"
    with open(temporary, "w") as handle:
        json.dump({"port": server.port, "metrics_port": server.metrics_port, "pid": os.getpid()}, handle)
    os.replace(temporary, path)


async def _serve(config: ServerConfig, ready_file: str | None, standby: bool = False) -> int:
    warm = None
    if standby:
        from matchcore.gateway import standby as hot_standby

        stop = asyncio.Event()
        hot_standby.stop_on_signals(stop)
        warm = await hot_standby.follow(config, stop)
        hot_standby.clear_signals()
        if warm is None:
            return 0  # stopped while following
    server = GatewayServer(config)
    try:
        await server.start(warm)
    except BaseException:
        await server.stop()
        raise
    if ready_file:
        write_ready_file(ready_file, server)
    notify_service_manager(f"READY=1\nSTATUS=listening on {config.listen_host}:{server.port}\nMAINPID={os.getpid()}")
    await server.serve_until_stopped()
    return 1 if server.failed is not None else 0


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


def run_server(config: ServerConfig, ready_file: str | None = None, standby: bool = False) -> int:
    """Run until SIGTERM, SIGINT or SIGHUP, on uvloop; the exit status (1: the journal
    writer failed and the server stopped itself, a fenced one included). ``standby``: first
    follow the journal as a hot standby until its PostgreSQL is the primary."""
    import uvloop

    raise_open_file_limit()
    return uvloop.run(_serve(config, ready_file, standby))

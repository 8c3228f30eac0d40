"""The status HTTP server: ``/metrics``, ``/livez`` and ``/readyz`` on the metrics port.

Why not prometheus-client's ``start_http_server``: it makes a thread per request, so 1,000
unfinished requests were 1,000 threads, and every scrape collected the metrics again, so the
scrape rate multiplied the collection cost (215 scrapes/s raised a trader's median round
trip from 5.8 to 21.7 ms). Here:

- one daemon thread runs its own asyncio loop (never the trading loop); the trading loop
  only hands it a small readiness sample every ``SAMPLE_INTERVAL_MS`` (``ReadinessSampler``);
- at most ``metrics_connections_max`` connections are open; at the limit a new one evicts
  the one that has waited longest for its request (so half-sent requests cannot keep the
  probes out), or is closed at once when every open one is being answered;
- one request per connection: request line and headers must arrive within
  ``metrics_request_timeout_ms`` and fit in ``metrics_request_bytes_max`` (else 408 / 431);
  the answer must be taken within the same time; then the connection is closed;
- paths ``/metrics``, ``/livez``, ``/readyz``; anything else is 404, a method other than
  GET or HEAD 405;
- the metrics text (prometheus-client's ``generate_latest``, its exposition format) is made
  at most once per ``metrics_cache_ms``; scrapes in between get the same bytes.

``/livez``: 200 while the trading loop ran its sampler within ``liveness_loop_stall_ms``.
``/readyz``: 200 when the core recovered and the trading port is open (and not stopping),
the core thread and the journal writer have not failed, the writer is committing (with
commands waiting for their commit, the released seq moved within
``readiness_commit_stall_ms``), and the database is reachable. Reachable without a query
per probe: a commit within ``readiness_database_check_ms`` proves it; otherwise this
thread runs ``SELECT 1`` on its own connection, at most once per that interval (probes in
between get the cached answer).
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Callable

import msgspec

__all__ = ["StatusConfig", "ReadinessSample", "ReadinessSampler", "StatusServer", "SAMPLE_INTERVAL_MS"]

_log = logging.getLogger("matchcore.gateway.http_status")

NS_PER_MS = 1_000_000
#: how often the trading loop hands over a readiness sample
SAMPLE_INTERVAL_MS = 250
_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout",
            431: "Request Header Fields Too Large", 400: "Bad Request", 500: "Internal Server Error",
            503: "Service Unavailable"}


class StatusConfig(msgspec.Struct, frozen=True, kw_only=True):
    """The status server's limits (the same names as in ``ServerConfig``)."""

    metrics_host: str = "127.0.0.1"
    metrics_port: int = 0
    metrics_connections_max: int = 16
    metrics_request_timeout_ms: int = 2_000
    metrics_request_bytes_max: int = 8_192
    metrics_cache_ms: int = 1_000
    liveness_loop_stall_ms: int = 10_000
    readiness_commit_stall_ms: int = 5_000
    readiness_database_check_ms: int = 2_000


class ReadinessSample(msgspec.Struct, frozen=True):
    """What the trading loop knows, taken on the trading loop. ``problem``: "" or why the
    server cannot serve (not recovered, a failed core or writer, stopping)."""

    taken_ns: int
    problem: str
    #: commands stamped but not yet released after their commit
    uncommitted_commands: int
    released_seq: int


class ReadinessSampler:
    """On the trading loop: every ``SAMPLE_INTERVAL_MS`` call ``take()`` and keep the sample
    (one attribute store; the status thread only reads it), and note when the released seq
    last moved."""

    __slots__ = ("take", "sample", "progress_ns", "_handle", "_loop")

    def __init__(self, take: Callable[[int], ReadinessSample]) -> None:
        self.take = take
        self.sample: ReadinessSample | None = None
        self.progress_ns = 0  # when released_seq last changed (or the first sample)
        self._handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._tick()

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._loop = None

    def _tick(self) -> None:
        if self._loop is None:
            return
        now_ns = time.monotonic_ns()
        try:
            sample = self.take(now_ns)
        except Exception as error:  # the sample must not kill the loop; it says what failed
            sample = ReadinessSample(now_ns, f"readiness sample failed: {type(error).__name__}: {error}", 0, 0)
        previous = self.sample
        if previous is None or sample.released_seq != previous.released_seq or not sample.uncommitted_commands:
            self.progress_ns = now_ns
        self.sample = sample
        self._handle = self._loop.call_later(SAMPLE_INTERVAL_MS / 1000, self._tick)


class StatusServer:
    """The HTTP server in its own thread. ``start()``, then ``shutdown()`` (from any thread).

    ``collect()``: the metrics text (bytes); ``sampler``: the trading loop's readiness;
    ``check_database()``: an async callable run on this thread's loop that raises when the
    database cannot be reached (None: readiness does not check it)."""

    def __init__(self, config: StatusConfig, collect: Callable[[], bytes], content_type: str,
                 sampler: ReadinessSampler,
                 check_database: Callable[[], "asyncio.Future"] | None = None) -> None:
        self.config = config
        self.collect, self.content_type = collect, content_type
        self.sampler = sampler
        self.check_database = check_database
        self.server_port = 0
        self.open_connections = 0
        #: connections closed at once or evicted (over metrics_connections_max); answers by status
        self.refused_total = 0
        self._reading: dict[int, _Connection] = {}  # open, request not complete yet, oldest first
        self.answers_by_status: dict[int, int] = {}
        self.collections_total = 0
        self._metrics: tuple[int, bytes] | None = None  # (made at, text)
        self._database: tuple[int, str] | None = None  # (checked at, "" or the error)
        self._database_check: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._thread: threading.Thread | None = None
        self._stopped: asyncio.Event | None = None

    # ------------------------------------------------------------------ life cycle

    def start(self, timeout_s: float = 10.0) -> None:
        """Bind and serve in a daemon thread; raises if it cannot bind."""
        started = threading.Event()
        failure: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, args=(started, failure), name="matchcore-status",
                                        daemon=True)
        self._thread.start()
        if not started.wait(timeout_s):
            raise RuntimeError("the status server did not start")
        if failure:
            raise failure[0]

    def _run(self, started: threading.Event, failure: list[BaseException]) -> None:
        loop = _new_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve(started))
        except BaseException as error:  # reported by start() when it happens there
            failure.append(error)
            started.set()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _serve(self, started: threading.Event) -> None:
        config = self.config
        self._stopped = asyncio.Event()
        self._server = await asyncio.start_server(
            self._connection, config.metrics_host, config.metrics_port,
            limit=config.metrics_request_bytes_max, backlog=config.metrics_connections_max,
            reuse_address=True)
        self.server_port = self._server.sockets[0].getsockname()[1]
        started.set()
        try:
            await self._stopped.wait()
        finally:
            self._server.close()
            if self._database_check is not None:
                self._database_check.cancel()
            closer = getattr(self.check_database, "close", None)
            if closer is not None:
                await closer()

    def shutdown(self, timeout_s: float = 5.0) -> None:
        """Stop serving and join the thread (idempotent)."""
        self.sampler.stop()
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or not thread.is_alive():
            return
        try:
            loop.call_soon_threadsafe(self._stopped.set)
        except RuntimeError:  # the loop already closed
            return
        thread.join(timeout_s)

    # ------------------------------------------------------------------ one connection

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = _Connection(writer.transport)
        if self.open_connections >= self.config.metrics_connections_max and not self._evict_oldest_reading():
            self.refused_total += 1
            writer.transport.abort()
            return
        self.open_connections += 1
        self._reading[id(connection)] = connection
        timeout_s = self.config.metrics_request_timeout_ms / 1000
        try:
            status, body, content_type, head_only = await self._answer_request(reader, timeout_s, connection)
            self.answers_by_status[status] = self.answers_by_status.get(status, 0) + 1
            header = (f"HTTP/1.1 {status} {_REASONS.get(status, '')}\r\nContent-Type: {content_type}\r\n"
                      f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
            writer.write(header if head_only else header + body)
            await asyncio.wait_for(writer.drain(), timeout_s)
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError):
            pass  # the peer went away or does not read: nothing more is owed to it
        finally:
            self._reading.pop(id(connection), None)
            if connection.counted:
                self.open_connections -= 1
            writer.transport.abort()  # one request per connection; no lingering close

    def _evict_oldest_reading(self) -> bool:
        """At the limit, the connection that has waited longest for its request goes (so
        connections that never finish a request cannot keep the probes out); False if every
        open connection is being answered."""
        if not self._reading:
            return False
        oldest = self._reading.pop(next(iter(self._reading)))
        oldest.counted = False
        self.open_connections -= 1
        self.refused_total += 1
        oldest.transport.abort()
        return True

    async def _answer_request(self, reader: asyncio.StreamReader, timeout_s: float,
                              connection: "_Connection") -> tuple[int, bytes, str, bool]:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout_s)
        except asyncio.TimeoutError:
            return 408, b"request not complete in time\n", "text/plain", False
        except asyncio.LimitOverrunError:
            return 431, b"request too large\n", "text/plain", False
        finally:
            self._reading.pop(id(connection), None)  # being answered: no longer evictable
        parts = head.split(b"\r\n", 1)[0].split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            return 400, b"bad request line\n", "text/plain", False
        method, target = parts[0], parts[1].split(b"?", 1)[0]
        if method not in (b"GET", b"HEAD"):
            return 405, b"GET or HEAD only\n", "text/plain", False
        head_only = method == b"HEAD"
        if target == b"/metrics":
            return 200, self.metrics_text(), self.content_type, head_only
        if target == b"/livez":
            problem = self.liveness_problem()
        elif target == b"/readyz":
            problem = await self.readiness_problem()
        else:
            return 404, b"not found: /metrics, /livez, /readyz\n", "text/plain", head_only
        body = (f"not ready: {problem}\n" if problem else "ok\n").encode()
        return (503 if problem else 200), body, "text/plain; charset=utf-8", head_only

    # ------------------------------------------------------------------ the answers

    def metrics_text(self) -> bytes:
        """The metrics text, made again only when the cached one is older than metrics_cache_ms."""
        now_ns = time.monotonic_ns()
        cached = self._metrics
        if cached is not None and now_ns - cached[0] < self.config.metrics_cache_ms * NS_PER_MS:
            return cached[1]
        text = self.collect()
        self.collections_total += 1
        self._metrics = (time.monotonic_ns(), text)
        return text

    def liveness_problem(self) -> str:
        sample = self.sampler.sample
        if sample is None:
            return "the trading loop has not run its sampler yet"
        stalled_ms = (time.monotonic_ns() - sample.taken_ns) // NS_PER_MS
        if stalled_ms > self.config.liveness_loop_stall_ms:
            return f"the trading loop has not run for {stalled_ms} ms"
        return ""

    async def readiness_problem(self) -> str:
        """"" when ready, else the first reason it is not (see the module docstring)."""
        problem = self.liveness_problem()
        if problem:
            return problem
        sample = self.sampler.sample
        if sample.problem:
            return sample.problem
        now_ns = time.monotonic_ns()
        stalled_ms = (now_ns - self.sampler.progress_ns) // NS_PER_MS
        if sample.uncommitted_commands and stalled_ms > self.config.readiness_commit_stall_ms:
            return (f"the journal writer has not committed for {stalled_ms} ms "
                    f"({sample.uncommitted_commands} commands waiting)")
        if self.check_database is None:
            return ""
        if sample.uncommitted_commands == 0 or stalled_ms > self.config.readiness_database_check_ms:
            return await self._database_problem()
        return ""  # a commit within the interval: the database answered

    async def _database_problem(self) -> str:
        interval_ns = self.config.readiness_database_check_ms * NS_PER_MS
        cached = self._database
        if cached is not None and time.monotonic_ns() - cached[0] < interval_ns:
            return cached[1]
        if self._database_check is None or self._database_check.done():
            self._database_check = asyncio.ensure_future(self._check_database_once())
        return await asyncio.shield(self._database_check)

    async def _check_database_once(self) -> str:
        try:
            await self.check_database()
            problem = ""
        except Exception as error:  # any failure means: not reachable now
            problem = f"the database is not reachable: {type(error).__name__}: {error}"
        self._database = (time.monotonic_ns(), problem)
        return problem


def _new_loop() -> asyncio.AbstractEventLoop:
    """uvloop when installed (accept and socket work in C: less time holding the GIL that the
    trading loop needs), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class _Connection:
    __slots__ = ("transport", "counted")

    def __init__(self, transport: asyncio.BaseTransport) -> None:
        self.transport, self.counted = transport, True


class DatabaseCheck:
    """``SELECT 1`` on one connection of the status thread's own (reconnected after a
    failure), bounded by ``timeout_ms``. Awaited by ``StatusServer``; ``close()`` at stop."""

    def __init__(self, dsn: str, timeout_ms: int) -> None:
        self.dsn, self.timeout_s = dsn, timeout_ms / 1000
        self._connection = None

    async def __call__(self) -> None:
        import asyncpg

        try:
            if self._connection is None or self._connection.is_closed():
                self._connection = await asyncpg.connect(
                    self.dsn, timeout=self.timeout_s, server_settings={"application_name": "matchcore-status"})
            await asyncio.wait_for(self._connection.fetchval("SELECT 1"), self.timeout_s)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.terminate()

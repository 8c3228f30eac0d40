"""The matchcore client library: an asyncio client of the binary protocol (docs/protocol.md).

::

    from matchcore.client import keys
    from matchcore.client.connection import Client

    key = keys.load_private_key(open("trader.key", "rb").read())
    async with Client("127.0.0.1", 7400, account_id=7, key_id=3, private_key=key) as client:
        outcome = await client.new_order(instrument_id=0, side=Side.BUY, price=100, quantity=5)
        if outcome.accepted:
            ...
        async for event in client.events():   # every event of the account, in order
            ...

A ``Client`` logs in with an Ed25519 key (challenge-response), sends commands, matches
their outcomes (``Outcome``) by client order id / request id / transfer id, streams the
account's events in event sequence order, heartbeats, and ``reconnect()`` asks for the
events after the last one seen, so nothing is missed and nothing is seen twice. It also
fills in the client order id of the maker side of fills, which the wire leaves 0.

TLS: pass ``ssl=`` an ``ssl.SSLContext`` (``ssl.create_default_context(cafile=...)`` checks
the server's certificate and host name; the server speaks TLS 1.3, or 1.2 with AEAD
suites only). Without it the connection is plain TCP: the login cannot be replayed (it is
signed over a fresh challenge), but orders, fills and balances travel in clear and can be
altered by anyone on the path. Connecting without TLS to an address that is not loopback
warns (``PlaintextWarning``); silence it with the warnings module only on a network you
trust.
"""
from __future__ import annotations

import asyncio
import collections
import dataclasses
import ipaddress
import socket
import ssl as ssl_module
import time
import warnings
from typing import AsyncIterator

from matchcore import protocol as p
from matchcore.client import keys
from matchcore.client.marketdata import Balance, Book, Instrument, OpenOrder, Trade, TransferOutcome
from matchcore.client.window import CreditWindow
from matchcore.core.codes import ALL_INSTRUMENTS, EventKind, OrderType, StpMode, TimeInForce
from matchcore.errors import MatchcoreError

__all__ = ["Client", "Outcome", "ClientError", "LoginRefused", "ConnectionLost", "PlaintextWarning",
           "QueryRefused"]


class PlaintextWarning(UserWarning):
    """A connection without TLS to an address that is not this machine's loopback."""


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: where it resolves to is not known here


class ClientError(MatchcoreError):
    """Base of the client library's errors."""


class LoginRefused(ClientError):
    """The server answered LOGIN_REJECTED; ``reason`` is the SessionReason."""

    def __init__(self, reason: int) -> None:
        self.reason = p.SessionReason(reason)
        super().__init__(f"login refused: {self.reason.name}")


class ConnectionLost(ClientError):
    """The connection ended (LOGOUT from the server, a network error, or an idle peer)."""

    def __init__(self, reason: int = p.SessionReason.NONE, detail: str = "") -> None:
        self.reason = p.SessionReason(reason)
        super().__init__(f"connection lost: {self.reason.name}" + (f" ({detail})" if detail else ""))


@dataclasses.dataclass(frozen=True, slots=True)
class Outcome:
    """The answer to one command: the engine's event, or the gateway's SESSION_REJECT."""

    event: p.EventMessage | None = None
    reject: p.SessionReject | None = None

    @property
    def accepted(self) -> bool:
        """True when the engine carried the command out (not REJECTED, not refused)."""
        return self.event is not None and self.event.kind not in (EventKind.REJECTED,
                                                                  EventKind.TRANSFER_REJECTED)

    @property
    def reason(self) -> int:
        """The RejectReason (engine) or SessionReason (gateway) when refused, else 0."""
        if self.reject is not None:
            return self.reject.reason
        return self.event.reason if self.event is not None and not self.accepted else 0


# Which event kinds answer which command (by the id the event's client_id carries).
_ANSWERS = {
    p.MessageType.NEW_ORDER: (EventKind.ACCEPTED, EventKind.REJECTED),
    p.MessageType.CANCEL: (EventKind.CANCELED, EventKind.REJECTED),
    p.MessageType.REPLACE: (EventKind.REPLACED, EventKind.REJECTED),
    p.MessageType.MASS_CANCEL: (EventKind.COMMAND_DONE, EventKind.REJECTED),
    p.MessageType.DEPOSIT: (EventKind.TRANSFER_DONE, EventKind.TRANSFER_REJECTED),
    p.MessageType.WITHDRAW: (EventKind.TRANSFER_DONE, EventKind.TRANSFER_REJECTED),
}
_ADMIN_ANSWERS = (EventKind.COMMAND_DONE, EventKind.REJECTED)


@dataclasses.dataclass(slots=True)
class _Pending:
    type_: int
    kinds: tuple[int, ...]
    future: asyncio.Future


def _answer_key(message: p.Message) -> int | None:
    """The id the outcome event's client_id will carry (None: ADD_INSTRUMENT, by instrument)."""
    for name in ("client_order_id", "transfer_id", "request_id"):
        if hasattr(message, name):
            return getattr(message, name)
    return None


class Client:
    """One logged-in session with a matchcore gateway. Not thread-safe; one event loop.

    ``next_event_seq``: the first event wanted at the first login (0 = only new ones, 1 =
    the account's whole stream); later logins (``reconnect``) ask for the event after the
    last one seen. ``ssl``: an ``ssl.SSLContext`` for TLS, or None for plain TCP.
    ``endpoints``: more (host, port) of the same venue (a hot standby's): ``reconnect()``
    tries them in turn, from the current one, until one accepts or ``failover_timeout_s``
    passes; the one that answers is the active one (a standby opens no port). Nothing is
    missed or doubled: the login asks for the event after the last one seen
    (docs/protocol.md, "Failover").
    """

    __slots__ = ("host", "port", "account_id", "key_id", "_key", "_ssl", "_server_hostname",
                 "cancel_on_disconnect", "heartbeat_interval_ms", "connect_timeout_s",
                 "_next_event_seq", "_last_event_seq", "_session", "_reader", "_writer", "_tasks",
                 "_events", "_pending", "_status_waiters", "_closed", "_last_sent_s",
                 "_last_received_s", "_next_client_id", "_lost", "_gaps", "_queries", "books",
                 "_snapshot", "_trades", "_book_updates", "_subscriptions", "resnapshots", "trades_dropped",
                 "receive_buffer_bytes", "endpoints", "failover_timeout_s", "failovers", "_credit")

    def __init__(self, host: str, port: int, *, account_id: int, key_id: int,
                 private_key: keys.PrivateKey, ssl: ssl_module.SSLContext | None = None,
                 server_hostname: str | None = None, cancel_on_disconnect: bool = False,
                 heartbeat_interval_ms: int = 1000, next_event_seq: int = 0,
                 event_queue_size: int = 65_536, connect_timeout_s: float = 10.0,
                 receive_buffer_bytes: int | None = None,
                 endpoints: list[tuple[str, int]] | None = None, failover_timeout_s: float = 30.0) -> None:
        self.host, self.port = host, port
        #: every endpoint of the venue, the first given (host, port) first
        self.endpoints: list[tuple[str, int]] = [(host, port)] + [
            (other_host, int(other_port)) for other_host, other_port in (endpoints or [])
            if (other_host, int(other_port)) != (host, port)]
        self.failover_timeout_s = failover_timeout_s
        #: reconnects that ended on another endpoint than the one lost
        self.failovers = 0
        self.account_id, self.key_id = account_id, key_id
        self._key = private_key
        self._ssl, self._server_hostname = ssl, server_hostname
        self.cancel_on_disconnect = cancel_on_disconnect
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.connect_timeout_s = connect_timeout_s
        #: the socket's receive buffer (SO_RCVBUF, set before connecting); None: the system's
        self.receive_buffer_bytes = receive_buffer_bytes
        self._next_event_seq = next_event_seq
        self._last_event_seq = 0
        self._session: p.LoginAccepted | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._tasks: list[asyncio.Task] = []
        self._events: asyncio.Queue[p.EventMessage | ConnectionLost] = asyncio.Queue(event_queue_size)
        self._pending: dict[int, collections.deque[_Pending]] = {}
        self._status_waiters: dict[int, collections.deque[asyncio.Future]] = {}
        self._closed = False
        self._lost: ConnectionLost | None = None
        self._last_sent_s = self._last_received_s = 0.0
        self._next_client_id = time.time_ns()  # client order ids must rise across sessions
        self._gaps = 0
        #: request_id -> (query type, frames so far, future) of the queries (and subscriptions)
        #: awaiting their last frame (QUERY_DONE, TRANSFER_STATUS)
        self._queries: dict[int, tuple[int, list, asyncio.Future]] = {}
        #: the local books of the instruments subscribed to (market data)
        self.books: dict[int, Book] = {}
        self._snapshot: tuple[p.MdSnapshot, list] | None = None  # the snapshot being received
        self._trades: asyncio.Queue[Trade] = asyncio.Queue(event_queue_size)
        self._book_updates: asyncio.Queue[int] = asyncio.Queue(event_queue_size)
        self._subscriptions: dict[int, int] = {}  # instrument (or ALL_INSTRUMENTS) -> depth_levels
        #: fresh snapshots asked for by the client after a gap in a book's feed
        self.resnapshots = 0
        #: trades not kept because nobody took them from trades() (its queue was full)
        self.trades_dropped = 0
        self._credit = CreditWindow()  # the session's credit window (docs/protocol.md 3.4)

    # ------------------------------------------------------------------ connection

    async def connect(self) -> p.LoginAccepted:
        """Connect and log in; returns the LOGIN_ACCEPTED. Raises ``LoginRefused``."""
        if self._ssl is None and not _is_loopback(self.host):
            warnings.warn(f"connecting to {self.host}:{self.port} without TLS: orders, fills and balances "
                          "travel in clear; pass ssl=ssl.create_default_context(...)", PlaintextWarning,
                          stacklevel=2)
        reader, writer = await asyncio.wait_for(self._open(), self.connect_timeout_s)
        try:
            accepted = await asyncio.wait_for(self._login(reader, writer), self.connect_timeout_s)
        except BaseException:
            writer.close()
            raise
        self._reader, self._writer, self._session, self._lost = reader, writer, accepted, None
        self._credit.resize(accepted.commands_in_flight_max)
        self._forget_lost_markers()
        self._closed = False
        if accepted.next_event_seq and not self._last_event_seq:
            self._last_event_seq = accepted.next_event_seq - 1
        self._last_received_s = self._last_sent_s = time.monotonic()
        self._tasks = [asyncio.create_task(self._read_loop(reader)),
                       asyncio.create_task(self._heartbeat_loop())]
        # a new session has no subscriptions: ask again for what the old one had (fresh snapshots)
        for book in self.books.values():
            book.synced = False
        for instrument_id, depth_levels in self._subscriptions.items():
            self.send(p.MdSubscribe(instrument_id, depth_levels, 0))
        return accepted

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        hostname = self._server_hostname if self._ssl else None
        if self.receive_buffer_bytes is None:
            return await asyncio.open_connection(self.host, self.port, ssl=self._ssl, server_hostname=hostname)
        loop = asyncio.get_running_loop()
        (family, kind, proto, _, address), *_ = await loop.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.receive_buffer_bytes)
            sock.setblocking(False)
            await loop.sock_connect(sock, address)
        except BaseException:
            sock.close()
            raise
        return await asyncio.open_connection(sock=sock, ssl=self._ssl,
                                             server_hostname=hostname or (self.host if self._ssl else None))

    async def _login(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> p.LoginAccepted:
        challenge = p.decode(await _read_frame(reader))
        if not isinstance(challenge, p.Challenge):
            raise ClientError(f"expected CHALLENGE, got {type(challenge).__name__}")
        next_seq = self._last_event_seq + 1 if self._last_event_seq else self._next_event_seq
        flags = p.LoginFlags.CANCEL_ON_DISCONNECT if self.cancel_on_disconnect else 0
        login = keys.signed_login(self._key, account_id=self.account_id, key_id=self.key_id,
                                  nonce=challenge.nonce, next_event_seq=next_seq, login_flags=int(flags),
                                  heartbeat_interval_ms=self.heartbeat_interval_ms)
        writer.write(login.encode())
        answer = p.decode(await _read_frame(reader))
        if isinstance(answer, p.LoginRejected):
            raise LoginRefused(answer.reason)
        if isinstance(answer, p.Logout):
            raise LoginRefused(answer.reason)
        if not isinstance(answer, p.LoginAccepted):
            raise ClientError(f"expected LOGIN_ACCEPTED, got {type(answer).__name__}")
        return answer

    def _forget_lost_markers(self) -> None:
        """Drop the end-of-connection markers of earlier connections from the event queue."""
        kept = []
        while not self._events.empty():
            item = self._events.get_nowait()
            if not isinstance(item, ConnectionLost):
                kept.append(item)
        for item in kept:
            self._events.put_nowait(item)

    async def reconnect(self) -> p.LoginAccepted:
        """Drop the connection (if any) and log in again asking for the events after the last
        one seen. Pending outcomes stay pending: the replayed events resolve them. With several
        ``endpoints``: each in turn (the current one first) until one accepts, within
        ``failover_timeout_s``; a refused login is final."""
        await self._drop()
        if len(self.endpoints) == 1:
            return await self.connect()
        return await self._connect_any()

    async def _connect_any(self) -> p.LoginAccepted:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.failover_timeout_s
        lost = (self.host, self.port)
        start = self.endpoints.index(lost) if lost in self.endpoints else 0
        order = self.endpoints[start:] + self.endpoints[:start]
        delay_s, attempt = 0.02, 0
        while True:
            self.host, self.port = order[attempt % len(order)]
            attempt += 1
            try:
                accepted = await self.connect()
            except LoginRefused:
                raise
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ClientError) as error:
                if loop.time() >= deadline:
                    raise ConnectionLost(p.SessionReason.NONE, f"no endpoint of {self.endpoints} accepted within "
                                         f"{self.failover_timeout_s} s (last: {error!r})") from error
                if attempt % len(order) == 0:  # every endpoint tried once: wait a little
                    await asyncio.sleep(min(delay_s, max(0.0, deadline - loop.time())))
                    delay_s = min(delay_s * 2, 0.5)
                continue
            if (self.host, self.port) != lost:
                self.failovers += 1
            return accepted

    async def close(self, reason: int = p.SessionReason.CLIENT_LOGOUT) -> None:
        """Log out (if connected) and close; pending outcomes fail with ``ConnectionLost``."""
        if self._writer is not None and not self._writer.is_closing():
            try:
                self._writer.write(p.Logout(int(reason)).encode())
            except (ConnectionError, RuntimeError):
                pass
        await self._drop()
        self._closed = True
        self._fail_pending(ConnectionLost(reason, "closed by the client"))

    async def _drop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        self._tasks = []
        if self._writer is not None:
            self._writer.close()
            try:
                await self._writer.wait_closed()
            except (ConnectionError, ssl_module.SSLError, OSError):
                pass
            self._writer = None

    async def __aenter__(self) -> "Client":
        await self.connect()
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.close()

    @property
    def session(self) -> p.LoginAccepted | None:
        """The LOGIN_ACCEPTED of the current connection."""
        return self._session

    @property
    def connected(self) -> bool:
        return self._writer is not None and not self._writer.is_closing() and self._lost is None

    @property
    def last_event_seq(self) -> int:
        """The event sequence number of the last event received (0: none yet)."""
        return self._last_event_seq

    @property
    def gaps(self) -> int:
        """How many times an event sequence gap was seen (each ends the connection with
        ``ConnectionLost``; ``reconnect()`` then fetches what was missed)."""
        return self._gaps

    # ------------------------------------------------------------------ sending

    def next_client_id(self) -> int:
        """A fresh rising id for a client order id, request id or transfer id."""
        self._next_client_id = max(self._next_client_id + 1, time.time_ns())
        return self._next_client_id

    def send(self, message: p.Message) -> None:
        """Send one message now, without waiting for an answer."""
        if self._writer is None or self._lost is not None:
            raise ConnectionLost(self._lost.reason if self._lost else p.SessionReason.NONE, "not connected")
        self._writer.write(message.encode())
        self._last_sent_s = time.monotonic()

    async def request(self, message: p.Message, timeout_s: float | None = None) -> Outcome:
        """Send a command message and await its outcome (the event answering it, or the
        gateway's SESSION_REJECT). If the connection drops meanwhile the wait goes on: the
        events replayed after ``reconnect()`` resolve it (use ``timeout_s`` to bound it)."""
        await self._credit.acquire()  # within the session's credit window
        try:
            future = self._expect(message)
            self.send(message)
        except BaseException:
            self._credit.release()
            raise
        future.add_done_callback(self._credit.release)
        return await asyncio.wait_for(future, timeout_s)

    @property
    def credit(self) -> int | None:
        """Commands ``request()`` may still send before it waits for answers (the credit
        window of LOGIN_ACCEPTED less the commands awaiting their outcome; None before login)."""
        return self._credit.available

    def _expect(self, message: p.Message) -> asyncio.Future:
        type_ = message.frame_type()
        key = _answer_key(message)
        if key is None:  # ADD_INSTRUMENT: matched by instrument id
            key = ("instrument", message.instrument_id)
        pending = _Pending(type_, _ANSWERS.get(type_, _ADMIN_ANSWERS), asyncio.get_running_loop().create_future())
        self._pending.setdefault(key, collections.deque()).append(pending)
        return pending.future

    async def new_order(self, instrument_id: int, side: int, price: int, quantity: int, *,
                        order_type: int = OrderType.LIMIT, time_in_force: int = TimeInForce.GTC,
                        stp_mode: int = StpMode.CANCEL_TAKER, post_only: bool = False,
                        max_notional: int = 0, client_order_id: int | None = None,
                        expire_time_ns: int = 0, trigger_price: int = 0, display_quantity: int = 0,
                        timeout_s: float | None = None) -> Outcome:
        """Submit an order and await ACCEPTED or REJECTED (or the gateway's refusal).
        ``expire_time_ns`` with ``time_in_force=GTD``; ``trigger_price`` with a STOP_MARKET or
        STOP_LIMIT ``order_type``; ``display_quantity`` makes a resting limit order an iceberg."""
        order = p.NewOrder(int(side), int(order_type), int(time_in_force), int(stp_mode), self.account_id,
                           instrument_id, client_order_id or self.next_client_id(), price, quantity,
                           max_notional, 1 if post_only else 0, expire_time_ns, trigger_price,
                           display_quantity)
        return await self.request(order, timeout_s)

    async def cancel(self, client_order_id: int, timeout_s: float | None = None) -> Outcome:
        """Cancel an order; the outcome is its CANCELED (reason USER) or REJECTED."""
        return await self.request(p.Cancel(self.account_id, client_order_id), timeout_s)

    async def replace(self, client_order_id: int, price: int, quantity: int,
                      timeout_s: float | None = None) -> Outcome:
        """Change an order's price and open quantity; the outcome is REPLACED or REJECTED."""
        return await self.request(p.Replace(self.account_id, client_order_id, price, quantity), timeout_s)

    async def mass_cancel(self, instrument_id: int = ALL_INSTRUMENTS,
                          timeout_s: float | None = None) -> Outcome:
        """Cancel the account's resting orders (one instrument or all); COMMAND_DONE's
        quantity is the number canceled."""
        return await self.request(p.MassCancel(self.account_id, instrument_id, self.next_client_id()), timeout_s)

    async def order_status(self, client_order_id: int, timeout_s: float | None = None) -> p.OrderStatus:
        """Ask the gateway for one order's state."""
        future = asyncio.get_running_loop().create_future()
        self._status_waiters.setdefault(client_order_id, collections.deque()).append(future)
        self.send(p.OrderStatusQuery(client_order_id))
        return await asyncio.wait_for(future, timeout_s)

    # ------------------------------------------------------------------ queries

    def _request_id(self) -> int:
        return self.next_client_id()

    async def _query(self, message: p.Message, timeout_s: float | None) -> tuple[list, p.Message]:
        """Send a query; its answer frames and the frame that ended it (QUERY_DONE,
        TRANSFER_STATUS). A SESSION_REJECT raises ``QueryRefused``."""
        future = asyncio.get_running_loop().create_future()
        self._queries[message.request_id] = (message.frame_type(), [], future)
        try:
            self.send(message)
            return await asyncio.wait_for(future, timeout_s)
        finally:
            self._queries.pop(message.request_id, None)

    async def balances(self, timeout_s: float | None = None) -> dict[int, Balance]:
        """The account's balances by asset id (assets with nothing available or held are left out)."""
        frames, _ = await self._query(p.BalancesQuery(self._request_id()), timeout_s)
        return {m.asset_id: Balance(m.asset_id, m.available, m.held, m.as_of_seq) for m in frames}

    async def open_orders(self, instrument_id: int = ALL_INSTRUMENTS, *, page_size: int = 200,
                          timeout_s: float | None = None) -> list[OpenOrder]:
        """Every open order of the account (one instrument or all), ascending order id, read
        page by page (each page is consistent with its own ``as_of_seq``)."""
        out, after = [], 0
        while True:
            frames, done = await self._query(p.OpenOrdersQuery(instrument_id, self._request_id(), after, page_size),
                                             timeout_s)
            out += [OpenOrder.of(m, done.as_of_seq) for m in frames]
            if not done.next_after_id:
                return out
            after = done.next_after_id

    async def instruments(self, timeout_s: float | None = None) -> list[Instrument]:
        frames, done = await self._query(p.InstrumentsQuery(self._request_id()), timeout_s)
        return [Instrument.of(m, done.as_of_seq) for m in frames]

    async def transfer_status(self, transfer_id: int, account_id: int | None = None,
                              timeout_s: float | None = None) -> TransferOutcome:
        """The outcome of a transfer of the account (an admin session: of any account)."""
        _, status = await self._query(p.TransferQuery(self.account_id if account_id is None else account_id,
                                                      transfer_id, self._request_id()), timeout_s)
        return TransferOutcome.of(status)

    # ------------------------------------------------------------------ market data

    async def subscribe(self, instrument_id: int = ALL_INSTRUMENTS, depth_levels: int = 0,
                        timeout_s: float | None = None) -> dict[int, Book]:
        """Subscribe to an instrument's market data (or every instrument's) and wait for the
        snapshot; ``books`` then stays up to date (after a gap the client asks for a fresh
        snapshot by itself). Returns the books the answer filled, by instrument id."""
        self._subscriptions[instrument_id] = depth_levels
        books, _ = await self._query(p.MdSubscribe(instrument_id, depth_levels, self._request_id()), timeout_s)
        return {book.instrument_id: book for book in books}

    def unsubscribe(self, instrument_id: int = ALL_INSTRUMENTS) -> None:
        self._subscriptions.pop(instrument_id, None)
        self.send(p.MdUnsubscribe(instrument_id, self._request_id()))

    async def trades(self) -> AsyncIterator[Trade]:
        """Trades of the subscribed instruments, in feed order, until the connection ends."""
        while self._lost is None or not self._trades.empty():
            try:
                yield await asyncio.wait_for(self._trades.get(), 0.5)
            except asyncio.TimeoutError:
                continue

    async def next_book_update(self, timeout_s: float | None = None) -> int:
        """Wait until a book changes; the instrument id (several changes may come as one)."""
        return await asyncio.wait_for(self._book_updates.get(), timeout_s)

    def _on_market_data(self, message: p.Message) -> None:
        if isinstance(message, p.MdSnapshot):
            self._snapshot = (message, [])
            self._snapshot_done_if_complete()
            return
        if isinstance(message, p.MdLevel) and message.snapshot:
            if self._snapshot is not None:
                self._snapshot[1].append(message)
                self._snapshot_done_if_complete()
            return
        book = self.books.get(message.instrument_id)
        if book is None:
            if ALL_INSTRUMENTS in self._subscriptions and isinstance(message, p.MdStatus) and message.md_seq == 1:
                book = self.books[message.instrument_id] = Book(message.instrument_id)  # a new instrument
                book.synced = True
            else:
                return
        if not book.apply(message):
            self.resnapshots += 1  # a gap: a fresh snapshot of that instrument
            self.send(p.MdSubscribe(message.instrument_id, book.depth_levels, 0))
            return
        if isinstance(message, p.MdTrade):
            if self._trades.full():
                self.trades_dropped += 1
            else:
                self._trades.put_nowait(Trade.of(message))
        self._book_changed(message.instrument_id)

    def _book_changed(self, instrument_id: int) -> None:
        if not self._book_updates.full():
            self._book_updates.put_nowait(instrument_id)

    def _snapshot_done_if_complete(self) -> None:
        snapshot, levels = self._snapshot
        if len(levels) < snapshot.bid_levels + snapshot.ask_levels:
            return
        self._snapshot = None
        book = self.books.get(snapshot.instrument_id) or Book(snapshot.instrument_id)
        book.load(snapshot, levels)
        self.books[snapshot.instrument_id] = book
        waiting = self._queries.get(snapshot.request_id)
        if waiting is not None:
            waiting[1].append(book)
        self._book_changed(snapshot.instrument_id)

    def heartbeat(self) -> None:
        """Send a HEARTBEAT now (the client also sends them by itself when idle)."""
        self.send(p.Heartbeat(self._last_event_seq, time.time_ns()))

    # ------------------------------------------------------------------ receiving

    async def next_event(self, timeout_s: float | None = None) -> p.EventMessage:
        """The next event of the account's stream. Raises ``ConnectionLost`` when the
        connection ended (``reconnect()`` and continue: nothing is lost)."""
        item = await asyncio.wait_for(self._events.get(), timeout_s)
        if isinstance(item, ConnectionLost):
            raise item
        return item

    def poll_event(self) -> p.EventMessage | None:
        """The next event if one has arrived, else None (never waits). Raises
        ``ConnectionLost`` when the connection ended."""
        try:
            item = self._events.get_nowait()
        except asyncio.QueueEmpty:
            return None
        if isinstance(item, ConnectionLost):
            raise item
        return item

    async def events(self) -> AsyncIterator[p.EventMessage]:
        """Every event of the account's stream, in event sequence order, until the
        connection ends."""
        while True:
            try:
                yield await self.next_event()
            except ConnectionLost:
                return

    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        buffer = bytearray()
        reason, detail = p.SessionReason.NONE, "connection closed by the server"
        try:
            while True:
                chunk = await reader.read(65_536)
                if not chunk:
                    break
                self._last_received_s = time.monotonic()
                buffer += chunk
                frames, used = p.split_frames(buffer)
                del buffer[:used]
                for frame in frames:
                    message = p.decode(frame)
                    if isinstance(message, p.Logout):
                        reason, detail = message.reason, "logout from the server"
                        return
                    if not await self._dispatch(message):
                        self._gaps += 1
                        detail = "event sequence gap: reconnect() asks again from the last event seen"
                        if self._writer is not None:
                            self._writer.close()
                        return
        except p.ProtocolError as error:
            reason, detail = error.reason, "bad frame from the server"
        except (ConnectionError, OSError) as error:
            detail = str(error)
        finally:
            self._connection_ended(ConnectionLost(reason, detail))

    def _connection_ended(self, lost: ConnectionLost) -> None:
        if self._lost is None:
            self._lost = lost
            try:
                self._events.put_nowait(lost)
            except asyncio.QueueFull:
                pass

    async def _dispatch(self, message: p.Message) -> bool:
        """Handle one message from the server; False on an event sequence gap."""
        if isinstance(message, p.EventMessage):
            return await self._on_event(message)
        if isinstance(message, _MARKET_DATA):
            self._on_market_data(message)
        elif isinstance(message, _QUERY_ANSWERS):
            self._on_query_answer(message)
        elif isinstance(message, p.SessionReject):
            self._resolve_reject(message)
        elif isinstance(message, p.OrderStatus):
            waiters = self._status_waiters.get(message.client_order_id)
            if waiters:
                future = waiters.popleft()
                if not future.done():
                    future.set_result(message)
        return True  # HEARTBEAT: receiving it is all it is for

    async def _on_event(self, event: p.EventMessage) -> bool:
        if event.event_seq <= self._last_event_seq:
            return True  # already seen (a replay overlapping what arrived before a reconnect)
        if self._last_event_seq and event.event_seq != self._last_event_seq + 1:
            return False  # missed events
        self._last_event_seq = event.event_seq
        self._resolve_event(event)
        await self._events.put(event)
        return True

    def _resolve_event(self, event: p.EventMessage) -> None:
        keys = [event.client_id]
        if event.kind in _ADMIN_ANSWERS:
            keys.append(("instrument", event.instrument_id))
        for key in keys:
            queue = self._pending.get(key)
            if not queue:
                continue
            for pending in queue:
                if event.kind in pending.kinds and (
                        pending.type_ != p.MessageType.CANCEL or event.kind != EventKind.CANCELED
                        or event.reason == 1):  # CancelReason.USER answers a CANCEL
                    queue.remove(pending)
                    if not queue:
                        del self._pending[key]
                    if not pending.future.done():
                        pending.future.set_result(Outcome(event=event))
                    return

    def _on_query_answer(self, message: p.Message) -> None:
        waiting = self._queries.get(message.request_id)
        if waiting is None:
            return
        _, frames, future = waiting
        if isinstance(message, (p.QueryDone, p.TransferStatus)):
            if not future.done():
                future.set_result((frames, message))
        else:
            frames.append(message)

    def _resolve_reject(self, reject: p.SessionReject) -> None:
        if reject.refused_type in p.QUERY_TYPES or reject.refused_type in _MD_REQUESTS:
            waiting = self._queries.get(reject.client_id)
            if waiting is not None and not waiting[2].done():
                waiting[2].set_exception(QueryRefused(reject.refused_type, reject.reason))
            return
        queue = self._pending.get(reject.client_id)
        for pending in queue or ():
            if pending.type_ == reject.refused_type:
                queue.remove(pending)
                if not queue:
                    del self._pending[reject.client_id]
                if not pending.future.done():
                    pending.future.set_result(Outcome(reject=reject))
                return

    def _fail_pending(self, error: ClientError) -> None:
        for queue in self._pending.values():
            for pending in queue:
                if not pending.future.done():
                    pending.future.set_exception(error)
        self._pending.clear()
        for waiters in self._status_waiters.values():
            for future in waiters:
                if not future.done():
                    future.set_exception(error)
        self._status_waiters.clear()
        for _, _, future in self._queries.values():
            if not future.done():
                future.set_exception(error)

    async def _heartbeat_loop(self) -> None:
        interval_s = (self._session.heartbeat_interval_ms if self._session else self.heartbeat_interval_ms) / 1000
        while True:
            await asyncio.sleep(interval_s / 4)
            now = time.monotonic()
            if now - self._last_received_s > 3 * interval_s:
                self._connection_ended(ConnectionLost(p.SessionReason.IDLE_TIMEOUT, "server silent"))
                if self._writer is not None:
                    self._writer.close()
                return
            if now - self._last_sent_s >= interval_s and self._lost is None:
                try:
                    self.heartbeat()
                except (ConnectionError, ClientError):
                    return


class QueryRefused(ClientError):
    """The gateway refused a query or a subscription (SESSION_REJECT); ``reason`` says why."""

    def __init__(self, refused_type: int, reason: int) -> None:
        self.refused_type = p.MessageType(refused_type)
        self.reason = p.SessionReason(reason)
        super().__init__(f"{self.refused_type.name} refused: {self.reason.name}")


_MARKET_DATA = (p.MdSnapshot, p.MdLevel, p.MdTrade, p.MdBbo, p.MdStatus)
_QUERY_ANSWERS = (p.Balance, p.OpenOrder, p.InstrumentInfo, p.TransferStatus, p.QueryDone)
_MD_REQUESTS = frozenset((int(p.MessageType.MD_SUBSCRIBE), int(p.MessageType.MD_UNSUBSCRIBE)))


async def _read_frame(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readexactly(2)
    size = head[0] | head[1] << 8
    if not p.HEADER_SIZE <= size <= p.MAX_FRAME_SIZE:
        raise p.ProtocolError(p.SessionReason.MALFORMED_FRAME, f"frame_size {size}")
    return head + await reader.readexactly(size - 2)

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
import ssl as ssl_module
import time
import warnings
from typing import AsyncIterator

from matchcore import protocol as p
from matchcore.client import keys
from matchcore.core.codes import ALL_INSTRUMENTS, EventKind, OrderType, StpMode, TimeInForce
from matchcore.errors import MatchcoreError

__all__ = ["Client", "Outcome", "ClientError", "LoginRefused", "ConnectionLost", "PlaintextWarning"]


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
    """

    __slots__ = ("host", "port", "account_id", "key_id", "_key", "_ssl", "_server_hostname",
                 "cancel_on_disconnect", "heartbeat_interval_ms", "connect_timeout_s",
                 "_next_event_seq", "_last_event_seq", "_session", "_reader", "_writer", "_tasks",
                 "_events", "_pending", "_status_waiters", "_closed", "_last_sent_s",
                 "_last_received_s", "_next_client_id", "_lost", "_gaps")

    def __init__(self, host: str, port: int, *, account_id: int, key_id: int,
                 private_key: keys.PrivateKey, ssl: ssl_module.SSLContext | None = None,
                 server_hostname: str | None = None, cancel_on_disconnect: bool = False,
                 heartbeat_interval_ms: int = 1000, next_event_seq: int = 0,
                 event_queue_size: int = 65_536, connect_timeout_s: float = 10.0) -> None:
        self.host, self.port = host, port
        self.account_id, self.key_id = account_id, key_id
        self._key = private_key
        self._ssl, self._server_hostname = ssl, server_hostname
        self.cancel_on_disconnect = cancel_on_disconnect
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.connect_timeout_s = connect_timeout_s
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

    # ------------------------------------------------------------------ connection

    async def connect(self) -> p.LoginAccepted:
        """Connect and log in; returns the LOGIN_ACCEPTED. Raises ``LoginRefused``."""
        if self._ssl is None and not _is_loopback(self.host):
            warnings.warn(f"connecting to {self.host}:{self.port} without TLS: orders, fills and balances "
                          "travel in clear; pass ssl=ssl.create_default_context(...)", PlaintextWarning,
                          stacklevel=2)
        reader, writer = await asyncio.wait_for(asyncio.open_connection(
            self.host, self.port, ssl=self._ssl,
            server_hostname=self._server_hostname if self._ssl else None), self.connect_timeout_s)
        try:
            accepted = await asyncio.wait_for(self._login(reader, writer), self.connect_timeout_s)
        except BaseException:
            writer.close()
            raise
        self._reader, self._writer, self._session, self._lost = reader, writer, accepted, None
        self._forget_lost_markers()
        self._closed = False
        if accepted.next_event_seq and not self._last_event_seq:
            self._last_event_seq = accepted.next_event_seq - 1
        self._last_received_s = self._last_sent_s = time.monotonic()
        self._tasks = [asyncio.create_task(self._read_loop(reader)),
                       asyncio.create_task(self._heartbeat_loop())]
        return accepted

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
        one seen. Pending outcomes stay pending: the replayed events resolve them."""
        await self._drop()
        return await self.connect()

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
        future = self._expect(message)
        self.send(message)
        return await asyncio.wait_for(future, timeout_s)

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
        if isinstance(message, p.SessionReject):
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

    def _resolve_reject(self, reject: p.SessionReject) -> None:
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


async def _read_frame(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readexactly(2)
    size = head[0] | head[1] << 8
    if not p.HEADER_SIZE <= size <= p.MAX_FRAME_SIZE:
        raise p.ProtocolError(p.SessionReason.MALFORMED_FRAME, f"frame_size {size}")
    return head + await reader.readexactly(size - 2)

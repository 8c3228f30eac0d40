"""A load client: one logged-in session that sends orders in bulk and times their acks.

For ``matchcore-bench e2e`` and ``matchcore-bench demo``; one process per client. It logs in like
any client (``client_keys.signed_login``), then writes command frames made in bulk by the Cython
encoder (``_codec.encode_commands``) and reads the event stream with numpy (no Python object
per event while every frame is a 96-byte EVENT).

The workload of each client, on its own account: 45% passive GTC limit orders (buys below
the mid, sells above), 45% cancels of the client's oldest resting candidate, at least
``CANCEL_LAG_ORDERS`` orders back (so books stay bounded), 10% IOC orders that cross the mid
and trade with the other clients' resting orders. Every command has exactly one ack event on the client's
stream: ACCEPTED or REJECTED for an order, CANCELED (reason USER) or REJECTED for a cancel.
Commands count as done when their ack arrives; an ack arrives only after the command's
batch is committed in PostgreSQL (the server sends nothing earlier).

Ack latency is measured for every NEW_ORDER: from just before its frame is written to the
socket to the arrival of its ACCEPTED, in microseconds, into a ``histogram.LatencyHistogram``
(log-linear buckets up to 60 s, at most 0.78% wide; slower ones counted as overflow).
"""
from __future__ import annotations

import asyncio
import collections
import dataclasses
import time

import numpy as np

from matchcore.core.codes import CommandKind, EventKind, OrderType, Side, StpMode, TimeInForce
from matchcore.core.records import COMMAND_DTYPE
from matchcore.protocol import _codec
from matchcore.bench.histogram import LatencyHistogram
from matchcore.client import keys as client_keys
from matchcore import protocol as p

__all__ = ["LoadSpec", "LoadResult", "run_load_client"]

CANCEL_LAG_ORDERS = 64
#: shares of the mix: cancels, and crossing IOC orders (the rest rests, passive)
CANCEL_SHARE = 0.45
AGGRESSIVE_SHARE = 0.10
CHUNK_COMMANDS = 512
#: at full load, a client writes once at least this many commands fit in its window
MIN_SEND_COMMANDS = 64
#: the sending period in rate mode (libuv timers have millisecond resolution: less is 0)
RATE_TICK_S = 0.001
#: commands made and encoded at once; sending is then a slice of bytes
BLOCK_COMMANDS = 16_384
EVENT_SIZE = p.EVENT_FRAME_SIZE
_FRAME_SIZE_BY_KIND = np.zeros(256, np.int64)
_FRAME_SIZE_BY_KIND[list(p.FRAME_SIZES)] = list(p.FRAME_SIZES.values())


@dataclasses.dataclass
class LoadSpec:
    host: str
    port: int
    account_id: int
    key_id: int
    private_key_raw: bytes
    instruments: int = 4
    mid_price: int = 10_000
    warmup_s: float = 2.0
    seconds: float = 10.0
    #: offered commands/s of this client; 0 = as fast as the window allows
    rate_per_s: float = 0.0
    #: commands sent and not yet acked, at most (and at most the server's credit window,
    #: LOGIN_ACCEPTED.commands_in_flight_max)
    window_commands: int = 20_000
    seed: int = 1

    def __post_init__(self) -> None:
        checks = ((self.window_commands >= MIN_SEND_COMMANDS,
                   f"window_commands must be at least {MIN_SEND_COMMANDS} (nothing is sent below)"),
                  (self.rate_per_s >= 0, "rate_per_s must not be negative"),
                  (self.seconds > 0 and self.warmup_s >= 0, "seconds must be positive, warmup_s not negative"),
                  (self.instruments >= 1, "instruments must be at least 1"))
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


@dataclasses.dataclass
class LoadResult:
    account_id: int
    sent: int = 0
    acked: int = 0
    #: acks that arrived inside the measured window
    acked_measured: int = 0
    measured_s: float = 0.0
    latency_histogram_us: LatencyHistogram = dataclasses.field(default_factory=LatencyHistogram)
    rejected: int = 0
    fills: int = 0
    session_rejects: int = 0
    error: str = ""


class _Workload:
    """Rising client order ids and a numpy-made command mix (see the module docstring)."""

    def __init__(self, spec: LoadSpec) -> None:
        self.spec = spec
        self.random = np.random.default_rng(spec.seed * 1_000_003 + spec.account_id)
        self.first_client_id = 1_000
        self.orders_made = 0  # NEW_ORDERs made so far (client id = first + index)
        self.passive_ids = np.zeros(0, np.uint64)  # resting candidates, oldest first

    def chunk(self, count: int) -> tuple[np.ndarray, np.ndarray]:
        """``count`` commands and, for each, its NEW_ORDER index (or -1)."""
        spec, rng = self.spec, self.random
        roll = rng.random(count)
        cancel = roll < CANCEL_SHARE
        available = max(0, len(self.passive_ids) - CANCEL_LAG_ORDERS)
        cancel &= np.cumsum(cancel) <= available
        cancel_count = int(cancel.sum())
        new = ~cancel
        new_count = count - cancel_count
        commands = np.zeros(count, COMMAND_DTYPE)
        commands["account_id"] = spec.account_id
        commands["kind"] = np.where(cancel, CommandKind.CANCEL, CommandKind.NEW_ORDER)
        commands["client_id"][cancel] = self.passive_ids[:cancel_count]
        order_index = np.full(count, -1, np.int64)
        indexes = np.arange(self.orders_made, self.orders_made + new_count, dtype=np.int64)
        order_index[new] = indexes
        self.orders_made += new_count
        client_ids = (self.first_client_id + indexes).astype(np.uint64)
        sides = rng.integers(1, 3, new_count).astype(np.uint8)
        aggressive = roll[new] >= 1.0 - AGGRESSIVE_SHARE
        offsets = rng.integers(1, 20, new_count)
        buy = sides == Side.BUY
        passive_price = np.where(buy, spec.mid_price - offsets, spec.mid_price + offsets)
        cross_price = np.where(buy, spec.mid_price + 20, spec.mid_price - 20)
        orders = commands[new]
        orders["client_id"] = client_ids
        orders["instrument_id"] = rng.integers(0, spec.instruments, new_count)
        orders["side"] = sides
        orders["order_type"] = OrderType.LIMIT
        orders["time_in_force"] = np.where(aggressive, TimeInForce.IOC, TimeInForce.GTC)
        orders["stp_mode"] = StpMode.CANCEL_TAKER
        orders["price"] = np.where(aggressive, cross_price, passive_price)
        orders["quantity"] = 1
        commands[new] = orders
        self.passive_ids = np.concatenate([self.passive_ids[cancel_count:], client_ids[~aggressive]])
        return commands, order_index


class _LoadProtocol(asyncio.Protocol):
    def __init__(self, client: "_LoadClient") -> None:
        self.client = client

    def data_received(self, data: bytes) -> None:
        self.client.on_data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.on_lost(exc)


class _LoadClient:
    def __init__(self, spec: LoadSpec) -> None:
        self.spec = spec
        self.result = LoadResult(spec.account_id)
        self.workload = _Workload(spec)
        self.buffer = bytearray()
        self.sent_ns = np.zeros(1 << 16, np.int64)  # by NEW_ORDER index, grown as needed
        self.window_open = asyncio.Event()
        self.login_answer: asyncio.Future | None = None
        self.lost: asyncio.Future = asyncio.get_running_loop().create_future()
        self.measure_from_ns = 0
        self.measure_to_ns = 1 << 62
        self.block = b""
        self.block_offsets = np.zeros(1, np.int64)  # byte offset of each command, and the end
        self.block_order_index = np.zeros(0, np.int64)
        self.block_position = 0
        self.ready_blocks: collections.deque = collections.deque()
        self.transport: asyncio.Transport | None = None
        self.finished = False
        #: the window kept to: the spec's, within the server's credit (set at login)
        self.window_commands = spec.window_commands
        self.min_send_commands = MIN_SEND_COMMANDS

    # ------------------------------------------------------------------ receiving

    def on_data(self, data: bytes) -> None:
        now_ns = time.perf_counter_ns()
        self.buffer += data
        if self.login_answer is not None and not self.login_answer.done():
            return self._login_frames()
        whole = len(self.buffer) // EVENT_SIZE * EVENT_SIZE
        if whole:
            frames = np.frombuffer(self.buffer, np.uint8, whole).reshape(-1, EVENT_SIZE)
            fast = bool((frames[:, 0] == EVENT_SIZE).all() and (frames[:, 1] == 0).all() and
                        ((frames[:, 2] >= 64) & (frames[:, 2] <= 71)).all())
            if fast:
                self._events(frames, now_ns)
            del frames  # the view pins the buffer
            if fast:
                del self.buffer[:whole]
                return
        self._slow_path(now_ns)

    def _slow_path(self, now_ns: int) -> None:
        frames, used = p.split_frames(self.buffer)
        del self.buffer[:used]
        for frame in frames:
            kind = frame[2]
            if 64 <= kind <= 71:
                self._events(np.frombuffer(bytes(frame), np.uint8).reshape(1, EVENT_SIZE), now_ns)
            elif kind == p.MessageType.SESSION_REJECT:
                self.result.session_rejects += 1
                self.result.acked += 1
                self.window_open.set()
            elif kind == p.MessageType.LOGOUT:
                self.result.error = f"logout {p.SessionReason(p.decode(frame).reason).name}"

    def _events(self, frames: np.ndarray, now_ns: int) -> None:
        kinds = frames[:, 2]
        reasons = frames[:, 6].astype(np.uint16) | (frames[:, 7].astype(np.uint16) << 8)
        acks = (kinds == EventKind.ACCEPTED) | (kinds == EventKind.REJECTED) | \
               ((kinds == EventKind.CANCELED) & (reasons == 1))
        ack_count = int(acks.sum())
        result = self.result
        result.acked += ack_count
        result.rejected += int((kinds == EventKind.REJECTED).sum())
        result.fills += int((kinds == EventKind.FILL).sum())
        if self.measure_from_ns <= now_ns <= self.measure_to_ns:
            result.acked_measured += ack_count
        accepted = frames[kinds == EventKind.ACCEPTED]
        if len(accepted):
            client_ids = accepted[:, 48:56].copy().view(np.uint64).reshape(-1).astype(np.int64)
            index = client_ids - self.workload.first_client_id
            index = index[(index >= 0) & (index < self.workload.orders_made)]
            sent = self.sent_ns[index]
            measured = sent >= self.measure_from_ns
            result.latency_histogram_us.record((now_ns - sent[measured]) // 1000)
        if ack_count:
            self.window_open.set()

    def _login_frames(self) -> None:
        frames, used = p.split_frames(self.buffer)
        if frames:
            first = frames[0]
            del self.buffer[:len(first)]
            self.login_answer.set_result(p.decode(first))

    def on_lost(self, exc: Exception | None) -> None:
        if not self.finished and not self.result.error:
            self.result.error = f"connection lost: {exc!r}"
        if not self.lost.done():
            self.lost.set_result(exc)
        self.window_open.set()

    # ------------------------------------------------------------------ sending

    async def login(self) -> None:
        loop = asyncio.get_running_loop()
        self.login_answer = loop.create_future()
        self.transport, _ = await loop.create_connection(lambda: _LoadProtocol(self), self.spec.host, self.spec.port)
        challenge = await asyncio.wait_for(self.login_answer, 10)
        if not isinstance(challenge, p.Challenge):
            raise RuntimeError(f"expected CHALLENGE, got {challenge}")
        key = client_keys.load_private_key(self.spec.private_key_raw)
        login = client_keys.signed_login(key, account_id=self.spec.account_id, key_id=self.spec.key_id,
                                  nonce=challenge.nonce, next_event_seq=0, heartbeat_interval_ms=5000)
        self.login_answer = loop.create_future()
        self.transport.write(login.encode())
        answer = await asyncio.wait_for(self.login_answer, 10)
        if not isinstance(answer, p.LoginAccepted):
            raise RuntimeError(f"login refused: {answer}")
        self.window_commands = min(self.spec.window_commands, answer.commands_in_flight_max)
        self.min_send_commands = min(MIN_SEND_COMMANDS, self.window_commands)
        self.login_answer = None
        if self.buffer:
            self.on_data(b"")

    def _make_block(self) -> tuple[bytes, np.ndarray, np.ndarray]:
        """The next BLOCK_COMMANDS commands, encoded: (frames, byte offset of each command
        and the end, NEW_ORDER index of each command or -1)."""
        commands, order_index = self.workload.chunk(BLOCK_COMMANDS)
        out = bytearray(BLOCK_COMMANDS * p.NewOrder.LAYOUT.itemsize)  # the largest order-entry frame
        encoded, size = _codec.encode_commands(commands, out, 0)
        assert encoded == BLOCK_COMMANDS
        offsets = np.concatenate([[0], np.cumsum(_FRAME_SIZE_BY_KIND[commands["kind"]])])
        assert offsets[-1] == size
        last = int(order_index.max(initial=-1))
        if last >= len(self.sent_ns):
            self.sent_ns = np.concatenate([self.sent_ns, np.zeros(max(len(self.sent_ns), last + 1), np.int64)])
        return bytes(out[:size]), offsets, order_index

    def prepare(self, commands: int) -> None:
        """Make and encode ``commands`` (rounded up to whole blocks) now, so that sending them
        later costs no pause of the loop (a block takes ~3 ms to make here: acks arriving
        meanwhile would wait, and count as latency)."""
        while len(self.ready_blocks) * BLOCK_COMMANDS < commands:
            self.ready_blocks.append(self._make_block())

    def _refill(self) -> None:
        block = self.ready_blocks.popleft() if self.ready_blocks else self._make_block()
        self.block, self.block_offsets, self.block_order_index = block
        self.block_position = 0

    def _send(self, count: int) -> None:
        if self.block_position >= len(self.block_order_index):
            self._refill()
        begin = self.block_position
        end = min(begin + count, len(self.block_order_index))
        made = self.block_order_index[begin:end]
        self.sent_ns[made[made >= 0]] = time.perf_counter_ns()
        self.transport.write(self.block[self.block_offsets[begin]:self.block_offsets[end]])
        self.block_position = end
        self.result.sent += end - begin

    async def run(self) -> LoadResult:
        spec = self.spec
        await self.login()
        if spec.rate_per_s:  # what the run will send, made before it starts (5% spare)
            self.prepare(int(spec.rate_per_s * (spec.warmup_s + spec.seconds) * 1.05))
        start_ns = time.perf_counter_ns()
        self.measure_from_ns = start_ns + int(spec.warmup_s * 1e9)
        self.measure_to_ns = self.measure_from_ns + int(spec.seconds * 1e9)
        result = self.result
        while not self.lost.done():
            now_ns = time.perf_counter_ns()
            if now_ns >= self.measure_to_ns:
                break
            in_flight = result.sent - result.acked
            room = self.window_commands - in_flight
            if spec.rate_per_s:
                due = int((now_ns - start_ns) / 1e9 * spec.rate_per_s) - result.sent
                room = min(room, due)
                # what is due now, then a timer tick (about 1 ms): no busy loop of tiny writes
                while room > 0:
                    self._send(min(room, CHUNK_COMMANDS))
                    room -= CHUNK_COMMANDS
                await asyncio.sleep(RATE_TICK_S)
                continue
            if room >= self.min_send_commands:
                self._send(min(room, CHUNK_COMMANDS))
                await asyncio.sleep(0.0005 if self.transport.get_write_buffer_size() > 1 << 20 else 0)
                continue
            self.window_open.clear()
            try:
                await asyncio.wait_for(self.window_open.wait(), 0.05)
            except asyncio.TimeoutError:
                pass
        result.measured_s = spec.seconds
        deadline = time.monotonic() + 10
        while result.acked < result.sent and time.monotonic() < deadline and not self.lost.done():
            await asyncio.sleep(0.01)
        self.finished = True
        if result.acked < result.sent and not result.error:
            result.error = f"{result.sent - result.acked} commands without an ack after 10 s"
        if not self.lost.done():
            self.transport.write(p.Logout(p.SessionReason.CLIENT_LOGOUT).encode())
            self.transport.close()
        return result


async def _run(spec: LoadSpec) -> LoadResult:
    client = _LoadClient(spec)
    try:
        return await client.run()
    except Exception as error:  # reported to the parent, which fails the run
        client.result.error = f"{type(error).__name__}: {error}"
        return client.result


def run_load_client(spec: LoadSpec, start_barrier=None, results=None) -> LoadResult:
    """Run one client to the end (in its own process: uvloop); put the result on ``results``."""
    import uvloop

    if start_barrier is not None:
        start_barrier.wait()
    result = uvloop.run(_run(spec))
    if results is not None:
        results.put(result)
    return result

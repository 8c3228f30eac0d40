"""The matchcore binary protocol: message types, layouts, enums, and a pure-Python codec.

This module is the Python source of truth of the wire format that ``docs/protocol.md``
specifies (a test parses the document and checks its tables against this module). Every
frame is fixed-width and little-endian: a 4-byte header (``frame_size`` u16 = the whole
frame in bytes, header included; ``type`` u8; a reserved zero byte) then the body. Each
message type has exactly one size. Fields named ``reserved_*`` must be zero.

Layouts are numpy dtypes (``LAYOUTS[type]``) with explicit offsets and no hidden padding;
the ``struct`` formats of the pure-Python encoder are derived from them, so the two cannot
disagree. The Cython codec (``matchcore.protocol._codec``) is the fast path for order entry
and event output; ``matchcore.protocol.spec`` is its executable specification.
"""
from __future__ import annotations

import dataclasses
import hashlib
import struct
from enum import IntEnum, IntFlag
from typing import Any, ClassVar, Iterator

import numpy as np

from matchcore.core.codes import ALL_INSTRUMENTS, CommandKind, EventKind
from matchcore.errors import MatchcoreError

__all__ = [
    "PROTOCOL_VERSION", "HEADER_SIZE", "MAX_FRAME_SIZE", "NONCE_SIZE", "SIGNATURE_SIZE",
    "LOGIN_SIGNATURE_CONTEXT", "PUBLIC_KEY_SIZE", "ALL_INSTRUMENTS", "fingerprint",
    "MessageType", "SessionReason", "DecodeStatus", "Direction", "LoginFlags", "LOGIN_FLAGS_DEFINED",
    "SessionFlags",
    "Liquidity", "OrderState", "TransferState", "ProtocolError",
    "Message", "AddAsset", "AddAccount", "AddInstrument", "SetPriceBand", "SetFees",
    "HaltInstrument", "PauseInstrument", "ResumeInstrument", "Deposit", "Withdraw", "NewOrder", "Cancel", "Replace",
    "MassCancel", "Challenge", "Login", "LoginAccepted", "LoginRejected", "Heartbeat", "Logout",
    "SessionReject", "OrderStatusQuery", "OrderStatus", "EventMessage",
    "MdSubscribe", "MdUnsubscribe", "MdSnapshot", "MdLevel", "MdTrade", "MdBbo", "MdStatus",
    "BalancesQuery", "Balance", "OpenOrdersQuery", "OpenOrder", "InstrumentsQuery", "InstrumentInfo",
    "TransferQuery", "TransferStatus", "QueryDone", "MD_FRAME_SIZE", "MD_INCREMENT_TYPES", "QUERY_TYPES",
    "MESSAGE_CLASSES", "LAYOUTS", "FRAME_SIZES", "DIRECTIONS", "ORDER_ENTRY_TYPES", "ADMIN_TYPES",
    "CONTROL_TYPES", "CLIENT_TYPES", "SERVER_TYPES", "EVENT_FRAME_SIZE",
    "encode", "decode", "frame_type", "split_frames", "login_signed_bytes",
    "iter_messages",
]

#: Version a client names in LOGIN; the server refuses others with UNSUPPORTED_VERSION.
PROTOCOL_VERSION = 1
#: frame_size (u16) + type (u8) + reserved (u8).
HEADER_SIZE = 4
#: The largest frame the protocol allows, in bytes; a server may configure a lower limit
#: (it tells the client in CHALLENGE). Every message defined today is far below it.
MAX_FRAME_SIZE = 1024
#: Bytes of the login challenge (random, from the server).
NONCE_SIZE = 32
#: Bytes of an Ed25519 signature.
SIGNATURE_SIZE = 64
#: Domain separation: the login signature covers these 16 bytes, then LOGIN bytes 0-63.
LOGIN_SIGNATURE_CONTEXT = b"matchcore-login1"
assert len(LOGIN_SIGNATURE_CONTEXT) == 16
#: Bytes of a raw Ed25519 public key (what the server registers for a client).
PUBLIC_KEY_SIZE = 32


def fingerprint(public_key: bytes) -> str:
    """A short, safe-to-log name of a public key: the first 16 hex digits of its SHA-256."""
    return hashlib.sha256(public_key).hexdigest()[:16]


class MessageType(IntEnum):
    """The ``type`` byte. Commands reuse the numbers of ``CommandKind`` (1-63), events those of
    ``EventKind`` (64-127); session and query messages are 128-191. Never reused."""

    # client -> server, admin sessions only (reference data and transfers)
    ADD_ASSET = 1
    ADD_ACCOUNT = 2
    ADD_INSTRUMENT = 3
    SET_PRICE_BAND = 4
    SET_FEES = 5
    HALT_INSTRUMENT = 6
    RESUME_INSTRUMENT = 7
    DEPOSIT = 8
    WITHDRAW = 9
    PAUSE_INSTRUMENT = 14     # contract 2
    # client -> server, order entry (any logged-in session, for its own account)
    NEW_ORDER = 10
    CANCEL = 11
    REPLACE = 12
    MASS_CANCEL = 13
    # server -> client: engine events, stamped with the session's event sequence number
    EVENT_ACCEPTED = 64
    EVENT_REJECTED = 65
    EVENT_FILL = 66
    EVENT_CANCELED = 67
    EVENT_REPLACED = 68
    EVENT_TRANSFER_DONE = 69
    EVENT_TRANSFER_REJECTED = 70
    EVENT_COMMAND_DONE = 71
    EVENT_TRIGGERED = 72      # contract 2
    # session and queries
    CHALLENGE = 128           # server -> client, first frame on every connection
    LOGIN = 129               # client -> server
    LOGIN_ACCEPTED = 130      # server -> client
    LOGIN_REJECTED = 131      # server -> client, then the server closes
    HEARTBEAT = 132           # both ways
    LOGOUT = 133              # both ways, then the sender closes
    SESSION_REJECT = 134      # server -> client: one client message refused by the gateway
    ORDER_STATUS_QUERY = 135  # client -> server
    ORDER_STATUS = 136        # server -> client
    # market data (public; any logged-in session, market-data-only keys included)
    MD_SUBSCRIBE = 137        # client -> server
    MD_UNSUBSCRIBE = 138      # client -> server
    MD_SNAPSHOT = 139         # server -> client: a book at an md_seq, its levels follow
    MD_SNAPSHOT_LEVEL = 140   # server -> client
    MD_TRADE = 141            # server -> client
    MD_LEVEL = 142            # server -> client: a level's new shown quantity (0: gone)
    MD_BBO = 143              # server -> client
    MD_STATUS = 144           # server -> client
    # account and venue queries (answered from durable state)
    BALANCES_QUERY = 145      # client -> server
    BALANCE = 146             # server -> client
    OPEN_ORDERS_QUERY = 147   # client -> server
    OPEN_ORDER = 148          # server -> client
    INSTRUMENTS_QUERY = 149   # client -> server
    INSTRUMENT = 150          # server -> client
    TRANSFER_QUERY = 151      # client -> server
    TRANSFER_STATUS = 152     # server -> client
    QUERY_DONE = 153          # server -> client: ends the answer of a query


class SessionReason(IntEnum):
    """Why the gateway refused something: a login, one message, or the connection.

    One enum, explicit numbers, grouped in ranges by effect and ordered by precedence inside
    a range. A retired number is never reused. 1-19 framing (the connection is closed),
    20-39 login (LOGIN_REJECTED, then close), 40-59 one message (SESSION_REJECT, the session
    goes on), 60-79 end of session (LOGOUT). Numbers added later follow the older ones of
    their range, so inside a range the order of the checks is the protocol document's
    (3.1 for logins), not always the numbers'. On the wire a login that fails on its
    credentials (UNKNOWN_KEY, KEY_REVOKED, ACCOUNT_MISMATCH, STALE_CHALLENGE, BAD_SIGNATURE)
    is answered AUTH_FAILED only; the server's log keeps the exact reason.
    """

    NONE = 0
    # framing: sent in LOGOUT, then the connection is closed; other sessions are unaffected
    FRAME_TOO_LARGE = 1       # frame_size above the connection's maximum
    MALFORMED_FRAME = 2       # frame_size below the header or not the type's size; reserved bytes not zero
    UNKNOWN_MESSAGE_TYPE = 3  # a type byte the protocol does not define
    UNEXPECTED_MESSAGE = 4    # a defined type that is not allowed now or not in this direction
    # login
    LOGIN_TIMEOUT = 20
    UNSUPPORTED_VERSION = 21
    UNKNOWN_KEY = 22
    KEY_REVOKED = 23
    ACCOUNT_MISMATCH = 24     # the key does not belong to the account named in LOGIN
    STALE_CHALLENGE = 25      # the nonce in LOGIN is not the one this connection was given
    BAD_SIGNATURE = 26
    INVALID_HEARTBEAT_INTERVAL = 27
    INVALID_EVENT_SEQ = 28    # next_event_seq beyond the account's last event + 1
    TOO_MANY_SESSIONS = 29
    AUTH_FAILED = 30          # the one answer a client gets for UNKNOWN_KEY .. BAD_SIGNATURE (the log has which)
    LOGIN_THROTTLED = 31      # too many failed logins from this address; retry later
    UNSUPPORTED_LOGIN_FLAGS = 32  # a LoginFlags bit this version does not define
    UNAVAILABLE = 33          # the server cannot check logins now (its database is unreachable): retry later
    # one message refused; nothing reaches the engine and the session goes on
    NOT_AUTHORIZED = 40       # an admin message from a session without the admin right
    WRONG_ACCOUNT = 41        # account_id of an order-entry message is not the session's
    RATE_LIMITED = 42         # over the session's message rate (token bucket)
    BUSY = 43                 # the engine's input is full; retry later
    UNKNOWN_INSTRUMENT = 44   # MD_SUBSCRIBE / MD_UNSUBSCRIBE of an instrument that does not exist (or not subscribed)
    TOO_MANY_SUBSCRIPTIONS = 45  # MD_SUBSCRIBE beyond the session's subscription limit
    # end of session
    CLIENT_LOGOUT = 60
    IDLE_TIMEOUT = 61         # nothing received for the idle timeout (3 heartbeat intervals)
    SERVER_SHUTDOWN = 62
    SLOW_CONSUMER = 63        # the client does not read its events fast enough
    SESSION_KEY_REVOKED = 64  # the session's key was revoked (or changed) while it was open
    SESSION_AGE_EXCEEDED = 65  # the session reached the server's maximum age; log in again
    RATE_EXCEEDED = 66        # the session kept sending over its message rate (see RATE_LIMITED)


class DecodeStatus(IntEnum):
    """Why a call of the stream decoder stopped (``decode_client_stream`` and the codec)."""

    OK = 0           # every complete frame was consumed; at most a partial frame remains
    OUTPUT_FULL = 1  # the command output (or max_commands) is full; the next frame is not consumed
    CONTROL = 2      # a session or query frame sits at frame_offset; consumed; handle it, call again
    REFUSED = 3      # a command frame at frame_offset was refused (reason); consumed; reply, call again
    FATAL = 4        # the frame at frame_offset is bad (reason); not consumed; close the connection


class Direction(IntEnum):
    CLIENT_TO_SERVER = 1
    SERVER_TO_CLIENT = 2
    BOTH = 3


class LoginFlags(IntFlag):
    CANCEL_ON_DISCONNECT = 1  # cancel the account's resting orders when this connection drops


#: Every LoginFlags bit this version defines; a LOGIN with another bit set is refused.
LOGIN_FLAGS_DEFINED = int(LoginFlags.CANCEL_ON_DISCONNECT)


class SessionFlags(IntFlag):
    ADMIN = 1
    CANCEL_ON_DISCONNECT = 2


class Liquidity(IntEnum):
    """FILL only: the recipient's role in the trade (0 on every other event)."""

    NONE = 0
    TAKER = 1
    MAKER = 2


class TransferState(IntEnum):
    """TRANSFER_STATUS: what the server knows of a transfer id of an account."""

    DONE = 1        # the account's last transfer, done
    REJECTED = 2    # the account's last transfer, refused (reason)
    UNKNOWN = 3     # above the account's last transfer id: never applied
    SUPERSEDED = 4  # below the last one: its outcome is in the account's event stream


class OrderState(IntEnum):
    OPEN = 1      # resting on the book; open_quantity lots left
    NOT_OPEN = 2  # unknown, filled, canceled or rejected: the event stream tells which


class ProtocolError(MatchcoreError, ValueError):
    """A frame that cannot be decoded; ``reason`` is the SessionReason the server would send."""

    def __init__(self, reason: SessionReason, detail: str = "") -> None:
        super().__init__(f"{reason.name}: {detail}" if detail else reason.name)
        self.reason = reason


# ---------------------------------------------------------------------------- layouts

_HEADER_FIELDS = [("frame_size", "<u2"), ("type", "u1"), ("reserved_3", "u1")]

# numpy type code -> struct code, documented type name
_TYPE_NAMES = {"u1": "u8", "<u2": "u16", "<u4": "u32", "<u8": "u64", "<i8": "i64"}
_STRUCT_CODES = {"u1": "B", "<u2": "H", "<u4": "I", "<u8": "Q", "<i8": "q"}


def _layout(fields: list[tuple[str, Any]]) -> np.dtype:
    """A packed little-endian frame dtype: the header, then ``fields`` in order."""
    dtype = np.dtype(_HEADER_FIELDS + fields)
    for name in dtype.names:
        base, offset = dtype.fields[name][0], dtype.fields[name][1]
        alignment = base.base.itemsize
        assert offset % alignment == 0, (name, offset)  # natural alignment: no packing tricks
    assert dtype.itemsize % 8 == 0, dtype.itemsize
    return dtype


def _struct_of(dtype: np.dtype) -> struct.Struct:
    codes = []
    for name in dtype.names:
        field = dtype.fields[name][0]
        if field.subdtype is not None:
            codes.append(f"{field.itemsize}s")
        else:
            codes.append(_STRUCT_CODES[field.str if field.str != "|u1" else "u1"])
    fmt = "<" + "".join(codes)
    assert struct.calcsize(fmt) == dtype.itemsize
    return struct.Struct(fmt)


def _type_name(field: np.dtype) -> str:
    if field.subdtype is not None:
        return f"u8[{field.itemsize}]"
    return _TYPE_NAMES[field.str if field.str != "|u1" else "u1"]


# ---------------------------------------------------------------------------- messages


class Message:
    """Base of every message: a frozen dataclass whose fields are the layout's non-reserved
    body fields, in order. ``encode()`` gives the frame; ``decode(frame)`` the message."""

    __slots__ = ()
    TYPE: ClassVar[MessageType]
    DIRECTION: ClassVar[Direction]
    LAYOUT: ClassVar[np.dtype]
    NOTES: ClassVar[dict[str, str]]
    _STRUCT: ClassVar[struct.Struct]
    _PLAN: ClassVar[tuple[str | None, ...]]  # per struct slot: field name, or None = zero

    def frame_type(self) -> int:
        return int(self.TYPE)

    def encode(self) -> bytes:
        values = [0 if slot is None else getattr(self, slot) for slot in self._PLAN]
        values[0] = self.LAYOUT.itemsize
        values[1] = self.frame_type()
        try:
            return self._STRUCT.pack(*values)
        except struct.error as error:
            raise ValueError(f"{type(self).__name__}: a field is out of range: {error}") from None

    @classmethod
    def decode(cls, frame: bytes | bytearray | memoryview) -> "Message":
        """The message of one complete frame of this class; raises ``ProtocolError``."""
        frame = bytes(frame)
        if len(frame) != cls.LAYOUT.itemsize:
            raise ProtocolError(SessionReason.MALFORMED_FRAME,
                                f"{cls.__name__} is {cls.LAYOUT.itemsize} bytes, got {len(frame)}")
        values = cls._STRUCT.unpack(frame)
        if values[0] != cls.LAYOUT.itemsize:
            raise ProtocolError(SessionReason.MALFORMED_FRAME, "frame_size is not the type's size")
        cls._check_type(values[1])
        fields = cls._header_fields(values[1])
        for slot, value in zip(cls._PLAN[2:], values[2:]):
            if slot is not None:
                fields[slot] = value
            elif value != 0:  # reserved fields are integers, never byte arrays
                raise ProtocolError(SessionReason.MALFORMED_FRAME, "reserved bytes not zero")
        return cls(**fields)

    @classmethod
    def _check_type(cls, type_byte: int) -> None:
        if type_byte != cls.TYPE:
            raise ProtocolError(SessionReason.UNEXPECTED_MESSAGE, f"type {type_byte}")

    @classmethod
    def _header_fields(cls, type_byte: int) -> dict[str, int]:
        return {}


MESSAGE_CLASSES: dict[int, type[Message]] = {}
LAYOUTS: dict[int, np.dtype] = {}
FRAME_SIZES: dict[int, int] = {}
DIRECTIONS: dict[int, Direction] = {}


def _message(type_: MessageType | tuple[MessageType, ...], direction: Direction,
             fields: list[tuple[str, Any, str]]):
    """Class decorator: attach the layout (fields as (name, numpy type, note)) and register."""

    def register(cls):
        cls = dataclasses.dataclass(frozen=True, slots=True)(cls)
        layout = _layout([(name, kind) for name, kind, _ in fields])
        names = [f.name for f in dataclasses.fields(cls)]
        body = [name for name, _, _ in fields if not name.startswith("reserved_")]
        if cls.__name__ == "EventMessage":
            assert names == ["kind"] + body, (cls.__name__, names, body)
        elif cls.__name__ == "MdLevel":
            assert names == ["snapshot"] + body, (cls.__name__, names, body)
        else:
            assert names == body, (cls.__name__, names, body)
        cls.LAYOUT = layout
        cls.DIRECTION = direction
        cls.NOTES = {name: note for name, _, note in fields}
        cls._STRUCT = _struct_of(layout)
        cls._PLAN = (None, None) + tuple(None if name.startswith("reserved_") else name
                                         for name in layout.names[2:])
        types = type_ if isinstance(type_, tuple) else (type_,)
        if not isinstance(type_, tuple):
            cls.TYPE = type_
        for each in types:
            MESSAGE_CLASSES[int(each)] = cls
            LAYOUTS[int(each)] = layout
            FRAME_SIZES[int(each)] = layout.itemsize
            DIRECTIONS[int(each)] = direction
        return cls

    return register


C2S, S2C, BOTH = Direction.CLIENT_TO_SERVER, Direction.SERVER_TO_CLIENT, Direction.BOTH
U8, U16, U32, U64, I64 = "u1", "<u2", "<u4", "<u8", "<i8"
_REQUEST = "chosen by the client; echoed in the outcome event's client_id"

# ---- admin commands (client -> server, admin sessions only)


@_message(MessageType.ADD_ASSET, C2S, [
    ("asset_id", U16, "the new asset"),
    ("decimals", U8, "minor units per major unit, 0-18 (informative)"),
    ("reserved_7", U8, ""),
    ("request_id", U64, _REQUEST),
])
class AddAsset(Message):
    asset_id: int
    decimals: int
    request_id: int = 0


@_message(MessageType.ADD_ACCOUNT, C2S, [
    ("account_id", U32, "the new account"),
    ("request_id", U64, _REQUEST),
])
class AddAccount(Message):
    account_id: int
    request_id: int = 0


@_message(MessageType.ADD_INSTRUMENT, C2S, [
    ("instrument_id", U32, "the new instrument"),
    ("base_asset_id", U16, "asset bought and sold"),
    ("quote_asset_id", U16, "asset prices are in"),
    ("reserved_12", U32, ""),
    ("tick_size", I64, "price increment, ticks (> 0)"),
    ("lot_size", I64, "base minor units per lot (> 0)"),
    ("max_order_lots", I64, "largest order quantity, lots (> 0)"),
])
class AddInstrument(Message):
    instrument_id: int
    base_asset_id: int
    quote_asset_id: int
    tick_size: int
    lot_size: int
    max_order_lots: int


@_message(MessageType.SET_PRICE_BAND, C2S, [
    ("instrument_id", U32, ""),
    ("request_id", U64, _REQUEST),
    ("price_min", I64, "lowest accepted price, ticks"),
    ("price_max", I64, "highest accepted price, ticks"),
])
class SetPriceBand(Message):
    instrument_id: int
    request_id: int
    price_min: int
    price_max: int


@_message(MessageType.SET_FEES, C2S, [
    ("instrument_id", U32, ""),
    ("request_id", U64, _REQUEST),
    ("maker_bps", I64, "maker fee, basis points of the notional (0-10,000)"),
    ("taker_bps", I64, "taker fee, basis points of the notional (0-10,000)"),
])
class SetFees(Message):
    instrument_id: int
    request_id: int
    maker_bps: int
    taker_bps: int


@_message(MessageType.HALT_INSTRUMENT, C2S, [
    ("instrument_id", U32, "cancels every resting order (reason HALT), then refuses new ones"),
    ("request_id", U64, _REQUEST),
])
class HaltInstrument(Message):
    instrument_id: int
    request_id: int = 0


@_message(MessageType.PAUSE_INSTRUMENT, C2S, [
    ("instrument_id", U32, "keeps the book: refuses new orders and replaces, allows cancels"),
    ("request_id", U64, _REQUEST),
])
class PauseInstrument(Message):
    instrument_id: int
    request_id: int = 0


@_message(MessageType.RESUME_INSTRUMENT, C2S, [
    ("instrument_id", U32, "ends a halt or a pause"),
    ("request_id", U64, _REQUEST),
])
class ResumeInstrument(Message):
    instrument_id: int
    request_id: int = 0


_TRANSFER_FIELDS = [
    ("account_id", U32, "the account credited (DEPOSIT) or debited (WITHDRAW)"),
    ("asset_id", U16, ""),
    ("reserved_10", U16, ""),
    ("reserved_12", U32, ""),
    ("transfer_id", U64, "rises per account from 1; a repeat of the last returns its outcome"),
    ("amount", I64, "minor units of the asset (> 0)"),
]


@_message(MessageType.DEPOSIT, C2S, _TRANSFER_FIELDS)
class Deposit(Message):
    account_id: int
    asset_id: int
    transfer_id: int
    amount: int


@_message(MessageType.WITHDRAW, C2S, _TRANSFER_FIELDS)
class Withdraw(Message):
    account_id: int
    asset_id: int
    transfer_id: int
    amount: int


# ---- order entry (client -> server)

_ACCOUNT = "must be the session's account (else SESSION_REJECT WRONG_ACCOUNT)"


@_message(MessageType.NEW_ORDER, C2S, [
    ("side", U8, "Side"),
    ("order_type", U8, "OrderType"),
    ("time_in_force", U8, "TimeInForce"),
    ("stp_mode", U8, "StpMode (self-trade prevention)"),
    ("account_id", U32, _ACCOUNT),
    ("instrument_id", U32, ""),
    ("client_order_id", U64, "unique per account and rising; a resend gets DUPLICATE_CLIENT_ORDER_ID"),
    ("price", I64, "limit price, ticks; MARKET: worst acceptable price, 0 = none"),
    ("quantity", I64, "lots (> 0)"),
    ("max_notional", I64, "MARKET buy only: most quote minor units to spend, 0 = none"),
    ("flags", U8, "Flags bits (1 = POST_ONLY)"),
    ("reserved_49", U8, ""),
    ("reserved_50", U16, ""),
    ("reserved_52", U32, ""),
    ("expire_time_ns", I64, "GTD only: expiry, ns since the Unix epoch (after the gateway's stamp); else 0"),
    ("trigger_price", I64, "STOP_MARKET, STOP_LIMIT only: ticks; the last trade price reaching it triggers the order"),
    ("display_quantity", I64, "iceberg (GTC, GTD limit orders): lots shown at a time, the rest hidden; 0 = all"),
])
class NewOrder(Message):
    side: int
    order_type: int
    time_in_force: int
    stp_mode: int
    account_id: int
    instrument_id: int
    client_order_id: int
    price: int
    quantity: int
    max_notional: int = 0
    flags: int = 0
    expire_time_ns: int = 0
    trigger_price: int = 0
    display_quantity: int = 0


@_message(MessageType.CANCEL, C2S, [
    ("account_id", U32, _ACCOUNT),
    ("client_order_id", U64, "the order to cancel"),
])
class Cancel(Message):
    account_id: int
    client_order_id: int


@_message(MessageType.REPLACE, C2S, [
    ("account_id", U32, _ACCOUNT),
    ("client_order_id", U64, "the order to change (it keeps its ids)"),
    ("price", I64, "new price, ticks"),
    ("quantity", I64, "new open quantity, lots"),
])
class Replace(Message):
    account_id: int
    client_order_id: int
    price: int
    quantity: int


@_message(MessageType.MASS_CANCEL, C2S, [
    ("account_id", U32, _ACCOUNT),
    ("instrument_id", U32, "one instrument, or 0xFFFFFFFF = all of the account's"),
    ("reserved_12", U32, ""),
    ("request_id", U64, _REQUEST),
])
class MassCancel(Message):
    account_id: int
    instrument_id: int = ALL_INSTRUMENTS
    request_id: int = 0


# ---- session (both directions)


@_message(MessageType.CHALLENGE, S2C, [
    ("protocol_version", U16, "the server's protocol version"),
    ("reserved_6", U16, ""),
    ("login_timeout_ms", U32, "LOGIN must arrive within this, milliseconds"),
    ("frame_size_bytes_max", U32, "largest frame the server accepts, bytes"),
    ("server_time_ns", I64, "server clock, ns since the Unix epoch (informative)"),
    ("nonce", (U8, (NONCE_SIZE,)), "random; the LOGIN signature covers it"),
])
class Challenge(Message):
    protocol_version: int
    login_timeout_ms: int
    frame_size_bytes_max: int
    server_time_ns: int
    nonce: bytes


@_message(MessageType.LOGIN, C2S, [
    ("protocol_version", U16, "PROTOCOL_VERSION"),
    ("login_flags", U8, "LoginFlags bits (1 = CANCEL_ON_DISCONNECT)"),
    ("reserved_7", U8, ""),
    ("account_id", U32, "the account this session acts for"),
    ("heartbeat_interval_ms", U32, "requested heartbeat interval, milliseconds (100-60,000)"),
    ("key_id", U64, "the public key registered for the account"),
    ("next_event_seq", U64, "first event sequence number wanted; 0 = only new events"),
    ("nonce", (U8, (NONCE_SIZE,)), "copied from CHALLENGE"),
    ("signature", (U8, (SIGNATURE_SIZE,)), "Ed25519 over context + bytes 0-63 of this frame"),
])
class Login(Message):
    protocol_version: int
    login_flags: int
    account_id: int
    heartbeat_interval_ms: int
    key_id: int
    next_event_seq: int
    nonce: bytes
    signature: bytes


@_message(MessageType.LOGIN_ACCEPTED, S2C, [
    ("session_flags", U8, "SessionFlags bits (1 = ADMIN, 2 = CANCEL_ON_DISCONNECT)"),
    ("reserved_5", U8, ""),
    ("protocol_version", U16, ""),
    ("account_id", U32, ""),
    ("heartbeat_interval_ms", U32, "agreed interval, milliseconds"),
    ("session_id", U64, "this connection, for logs and support"),
    ("next_event_seq", U64, "the event sequence number of the first event frame to come"),
    ("last_event_seq", U64, "the account's last event at login; replay ends with it (0 = none)"),
    ("rate_messages_per_s", U32, "sustained message rate allowed"),
    ("burst_messages", U32, "token bucket depth, messages"),
    ("commands_in_flight_max", U32, "the credit window: commands sent and not yet answered, at most (3.4)"),
    ("reserved_52", U32, ""),
])
class LoginAccepted(Message):
    session_flags: int
    protocol_version: int
    account_id: int
    heartbeat_interval_ms: int
    session_id: int
    next_event_seq: int
    last_event_seq: int
    rate_messages_per_s: int
    burst_messages: int
    commands_in_flight_max: int


@_message(MessageType.LOGIN_REJECTED, S2C, [
    ("reason", U16, "SessionReason"),
    ("reserved_6", U16, ""),
])
class LoginRejected(Message):
    reason: int


@_message(MessageType.HEARTBEAT, BOTH, [
    ("reserved_4", U32, ""),
    ("last_event_seq", U64, "server: last event sequence number sent on this connection; client: last one processed"),
    ("timestamp_ns", I64, "sender's clock, ns since the Unix epoch (informative)"),
])
class Heartbeat(Message):
    last_event_seq: int = 0
    timestamp_ns: int = 0


@_message(MessageType.LOGOUT, BOTH, [
    ("reason", U16, "SessionReason"),
    ("reserved_6", U16, ""),
])
class Logout(Message):
    reason: int = SessionReason.CLIENT_LOGOUT


@_message(MessageType.SESSION_REJECT, S2C, [
    ("refused_type", U8, "MessageType of the refused message"),
    ("reserved_5", U8, ""),
    ("reason", U16, "SessionReason"),
    ("client_id", U64, "client_order_id, transfer_id or request_id of the refused message, else 0"),
])
class SessionReject(Message):
    refused_type: int
    reason: int
    client_id: int


@_message(MessageType.ORDER_STATUS_QUERY, C2S, [
    ("reserved_4", U32, ""),
    ("client_order_id", U64, "an order of the session's account"),
])
class OrderStatusQuery(Message):
    client_order_id: int


@_message(MessageType.ORDER_STATUS, S2C, [
    ("state", U8, "OrderState"),
    ("side", U8, "Side (0 if NOT_OPEN)"),
    ("reserved_6", U16, ""),
    ("instrument_id", U32, ""),
    ("reserved_12", U32, ""),
    ("client_order_id", U64, "as queried"),
    ("order_id", U64, "engine order id (0 if NOT_OPEN)"),
    ("price", I64, "ticks"),
    ("open_quantity", I64, "lots still resting"),
    ("as_of_event_seq", U64, "the state includes every event up to this one"),
])
class OrderStatus(Message):
    state: int
    side: int
    instrument_id: int
    client_order_id: int
    order_id: int
    price: int
    open_quantity: int
    as_of_event_seq: int


_EVENT_TYPES = tuple(MessageType(int(kind)) for kind in EventKind)


@_message(_EVENT_TYPES, S2C, [
    ("side", U8, "Side"),
    ("liquidity", U8, "FILL: Liquidity (1 = TAKER, 2 = MAKER) of the recipient; else 0"),
    ("reason", U16, "REJECTED, TRANSFER_REJECTED: RejectReason; CANCELED, REPLACED: CancelReason; else 0"),
    ("event_seq", U64, "the session's event sequence number: 1, 2, 3, ... per account, no gaps"),
    ("command_seq", U64, "global sequence number of the command that produced the event"),
    ("timestamp_ns", I64, "gateway time of that command, ns since the Unix epoch"),
    ("account_id", U32, "the recipient's account (FILL) or the account concerned"),
    ("instrument_id", U32, "instrument; transfers and ADD_ASSET: asset id"),
    ("order_id", U64, "engine order id (FILL: the recipient's order)"),
    ("client_id", U64, "client order id, transfer id or request id (FILL: the recipient's order)"),
    ("trade_id", U64, "FILL: the trade, rising"),
    ("price", I64, "ticks"),
    ("quantity", I64, "lots; transfers: amount, minor units; HALT, MASS_CANCEL done: orders canceled"),
    ("fee", I64, "FILL: the recipient's fee, quote minor units"),
    ("leaves", I64, "FILL: lots the recipient's order still has open after the fill; else 0"),
])
class EventMessage(Message):
    kind: int  # EventKind, carried in the header's type byte
    side: int
    liquidity: int
    reason: int
    event_seq: int
    command_seq: int
    timestamp_ns: int
    account_id: int
    instrument_id: int
    order_id: int
    client_id: int
    trade_id: int
    price: int
    quantity: int
    fee: int
    leaves: int = 0

    def frame_type(self) -> int:
        return int(self.kind)

    @classmethod
    def _check_type(cls, type_byte: int) -> None:
        if type_byte not in _EVENT_TYPE_SET:
            raise ProtocolError(SessionReason.UNEXPECTED_MESSAGE, f"type {type_byte}")

    @classmethod
    def _header_fields(cls, type_byte: int) -> dict[str, int]:
        return {"kind": type_byte}  # the event kind is the frame's type byte


_EVENT_TYPE_SET = frozenset(int(t) for t in _EVENT_TYPES)

# ---- market data (docs/protocol.md section 10). Every increment is 72 bytes, laid out alike:
# a u8 at 4, instrument_id at 8, a u32 at 12, md_seq, command_seq, timestamp_ns, four i64.

_MD_SEQ = "the instrument's market data sequence number: 1, 2, 3, ... per instrument, no gaps"
_MD_COMMAND = "global sequence number of the command that made it (the journal's)"
_MD_TIME = "gateway time of that command, ns since the Unix epoch"


@_message(MessageType.MD_SUBSCRIBE, C2S, [
    ("instrument_id", U32, "an instrument, or 0xFFFFFFFF = every instrument (now and added later)"),
    ("depth_levels", U32, "levels per side in the snapshot, 0 = the whole book"),
    ("reserved_12", U32, ""),
    ("request_id", U64, "echoed in MD_SNAPSHOT"),
])
class MdSubscribe(Message):
    instrument_id: int = ALL_INSTRUMENTS
    depth_levels: int = 0
    request_id: int = 0


@_message(MessageType.MD_UNSUBSCRIBE, C2S, [
    ("instrument_id", U32, "as subscribed (0xFFFFFFFF: end the every-instrument subscription)"),
    ("request_id", U64, "echoed in a SESSION_REJECT"),
])
class MdUnsubscribe(Message):
    instrument_id: int = ALL_INSTRUMENTS
    request_id: int = 0


@_message(MessageType.MD_SNAPSHOT, S2C, [
    ("state", U8, "InstrumentState"),
    ("reserved_5", U8, ""),
    ("reserved_6", U16, ""),
    ("instrument_id", U32, ""),
    ("bid_levels", U32, "MD_SNAPSHOT_LEVEL frames of bids that follow (best first), then ask_levels of asks"),
    ("md_seq", U64, "the book includes every increment up to this one; the next has md_seq + 1"),
    ("command_seq", U64, "the journal seq the book is at"),
    ("request_id", U64, "of the MD_SUBSCRIBE; 0 when the server re-sends a snapshot (conflation)"),
    ("band_min", I64, "ticks"),
    ("band_max", I64, "ticks"),
    ("maker_bps", I64, ""),
    ("taker_bps", I64, ""),
    ("ask_levels", U32, ""),
    ("depth_levels", U32, "as subscribed (0: whole book)"),
    ("last_price", I64, "the last trade's price, ticks; 0 before the first"),
])
class MdSnapshot(Message):
    state: int
    instrument_id: int
    bid_levels: int
    md_seq: int
    command_seq: int
    request_id: int
    band_min: int
    band_max: int
    maker_bps: int
    taker_bps: int
    ask_levels: int
    depth_levels: int
    last_price: int


@_message((MessageType.MD_LEVEL, MessageType.MD_SNAPSHOT_LEVEL), S2C, [
    ("side", U8, "Side"),
    ("reserved_5", U8, ""),
    ("reserved_6", U16, ""),
    ("instrument_id", U32, ""),
    ("order_count", U32, "orders on the level"),
    ("md_seq", U64, _MD_SEQ + " (MD_SNAPSHOT_LEVEL: the snapshot's)"),
    ("command_seq", U64, _MD_COMMAND),
    ("timestamp_ns", I64, _MD_TIME),
    ("price", I64, "ticks"),
    ("quantity", I64, "lots shown at the price now (an iceberg counts its shown part); 0 = the level is gone"),
    ("reserved_56", U64, ""),
    ("reserved_64", U64, ""),
])
class MdLevel(Message):
    snapshot: int  # 1: MD_SNAPSHOT_LEVEL, 0: MD_LEVEL (the header's type byte)
    side: int
    instrument_id: int
    order_count: int
    md_seq: int
    command_seq: int
    timestamp_ns: int
    price: int
    quantity: int

    def frame_type(self) -> int:
        return int(MessageType.MD_SNAPSHOT_LEVEL if self.snapshot else MessageType.MD_LEVEL)

    @classmethod
    def _check_type(cls, type_byte: int) -> None:
        if type_byte not in (MessageType.MD_LEVEL, MessageType.MD_SNAPSHOT_LEVEL):
            raise ProtocolError(SessionReason.UNEXPECTED_MESSAGE, f"type {type_byte}")

    @classmethod
    def _header_fields(cls, type_byte: int) -> dict[str, int]:
        return {"snapshot": int(type_byte == MessageType.MD_SNAPSHOT_LEVEL)}


@_message(MessageType.MD_TRADE, S2C, [
    ("aggressor_side", U8, "Side of the taker"),
    ("reserved_5", U8, ""),
    ("reserved_6", U16, ""),
    ("instrument_id", U32, ""),
    ("reserved_12", U32, ""),
    ("md_seq", U64, _MD_SEQ),
    ("command_seq", U64, _MD_COMMAND),
    ("timestamp_ns", I64, _MD_TIME),
    ("trade_id", U64, "rising; the trade_id of the two parties' FILL events"),
    ("price", I64, "ticks"),
    ("quantity", I64, "lots"),
    ("reserved_64", U64, ""),
])
class MdTrade(Message):
    aggressor_side: int
    instrument_id: int
    md_seq: int
    command_seq: int
    timestamp_ns: int
    trade_id: int
    price: int
    quantity: int


@_message(MessageType.MD_BBO, S2C, [
    ("reserved_4", U32, ""),
    ("instrument_id", U32, ""),
    ("reserved_12", U32, ""),
    ("md_seq", U64, _MD_SEQ),
    ("command_seq", U64, _MD_COMMAND),
    ("timestamp_ns", I64, _MD_TIME),
    ("bid_price", I64, "best bid, ticks (0 with bid_quantity 0: no bid)"),
    ("bid_quantity", I64, "lots shown at the best bid"),
    ("ask_price", I64, "best offer, ticks (0 with ask_quantity 0: no offer)"),
    ("ask_quantity", I64, "lots shown at the best offer"),
])
class MdBbo(Message):
    instrument_id: int
    md_seq: int
    command_seq: int
    timestamp_ns: int
    bid_price: int
    bid_quantity: int
    ask_price: int
    ask_quantity: int


@_message(MessageType.MD_STATUS, S2C, [
    ("state", U8, "InstrumentState after the change"),
    ("reserved_5", U8, ""),
    ("reserved_6", U16, ""),
    ("instrument_id", U32, ""),
    ("reserved_12", U32, ""),
    ("md_seq", U64, _MD_SEQ),
    ("command_seq", U64, _MD_COMMAND + " (ADD_INSTRUMENT, SET_PRICE_BAND, SET_FEES, HALT, PAUSE, RESUME)"),
    ("timestamp_ns", I64, _MD_TIME),
    ("band_min", I64, "ticks"),
    ("band_max", I64, "ticks"),
    ("maker_bps", I64, ""),
    ("taker_bps", I64, ""),
])
class MdStatus(Message):
    state: int
    instrument_id: int
    md_seq: int
    command_seq: int
    timestamp_ns: int
    band_min: int
    band_max: int
    maker_bps: int
    taker_bps: int


MD_FRAME_SIZE = 72
MD_INCREMENT_TYPES = frozenset(int(t) for t in (
    MessageType.MD_TRADE, MessageType.MD_LEVEL, MessageType.MD_BBO, MessageType.MD_STATUS))
for _type in MD_INCREMENT_TYPES:  # the codec writes them through one layout
    assert FRAME_SIZES[_type] == MD_FRAME_SIZE
    assert LAYOUTS[_type].fields["instrument_id"][1] == 8 and LAYOUTS[_type].fields["md_seq"][1] == 16
    assert LAYOUTS[_type].fields["command_seq"][1] == 24 and LAYOUTS[_type].fields["timestamp_ns"][1] == 32

# ---- account and venue queries (docs/protocol.md section 11)

_AS_OF = "the answer is the durable state after this journal seq"


@_message(MessageType.BALANCES_QUERY, C2S, [
    ("reserved_4", U32, ""),
    ("request_id", U64, "echoed in each BALANCE and the QUERY_DONE"),
])
class BalancesQuery(Message):
    request_id: int = 0


@_message(MessageType.BALANCE, S2C, [
    ("asset_id", U16, ""),
    ("reserved_6", U16, ""),
    ("account_id", U32, "the session's account"),
    ("reserved_12", U32, ""),
    ("request_id", U64, ""),
    ("as_of_seq", U64, _AS_OF),
    ("available", I64, "minor units free to hold or withdraw"),
    ("held", I64, "minor units reserved by open orders"),
])
class Balance(Message):
    asset_id: int
    account_id: int
    request_id: int
    as_of_seq: int
    available: int
    held: int


@_message(MessageType.OPEN_ORDERS_QUERY, C2S, [
    ("instrument_id", U32, "one instrument, or 0xFFFFFFFF = all"),
    ("request_id", U64, "echoed in each OPEN_ORDER and the QUERY_DONE"),
    ("after_order_id", U64, "the page starts after this order id (0: from the first)"),
    ("max_orders", U32, "orders in the page, 1 to the server's page limit (larger: the limit)"),
    ("reserved_28", U32, ""),
])
class OpenOrdersQuery(Message):
    instrument_id: int = ALL_INSTRUMENTS
    request_id: int = 0
    after_order_id: int = 0
    max_orders: int = 100


@_message(MessageType.OPEN_ORDER, S2C, [
    ("side", U8, "Side"),
    ("order_type", U8, "OrderType (an untriggered stop: STOP_MARKET or STOP_LIMIT)"),
    ("time_in_force", U8, "TimeInForce"),
    ("reserved_7", U8, ""),
    ("instrument_id", U32, ""),
    ("reserved_12", U32, ""),
    ("request_id", U64, ""),
    ("order_id", U64, "ascending within an answer"),
    ("client_order_id", U64, ""),
    ("price", I64, "ticks"),
    ("open_quantity", I64, "lots open"),
    ("shown_quantity", I64, "lots on the book now (an iceberg's peak; 0: an untriggered stop)"),
    ("trigger_price", I64, "an untriggered stop's trigger, ticks; else 0"),
    ("expire_time_ns", I64, "GTD: expiry; else 0"),
    ("display_quantity", I64, "an iceberg's peak size; else 0"),
])
class OpenOrder(Message):
    side: int
    order_type: int
    time_in_force: int
    instrument_id: int
    request_id: int
    order_id: int
    client_order_id: int
    price: int
    open_quantity: int
    shown_quantity: int
    trigger_price: int
    expire_time_ns: int
    display_quantity: int


@_message(MessageType.INSTRUMENTS_QUERY, C2S, [
    ("reserved_4", U32, ""),
    ("request_id", U64, "echoed in each INSTRUMENT and the QUERY_DONE"),
])
class InstrumentsQuery(Message):
    request_id: int = 0


@_message(MessageType.INSTRUMENT, S2C, [
    ("state", U8, "InstrumentState"),
    ("reserved_5", U8, ""),
    ("base_asset_id", U16, ""),
    ("instrument_id", U32, ""),
    ("quote_asset_id", U16, ""),
    ("reserved_14", U16, ""),
    ("request_id", U64, ""),
    ("tick_size", I64, "ticks: prices are multiples of it"),
    ("lot_size", I64, "base minor units per lot"),
    ("max_order_lots", I64, ""),
    ("band_min", I64, "ticks"),
    ("band_max", I64, "ticks"),
    ("maker_bps", I64, ""),
    ("taker_bps", I64, ""),
    ("last_price", I64, "ticks; 0 before the first trade"),
])
class InstrumentInfo(Message):
    state: int
    base_asset_id: int
    instrument_id: int
    quote_asset_id: int
    request_id: int
    tick_size: int
    lot_size: int
    max_order_lots: int
    band_min: int
    band_max: int
    maker_bps: int
    taker_bps: int
    last_price: int


@_message(MessageType.TRANSFER_QUERY, C2S, [
    ("account_id", U32, "the session's account (an admin session: any)"),
    ("transfer_id", U64, ""),
    ("request_id", U64, "echoed in TRANSFER_STATUS"),
])
class TransferQuery(Message):
    account_id: int
    transfer_id: int
    request_id: int = 0


@_message(MessageType.TRANSFER_STATUS, S2C, [
    ("state", U8, "TransferState"),
    ("kind", U8, "DONE, REJECTED: CommandKind (8 DEPOSIT, 9 WITHDRAW); else 0"),
    ("reason", U16, "REJECTED: RejectReason"),
    ("account_id", U32, ""),
    ("asset_id", U16, ""),
    ("reserved_14", U16, ""),
    ("request_id", U64, ""),
    ("transfer_id", U64, "as queried"),
    ("amount", I64, "DONE, REJECTED: minor units"),
    ("as_of_seq", U64, _AS_OF),
])
class TransferStatus(Message):
    state: int
    kind: int
    reason: int
    account_id: int
    asset_id: int
    request_id: int
    transfer_id: int
    amount: int
    as_of_seq: int


@_message(MessageType.QUERY_DONE, S2C, [
    ("query_type", U8, "MessageType of the query answered"),
    ("reserved_5", U8, ""),
    ("reserved_6", U16, ""),
    ("count", U32, "frames of the answer before this one"),
    ("reserved_12", U32, ""),
    ("request_id", U64, ""),
    ("as_of_seq", U64, _AS_OF),
    ("next_after_id", U64, "OPEN_ORDERS_QUERY: ask again with after_order_id = this for the next page; 0 = no more"),
])
class QueryDone(Message):
    query_type: int
    count: int
    request_id: int
    as_of_seq: int
    next_after_id: int = 0


QUERY_TYPES = frozenset(int(t) for t in (
    MessageType.BALANCES_QUERY, MessageType.OPEN_ORDERS_QUERY, MessageType.INSTRUMENTS_QUERY,
    MessageType.TRANSFER_QUERY))
EVENT_FRAME_SIZE = EventMessage.LAYOUT.itemsize

ADMIN_TYPES = frozenset(int(t) for t in (
    MessageType.ADD_ASSET, MessageType.ADD_ACCOUNT, MessageType.ADD_INSTRUMENT,
    MessageType.SET_PRICE_BAND, MessageType.SET_FEES, MessageType.HALT_INSTRUMENT,
    MessageType.RESUME_INSTRUMENT, MessageType.DEPOSIT, MessageType.WITHDRAW,
    MessageType.PAUSE_INSTRUMENT))
ORDER_ENTRY_TYPES = frozenset(int(t) for t in (
    MessageType.NEW_ORDER, MessageType.CANCEL, MessageType.REPLACE, MessageType.MASS_CANCEL))
#: Client frames the Python session layer handles (the codec hands them back as CONTROL).
CONTROL_TYPES = frozenset(int(t) for t in (
    MessageType.LOGIN, MessageType.HEARTBEAT, MessageType.LOGOUT, MessageType.ORDER_STATUS_QUERY,
    MessageType.MD_SUBSCRIBE, MessageType.MD_UNSUBSCRIBE)) | QUERY_TYPES
CLIENT_TYPES = frozenset(t for t, d in DIRECTIONS.items() if d in (C2S, BOTH))
SERVER_TYPES = frozenset(t for t, d in DIRECTIONS.items() if d in (S2C, BOTH))
assert CLIENT_TYPES == ADMIN_TYPES | ORDER_ENTRY_TYPES | CONTROL_TYPES
assert all(int(t) == int(CommandKind[MessageType(t).name]) for t in ADMIN_TYPES | ORDER_ENTRY_TYPES)
assert all(size <= MAX_FRAME_SIZE for size in FRAME_SIZES.values())


# ---------------------------------------------------------------------------- frames


def encode(message: Message) -> bytes:
    """The frame of ``message``."""
    return message.encode()


def frame_type(frame: bytes | bytearray | memoryview) -> int:
    return frame[2]


def decode(frame: bytes | bytearray | memoryview) -> Message:
    """The message of one complete frame (any direction). Raises ``ProtocolError``."""
    if len(frame) < HEADER_SIZE:
        raise ProtocolError(SessionReason.MALFORMED_FRAME, "shorter than the header")
    cls = MESSAGE_CLASSES.get(frame[2])
    if cls is None:
        raise ProtocolError(SessionReason.UNKNOWN_MESSAGE_TYPE, f"type {frame[2]}")
    return cls.decode(frame)


def split_frames(buffer: bytes | bytearray | memoryview,
                 frame_size_bytes_max: int = MAX_FRAME_SIZE) -> tuple[list[bytes], int]:
    """Complete frames at the start of ``buffer`` and the bytes they take (framing only)."""
    frames, offset = [], 0
    view = memoryview(buffer)
    while len(view) - offset >= 2:
        size = view[offset] | (view[offset + 1] << 8)
        if size > frame_size_bytes_max:
            raise ProtocolError(SessionReason.FRAME_TOO_LARGE, f"{size} bytes")
        if size < HEADER_SIZE:
            raise ProtocolError(SessionReason.MALFORMED_FRAME, "frame_size below the header")
        if len(view) - offset < size:
            break
        frames.append(bytes(view[offset:offset + size]))
        offset += size
    return frames, offset


def login_signed_bytes(login_frame: bytes) -> bytes:
    """What the LOGIN signature covers: the 16-byte context, then frame bytes 0-63."""
    return LOGIN_SIGNATURE_CONTEXT + bytes(login_frame[:64])


def iter_messages(buffer: bytes | bytearray | memoryview) -> Iterator[Message]:
    """Every complete frame of ``buffer`` decoded (any direction); raises ``ProtocolError``."""
    frames, _ = split_frames(buffer)
    for frame in frames:
        yield decode(frame)

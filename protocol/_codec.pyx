# cython: language_level=3
"""matchcore.protocol._codec: client frames -> command records, event records -> event frames.

The hot path of the gateway. ``CommandDecoder.decode`` walks a receive buffer that may
hold many frames and a partial last one, validates each frame, and writes the order-entry
and admin commands straight into a preallocated array of ``COMMAND_DTYPE`` records: no
Python object per message. It stops (with a typed status, see ``protocol.DecodeStatus``)
at anything the Python session layer must see: a session frame, a refused command, or a bad
frame. ``encode_events`` writes ``EVENT_DTYPE`` records as event frames into a preallocated
output buffer, numbering them with the session's event sequence numbers.

``protocol.decode_client_stream`` is the executable specification of ``decode``; the
frame sizes, type classes and reserved byte ranges are read from ``protocol`` at import,
so the two share one table. Wire fields are little-endian; so is every host matchcore
supports (checked at import), so loads are plain unaligned copies.
"""
import sys

import numpy as np

from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy, memset
from records cimport (
    BOOK_LEVEL, BOOK_STATUS, BOOK_TOP, BookChange,
    CMD_ADD_ACCOUNT, CMD_ADD_ASSET, CMD_ADD_INSTRUMENT, CMD_CANCEL, CMD_DEPOSIT, CMD_HALT_INSTRUMENT,
    CMD_MASS_CANCEL, CMD_NEW_ORDER, CMD_PAUSE_INSTRUMENT, CMD_REPLACE, CMD_RESUME_INSTRUMENT, CMD_SET_FEES, CMD_SET_PRICE_BAND,
    CMD_WITHDRAW, EV_FILL, SIDE_BUY, SIDE_SELL, Command, Event,
)

from matchcore.core.records import BOOK_CHANGE_DTYPE, COMMAND_DTYPE, EVENT_DTYPE
from matchcore.protocol import messages as _protocol

if sys.byteorder != "little":
    raise ImportError("matchcore.protocol._codec assumes a little-endian host")

# Numbers repeat protocol.DecodeStatus and protocol.SessionReason; codec_codes() exports them
# and a test proves they agree.
cdef enum:
    ST_OK = 0
    ST_OUTPUT_FULL = 1
    ST_CONTROL = 2
    ST_REFUSED = 3
    ST_FATAL = 4

cdef enum:
    R_NONE = 0
    R_FRAME_TOO_LARGE = 1
    R_MALFORMED_FRAME = 2
    R_UNKNOWN_MESSAGE_TYPE = 3
    R_UNEXPECTED_MESSAGE = 4
    R_NOT_AUTHORIZED = 40
    R_WRONG_ACCOUNT = 41

# How a type byte from a client is handled.
cdef enum:
    CLASS_UNKNOWN = 0
    CLASS_ADMIN = 1        # a command; admin sessions only
    CLASS_ORDER_ENTRY = 2  # a command for the session's own account
    CLASS_CONTROL = 3      # session and query frames: handed to the Python layer
    CLASS_SERVER_ONLY = 4  # defined, but never sent by a client

cdef enum:
    HEADER_SIZE = 4
    RESERVED_SPANS_MAX = 4
    EVENT_FRAME_SIZE = 96
    SESSION_REJECT_SIZE = 16
    TYPE_HEARTBEAT = 132
    TYPE_SESSION_REJECT = 134

# Type tables, filled once from protocol.py at import (below).
cdef uint16_t _frame_size[256]
cdef uint8_t _type_class[256]
cdef uint8_t _account_offset[256]           # order entry: offset of account_id
cdef uint8_t _client_id_offset[256]         # the id a SESSION_REJECT echoes (0: none)
cdef uint8_t _client_id_width[256]
cdef uint8_t _reserved_count[256]           # body reserved spans (the header byte is separate)
cdef uint8_t _reserved_offset[256][RESERVED_SPANS_MAX]
cdef uint8_t _reserved_length[256][RESERVED_SPANS_MAX]


cdef void _tables_fill() except *:
    memset(_frame_size, 0, sizeof(_frame_size))
    memset(_type_class, 0, sizeof(_type_class))
    memset(_account_offset, 0, sizeof(_account_offset))
    memset(_client_id_offset, 0, sizeof(_client_id_offset))
    memset(_client_id_width, 0, sizeof(_client_id_width))
    memset(_reserved_count, 0, sizeof(_reserved_count))
    cdef int type_byte, count
    if (_protocol.MessageType.HEARTBEAT != TYPE_HEARTBEAT or _protocol.MessageType.SESSION_REJECT != TYPE_SESSION_REJECT
            or _protocol.FRAME_SIZES[TYPE_SESSION_REJECT] != SESSION_REJECT_SIZE):
        raise AssertionError("the codec's HEARTBEAT/SESSION_REJECT constants disagree with the protocol")
    for type_byte, layout in _protocol.LAYOUTS.items():
        _frame_size[type_byte] = layout.itemsize
        for name in ("client_order_id", "transfer_id", "request_id"):
            if name in layout.names:
                _client_id_offset[type_byte] = layout.fields[name][1]
                _client_id_width[type_byte] = layout.fields[name][0].itemsize
                break
        if type_byte in _protocol.ADMIN_TYPES:
            _type_class[type_byte] = CLASS_ADMIN
        elif type_byte in _protocol.ORDER_ENTRY_TYPES:
            _type_class[type_byte] = CLASS_ORDER_ENTRY
            _account_offset[type_byte] = layout.fields["account_id"][1]
        elif type_byte in _protocol.CONTROL_TYPES:
            _type_class[type_byte] = CLASS_CONTROL
        else:
            _type_class[type_byte] = CLASS_SERVER_ONLY
        count = 0
        for name in layout.names:
            if name.startswith("reserved_") and name != "reserved_3":
                if count >= RESERVED_SPANS_MAX:
                    raise AssertionError(f"type {type_byte}: too many reserved fields")
                _reserved_offset[type_byte][count] = layout.fields[name][1]
                _reserved_length[type_byte][count] = layout.fields[name][0].itemsize
                count += 1
        _reserved_count[type_byte] = count


_tables_fill()


# ---------------------------------------------------------------------------- loads, stores

cdef inline uint16_t _u16(const uint8_t* p) noexcept nogil:
    cdef uint16_t value
    memcpy(&value, p, 2)
    return value

cdef inline uint32_t _u32(const uint8_t* p) noexcept nogil:
    cdef uint32_t value
    memcpy(&value, p, 4)
    return value

cdef inline uint64_t _u64(const uint8_t* p) noexcept nogil:
    cdef uint64_t value
    memcpy(&value, p, 8)
    return value

cdef inline int64_t _i64(const uint8_t* p) noexcept nogil:
    cdef int64_t value
    memcpy(&value, p, 8)
    return value

cdef inline void _put16(uint8_t* p, uint16_t value) noexcept nogil:
    memcpy(p, &value, 2)

cdef inline void _put32(uint8_t* p, uint32_t value) noexcept nogil:
    memcpy(p, &value, 4)

cdef inline void _put64(uint8_t* p, uint64_t value) noexcept nogil:
    memcpy(p, &value, 8)


# ---------------------------------------------------------------------------- decoding

ctypedef struct DecodeState:
    Py_ssize_t consumed_bytes
    Py_ssize_t commands_written
    # session mode (``replies`` given): frames handled inside the call
    Py_ssize_t frames_handled   # commands + heartbeats + refusals: each took one of max_frames
    Py_ssize_t heartbeats
    Py_ssize_t refused_not_authorized
    Py_ssize_t refused_wrong_account
    Py_ssize_t replies_bytes    # SESSION_REJECT frames written into replies
    Py_ssize_t frame_offset     # CONTROL, REFUSED, FATAL: the frame concerned; else -1
    int status
    int reason
    int frame_type              # its type byte; -1 if not known


cdef inline bint _reserved_nonzero(const uint8_t* frame, uint8_t type_byte) noexcept nogil:
    cdef uint8_t span, index, bits = 0
    for span in range(_reserved_count[type_byte]):
        for index in range(_reserved_length[type_byte][span]):
            bits |= frame[_reserved_offset[type_byte][span] + index]
    return bits != 0


cdef void _command_write(const uint8_t* p, uint8_t type_byte, uint32_t session_account,
                         Command* c) noexcept nogil:
    # Field offsets are those of docs/protocol.md; the differential tests against
    # protocol.message_to_command prove them.
    memset(c, 0, sizeof(Command))
    c.kind = type_byte
    if type_byte == CMD_NEW_ORDER:
        c.side = p[4]
        c.order_type = p[5]
        c.time_in_force = p[6]
        c.stp_mode = p[7]
        c.account_id = session_account
        c.instrument_id = _u32(p + 12)
        c.client_id = _u64(p + 16)
        c.price = _i64(p + 24)
        c.quantity = _i64(p + 32)
        c.limit = _i64(p + 40)
        c.flags = p[48]
        c.expire_time_ns = _i64(p + 56)
        c.trigger_price = _i64(p + 64)
        c.display_quantity = _i64(p + 72)
    elif type_byte == CMD_CANCEL:
        c.account_id = session_account
        c.client_id = _u64(p + 8)
    elif type_byte == CMD_REPLACE:
        c.account_id = session_account
        c.client_id = _u64(p + 8)
        c.price = _i64(p + 16)
        c.quantity = _i64(p + 24)
    elif type_byte == CMD_MASS_CANCEL:
        c.account_id = session_account
        c.instrument_id = _u32(p + 8)
        c.client_id = _u64(p + 16)
    elif type_byte == CMD_ADD_ASSET:
        c.asset_id = _u16(p + 4)
        c.quantity = p[6]
        c.client_id = _u64(p + 8)
    elif type_byte == CMD_ADD_ACCOUNT:
        c.account_id = _u32(p + 4)
        c.client_id = _u64(p + 8)
    elif type_byte == CMD_ADD_INSTRUMENT:
        c.instrument_id = _u32(p + 4)
        c.asset_id = _u16(p + 8)
        c.client_id = _u16(p + 10)
        c.price = _i64(p + 16)
        c.quantity = _i64(p + 24)
        c.limit = _i64(p + 32)
    elif type_byte == CMD_SET_PRICE_BAND or type_byte == CMD_SET_FEES:  # (min, max) or (maker, taker)
        c.instrument_id = _u32(p + 4)
        c.client_id = _u64(p + 8)
        c.price = _i64(p + 16)
        if type_byte == CMD_SET_PRICE_BAND:
            c.limit = _i64(p + 24)
        else:
            c.quantity = _i64(p + 24)
    elif (type_byte == CMD_HALT_INSTRUMENT or type_byte == CMD_RESUME_INSTRUMENT
          or type_byte == CMD_PAUSE_INSTRUMENT):
        c.instrument_id = _u32(p + 4)
        c.client_id = _u64(p + 8)
    elif type_byte == CMD_DEPOSIT or type_byte == CMD_WITHDRAW:
        c.account_id = _u32(p + 4)
        c.asset_id = _u16(p + 8)
        c.client_id = _u64(p + 16)
        c.quantity = _i64(p + 24)


cdef inline void _stop(DecodeState* state, Py_ssize_t offset, int status, int reason,
                       Py_ssize_t frame_offset, int frame_type) noexcept nogil:
    state.consumed_bytes = offset
    state.status = status
    state.reason = reason
    state.frame_offset = frame_offset
    state.frame_type = frame_type


cdef inline void _reject_write(uint8_t* out, const uint8_t* frame, uint8_t type_byte,
                               uint16_t reason) noexcept nogil:
    # SESSION_REJECT (docs/protocol.md): size, type, 0, refused_type, 0, reason, client_id
    cdef uint64_t client_id = 0
    cdef uint8_t width = _client_id_width[type_byte]
    if width == 8:
        client_id = _u64(frame + _client_id_offset[type_byte])
    elif width == 4:
        client_id = _u32(frame + _client_id_offset[type_byte])
    elif width == 2:
        client_id = _u16(frame + _client_id_offset[type_byte])
    memset(out, 0, SESSION_REJECT_SIZE)
    _put16(out, SESSION_REJECT_SIZE)
    out[2] = TYPE_SESSION_REJECT
    out[4] = type_byte
    _put16(out + 6, reason)
    _put64(out + 8, client_id)


cdef inline bint _answered_here(const uint8_t* p, uint8_t type_byte, int reason, uint8_t* replies,
                                Py_ssize_t replies_capacity, DecodeState* state) noexcept nogil:
    """Session mode: a refused frame answered with its SESSION_REJECT right here (True), when
    there is room for it; else the caller stops with REFUSED as outside session mode."""
    if replies == NULL or state.replies_bytes + SESSION_REJECT_SIZE > replies_capacity:
        return False
    _reject_write(replies + state.replies_bytes, p, type_byte, <uint16_t>reason)
    state.replies_bytes += SESSION_REJECT_SIZE
    if reason == R_NOT_AUTHORIZED:
        state.refused_not_authorized += 1
    else:
        state.refused_wrong_account += 1
    return True


cdef inline Py_ssize_t _command_limit(Py_ssize_t capacity, Py_ssize_t frames_max,
                                     Py_ssize_t extra) noexcept nogil:
    """Commands that may still be written: the output's room, and in session mode the frames
    (tokens) left after ``extra`` heartbeats and refusals."""
    if frames_max < 0 or capacity <= frames_max - extra:
        return capacity
    return frames_max - extra


cdef void _frames_decode(const uint8_t* data, Py_ssize_t length, Command* out,
                         Py_ssize_t capacity, uint32_t session_account, bint admin, bint order_entry,
                         Py_ssize_t frame_size_bytes_max, uint64_t first_seq, int64_t timestamp_ns,
                         Py_ssize_t frames_max, uint8_t* replies, Py_ssize_t replies_capacity,
                         DecodeState* state) noexcept nogil:
    # A straight run of checks per frame, each as soon as its bytes are there; the order is
    # protocol.decode_client_stream's. Session mode (replies != NULL): every frame handled
    # counts against frames_max (the session's tokens), HEARTBEATs are consumed here, and
    # refused frames are answered here, so a flood of either never leaves this loop.
    cdef Py_ssize_t offset = 0, available, size
    cdef Py_ssize_t written = 0
    # Session mode: frames handled = written + extra (heartbeats, refusals). The command path
    # checks one bound, command_limit = min(capacity, frames_max - extra), kept up to date
    # where extra grows, so order entry pays nothing for the mode.
    cdef Py_ssize_t extra = 0
    cdef Py_ssize_t command_limit = capacity
    if 0 <= frames_max < command_limit:
        command_limit = frames_max
    cdef const uint8_t* p
    cdef uint8_t type_byte, type_class
    cdef Command* c
    state.commands_written = 0
    state.frames_handled = 0
    state.heartbeats = 0
    state.refused_not_authorized = 0
    state.refused_wrong_account = 0
    state.replies_bytes = 0
    while length - offset >= 2:
        p = data + offset
        available = length - offset
        size = _u16(p)
        if size > frame_size_bytes_max:
            _stop(state, offset, ST_FATAL, R_FRAME_TOO_LARGE, offset, p[2] if available >= 3 else -1)
            break
        if size < HEADER_SIZE:
            _stop(state, offset, ST_FATAL, R_MALFORMED_FRAME, offset, p[2] if available >= 3 else -1)
            break
        if available < 3:
            _stop(state, offset, ST_OK, R_NONE, -1, -1)
            break
        type_byte = p[2]
        type_class = _type_class[type_byte]
        if type_class == CLASS_UNKNOWN:
            _stop(state, offset, ST_FATAL, R_UNKNOWN_MESSAGE_TYPE, offset, type_byte)
            break
        if type_class == CLASS_SERVER_ONLY:
            _stop(state, offset, ST_FATAL, R_UNEXPECTED_MESSAGE, offset, type_byte)
            break
        if size != _frame_size[type_byte]:
            _stop(state, offset, ST_FATAL, R_MALFORMED_FRAME, offset, type_byte)
            break
        if available >= HEADER_SIZE and p[3] != 0:
            _stop(state, offset, ST_FATAL, R_MALFORMED_FRAME, offset, type_byte)
            break
        if available < size:
            _stop(state, offset, ST_OK, R_NONE, -1, -1)
            break
        if _reserved_nonzero(p, type_byte):
            _stop(state, offset, ST_FATAL, R_MALFORMED_FRAME, offset, type_byte)
            break
        if type_class == CLASS_CONTROL:
            if written + extra == frames_max:  # never true outside session mode (frames_max -1)
                _stop(state, offset, ST_OUTPUT_FULL, R_NONE, -1, -1)
                break
            if replies != NULL and type_byte == TYPE_HEARTBEAT:
                state.heartbeats += 1
                extra += 1
                command_limit = _command_limit(capacity, frames_max, extra)
                offset += size
                continue
            _stop(state, offset + size, ST_CONTROL, R_NONE, offset, type_byte)
            break
        if written >= command_limit:  # the output is full, or (session mode) the tokens are used
            _stop(state, offset, ST_OUTPUT_FULL, R_NONE, -1, -1)
            break
        # admin frames need the admin right, order entry the order-entry right (a
        # market-data-only key has not)
        if (type_class == CLASS_ADMIN and not admin) or (type_class == CLASS_ORDER_ENTRY and not order_entry):
            if _answered_here(p, type_byte, R_NOT_AUTHORIZED, replies, replies_capacity, state):
                extra += 1
                command_limit = _command_limit(capacity, frames_max, extra)
                offset += size
                continue
            _stop(state, offset + size, ST_REFUSED, R_NOT_AUTHORIZED, offset, type_byte)
            break
        if type_class == CLASS_ORDER_ENTRY and _u32(p + _account_offset[type_byte]) != session_account:
            if _answered_here(p, type_byte, R_WRONG_ACCOUNT, replies, replies_capacity, state):
                extra += 1
                command_limit = _command_limit(capacity, frames_max, extra)
                offset += size
                continue
            _stop(state, offset + size, ST_REFUSED, R_WRONG_ACCOUNT, offset, type_byte)
            break
        c = out + written
        _command_write(p, type_byte, session_account, c)
        c.seq = first_seq + <uint64_t>written if first_seq != 0 else 0
        c.timestamp_ns = timestamp_ns
        written += 1
        offset += size
    else:
        _stop(state, offset, ST_OK, R_NONE, -1, -1)
    state.commands_written = written
    state.frames_handled = written + extra


cdef object _records_check(object records, object dtype, str what, bint writable):
    if not isinstance(records, np.ndarray) or records.dtype != dtype or records.ndim != 1:
        raise TypeError(f"{what} must be a 1-D numpy array of {what.upper()}_DTYPE records")
    if not records.flags.c_contiguous:
        raise ValueError(f"{what} must be C-contiguous")
    if writable and not records.flags.writeable:
        raise ValueError(f"{what} must be writable")
    return records.view(np.uint8)


cdef class CommandDecoder:
    """Decodes one logged-in session's client frames into command records.

    ``account_id`` is the session's: every order-entry command is written with it, and an
    order-entry frame naming another account is refused (WRONG_ACCOUNT). Admin frames are
    refused (NOT_AUTHORIZED) unless ``admin``, order-entry frames unless ``order_entry`` (a
    market-data-only key). One decoder per connection, made at login.
    After each ``decode`` call the attributes below describe where and why it stopped.
    """

    cdef readonly uint32_t account_id
    cdef readonly bint admin
    cdef readonly bint order_entry
    cdef readonly Py_ssize_t frame_size_bytes_max
    cdef DecodeState _state

    def __cinit__(self, uint32_t account_id, bint admin=False,
                  Py_ssize_t frame_size_bytes_max=_protocol.MAX_FRAME_SIZE, bint order_entry=True):
        if not HEADER_SIZE <= frame_size_bytes_max <= 0xFFFF:
            raise ValueError("frame_size_bytes_max must be in [4, 65535] bytes")
        self.account_id = account_id
        self.admin = admin
        self.order_entry = order_entry
        self.frame_size_bytes_max = frame_size_bytes_max
        _stop(&self._state, 0, ST_OK, R_NONE, -1, -1)
        self._state.commands_written = 0

    def decode(self, const uint8_t[::1] buffer not None, commands not None, Py_ssize_t start=0,
               Py_ssize_t max_commands=-1, uint64_t first_seq=0, int64_t timestamp_ns=0,
               Py_ssize_t max_frames=-1, bytearray replies=None) -> int:
        """Decode the frames at the start of ``buffer`` into ``commands[start:]``.

        Writes at most ``max_commands`` records (all the room there is when negative). The
        i-th command written gets ``seq = first_seq + i`` (0 when ``first_seq`` is 0) and
        ``timestamp_ns``. Returns the ``DecodeStatus``; ``consumed_bytes``,
        ``commands_written``, ``reason``, ``frame_offset`` and ``frame_type`` tell the rest.

        Session mode, with ``replies`` (a bytearray the SESSION_REJECT answers are written
        into, from its start): HEARTBEAT frames are consumed and refused command frames are
        answered here (while ``replies`` has room) instead of stopping, and at most
        ``max_frames`` frames (commands, heartbeats, refusals) are handled before
        ``OUTPUT_FULL`` (the session's tokens; negative: no bound). ``frames_handled``,
        ``heartbeats``, ``refused_not_authorized``, ``refused_wrong_account`` and
        ``replies_bytes`` tell what was done. ``protocol.spec.decode_client_stream`` with
        ``session=True`` is the specification.
        """
        if replies is None and max_frames >= 0:
            raise ValueError("max_frames is for session mode (replies)")
        cdef uint8_t* reply_data = NULL
        cdef Py_ssize_t reply_capacity = 0
        if replies is not None:
            reply_capacity = len(replies)
            reply_data = <uint8_t*>(<char*>replies) if reply_capacity else NULL
            if reply_data == NULL:
                raise ValueError("replies must have room for at least one SESSION_REJECT")
        cdef uint8_t[::1] out_bytes = _records_check(commands, COMMAND_DTYPE, "commands", True)
        cdef Py_ssize_t record_count = commands.shape[0]
        if not 0 <= start <= record_count:
            raise IndexError("start is outside commands")
        cdef Py_ssize_t capacity = record_count - start
        if 0 <= max_commands < capacity:
            capacity = max_commands
        cdef Command* out = <Command*>&out_bytes[0] if record_count else NULL
        if out != NULL:
            out += start
        cdef const uint8_t* data = &buffer[0] if buffer.shape[0] else NULL
        with nogil:
            _frames_decode(data, buffer.shape[0], out, capacity, self.account_id, self.admin, self.order_entry,
                           self.frame_size_bytes_max, first_seq, timestamp_ns, max_frames,
                           reply_data, reply_capacity, &self._state)
        return self._state.status

    @property
    def status(self) -> int:
        return self._state.status

    @property
    def reason(self) -> int:
        return self._state.reason

    @property
    def consumed_bytes(self) -> int:
        return self._state.consumed_bytes

    @property
    def commands_written(self) -> int:
        return self._state.commands_written

    @property
    def frame_offset(self) -> int:
        return self._state.frame_offset

    @property
    def frame_type(self) -> int:
        return self._state.frame_type

    @property
    def frames_handled(self) -> int:
        return self._state.frames_handled

    @property
    def heartbeats(self) -> int:
        return self._state.heartbeats

    @property
    def refused_not_authorized(self) -> int:
        return self._state.refused_not_authorized

    @property
    def refused_wrong_account(self) -> int:
        return self._state.refused_wrong_account

    @property
    def replies_bytes(self) -> int:
        return self._state.replies_bytes

    def __repr__(self):
        return (f"CommandDecoder(account_id={self.account_id}, admin={bool(self.admin)}, "
                f"frame_size_bytes_max={self.frame_size_bytes_max})")


# ---------------------------------------------------------------------------- encoding

cdef void _event_write(const Event* e, uint32_t recipient, uint64_t event_seq,
                       uint8_t* p) noexcept nogil:
    # Layout of the EVENT frame (docs/protocol.md); a FILL is shown from the recipient's side
    # and never names the counterparty (protocol.event_to_message is the specification).
    cdef uint8_t side = e.side, liquidity = 0
    cdef uint32_t account_id = e.account_id
    cdef uint64_t order_id = e.order_id, client_id = e.client_id
    cdef int64_t fee = e.fee
    cdef int64_t leaves = e.leaves
    if e.kind == EV_FILL:
        liquidity = 1  # TAKER
        if e.counter_account_id == recipient and e.account_id != recipient:
            liquidity = 2  # MAKER
            account_id = e.counter_account_id
            order_id = e.counter_order_id
            client_id = e.counter_client_id
            fee = e.counter_fee
            leaves = e.counter_leaves
            if side == SIDE_BUY or side == SIDE_SELL:
                side = 3 - side
    _put16(p, EVENT_FRAME_SIZE)
    p[2] = e.kind
    p[3] = 0
    p[4] = side
    p[5] = liquidity
    _put16(p + 6, e.reason)
    _put64(p + 8, event_seq)
    _put64(p + 16, e.seq)
    _put64(p + 24, <uint64_t>e.timestamp_ns)
    _put32(p + 32, account_id)
    _put32(p + 36, e.instrument_id)
    _put64(p + 40, order_id)
    _put64(p + 48, client_id)
    _put64(p + 56, e.trade_id)
    _put64(p + 64, <uint64_t>e.price)
    _put64(p + 72, <uint64_t>e.quantity)
    _put64(p + 80, <uint64_t>fee)
    _put64(p + 88, <uint64_t>leaves)


def encode_events(events not None, uint8_t[::1] out not None, Py_ssize_t out_offset,
                  uint32_t recipient_account_id, uint64_t first_event_seq) -> int:
    """Write ``events`` (EVENT_DTYPE) as EVENT frames into ``out[out_offset:]``.

    The i-th frame carries ``event_seq = first_event_seq + i``; FILLs are shown as
    ``recipient_account_id`` sees them. Encodes as many whole frames as fit and returns how
    many (bytes written = count * EVENT_FRAME_SIZE). Raises ValueError on an event kind the
    protocol does not define (an internal error: the engine never makes one).
    """
    cdef const uint8_t[::1] source = _records_check(events, EVENT_DTYPE, "events", False)
    if not 0 <= out_offset <= out.shape[0]:
        raise IndexError("out_offset is outside out")
    cdef Py_ssize_t count = min(events.shape[0], (out.shape[0] - out_offset) // EVENT_FRAME_SIZE)
    if count == 0:
        return 0
    cdef const Event* records = <const Event*>&source[0]
    cdef uint8_t* target = &out[out_offset]
    cdef Py_ssize_t index
    for index in range(count):
        if not 64 <= records[index].kind <= 72:
            raise ValueError(f"event {index} has kind {records[index].kind}, not an EventKind")
    with nogil:
        for index in range(count):
            _event_write(&records[index], recipient_account_id, first_event_seq + <uint64_t>index,
                         target + index * EVENT_FRAME_SIZE)
    return count


def encode_routed_events(events not None, const int64_t[::1] indexes not None,
                         const int64_t[::1] recipients not None, const uint64_t[::1] event_seqs not None,
                         uint8_t[::1] out not None, Py_ssize_t out_offset) -> int:
    """Frame i: ``events[indexes[i]]`` as ``recipients[i]`` sees it, numbered
    ``event_seqs[i]``, into ``out[out_offset:]``: a whole released batch for all its
    recipients in one call (``streams.route`` gives indexes and recipients). Writes every
    frame or raises (IndexError when ``out`` is short or an index is outside ``events``,
    ValueError on an event kind the protocol does not define); returns the frame count."""
    cdef const uint8_t[::1] source = _records_check(events, EVENT_DTYPE, "events", False)
    cdef Py_ssize_t count = indexes.shape[0]
    if recipients.shape[0] != count or event_seqs.shape[0] != count:
        raise ValueError("indexes, recipients and event_seqs differ in length")
    if not 0 <= out_offset or out_offset + count * EVENT_FRAME_SIZE > out.shape[0]:
        raise IndexError("out has no room for the frames at out_offset")
    if count == 0:
        return 0
    cdef const Event* records = <const Event*>&source[0]
    cdef Py_ssize_t event_count = events.shape[0]
    cdef uint8_t* target = &out[out_offset]
    cdef Py_ssize_t frame
    cdef int64_t index
    for frame in range(count):
        index = indexes[frame]
        if not 0 <= index < event_count:
            raise IndexError(f"index {index} is outside the {event_count} events")
        if not 64 <= records[index].kind <= 72:
            raise ValueError(f"event {index} has kind {records[index].kind}, not an EventKind")
    with nogil:
        for frame in range(count):
            _event_write(&records[indexes[frame]], <uint32_t>recipients[frame], event_seqs[frame],
                         target + frame * EVENT_FRAME_SIZE)
    return count


cdef Py_ssize_t _command_frame_write(const Command* c, uint8_t* p) noexcept nogil:
    # The inverse of _command_write: a client frame for one command record. Returns its
    # size, or 0 when the record has no client frame or a field does not fit the wire.
    cdef Py_ssize_t size
    if c.kind < 1 or c.kind > CMD_PAUSE_INSTRUMENT:
        return 0
    size = _frame_size[c.kind]
    memset(p, 0, size)
    _put16(p, <uint16_t>size)
    p[2] = c.kind
    if c.kind == CMD_NEW_ORDER:
        p[4] = c.side
        p[5] = c.order_type
        p[6] = c.time_in_force
        p[7] = c.stp_mode
        _put32(p + 8, c.account_id)
        _put32(p + 12, c.instrument_id)
        _put64(p + 16, c.client_id)
        _put64(p + 24, <uint64_t>c.price)
        _put64(p + 32, <uint64_t>c.quantity)
        _put64(p + 40, <uint64_t>c.limit)
        p[48] = c.flags
        _put64(p + 56, <uint64_t>c.expire_time_ns)
        _put64(p + 64, <uint64_t>c.trigger_price)
        _put64(p + 72, <uint64_t>c.display_quantity)
    elif c.kind == CMD_CANCEL or c.kind == CMD_REPLACE:
        _put32(p + 4, c.account_id)
        _put64(p + 8, c.client_id)
        if c.kind == CMD_REPLACE:
            _put64(p + 16, <uint64_t>c.price)
            _put64(p + 24, <uint64_t>c.quantity)
    elif c.kind == CMD_MASS_CANCEL:
        _put32(p + 4, c.account_id)
        _put32(p + 8, c.instrument_id)
        _put64(p + 16, c.client_id)
    elif c.kind == CMD_ADD_ASSET:
        if c.quantity < 0 or c.quantity > 0xFF:
            return 0
        _put16(p + 4, c.asset_id)
        p[6] = <uint8_t>c.quantity
        _put64(p + 8, c.client_id)
    elif c.kind == CMD_ADD_ACCOUNT:
        _put32(p + 4, c.account_id)
        _put64(p + 8, c.client_id)
    elif c.kind == CMD_ADD_INSTRUMENT:
        if c.client_id > 0xFFFF:
            return 0
        _put32(p + 4, c.instrument_id)
        _put16(p + 8, c.asset_id)
        _put16(p + 10, <uint16_t>c.client_id)
        _put64(p + 16, <uint64_t>c.price)
        _put64(p + 24, <uint64_t>c.quantity)
        _put64(p + 32, <uint64_t>c.limit)
    elif c.kind == CMD_SET_PRICE_BAND or c.kind == CMD_SET_FEES:
        _put32(p + 4, c.instrument_id)
        _put64(p + 8, c.client_id)
        _put64(p + 16, <uint64_t>c.price)
        _put64(p + 24, <uint64_t>(c.limit if c.kind == CMD_SET_PRICE_BAND else c.quantity))
    elif (c.kind == CMD_HALT_INSTRUMENT or c.kind == CMD_RESUME_INSTRUMENT
          or c.kind == CMD_PAUSE_INSTRUMENT):
        _put32(p + 4, c.instrument_id)
        _put64(p + 8, c.client_id)
    else:  # 8, 9: DEPOSIT, WITHDRAW
        _put32(p + 4, c.account_id)
        _put16(p + 8, c.asset_id)
        _put64(p + 16, c.client_id)
        _put64(p + 24, <uint64_t>c.quantity)
    return size


def encode_commands(commands not None, uint8_t[::1] out not None, Py_ssize_t out_offset=0):
    """Write ``commands`` (COMMAND_DTYPE) as client frames into ``out[out_offset:]``.

    For load generators and tests: a bulk encoder of what a client sends (``seq`` and
    ``timestamp_ns`` are not on the wire). Encodes whole frames while they fit and returns
    ``(commands_encoded, bytes_written)``. Raises ValueError on a record with no client
    frame (an event, an unknown kind, or a field outside its wire range).
    """
    cdef uint8_t[::1] source = _records_check(commands, COMMAND_DTYPE, "commands", False)
    if not 0 <= out_offset <= out.shape[0]:
        raise IndexError("out_offset is outside out")
    cdef Py_ssize_t count = commands.shape[0], index = 0, written = 0, size = 0
    cdef Py_ssize_t room = out.shape[0] - out_offset
    cdef const Command* records = <const Command*>&source[0] if count else NULL
    cdef uint8_t* target = &out[0] + out_offset if out.shape[0] else NULL
    cdef uint8_t scratch[64]   # every client command frame is at most 56 bytes
    with nogil:
        while index < count:
            size = _command_frame_write(&records[index], scratch)
            if size == 0 or size > room - written:
                break
            memcpy(target + written, scratch, size)
            written += size
            index += 1
    if index < count and size == 0:
        raise ValueError(f"command {index} (kind {records[index].kind}) has no client frame")
    return index, written


def codec_codes():
    """The numbers the codec uses, to prove they agree with protocol.py."""
    return {
        "DecodeStatus": {"OK": ST_OK, "OUTPUT_FULL": ST_OUTPUT_FULL, "CONTROL": ST_CONTROL,
                         "REFUSED": ST_REFUSED, "FATAL": ST_FATAL},
        "SessionReason": {"NONE": R_NONE, "FRAME_TOO_LARGE": R_FRAME_TOO_LARGE,
                          "MALFORMED_FRAME": R_MALFORMED_FRAME,
                          "UNKNOWN_MESSAGE_TYPE": R_UNKNOWN_MESSAGE_TYPE,
                          "UNEXPECTED_MESSAGE": R_UNEXPECTED_MESSAGE,
                          "NOT_AUTHORIZED": R_NOT_AUTHORIZED, "WRONG_ACCOUNT": R_WRONG_ACCOUNT},
        "EVENT_FRAME_SIZE": EVENT_FRAME_SIZE,
        "HEADER_SIZE": HEADER_SIZE,
    }


# ---------------------------------------------------------------------------- market data

cdef enum:
    MD_FRAME_SIZE = 72
    TYPE_MD_TRADE = 141
    TYPE_MD_LEVEL = 142
    TYPE_MD_BBO = 143
    TYPE_MD_STATUS = 144


cdef inline void _md_write(uint8_t* p, uint8_t type_byte, uint8_t small, uint32_t instrument_id,
                           uint32_t word, uint64_t md_seq, uint64_t command_seq, int64_t timestamp_ns,
                           int64_t a, int64_t b, int64_t c, int64_t d) noexcept nogil:
    """One 72-byte increment in the layout all four share (protocol.MD_INCREMENT_TYPES)."""
    memset(p, 0, MD_FRAME_SIZE)
    p[0] = MD_FRAME_SIZE
    p[2] = type_byte
    p[4] = small
    memcpy(p + 8, &instrument_id, 4)
    memcpy(p + 12, &word, 4)
    memcpy(p + 16, &md_seq, 8)
    memcpy(p + 24, &command_seq, 8)
    memcpy(p + 32, &timestamp_ns, 8)
    memcpy(p + 40, &a, 8)
    memcpy(p + 48, &b, 8)
    memcpy(p + 56, &c, 8)
    memcpy(p + 64, &d, 8)


cdef Py_ssize_t _md_encode(const Event* events, Py_ssize_t event_count, const BookChange* changes,
                           Py_ssize_t change_count, uint64_t* md_seqs, int64_t* tops,
                           Py_ssize_t instrument_count, uint8_t* out) noexcept nogil:
    """The feed of a run of commands: per command, its trades (FILL events, in order), then its
    book changes in order, a TOP only when the best bid or offer differs from the last one
    published (BBO). Returns the frames written, or -1 for an instrument id beyond the state."""
    cdef Py_ssize_t i = 0, j = 0, frames = 0
    cdef uint64_t seq
    cdef uint32_t instrument
    cdef const Event* e
    cdef const BookChange* b
    cdef int64_t* top
    while i < event_count or j < change_count:
        if j >= change_count or (i < event_count and events[i].seq <= changes[j].seq):
            seq = events[i].seq
        else:
            seq = changes[j].seq
        while i < event_count and events[i].seq == seq:
            e = &events[i]
            i += 1
            if e.kind != EV_FILL:
                continue
            if e.instrument_id >= instrument_count:
                return -1
            md_seqs[e.instrument_id] += 1
            _md_write(out + frames * MD_FRAME_SIZE, TYPE_MD_TRADE, e.side, e.instrument_id, 0,
                      md_seqs[e.instrument_id], e.seq, e.timestamp_ns, <int64_t>e.trade_id, e.price,
                      e.quantity, 0)
            frames += 1
        while j < change_count and changes[j].seq == seq:
            b = &changes[j]
            j += 1
            instrument = b.instrument_id
            if instrument >= instrument_count:
                return -1
            if b.kind == BOOK_TOP:
                top = tops + 4 * <Py_ssize_t>instrument
                if (top[0] == b.price and top[1] == b.quantity and top[2] == b.other_price
                        and top[3] == b.other_quantity):
                    continue
                top[0], top[1], top[2], top[3] = b.price, b.quantity, b.other_price, b.other_quantity
                md_seqs[instrument] += 1
                _md_write(out + frames * MD_FRAME_SIZE, TYPE_MD_BBO, 0, instrument, 0, md_seqs[instrument],
                          b.seq, b.timestamp_ns, b.price, b.quantity, b.other_price, b.other_quantity)
            elif b.kind == BOOK_LEVEL:
                md_seqs[instrument] += 1
                _md_write(out + frames * MD_FRAME_SIZE, TYPE_MD_LEVEL, b.side, instrument, b.order_count,
                          md_seqs[instrument], b.seq, b.timestamp_ns, b.price, b.quantity, 0, 0)
            else:
                md_seqs[instrument] += 1
                _md_write(out + frames * MD_FRAME_SIZE, TYPE_MD_STATUS, b.state, instrument, 0,
                          md_seqs[instrument], b.seq, b.timestamp_ns, b.price, b.quantity, b.other_price,
                          b.other_quantity)
            frames += 1
    return frames


def encode_market_data(events, changes, uint64_t[::1] md_seqs not None, int64_t[:, ::1] tops not None):
    """The market data frames (72 bytes each) of a run of commands, from their events
    (EVENT_DTYPE, in order) and the book changes a replica recorded for them
    (BOOK_CHANGE_DTYPE): a uint8 array of shape (frames, 72). ``md_seqs[instrument]`` (the last
    md_seq sent) and ``tops[instrument]`` (the last BBO sent: bid price, bid quantity, ask
    price, ask quantity) are the feed's state, updated in place. The one function that makes
    the feed: live (gateway) and from the journal (replay) alike."""
    cdef const uint8_t[::1] event_bytes = _records_check(events, EVENT_DTYPE, "events", False)
    cdef const uint8_t[::1] change_bytes = _records_check(changes, BOOK_CHANGE_DTYPE, "changes", False)
    if tops.shape[0] != md_seqs.shape[0] or tops.shape[1] != 4:
        raise ValueError("tops must be [len(md_seqs), 4]")
    cdef Py_ssize_t event_count = events.shape[0], change_count = changes.shape[0]
    out = np.empty((event_count + change_count, MD_FRAME_SIZE), np.uint8)
    cdef uint8_t[:, ::1] out_view = out
    cdef Py_ssize_t frames = 0
    cdef const Event* e = <const Event*>&event_bytes[0] if event_count else NULL
    cdef const BookChange* b = <const BookChange*>&change_bytes[0] if change_count else NULL
    cdef uint8_t* o = &out_view[0, 0] if event_count + change_count else NULL
    if o != NULL:
        with nogil:
            frames = _md_encode(e, event_count, b, change_count, &md_seqs[0], &tops[0, 0],
                                md_seqs.shape[0], o)
    if frames < 0:
        raise ValueError("an instrument id beyond the feed state (md_seqs)")
    return out[:frames]

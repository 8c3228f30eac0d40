"""The Cython codec decodes and encodes exactly as the pure-Python specification, on any bytes, split anywhere."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from matchcore.core.codes import EventKind
from matchcore.core.records import COMMAND_DTYPE, EVENT_DTYPE
from matchcore.protocol import _codec
from matchcore import protocol as p
from matchcore.protocol import spec
from matchcore.protocol import DecodeStatus, SessionReason

from .strategies import ADMIN_CLASSES, client_message, message_strategy

ACCOUNT = 7
COMMAND_FIELDS = [name for name in COMMAND_DTYPE.names if name not in ("seq", "timestamp_ns")]


def _full(fields: dict) -> dict:
    return {name: int(fields.get(name, 0)) for name in COMMAND_FIELDS}


def _python_step(buffer, admin, capacity, frame_size_bytes_max):
    r = spec.decode_client_stream(bytes(buffer), ACCOUNT, admin, capacity, frame_size_bytes_max)
    return r.status, r.reason, r.consumed_bytes, [_full(c) for c in r.commands], r.frame_offset, r.frame_type


def _codec_step_factory(admin, capacity, frame_size_bytes_max):
    decoder = _codec.CommandDecoder(ACCOUNT, admin, frame_size_bytes_max)
    out = np.zeros(capacity + 3, COMMAND_DTYPE)

    def step(buffer, _admin, _capacity, _max):
        status = decoder.decode(buffer, out, start=3, max_commands=capacity)
        written = [{name: int(out[3 + i][name]) for name in COMMAND_FIELDS}
                   for i in range(decoder.commands_written)]
        return (status, decoder.reason, decoder.consumed_bytes, written, decoder.frame_offset,
                decoder.frame_type)

    return step


def drive(step, chunks, admin=False, capacity=4, frame_size_bytes_max=p.MAX_FRAME_SIZE):
    """A receive loop: append each chunk, decode until the decoder wants more bytes."""
    buffer, commands, notes = bytearray(), [], []
    for chunk in chunks:
        buffer += chunk
        while True:
            status, reason, consumed, written, frame_offset, frame_type = step(
                buffer, admin, capacity, frame_size_bytes_max)
            assert 0 <= consumed <= len(buffer)
            commands += written
            if status == DecodeStatus.FATAL:
                assert consumed == frame_offset
                notes.append(("fatal", int(reason), frame_type))
                return commands, notes, None
            if status in (DecodeStatus.CONTROL, DecodeStatus.REFUSED):
                notes.append((int(status), int(reason), frame_type, bytes(buffer[frame_offset:consumed])))
            del buffer[:consumed]
            if status == DecodeStatus.OK:
                break
    return commands, notes, bytes(buffer)


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:])] or [b""]


def _both(chunks, admin=False, capacity=4, frame_size_bytes_max=p.MAX_FRAME_SIZE):
    python = drive(_python_step, chunks, admin, capacity, frame_size_bytes_max)
    native = drive(_codec_step_factory(admin, capacity, frame_size_bytes_max), chunks, admin, capacity,
                   frame_size_bytes_max)
    assert native == python
    return python


@given(st.lists(client_message(ACCOUNT), max_size=30), st.lists(st.integers(0, 10**6), max_size=12),
       st.booleans(), st.integers(1, 5))
@settings(max_examples=300, deadline=None)
def test_valid_streams_split_anywhere_decode_identically(messages, cuts, admin, capacity):
    data = b"".join(m.encode() for m in messages)
    commands, notes, rest = _both(_split(data, cuts), admin=admin, capacity=capacity)
    assert rest == b""
    expected = [m for m in messages if type(m).TYPE in p.ORDER_ENTRY_TYPES | p.ADMIN_TYPES
                and (admin or type(m).TYPE not in p.ADMIN_TYPES)
                and (type(m).TYPE not in p.ORDER_ENTRY_TYPES or m.account_id == ACCOUNT)]
    assert commands == [_full(spec.message_to_command(m, ACCOUNT)) for m in expected]
    assert all(note[0] != "fatal" for note in notes)


@given(st.binary(max_size=400), st.lists(st.integers(0, 10**6), max_size=8), st.booleans())
@settings(max_examples=400, deadline=None)
def test_garbage_gives_the_same_typed_outcome_and_never_crashes(garbage, cuts, admin):
    _both(_split(garbage, cuts), admin=admin)


@given(st.lists(client_message(ACCOUNT), min_size=1, max_size=10), st.integers(0, 10**6),
       st.integers(0, 255), st.lists(st.integers(0, 10**6), max_size=6), st.integers(16, 256))
@settings(max_examples=400, deadline=None)
def test_corrupted_and_truncated_streams_agree(messages, position, value, cuts, frame_size_bytes_max):
    data = bytearray(b"".join(m.encode() for m in messages))
    data[position % len(data)] = value
    truncated = bytes(data[: len(data) - position % 9])
    commands, notes, rest = _both(_split(truncated, cuts), admin=True, frame_size_bytes_max=frame_size_bytes_max)
    if notes and notes[-1][0] == "fatal":
        assert SessionReason(notes[-1][1]) in (SessionReason.FRAME_TOO_LARGE, SessionReason.MALFORMED_FRAME,
                                               SessionReason.UNKNOWN_MESSAGE_TYPE,
                                               SessionReason.UNEXPECTED_MESSAGE)


def test_a_truncated_frame_waits_for_its_bytes():
    frame = p.NewOrder(1, 1, 1, 1, ACCOUNT, 0, 5, 100, 3).encode()
    decoder = _codec.CommandDecoder(ACCOUNT)
    out = np.zeros(4, COMMAND_DTYPE)
    for length in range(len(frame)):
        assert decoder.decode(frame[:length], out) == DecodeStatus.OK
        assert decoder.consumed_bytes == 0 and decoder.commands_written == 0
    assert decoder.decode(frame, out) == DecodeStatus.OK
    assert decoder.consumed_bytes == len(frame) and decoder.commands_written == 1


def test_oversize_frames_are_refused_from_the_first_two_bytes():
    decoder = _codec.CommandDecoder(ACCOUNT, frame_size_bytes_max=64)
    out = np.zeros(4, COMMAND_DTYPE)
    good = p.Cancel(ACCOUNT, 1).encode()
    assert decoder.decode(good + b"\x41\x00", out) == DecodeStatus.FATAL
    assert decoder.reason == SessionReason.FRAME_TOO_LARGE
    assert decoder.frame_offset == len(good) and decoder.consumed_bytes == len(good)
    assert decoder.commands_written == 1
    # the protocol maximum holds even when the connection allows more
    assert _codec.CommandDecoder(ACCOUNT).decode((p.MAX_FRAME_SIZE + 1).to_bytes(2, "little"), out) == DecodeStatus.FATAL
    # a LOGIN (128 bytes) is above a 64-byte limit too
    assert decoder.decode(p.Login(1, 0, ACCOUNT, 1000, 1, 0, bytes(32), bytes(64)).encode(), out) == DecodeStatus.FATAL


@pytest.mark.parametrize("cls", ADMIN_CLASSES, ids=lambda c: c.__name__)
def test_admin_messages_are_refused_for_non_admin_sessions(cls):
    from hypothesis import find

    message = find(message_strategy(cls), lambda m: True)
    frame = message.encode()
    out = np.zeros(4, COMMAND_DTYPE)
    user = _codec.CommandDecoder(ACCOUNT, admin=False)
    assert user.decode(frame + frame, out) == DecodeStatus.REFUSED
    assert user.reason == SessionReason.NOT_AUTHORIZED
    assert (user.frame_offset, user.consumed_bytes, user.commands_written) == (0, len(frame), 0)
    assert user.frame_type == cls.TYPE
    admin = _codec.CommandDecoder(ACCOUNT, admin=True)
    assert admin.decode(frame + frame, out) == DecodeStatus.OK
    assert admin.commands_written == 2


def test_order_entry_always_carries_the_session_account():
    out = np.zeros(8, COMMAND_DTYPE)
    decoder = _codec.CommandDecoder(ACCOUNT, admin=True)
    own = [p.NewOrder(1, 1, 1, 1, ACCOUNT, 0, 5, 100, 3), p.Cancel(ACCOUNT, 5),
           p.Replace(ACCOUNT, 5, 101, 2), p.MassCancel(ACCOUNT)]
    assert decoder.decode(b"".join(m.encode() for m in own), out, first_seq=50, timestamp_ns=9) == DecodeStatus.OK
    assert list(out["account_id"][:4]) == [ACCOUNT] * 4
    assert list(out["seq"][:4]) == [50, 51, 52, 53]
    assert list(out["timestamp_ns"][:4]) == [9] * 4
    for other in (p.NewOrder(1, 1, 1, 1, ACCOUNT + 1, 0, 6, 100, 3), p.Cancel(0, 5), p.MassCancel(2**32 - 1)):
        assert decoder.decode(other.encode(), out) == DecodeStatus.REFUSED
        assert decoder.reason == SessionReason.WRONG_ACCOUNT
        assert decoder.commands_written == 0


def test_session_frames_are_handed_back_and_server_frames_are_fatal():
    out = np.zeros(8, COMMAND_DTYPE)
    decoder = _codec.CommandDecoder(ACCOUNT)
    beat = p.Heartbeat(3, 4).encode()
    cancel = p.Cancel(ACCOUNT, 5).encode()
    assert decoder.decode(cancel + beat + cancel, out) == DecodeStatus.CONTROL
    assert (decoder.commands_written, decoder.frame_offset, decoder.consumed_bytes) == (1, 16, 40)
    assert decoder.frame_type == p.MessageType.HEARTBEAT
    accepted = p.LoginRejected(1).encode()
    assert decoder.decode(accepted, out) == DecodeStatus.FATAL
    assert decoder.reason == SessionReason.UNEXPECTED_MESSAGE


def test_output_full_stops_before_the_next_command():
    out = np.zeros(2, COMMAND_DTYPE)
    decoder = _codec.CommandDecoder(ACCOUNT)
    cancel = p.Cancel(ACCOUNT, 5).encode()
    assert decoder.decode(cancel * 3, out) == DecodeStatus.OUTPUT_FULL
    assert (decoder.commands_written, decoder.consumed_bytes) == (2, 32)
    assert decoder.decode(cancel * 3, out, max_commands=0) == DecodeStatus.OUTPUT_FULL
    assert decoder.decode(b"", out) == DecodeStatus.OK
    with pytest.raises(TypeError):
        decoder.decode(cancel, np.zeros(2, EVENT_DTYPE))
    with pytest.raises(IndexError):
        decoder.decode(cancel, out, start=3)


def _events(draw_kinds, size, rng):
    events = np.zeros(size, EVENT_DTYPE)
    for name in EVENT_DTYPE.names:
        info = np.iinfo(EVENT_DTYPE[name])
        events[name] = rng.integers(info.min, info.max, size=size, dtype=EVENT_DTYPE[name], endpoint=True)
    events["kind"] = rng.choice(draw_kinds, size=size)
    events["side"] = rng.choice([0, 1, 2, 3], size=size)
    return events


@given(st.integers(0, 2**32 - 1), st.integers(0, 60), st.integers(0, 2**63), st.integers(0, 2**30))
@settings(max_examples=100, deadline=None)
def test_event_frames_equal_the_python_encoder(seed, size, first_event_seq, room_bytes):
    rng = np.random.default_rng(seed)
    events = _events([int(k) for k in EventKind], size, rng)
    recipient = 5
    events["account_id"][::3] = recipient
    events["counter_account_id"][1::3] = recipient
    out = bytearray(min(room_bytes % 6000, size * p.EVENT_FRAME_SIZE + 50) + 3)
    count = _codec.encode_events(events, out, 3, recipient, first_event_seq)
    assert count == min(size, (len(out) - 3) // p.EVENT_FRAME_SIZE)
    expected = b"".join(spec.encode_event(events[i], recipient, first_event_seq + i) for i in range(count))
    assert bytes(out[3:3 + len(expected)]) == expected
    for i in range(count):
        message = p.decode(expected[i * p.EVENT_FRAME_SIZE:(i + 1) * p.EVENT_FRAME_SIZE])
        assert message.event_seq == first_event_seq + i


def test_fills_are_shown_from_the_recipients_side_without_the_counterparty():
    """Each side sees its own order id, client order id, side, fee and open quantity, never
    the other's account or order."""
    fill = np.zeros(1, EVENT_DTYPE)
    fill[0] = (9, 10, EventKind.FILL, 1, 0, 3, 1, 2, 100, 11, 200, 77, 50, 4, 6, 5, 22, 8, 3, 0)
    out = bytearray(p.EVENT_FRAME_SIZE)
    _codec.encode_events(fill, out, 0, 1, 1)
    taker = p.decode(bytes(out))
    assert (taker.liquidity, taker.side, taker.account_id, taker.order_id, taker.client_id, taker.fee,
            taker.leaves) == (p.Liquidity.TAKER, 1, 1, 100, 11, 6, 8)
    _codec.encode_events(fill, out, 0, 2, 1)
    maker = p.decode(bytes(out))
    assert (maker.liquidity, maker.side, maker.account_id, maker.order_id, maker.client_id, maker.fee,
            maker.leaves) == (p.Liquidity.MAKER, 2, 2, 200, 22, 5, 3)
    assert (maker.trade_id, maker.price, maker.quantity) == (77, 50, 4)
    assert out == bytearray(spec.encode_event(fill[0], 2, 1))


def test_an_unknown_event_kind_is_an_error():
    events = np.zeros(2, EVENT_DTYPE)
    events["kind"] = [64, 10]
    with pytest.raises(ValueError):
        _codec.encode_events(events, bytearray(200), 0, 1, 1)


@given(st.lists(client_message(ACCOUNT), max_size=20), st.integers(0, 2000))
@settings(max_examples=100, deadline=None)
def test_bulk_command_encoder_inverts_the_decoder(messages, room):
    commands = [m for m in messages if type(m).TYPE in p.ORDER_ENTRY_TYPES | p.ADMIN_TYPES]
    records = np.zeros(len(commands), COMMAND_DTYPE)
    for index, message in enumerate(commands):
        for name, value in spec.message_to_command(message, getattr(message, "account_id", 0)).items():
            records[index][name] = value
    out = bytearray(room)
    count, written = _codec.encode_commands(records, out)
    expected = b"".join(m.encode() for m in commands[:count])
    assert bytes(out[:written]) == expected
    if count < len(commands):
        assert written + len(commands[count].encode()) > room


def _session_call(buffer: bytes, admin: bool, capacity: int, max_frames: int, replies_max: int):
    """Both decoders in session mode on one buffer: everything they report, side by side."""
    python = spec.decode_client_stream(buffer, ACCOUNT, admin, capacity, session=True, max_frames=max_frames,
                                       replies_max=replies_max)
    decoder = _codec.CommandDecoder(ACCOUNT, admin, p.MAX_FRAME_SIZE)
    out, replies = np.zeros(capacity, COMMAND_DTYPE), bytearray(16 * replies_max)
    status = decoder.decode(buffer, out, max_commands=capacity, max_frames=max_frames, replies=replies)
    native = (status, decoder.reason, decoder.consumed_bytes,
              [{name: int(out[i][name]) for name in COMMAND_FIELDS} for i in range(decoder.commands_written)],
              decoder.frame_offset, decoder.frame_type, decoder.frames_handled, decoder.heartbeats,
              bytes(replies[:decoder.replies_bytes]))
    expected = (python.status, python.reason, python.consumed_bytes, [_full(c) for c in python.commands],
                python.frame_offset, python.frame_type, python.frames_handled, python.heartbeats,
                b"".join(python.replies))
    assert native == expected
    refusals = decoder.refused_not_authorized + decoder.refused_wrong_account
    assert decoder.frames_handled == decoder.commands_written + decoder.heartbeats + refusals
    assert decoder.replies_bytes == 16 * refusals
    return python


session_message = st.one_of(client_message(ACCOUNT), st.builds(p.Heartbeat, st.integers(0, 2**64 - 1),
                                                                st.integers(0, 2**63 - 1)))


@given(st.lists(session_message, max_size=40), st.integers(0, 10**6), st.booleans(), st.integers(1, 6),
       st.integers(-1, 12), st.integers(1, 6))
@settings(max_examples=400, deadline=None)
def test_session_mode_answers_heartbeats_and_refusals_in_place_as_the_spec_does(
        messages, cut, admin, capacity, max_frames, replies_max):
    data = b"".join(m.encode() for m in messages)
    result = _session_call(data[:cut % (len(data) + 1)], admin, capacity, max_frames, replies_max)
    for reply in result.replies:
        assert isinstance(p.decode(reply), p.SessionReject)


@given(st.binary(max_size=300), st.booleans(), st.integers(-1, 8), st.integers(1, 4))
@settings(max_examples=300, deadline=None)
def test_session_mode_on_garbage_agrees_with_the_spec(data, admin, max_frames, replies_max):
    _session_call(data, admin, 4, max_frames, replies_max)


def test_session_mode_never_leaves_the_codec_for_a_flood_of_heartbeats_or_refusals():
    flood = (p.Heartbeat(0, 0).encode() + p.Deposit(8, 1, 77, 100).encode()
             + p.Cancel(ACCOUNT + 1, 5).encode()) * 300
    decoder = _codec.CommandDecoder(ACCOUNT, False, p.MAX_FRAME_SIZE)
    replies = bytearray(16 * 600)
    status = decoder.decode(flood, np.zeros(8, COMMAND_DTYPE), max_frames=900, replies=replies)
    assert status == DecodeStatus.OK and decoder.consumed_bytes == len(flood)
    assert (decoder.heartbeats, decoder.refused_not_authorized, decoder.refused_wrong_account) == (300, 300, 300)
    first, second = p.decode(bytes(replies[:16])), p.decode(bytes(replies[16:32]))
    assert first == p.SessionReject(p.MessageType.DEPOSIT, SessionReason.NOT_AUTHORIZED, 77)
    assert second == p.SessionReject(p.MessageType.CANCEL, SessionReason.WRONG_ACCOUNT, 5)

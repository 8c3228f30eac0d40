"""Every message encodes and decodes back to itself; layouts are tight; numbers agree with the engine's."""
from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from matchcore.core import codes
from matchcore.core.records import COMMAND_DTYPE
from matchcore.protocol import _codec
from matchcore import protocol as p
from matchcore.protocol import spec

from .strategies import ALL_CLASSES, any_message, message_strategy


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda c: c.__name__)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_every_message_round_trips(cls, data):
    message = data.draw(message_strategy(cls))
    frame = message.encode()
    assert len(frame) == cls.LAYOUT.itemsize
    assert frame[0] | frame[1] << 8 == len(frame)
    assert frame[2] == message.frame_type()
    assert p.decode(frame) == message
    # the numpy layout reads the same frame field by field
    record = np.frombuffer(frame, dtype=cls.LAYOUT)[0]
    for name in cls.LAYOUT.names:
        if name.startswith("reserved_"):
            assert int(record[name]) == 0
        elif name not in ("frame_size", "type"):
            value = getattr(message, name)
            read = bytes(record[name]) if isinstance(value, bytes) else int(record[name])
            assert read == value, name


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda c: c.__name__)
def test_layouts_are_tight_and_naturally_aligned(cls):
    layout = cls.LAYOUT
    covered = sum(layout.fields[name][0].itemsize for name in layout.names)
    assert covered == layout.itemsize  # no hidden padding
    assert layout.itemsize % 8 == 0
    assert layout.itemsize <= p.MAX_FRAME_SIZE
    assert layout.names[:3] == ("frame_size", "type", "reserved_3")
    for name in layout.names:
        field, offset = layout.fields[name][0], layout.fields[name][1]
        assert offset % field.base.itemsize == 0, name
    assert cls._STRUCT.size == layout.itemsize


@given(any_message, st.integers(0, 127), st.integers(1, 255))
@settings(max_examples=200, deadline=None)
def test_a_nonzero_reserved_byte_or_wrong_size_is_malformed(message, position, value):
    frame = bytearray(message.encode())
    reserved = [offset for name in message.LAYOUT.names if name.startswith("reserved_")
                for offset in range(message.LAYOUT.fields[name][1],
                                    message.LAYOUT.fields[name][1] + message.LAYOUT.fields[name][0].itemsize)]
    frame[reserved[position % len(reserved)]] = value
    with pytest.raises(p.ProtocolError) as error:
        p.decode(bytes(frame))
    assert error.value.reason == p.SessionReason.MALFORMED_FRAME
    with pytest.raises(p.ProtocolError) as error:
        p.decode(message.encode()[:-8])
    assert error.value.reason == p.SessionReason.MALFORMED_FRAME


def test_unknown_type_and_short_frames_have_typed_reasons():
    with pytest.raises(p.ProtocolError) as error:
        p.decode(bytes([8, 0, 200, 0, 0, 0, 0, 0]))
    assert error.value.reason == p.SessionReason.UNKNOWN_MESSAGE_TYPE
    with pytest.raises(p.ProtocolError) as error:
        p.decode(b"\x02\x00")
    assert error.value.reason == p.SessionReason.MALFORMED_FRAME
    with pytest.raises(ValueError):
        p.Cancel(account_id=-1, client_order_id=1).encode()


def test_message_numbers_reuse_the_engine_kinds():
    # CLOCK is the gateway's own command: no client sends it, so it has no message
    client_kinds = [kind for kind in codes.CommandKind if kind != codes.CommandKind.CLOCK]
    for kind in client_kinds:
        assert p.MessageType[kind.name] == kind
    assert codes.CommandKind.CLOCK not in set(p.MessageType)
    for kind in codes.EventKind:
        assert p.MessageType["EVENT_" + kind.name] == kind
        assert p.MESSAGE_CLASSES[int(kind)] is p.EventMessage
    assert set(p.CLIENT_TYPES) == {int(k) for k in client_kinds} | set(p.CONTROL_TYPES)
    assert p.CLIENT_TYPES & p.SERVER_TYPES == {p.MessageType.HEARTBEAT, p.MessageType.LOGOUT}


def test_session_reasons_are_grouped_by_effect():
    framing = [r for r in p.SessionReason if 1 <= r <= 19]
    assert {r.name for r in framing} == {"FRAME_TOO_LARGE", "MALFORMED_FRAME", "UNKNOWN_MESSAGE_TYPE",
                                         "UNEXPECTED_MESSAGE"}
    assert all(20 <= p.SessionReason[n] <= 39 for n in ("UNKNOWN_KEY", "KEY_REVOKED", "BAD_SIGNATURE",
                                                         "STALE_CHALLENGE", "LOGIN_TIMEOUT"))
    assert all(40 <= p.SessionReason[n] <= 59 for n in ("NOT_AUTHORIZED", "WRONG_ACCOUNT", "RATE_LIMITED",
                                                         "BUSY"))


def test_codec_numbers_agree_with_protocol():
    tables = _codec.codec_codes()
    assert tables["DecodeStatus"] == {s.name: int(s) for s in p.DecodeStatus}
    for name, number in tables["SessionReason"].items():
        assert p.SessionReason[name] == number
    assert tables["EVENT_FRAME_SIZE"] == p.EVENT_FRAME_SIZE
    assert tables["HEADER_SIZE"] == p.HEADER_SIZE


@given(st.sampled_from(sorted(p.ADMIN_TYPES | p.ORDER_ENTRY_TYPES)), st.data())
@settings(max_examples=100, deadline=None)
def test_command_messages_map_to_records_and_back(type_byte, data):
    cls = p.MESSAGE_CLASSES[type_byte]
    message = data.draw(message_strategy(cls, **({"account_id": 7} if type_byte in p.ORDER_ENTRY_TYPES else {})))
    fields = spec.message_to_command(message, account_id=7)
    record = np.zeros((), COMMAND_DTYPE)
    for name, value in fields.items():
        record[name] = value
    assert spec.command_to_message(record[()]) == message


def test_login_signed_bytes_cover_everything_but_the_signature():
    login = p.Login(1, 1, 7, 1000, 3, 5, bytes(range(32)), bytes(64))
    frame = login.encode()
    signed = p.login_signed_bytes(frame)
    assert signed == b"matchcore-login1" + frame[:64]
    assert p.Login.LAYOUT.fields["signature"][1] == 64
    assert struct.unpack_from("<Q", frame, 16)[0] == 3

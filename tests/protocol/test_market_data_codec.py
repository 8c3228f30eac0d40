"""The market data encoder (one function for the live feed and for the journal) does what its
specification says on random engine streams, whatever the batching, and a market-data-only
decoder refuses order entry like the specification."""
from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings, strategies as st

from matchcore import protocol as p
from matchcore.core import Engine, commands as c
from matchcore.core.records import COMMAND_DTYPE, EVENT_DTYPE
from matchcore.protocol import _codec, spec
from matchcore.protocol.messages import DecodeStatus, SessionReason
from tests.property.test_engine_differential import CONFIG, SETUP, any_command, batches, resolve, stamped


def _feed_state():
    return np.zeros(CONFIG.max_instruments, np.uint64), np.zeros((CONFIG.max_instruments, 4), np.int64)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stream=st.lists(any_command(), min_size=30, max_size=160), batch=st.integers(1, 40))
def test_codec_matches_the_specification_and_batching_does_not_change_the_feed(stream, batch):
    commands = stamped(c.number(c.pack(SETUP + resolve(stream))))
    engine = Engine(CONFIG)
    engine.enable_book_changes()
    seqs, tops = _feed_state()
    spec_seqs, spec_tops = _feed_state()
    live = bytearray()
    for part in batches(commands, batch):
        events = engine.apply(part)
        changes = engine.take_book_changes()
        frames = _codec.encode_market_data(events, changes, seqs, tops)
        expected = b"".join(m.encode() for m in spec.market_data_messages(events, changes, spec_seqs, spec_tops))
        assert frames.tobytes() == expected
        live += frames.tobytes()
    assert np.array_equal(seqs, spec_seqs) and np.array_equal(tops, spec_tops)
    # one batch for everything: the same bytes (the feed is per command, not per batch)
    whole = Engine(CONFIG)
    whole.enable_book_changes()
    events = whole.apply(commands)
    again = _codec.encode_market_data(events, whole.take_book_changes(), *_feed_state())
    assert again.tobytes() == bytes(live)
    # every frame decodes, and md_seq runs 1, 2, 3, ... per instrument
    last = {}
    for message in p.iter_messages(bytes(live)):
        assert message.md_seq == last.get(message.instrument_id, 0) + 1
        last[message.instrument_id] = message.md_seq


def test_a_trade_comes_before_the_book_changes_of_its_command():
    engine = Engine(CONFIG)
    engine.enable_book_changes()
    engine.apply(stamped(c.number(c.pack(SETUP))))
    setup_frames = _codec.encode_market_data(np.zeros(0, EVENT_DTYPE), engine.take_book_changes(), *_feed_state())
    assert len(setup_frames)  # the instruments' STATUS messages
    seqs, tops = _feed_state()
    stream = c.number(c.pack([c.limit(1, 0, 1, 2, 50, 4), c.limit(2, 0, 1, 1, 50, 3)]), first_seq=len(SETUP) + 1,
                      timestamp_ns=5)
    events = engine.apply(stream)
    messages = list(p.iter_messages(_codec.encode_market_data(events, engine.take_book_changes(), seqs, tops).tobytes()))
    assert [type(m).__name__ for m in messages] == ["MdLevel", "MdBbo", "MdTrade", "MdLevel", "MdBbo"]
    trade = messages[2]
    assert (trade.aggressor_side, trade.price, trade.quantity, trade.md_seq) == (1, 50, 3, 3)
    assert (messages[3].quantity, messages[4].ask_quantity) == (1, 1)


def test_a_market_data_only_decoder_refuses_order_entry_as_the_specification_does():
    frames = (p.NewOrder(1, 1, 1, 1, 7, 0, 1, 50, 1).encode() + p.Heartbeat().encode()
              + p.Cancel(7, 1).encode() + p.MdSubscribe(0).encode())
    decoder = _codec.CommandDecoder(7, False, p.MAX_FRAME_SIZE, order_entry=False)
    out = np.zeros(4, dtype=COMMAND_DTYPE)
    replies = bytearray(16 * 8)
    status = decoder.decode(frames, out, replies=replies, max_frames=10)
    expected = spec.decode_client_stream(frames, 7, False, 4, session=True, max_frames=10, replies_max=8,
                                         order_entry=False)
    assert status == expected.status == DecodeStatus.CONTROL
    assert decoder.commands_written == 0 and expected.commands == []
    assert bytes(replies[:decoder.replies_bytes]) == b"".join(expected.replies)
    refused = [p.decode(r) for r in expected.replies]
    assert [r.reason for r in refused] == [SessionReason.NOT_AUTHORIZED] * 2

"""Garbage and truncated frames on one connection (before and after login, hypothesis-made): the
server stays up, a session beside it sees no error, and nothing reaches the journal."""
from __future__ import annotations

import asyncio

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from matchcore.core.codes import Side
from matchcore.client import keys as client_keys
from matchcore import protocol as p

from .conftest import ALICE, BOB, INSTRUMENT, run
from .streams import quiet


async def _read_all(reader: asyncio.StreamReader, timeout_s: float = 0.25) -> bytes:
    data = bytearray()
    try:
        while True:
            chunk = await asyncio.wait_for(reader.read(65_536), timeout_s)
            if not chunk:
                return bytes(data)
            data += chunk
    except asyncio.TimeoutError:
        return bytes(data)


async def _send_garbage(server, payload: bytes, log_in: bool, close_early: bool) -> list[p.Message]:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    head = await reader.readexactly(2)
    challenge = p.decode(head + await reader.readexactly((head[0] | head[1] << 8) - 2))
    if log_in:
        key_id, key = server.keys[BOB]
        writer.write(client_keys.signed_login(key, account_id=BOB, key_id=key_id, nonce=challenge.nonce).encode())
    writer.write(payload)
    await writer.drain()
    if close_early:
        writer.close()
        return []
    data = await _read_all(reader)
    writer.close()
    frames, _ = p.split_frames(data)
    return [p.decode(frame) for frame in frames]


garbage = st.one_of(
    st.binary(min_size=1, max_size=300),
    # a valid header with a wrong size, an unknown type or non-zero reserved bytes
    st.builds(lambda size, type_, rest: bytes([size & 0xFF, size >> 8, type_, 0]) + rest,
              st.integers(0, 2000), st.integers(0, 255), st.binary(max_size=120)),
    # a valid NEW_ORDER cut short (a truncated frame), then the connection ends
    st.integers(1, 55).map(lambda cut: p.NewOrder(1, 1, 1, 1, BOB, INSTRUMENT, 5, 100, 1, 0, 0).encode()[:cut]),
)


def test_garbage_leaves_the_server_and_other_sessions_unharmed(shared_server):
    server = shared_server

    async def scenario():
        before = await server.journal_commands_from_clients()
        async with server.client(ALICE) as alice:
            seen_before = alice.last_event_seq

            @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck),
                      derandomize=True)
            @given(payload=garbage, log_in=st.booleans(), close_early=st.booleans())
            def one(payload, log_in, close_early):
                answers = asyncio.get_event_loop().run_until_complete(
                    _send_garbage(server, payload, log_in, close_early))
                for answer in answers:  # the only answers: login, refusals, and a logout with a reason
                    assert isinstance(answer, (p.LoginAccepted, p.LoginRejected, p.Logout, p.SessionReject,
                                               p.Heartbeat, p.EventMessage)), answer
                    if isinstance(answer, p.Logout):
                        assert answer.reason != p.SessionReason.NONE

            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, _in_new_loop, one)
            assert alice.connected and alice.gaps == 0
            heartbeat_answer = await alice.order_status(12345, timeout_s=10)
            assert heartbeat_answer.state == p.OrderState.NOT_OPEN
            assert await quiet(alice) == []
            assert alice.last_event_seq == seen_before
        await asyncio.sleep(0.3)
        assert await server.journal_commands_from_clients() == before  # engine clock ticks aside
        assert server.alive()

    run(scenario())


def _in_new_loop(function) -> None:
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        function()
    finally:
        loop.close()


def test_a_valid_order_after_garbage_elsewhere_still_trades(shared_server):
    server = shared_server

    async def scenario():
        await _send_garbage(server, b"\xff" * 64, True, False)
        async with server.client(ALICE) as alice:
            outcome = await alice.new_order(INSTRUMENT, Side.BUY, 1, 1, timeout_s=10)
            assert outcome.accepted
            assert (await alice.cancel(outcome.event.client_id, timeout_s=10)).accepted

    run(scenario())

"""The credit window on a real server: a client that writes far past its window (it ignores
LOGIN_ACCEPTED.commands_in_flight_max) gets every command answered, in order, while no session
ever has more than the window read and unanswered inside the server (the bound on what queues
there, and so on ack latency at full load); another session is served meanwhile, and the
shipped client keeps to the window it was given."""
from __future__ import annotations

import asyncio
import re
import urllib.request

from matchcore import protocol as p
from matchcore.core.codes import EventKind, OrderType, Side, StpMode, TimeInForce

from .conftest import ALICE, BOB, INSTRUMENT, ServerProcess, run

WINDOW = 256
FLOOD_COMMANDS = 20_000


def _in_flight_max(server: ServerProcess) -> int:
    text = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=5).read().decode()
    return int(float(re.search(r"^matchcore_session_commands_in_flight_max (\S+)$", text, re.M).group(1)))


def test_a_flood_past_the_window_is_answered_in_order_bounded_and_others_are_served(pg_server, work_dir):
    server = ServerProcess(pg_server, work_dir, **{"limits.commands_in_flight_max": WINDOW,
                                                   "limits.rate_messages_per_s": 10_000_000,
                                                   "limits.burst_messages": 1_000_000}).start()
    try:
        run(server.market())

        async def scenario():
            async with server.client(ALICE) as flood, server.client(BOB) as other:
                assert flood.session.commands_in_flight_max == WINDOW and flood.credit == WINDOW
                first = flood.next_client_id()
                for index in range(FLOOD_COMMANDS):  # send(): past the window, not waiting for credit
                    flood.send(p.NewOrder(Side.BUY, OrderType.LIMIT, TimeInForce.IOC, StpMode.CANCEL_TAKER, ALICE,
                                          INSTRUMENT, first + index, 100, 1))
                served = [await other.new_order(INSTRUMENT, Side.SELL, 1_000_000, 1, timeout_s=60)
                          for _ in range(20)]
                assert all(outcome.accepted for outcome in served)
                assert other.credit == WINDOW  # every answer gave its credit back
                answered = []
                while len(answered) < FLOOD_COMMANDS:
                    event = await flood.next_event(timeout_s=60)
                    if event.kind in (EventKind.ACCEPTED, EventKind.REJECTED):
                        answered.append(event.client_id)
                assert answered == list(range(first, first + FLOOD_COMMANDS))

        run(scenario())
        assert _in_flight_max(server) == WINDOW  # reached, never passed
        assert server.alive()
    finally:
        server.drop()


def test_the_client_keeps_to_its_window(pg_server, work_dir):
    server = ServerProcess(pg_server, work_dir, **{"limits.commands_in_flight_max": 8}).start()
    try:
        run(server.market())

        async def scenario():
            async with server.client(ALICE) as client:
                outcomes = await asyncio.gather(*(client.new_order(INSTRUMENT, Side.SELL, 1_000_000 + i, 1,
                                                                   timeout_s=60) for i in range(200)))
                assert all(outcome.accepted for outcome in outcomes) and client.credit == 8

        run(scenario())
        assert _in_flight_max(server) <= 8
    finally:
        server.drop()

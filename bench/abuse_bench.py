"""``matchcore-bench abuse``: one well-behaved trader's round trip while another client attacks.

Processes: PostgreSQL (embedded, in a temporary folder, unless ``--dsn``), the server
(``matchcore serve``, set up by ``e2e_bench.Venue``: keys, market, funds), this process as the
trader, and one attacker process per attack. All traffic goes to 127.0.0.1.

The trader sends a passive NEW_ORDER (far from any other order: it rests, never fills) and,
once it is ACCEPTED, its CANCEL; one round trip = from writing the NEW_ORDER to the arrival of
the CANCELED (both acks follow the journal commit). Round trips are paced (one every
``PACE_MS``) so the trader stays far under its own rate limit. First a warm-up, then
``samples`` round trips with no attack (the baseline), then, in turn, the same with each
attack running: ``heartbeats`` (a logged-in session floods HEARTBEAT), ``admin_frames``
(DEPOSITs from a trader key: NOT_AUTHORIZED), ``other_account`` (NEW_ORDERs naming the
trader's account: WRONG_ACCOUNT), ``over_rate`` (IOC NEW_ORDERs far beyond the session rate:
RATE_LIMITED), ``order_status`` (ORDER_STATUS_QUERY), ``connection_flood`` (connections
opened and dropped without a LOGIN), ``metrics_scrapes`` (concurrent GET /metrics).

Every loop is bounded in count and in time: each phase ends after ``samples`` round trips or
``phase_s`` seconds, each request waits at most ``request_timeout_s``, each attacker stops
when told or after ``phase_s + 30`` seconds. Target (issue 11): under every attack the
trader's p99 stays within 3x its baseline p99, and no attack closes the trader.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import time

import numpy as np

from matchcore.bench.e2e_bench import ADMIN_ACCOUNT, Venue, _journal_last_seq, server_settings
from matchcore.bench.machine import machine_info, print_header

__all__ = ["run_abuse_bench", "ATTACKS"]

ATTACKS = ("heartbeats", "admin_frames", "other_account", "over_rate", "order_status", "connection_flood",
           "metrics_scrapes")
TRADER, ATTACKER = 1, 2
INSTRUMENT = 0
PACE_MS = 2
#: the session rate both sessions get: the trader's paced round trips use under a fifth of it
RATE_MESSAGES_PER_S, BURST_MESSAGES = 5_000, 1_000
#: frames per write of a flooding attacker
FRAMES_PER_WRITE = 512
TARGET_RATIO = 3.0


def _settings() -> dict:
    settings = server_settings(2)
    settings.update({"limits.rate_messages_per_s": RATE_MESSAGES_PER_S, "limits.burst_messages": BURST_MESSAGES})
    return settings


# ---------------------------------------------------------------------------- the attacker


def _attack_frames(attack: str) -> bytes:
    """One write's worth of the attack's frames."""
    from matchcore import protocol as p
    from matchcore.core.codes import OrderType, Side, StpMode, TimeInForce

    def order(account: int, index: int) -> p.Message:
        return p.NewOrder(int(Side.BUY), int(OrderType.LIMIT), int(TimeInForce.IOC), int(StpMode.CANCEL_TAKER),
                          account, INSTRUMENT, 1 << 40 | index, 1, 1, 0, 0)

    makers = {"heartbeats": lambda i: p.Heartbeat(0, i),
              "admin_frames": lambda i: p.Deposit(ATTACKER, 1, 1 << 40 | i, 1),
              "other_account": lambda i: order(TRADER, i),
              "over_rate": lambda i: order(ATTACKER, i),
              "order_status": lambda i: p.OrderStatusQuery(1 << 40 | i)}
    return b"".join(makers[attack](index).encode() for index in range(FRAMES_PER_WRITE))


async def _logged_in_flood(attack: str, port: int, key_id: int, raw_key: bytes, ready, stop, deadline: float) -> dict:
    from matchcore.client import Client, keys as client_keys

    client = Client("127.0.0.1", port, account_id=ATTACKER, key_id=key_id,
                    private_key=client_keys.load_private_key(raw_key), event_queue_size=1 << 20)
    await client.connect()
    writer = client._writer  # the flood bypasses the client's per-message encoding
    blob, writes = _attack_frames(attack), 0
    ready.set()
    try:
        while not stop.is_set() and time.monotonic() < deadline and client.connected:
            writer.write(blob)
            await asyncio.wait_for(writer.drain(), 5)
            writes += 1
            _drain_events(client)
    except (ConnectionError, asyncio.TimeoutError):
        pass
    closed = not client.connected
    with contextlib.suppress(Exception):
        await asyncio.wait_for(client.close(), 5)
    return {"frames_sent": writes * FRAMES_PER_WRITE, "attacker_closed": closed}


def _drain_events(client) -> None:
    events = client._events
    while not events.empty():
        events.get_nowait()


async def _connection_flood(port: int, ready, stop, deadline: float) -> dict:
    opened = 0
    ready.set()
    while not stop.is_set() and time.monotonic() < deadline:
        results = await asyncio.gather(*(asyncio.open_connection("127.0.0.1", port) for _ in range(64)),
                                       return_exceptions=True)
        await asyncio.sleep(0.01)
        for result in results:
            if isinstance(result, tuple):
                opened += 1
                result[1].transport.abort()
    return {"connections_opened": opened}


async def _metrics_scrapes(metrics_port: int, ready, stop, deadline: float) -> dict:
    scrapes = 0

    async def scraper() -> None:
        nonlocal scrapes
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", metrics_port)
                writer.write(b"GET /metrics HTTP/1.1\r\nHost: bench\r\n\r\n")
                await asyncio.wait_for(reader.read(), 5)
                writer.close()
                scrapes += 1
            except (OSError, asyncio.TimeoutError):
                await asyncio.sleep(0.001)

    ready.set()
    await asyncio.gather(*(scraper() for _ in range(8)))
    return {"scrapes": scrapes}


def run_attacker(attack: str, port: int, metrics_port: int, key_id: int, raw_key: bytes, ready, stop,
                 results, limit_s: float) -> None:
    """One attack until ``stop`` is set (or ``limit_s``); its counts go to ``results``."""
    deadline = time.monotonic() + limit_s
    try:
        if attack == "connection_flood":
            outcome = asyncio.run(_connection_flood(port, ready, stop, deadline))
        elif attack == "metrics_scrapes":
            outcome = asyncio.run(_metrics_scrapes(metrics_port, ready, stop, deadline))
        else:
            outcome = asyncio.run(_logged_in_flood(attack, port, key_id, raw_key, ready, stop, deadline))
    except Exception as error:  # reported with the figures, never hidden
        outcome = {"error": f"{type(error).__name__}: {error}"}
    ready.set()
    results.put(outcome)


# ---------------------------------------------------------------------------- the trader


async def _round_trips(trader, samples: int, phase_s: float, request_timeout_s: float) -> tuple[list[int], int]:
    """Up to ``samples`` paced round trips in ``phase_s``; (round trips in us, timeouts)."""
    from matchcore.core.codes import Side

    round_trips, timeouts = [], 0
    deadline = time.monotonic() + phase_s
    while len(round_trips) < samples and time.monotonic() < deadline and trader.connected:
        started = time.perf_counter_ns()
        try:
            order = trader.next_client_id()
            placed = await trader.new_order(INSTRUMENT, Side.BUY, 1, 1, client_order_id=order,
                                            timeout_s=request_timeout_s)
            if placed.accepted:
                await trader.cancel(order, timeout_s=request_timeout_s)
        except asyncio.TimeoutError:
            timeouts += 1
        except Exception:  # the connection went: the phase records it as closed
            break
        round_trips.append((time.perf_counter_ns() - started) // 1000)
        await asyncio.sleep(max(0.0, PACE_MS / 1000 - (time.perf_counter_ns() - started) / 1e9))
    return round_trips, timeouts


def _figures(round_trips: list[int]) -> dict:
    if not round_trips:
        return {"samples": 0, "p50_us": None, "p99_us": None, "max_us": None}
    values = np.sort(np.asarray(round_trips, dtype=np.int64))
    return {"samples": len(values), "p50_us": int(np.percentile(values, 50, method="higher")),
            "p99_us": int(np.percentile(values, 99, method="higher")), "max_us": int(values[-1])}


async def _phase(venue: Venue, trader, attack: str | None, samples: int, phase_s: float,
                 request_timeout_s: float) -> dict:
    context = multiprocessing.get_context("spawn")
    process = None
    attacker: dict = {}
    if attack is not None:
        ready, stop, results = context.Event(), context.Event(), context.Queue()
        key_id, raw = venue.keys[ATTACKER]
        process = context.Process(target=run_attacker, daemon=True,
                                  args=(attack, venue.port, venue.metrics_port, key_id, raw, ready, stop, results,
                                        phase_s + 30))
        process.start()
        await asyncio.get_running_loop().run_in_executor(None, ready.wait, 60)
        await asyncio.sleep(0.2)  # the flood is under way
    try:
        round_trips, timeouts = await _round_trips(trader, samples, phase_s, request_timeout_s)
    finally:
        if process is not None:
            stop.set()
            with contextlib.suppress(Exception):
                attacker = await asyncio.get_running_loop().run_in_executor(None, results.get, True, 60)
            process.join(30)
            if process.is_alive():
                process.kill()
    return {**_figures(round_trips), "timeouts": timeouts, "trader_closed": not trader.connected,
            "attacker": attacker}


async def _measure(venue: Venue, samples: int, phase_s: float, request_timeout_s: float,
                   attacks: tuple[str, ...]) -> dict:
    from matchcore.client import Client, keys as client_keys

    key_id, raw = venue.keys[TRADER]
    trader = Client("127.0.0.1", venue.port, account_id=TRADER, key_id=key_id,
                    private_key=client_keys.load_private_key(raw))
    await trader.connect()
    try:
        await _round_trips(trader, max(20, samples // 5), phase_s, request_timeout_s)  # warm-up
        baseline = await _phase(venue, trader, None, samples, phase_s, request_timeout_s)
        results = {}
        for attack in attacks:
            results[attack] = await _phase(venue, trader, attack, samples, phase_s, request_timeout_s)
            if not trader.connected:  # the next attack starts from a logged-in trader again
                await trader.reconnect()
            await asyncio.sleep(0.3)  # what the attack left queued drains before the next phase
        return {"baseline": baseline, "attacks": results}
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(trader.close(), 5)


def _judge(measured: dict) -> dict:
    baseline_p99 = measured["baseline"]["p99_us"]
    attacks = {}
    for name, phase in measured["attacks"].items():
        within = (baseline_p99 is not None and phase["p99_us"] is not None
                  and phase["p99_us"] <= TARGET_RATIO * baseline_p99 and not phase["trader_closed"])
        attacks[name] = {**phase, "p99_over_baseline": (phase["p99_us"] / baseline_p99
                                                        if phase["p99_us"] and baseline_p99 else None),
                         "meets_target": bool(within)}
    return {"baseline_p99_us": baseline_p99, "baseline": measured["baseline"], "attacks": attacks,
            "all_meet_target": all(a["meets_target"] for a in attacks.values())}


def run_abuse_bench(*, samples: int = 500, phase_s: float = 10.0, request_timeout_s: float = 5.0,
                    attacks: tuple[str, ...] = ATTACKS, as_json: bool = False, dsn: str | None = None,
                    data_dir: str | None = None) -> dict:
    unknown = set(attacks) - set(ATTACKS)
    if unknown:
        raise ValueError(f"unknown attacks {sorted(unknown)}; known: {', '.join(ATTACKS)}")
    parameters = {"samples": samples, "phase_s": phase_s, "request_timeout_s": request_timeout_s,
                  "pace_ms": PACE_MS, "rate_messages_per_s": RATE_MESSAGES_PER_S,
                  "frames_per_write": FRAMES_PER_WRITE, "attacks": ",".join(attacks)}
    if not as_json:
        print_header("matchcore-bench abuse", parameters)
    venue = Venue(2, dsn=dsn, data_dir=data_dir, server_settings=_settings())
    try:
        venue.start_database()
        venue.register_keys()
        venue.start_server()
        asyncio.run(venue.set_up_market())
        measured = asyncio.run(_measure(venue, samples, phase_s, request_timeout_s, attacks))
        exit_code = venue.stop_server()
        last_seq = _journal_last_seq(venue.dsn)
    finally:
        venue.close()
    result = _judge(measured)
    round_trips = measured["baseline"]["samples"] + sum(a["samples"] for a in measured["attacks"].values())
    result.update(checksum={"journal_last_seq": last_seq, "trader_round_trips": round_trips},
                  server_exit_code=exit_code, target=f"p99 <= {TARGET_RATIO:g}x baseline p99, trader never closed",
                  parameters=parameters, machine=machine_info(), admin_account=ADMIN_ACCOUNT)
    if as_json:
        print(json.dumps(result, default=str))
    else:
        _print(result)
    return result


def _print(result: dict) -> None:
    checksum = result["checksum"]
    print(f"checksum: journal_last_seq={checksum['journal_last_seq']} "
          f"trader_round_trips={checksum['trader_round_trips']}")
    baseline = result["baseline"]
    print(f"baseline (no attack): p50 {baseline['p50_us']} us  p99 {baseline['p99_us']} us  "
          f"max {baseline['max_us']} us  ({baseline['samples']} round trips)")
    for name, phase in result["attacks"].items():
        ratio = phase["p99_over_baseline"]
        print(f"{name:>17}: p99 {phase['p99_us']} us ({ratio:.1f}x)  max {phase['max_us']} us  "
              f"{phase['samples']} round trips, {phase['timeouts']} timeouts, trader closed: "
              f"{phase['trader_closed']}  {'meets' if phase['meets_target'] else 'MISSES'} the target  "
              f"attacker: {phase['attacker']}" if ratio is not None else f"{name:>17}: no round trip completed")

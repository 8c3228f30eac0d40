"""What one frame costs a logged-in session, by kind: accepted NEW_ORDERs, refused admin
frames (NOT_AUTHORIZED), frames for another account (WRONG_ACCOUNT), HEARTBEATs, and over-rate
frames (RATE_LIMITED). A hostile client chooses the cheapest frame to send and the dearest to
handle, so each kind's cost is a figure of the venue's exposure.

    python -m matchcore.bench.session_bench [--frames N] [--repeats R] [--json]

A ``Session`` on an in-memory transport (no socket, no loop), fed the frames in 64 KiB reads as
a socket delivers them; the median of ``repeats`` runs in microseconds per frame.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import time

from matchcore import protocol as p
from matchcore.bench.machine import machine_info, print_header
from matchcore.client import keys as client_keys
from matchcore.gateway import keys as server_keys
from matchcore.gateway import sessions

__all__ = ["run_session_bench", "KINDS"]

ACCOUNT = 7
READ_BYTES = 64 * 1024


class _Transport:
    def __init__(self) -> None:
        self.written_bytes = 0
        self.digest = hashlib.sha256()

    def write(self, data: bytes) -> None:
        self.written_bytes += len(data)
        self.digest.update(data)

    def close(self) -> None:
        pass


class _Sink:
    def submit(self, session, commands) -> int:
        return len(commands)


def _frames(kind: str, count: int) -> bytes:
    one = {
        "new_order": p.NewOrder(1, 1, 1, 1, ACCOUNT, 0, 1, 100, 1, 0, 0),
        "refused_admin": p.Deposit(ACCOUNT + 1, 1, 1, 100),
        "wrong_account": p.Cancel(ACCOUNT + 1, 5),
        "heartbeat": p.Heartbeat(0, 0),
        "over_rate": p.NewOrder(1, 1, 1, 1, ACCOUNT, 0, 1, 100, 1, 0, 0),
    }[kind]
    return one.encode() * count


KINDS = ("new_order", "refused_admin", "wrong_account", "heartbeat", "over_rate")


def _session(kind: str, frames: int) -> tuple[sessions.Session, _Transport]:
    # over_rate: a bucket of 1 that never refills within the run, and no close for it
    rate = 1 if kind == "over_rate" else 10**9
    limits = sessions.GatewayLimits(rate_messages_per_s=rate, burst_messages=rate,
                                    rate_limited_frames_per_s_max=10 * frames)
    transport = _Transport()
    session = sessions.Session(1, transport, limits, _Sink(), sessions.SessionSlots(10))
    session.on_connect(0)
    key = client_keys.generate_key()
    login = client_keys.signed_login(key, account_id=ACCOUNT, key_id=1, nonce=session.nonce)
    session.on_data(login.encode(), 1)
    session.take_login()
    session.complete_login(p.SessionReason.NONE, server_keys.KeyRecord(1, ACCOUNT, key.public_key), 2)
    return session, transport


def _run_once(kind: str, frames: int) -> tuple[float, int, str]:
    data = _frames(kind, frames)
    session, transport = _session(kind, frames)
    before = transport.written_bytes
    started = time.perf_counter()
    for offset in range(0, len(data), READ_BYTES):
        session.on_data(data[offset:offset + READ_BYTES], 10)
    elapsed = time.perf_counter() - started
    assert session.state == sessions.SessionState.ACTIVE, (kind, session.close_reason)
    return elapsed / frames * 1e6, transport.written_bytes - before, transport.digest.hexdigest()[:16]


def run_session_bench(frames: int = 20_000, repeats: int = 5, as_json: bool = False) -> dict:
    if not as_json:
        print_header("matchcore-bench session", {"frames": frames, "repeats": repeats, "read_bytes": READ_BYTES})
    result = {"machine": machine_info(), "frames": frames, "repeats": repeats, "kinds": {}}
    for kind in KINDS:
        runs = [_run_once(kind, frames) for _ in range(repeats)]
        figures = {"us_per_frame": statistics.median(r[0] for r in runs),
                   "us_per_frame_runs": [round(r[0], 4) for r in runs],
                   "reply_bytes": runs[0][1], "checksum": runs[0][2]}
        result["kinds"][kind] = figures
        if not as_json:
            print(f"{kind:>14}: {figures['us_per_frame']:8.3f} us/frame (median; runs "
                  f"{figures['us_per_frame_runs']}), replies {figures['reply_bytes']} bytes, "
                  f"checksum {figures['checksum']}")
    if as_json:
        print(json.dumps(result, default=str))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    run_session_bench(args.frames, args.repeats, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

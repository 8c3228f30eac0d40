"""examples/quant.py on a real journal, without its plot: its books at a past seq are a fresh engine's, its bars add up to the trades, its balance history ends at the engine's balance."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from quant_journal import write_engine_journal

from matchcore.core import Engine
from matchcore.core.codes import Side
from matchcore.persistence import Journal
from matchcore.persistence.replay import CONFIG_META_KEY, config_from_meta

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "quant.py"
BOOK_SEQ = 1_234  # after the snapshot at 1000: the example's replay starts from it


def test_quant_example_outputs_are_right(db_dsn: str, tmp_path) -> None:
    engine_at_end = write_engine_journal(db_dsn, commands=2_000, batch_commands=250, snapshot_seq=1000)
    saved = tmp_path / "quant.npz"
    env = {k: v for k, v in os.environ.items() if k != "MATCHCORE_NO_PLOT"} | {"MATCHCORE_DSN": db_dsn}
    done = subprocess.run([sys.executable, str(EXAMPLE), "--seq", str(BOOK_SEQ), "--bar-seconds", "0.1",
                           "--no-plot", "--save", str(saved)], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "plot" not in done.stdout  # told to skip it: not even tried
    out = np.load(saved)
    with Journal(db_dsn) as journal:
        trades = journal.trades()
        commands = journal.commands(1, BOOK_SEQ)
        config = config_from_meta(journal.read_meta(CONFIG_META_KEY))

    # the books at BOOK_SEQ: a fresh engine given the commands 1..BOOK_SEQ
    assert int(out["book_seq"]) == BOOK_SEQ
    fresh = Engine(config)
    fresh.apply(commands)
    instruments = np.unique(trades["instrument_id"]).tolist()
    assert len(instruments) == 2
    for instrument in instruments:
        bids, asks = out[f"bids_{instrument}"], out[f"asks_{instrument}"]
        assert len(bids) and len(asks)
        assert np.array_equal(bids, fresh.depth(instrument, Side.BUY, 10))
        assert np.array_equal(asks, fresh.depth(instrument, Side.SELL, 10))

    # the bars: every trade in exactly one, per instrument and 100 ms bucket
    bars = out["bars"]
    assert bars["trades"].sum() == len(trades) and bars["volume"].sum() == trades["quantity"].sum()
    for instrument in instruments:
        mine = trades[trades["instrument_id"] == instrument]
        assert bars["volume"][bars["instrument_id"] == instrument].sum() == mine["quantity"].sum()
    busiest = bars[np.argmax(bars["trades"])]
    inside = trades[(trades["instrument_id"] == busiest["instrument_id"])
                    & (trades["timestamp_ns"] // 100_000_000 * 100_000_000 == busiest["start_ns"])]
    assert len(inside) == busiest["trades"] > 1
    assert (busiest["open"], busiest["close"]) == (inside["price"][0], inside["price"][-1])
    assert (busiest["high"], busiest["low"]) == (inside["price"].max(), inside["price"].min())
    assert np.all(np.diff(bars["start_ns"][bars["instrument_id"] == instruments[0]]) > 0)

    # the balance history: it ends at the balance of the engine that wrote the journal
    balances, account = out["balances"], int(out["account"])
    assert len(balances) > 3 and np.all(np.diff(balances["seq"].astype(np.int64)) > 0)
    assert (balances["available"][-1], balances["held"][-1]) == engine_at_end.balance(account, 0)

"""The quants' command line on a real journal: Parquet exports, refused suffixes, a verify that checks from seq 1, database errors as one line."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pyarrow.parquet
import pytest
from quant_journal import write_engine_journal

from matchcore.cli.journal import TRADE_COLUMNS
from matchcore.persistence import Journal

# matchcore's CLI in a child process where ``import pyarrow`` fails, as without the extra
WITHOUT_PYARROW = ("import sys; sys.modules['pyarrow'] = None; sys.modules['pyarrow.parquet'] = None; "
                   "from matchcore.cli import main; sys.exit(main(sys.argv[1:]))")


def matchcore(*arguments: str, code: str | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", code] if code else [sys.executable, "-m", "matchcore.cli"]
    return subprocess.run([*command, *arguments], capture_output=True, text=True, timeout=120)


def test_export_trades_parquet_is_parquet(db_dsn: str, tmp_path) -> None:
    write_engine_journal(db_dsn, commands=2_000)
    with Journal(db_dsn) as journal:
        trades = journal.trades()
    assert len(trades) > 50
    out = tmp_path / "trades.parquet"
    done = matchcore("export", "trades", "--dsn", db_dsn, "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert f"{len(trades)} trades written" in done.stdout
    table = pyarrow.parquet.read_table(out)
    assert table.column_names == TRADE_COLUMNS
    for name in TRADE_COLUMNS:
        column = table.column(name).to_numpy()
        assert column.dtype == trades.dtype[name], name
        assert np.array_equal(column, trades[name]), name


def test_export_parquet_without_pyarrow_names_the_extra(tmp_path) -> None:
    out = tmp_path / "trades.parquet"
    done = matchcore("export", "trades", "--dsn", "postgresql://nobody@127.0.0.1:1/none",
                     "--out", str(out), code=WITHOUT_PYARROW)
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "matchcore[quant]" in done.stderr
    assert not out.exists()


@pytest.mark.parametrize("name", ["trades.xlsx", "trades", "trades.parq"])
def test_export_refuses_an_unknown_suffix(tmp_path, name: str) -> None:
    out = tmp_path / name
    done = matchcore("export", "trades", "--dsn", "postgresql://nobody@127.0.0.1:1/none",
                     "--out", str(out))
    assert done.returncode == 2, done.stderr
    assert ".csv, .npy or .parquet" in done.stderr
    assert not out.exists()


def test_unreachable_database_is_one_line_and_exit_2(tmp_path) -> None:
    for arguments in (["export", "trades", "--out", str(tmp_path / "t.csv")], ["replay"]):
        done = matchcore(*arguments, "--dsn", "postgresql://nobody@127.0.0.1:1/none")
        assert done.returncode == 2, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert "journal database" in done.stderr and "Traceback" not in done.stderr


def test_replay_verify_checks_from_seq_1_and_says_which_range(db_dsn: str) -> None:
    engine = write_engine_journal(db_dsn, commands=1_500, batch_commands=250, snapshot_seq=None)
    with Journal(db_dsn) as journal:
        last_seq = journal.last_seq()
        # a snapshot at the journal's end: a replay from it applies nothing
        journal.write_snapshot(last_seq, engine.snapshot(), engine.state_hash())
    done = matchcore("replay", "--dsn", db_dsn, "--verify")
    assert done.returncode == 0, done.stderr
    assert f"replayed {last_seq} commands" in done.stdout
    assert f"{engine.state_hash():016x} verified seq 1..{last_seq} ({last_seq} commands" in done.stdout
    # told where to start, it starts there (from the snapshot: nothing left to check)
    done = matchcore("replay", "--dsn", db_dsn, "--verify", "--from", str(last_seq + 1))
    assert "nothing verified" in done.stdout and " verified seq" not in done.stdout

"""Journal reads by time range ([since, until), found by a seq-bounded search) agree with reads by seq, balance histories agree with a command-by-command replay, and the CLI's --since/--until take zoned ISO times only."""
from __future__ import annotations

import asyncio
import csv
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from quant_journal import START_NS, STEP_NS, write_engine_journal

from matchcore.bench.workload import QUOTE_ASSET
from matchcore.core import Engine
from matchcore.core.codes import EventKind
from matchcore.persistence import AsyncJournal, Journal
from matchcore.persistence.replay import CONFIG_META_KEY, config_from_meta, replay

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def at_seq(seq: int) -> int:
    """The time stamp quant_journal gives command ``seq``."""
    return START_NS + (seq - 1) * STEP_NS


def as_datetime(ns: int) -> datetime:
    assert ns % 1000 == 0
    return EPOCH + timedelta(microseconds=ns // 1000)


def iso(ns: int) -> str:
    return as_datetime(ns).isoformat().replace("+00:00", "Z")


@pytest.fixture
def journal_dsn(db_dsn: str) -> str:
    write_engine_journal(db_dsn, commands=2_000, batch_commands=250, snapshot_seq=750)
    return db_dsn


def test_time_range_is_the_seq_range_of_its_stamps(journal_dsn: str) -> None:
    with Journal(journal_dsn) as journal:
        last_seq = journal.last_seq()
        # half-open: a command stamped exactly at `until` is out, one stamped at `since` is in
        assert journal.seq_range(since=at_seq(501), until=at_seq(1501)) == (501, 1500)
        # between two stamps: the next command is the first one in
        assert journal.seq_range(since=at_seq(501) + 1, until=at_seq(1501) + 1) == (502, 1501)
        assert journal.seq_range(since=as_datetime(at_seq(10))) == (10, last_seq)
        assert journal.seq_range(until=at_seq(1)) == (1, 0)  # before the first command: empty
        assert journal.seq_range(since=at_seq(last_seq) + 1) == (last_seq + 1, last_seq)
        # combined with seqs: both apply (the intersection)
        assert journal.seq_range(100, 900, since=at_seq(501)) == (501, 900)
        first, last = journal.seq_range(700, None, until=at_seq(601))
        assert first == 700 and last < first  # nothing in both


def test_reads_by_time_equal_reads_by_seq(journal_dsn: str) -> None:
    since, until = at_seq(501), as_datetime(at_seq(1501))
    with Journal(journal_dsn) as journal:
        trades = journal.trades(since=since, until=until)
        assert len(trades) > 20
        assert np.array_equal(trades, journal.trades(501, 1500))
        assert trades["timestamp_ns"].min() >= since
        assert np.array_equal(journal.commands(since=since, until=until), journal.commands(501, 1500))
        assert np.array_equal(journal.events(since=since, until=until), journal.events(501, 1500))
        account = int(trades["account_id"][0])
        by_time = journal.account_history(account, since=since, until=until)
        by_seq = journal.account_history(account, 501, 1500)
        assert np.array_equal(by_time.commands, by_seq.commands)
        assert np.array_equal(by_time.events, by_seq.events)
        # both given: the intersection
        assert np.array_equal(journal.trades(1000, 3000, since=since, until=until),
                              journal.trades(1000, 1500))
        assert len(journal.trades(since=at_seq(journal.last_seq()) + 1)) == 0
        assert len(journal.commands(until=at_seq(1))) == 0


def test_async_journal_reads_by_time(journal_dsn: str) -> None:
    async def read() -> tuple[np.ndarray, np.ndarray]:
        async with await AsyncJournal.connect(journal_dsn) as journal:
            return (await journal.trades(since=at_seq(501), until=at_seq(1501)),
                    await journal.trades(501, 1500))

    by_time, by_seq = asyncio.run(read())
    assert len(by_time) > 20 and np.array_equal(by_time, by_seq)


def test_a_naive_datetime_is_refused(journal_dsn: str) -> None:
    with Journal(journal_dsn) as journal, pytest.raises(ValueError, match="time zone"):
        journal.trades(since=datetime(2026, 1, 1))


def brute_force_balances(dsn: str, account: int, asset: int) -> np.ndarray:
    """(seq, timestamp_ns, available, held) after every command that changed the balance,
    applying the journal one command at a time."""
    with Journal(dsn) as journal:
        engine = Engine(config_from_meta(journal.read_meta(CONFIG_META_KEY)))
        commands = journal.commands()
    rows, last = [], (0, 0)
    for index in range(len(commands)):
        engine.apply(commands[index:index + 1])
        now = engine.balance(account, asset)
        if now != last:
            rows.append((int(commands["seq"][index]), int(commands["timestamp_ns"][index]), *now))
            last = now
    return np.array(rows, dtype=np.int64).reshape(-1, 4)


def as_rows(history: np.ndarray) -> np.ndarray:
    return np.stack([history[name].astype(np.int64)
                     for name in ("seq", "timestamp_ns", "available", "held")], axis=1)


def test_balance_history_equals_a_command_by_command_replay(journal_dsn: str) -> None:
    with Journal(journal_dsn) as journal:
        trades = journal.trades()
        config = config_from_meta(journal.read_meta(CONFIG_META_KEY))
        account = int(np.bincount(trades["account_id"]).argmax())  # a busy trader
        for who, asset in ((account, 0), (account, 1), (config.fee_account_id, QUOTE_ASSET)):
            history = journal.balance_history(who, asset)
            expected = brute_force_balances(journal_dsn, who, asset)
            assert len(history) > 3, (who, asset)
            assert history.dtype.names == ("seq", "timestamp_ns", "available", "held")
            assert np.array_equal(as_rows(history), expected), (who, asset)
        # a range: the same rows, cut to it (by seq, by time, or both)
        full = journal.balance_history(account, 1)
        inside = full[(full["seq"] >= 501) & (full["seq"] <= 1500)]
        assert np.array_equal(journal.balance_history(account, 1, 501, 1500), inside)
        assert np.array_equal(journal.balance_history(account, 1, since=at_seq(501),
                                                      until=at_seq(1501)), inside)
        assert len(journal.balance_history(account, 1, since=at_seq(journal.last_seq()) + 1)) == 0


def matchcore(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "matchcore.cli", *arguments], capture_output=True,
                          text=True, timeout=120)


def test_export_trades_since_until(journal_dsn: str, tmp_path) -> None:
    with Journal(journal_dsn) as journal:
        expected = journal.trades(501, 1200)
    out = tmp_path / "trades.csv"
    done = matchcore("export", "trades", "--dsn", journal_dsn, "--out", str(out),
                     "--since", iso(at_seq(501)), "--until", iso(at_seq(1501)), "--to", "1200")
    assert done.returncode == 0, done.stderr
    assert f"{len(expected)} trades written" in done.stdout
    with open(out) as handle:
        rows = list(csv.DictReader(handle))
    assert [int(row["seq"]) for row in rows] == expected["seq"].tolist()
    # another zone, the same instant
    plus_one = as_datetime(at_seq(501)).astimezone(timezone(timedelta(hours=1))).isoformat()
    done = matchcore("export", "trades", "--dsn", journal_dsn, "--out", str(out),
                     "--since", plus_one, "--to", "1200")
    assert done.returncode == 0 and f"{len(expected)} trades written" in done.stdout, done.stderr


@pytest.mark.parametrize("value", ["2026-01-01T00:00:01", "yesterday", "2026-13-01T00:00:00Z"])
def test_a_time_without_zone_or_unreadable_is_one_line_and_exit_2(tmp_path, value: str) -> None:
    for command in (["export", "trades", "--out", str(tmp_path / "t.csv")], ["replay"]):
        done = matchcore(*command, "--dsn", "postgresql://nobody@127.0.0.1:1/none", "--since", value)
        assert done.returncode == 2, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert "--since" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "t.csv").exists()


def test_replay_until_is_the_state_as_of_that_time(journal_dsn: str) -> None:
    with Journal(journal_dsn) as journal:
        expected = replay(journal, until_seq=1200, verify=False).engine.state_hash()
    done = matchcore("replay", "--dsn", journal_dsn, "--until", iso(at_seq(1201)))
    assert done.returncode == 0, done.stderr
    assert "to seq 1200" in done.stdout and f"state_hash {expected:016x}" in done.stdout
    done = matchcore("replay", "--dsn", journal_dsn, "--verify", "--since", iso(at_seq(801)),
                     "--until", iso(at_seq(1201)))
    assert done.returncode == 0, done.stderr
    # from the snapshot before --since (at 750), every command on is checked
    assert f"{expected:016x} verified seq 751..1200" in done.stdout


def test_fills_carry_their_command_stamp(journal_dsn: str) -> None:
    """What the time filter on events relies on: an event's stamp is its command's."""
    with Journal(journal_dsn) as journal:
        events = journal.events()
    fills = events[events["kind"] == EventKind.FILL]
    assert np.array_equal(fills["timestamp_ns"], START_NS + (fills["seq"].astype(np.int64) - 1) * STEP_NS)


def test_the_time_search_reads_one_stamp_per_probe_and_few_probes(journal_dsn: str, monkeypatch) -> None:
    """No scan: about log2(commands) probes for each end of the range, each one stamp."""
    from matchcore.persistence import journal as journal_module

    probes: list[int] = []
    real = journal_module._stamp_at

    async def counting(connection, seq: int) -> int:
        probes.append(seq)
        return await real(connection, seq)

    monkeypatch.setattr(journal_module, "_stamp_at", counting)
    with Journal(journal_dsn) as journal:
        last_seq = journal.last_seq()
        assert journal.seq_range(since=at_seq(1234), until=at_seq(1300)) == (1234, 1299)
    assert len(probes) <= 2 * (last_seq.bit_length() + 1), probes

"""A backup taken while the server trades restores into a new embedded data folder, and the
restored journal replays, every event re-derived, to the same state hash as the original."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from matchcore.core.codes import Side
from matchcore.persistence.embedded import EmbeddedPostgres

from .conftest import ALICE, BOB, INSTRUMENT, env_without_matchcore, run


def _matchcore(*arguments: str) -> str:
    result = subprocess.run([sys.executable, "-m", "matchcore.cli", *arguments], capture_output=True, text=True,
                            timeout=180, env=env_without_matchcore())
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def _state_hash(replay_output: str) -> str:
    return re.search(r"state_hash ([0-9a-f]{16}) verified", replay_output).group(1)


def test_backup_restore_and_verified_replay_give_the_same_state(server):
    async def trade() -> None:
        async with server.client(ALICE) as alice, server.client(BOB) as bob:
            for client_id in range(1, 21):
                assert (await alice.new_order(INSTRUMENT, Side.SELL, 100 + client_id % 3, 2,
                                              client_order_id=client_id, timeout_s=10)).accepted
                assert (await bob.new_order(INSTRUMENT, Side.BUY, 101, 1, client_order_id=client_id,
                                            timeout_s=10)).accepted

    run(trade())
    base = Path(tempfile.mkdtemp(prefix="matchcore-backup-"))
    base.chmod(0o755)
    restored = EmbeddedPostgres(base / "pg")
    try:
        archive = base / "journal.dump"
        assert "backup written" in _matchcore("backup", "--dsn", server.dsn, "--out", str(archive))
        assert archive.stat().st_size > 0
        original = _state_hash(_matchcore("replay", "--dsn", server.dsn, "--verify"))
        _matchcore("restore", "--data-dir", str(restored.data_dir), "--from", str(archive))
        copy = _matchcore("replay", "--data-dir", str(restored.data_dir), "--verify")
        assert _state_hash(copy) == original
        # A backup never overwrites a file.
        again = subprocess.run([sys.executable, "-m", "matchcore.cli", "backup", "--dsn", server.dsn,
                                "--out", str(archive)], capture_output=True, text=True, timeout=60)
        assert again.returncode == 2 and "never overwrites" in again.stderr
    finally:
        if restored.is_running():
            restored.stop("immediate")
        shutil.rmtree(base, ignore_errors=True)

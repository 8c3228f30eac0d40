"""`matchcore admin` drives a real server: each admin command over the wire, rejects named with exit 1, and
`admin apply market.toml` builds a market and is idempotent (a second apply changes nothing)."""
from __future__ import annotations

import ast
import inspect
import json
import subprocess
import sys

import pytest

from matchcore.cli import admin
from tests.e2e.conftest import ADMIN, ServerProcess, env_without_matchcore, run

MARKET = """
[[asset]]
asset_id = 0
decimals = 2
[[asset]]
asset_id = 1
decimals = 2

[[account]]
account_id = 1
[[account]]
account_id = 2

[[instrument]]
instrument_id = 0
base_asset_id = 0
quote_asset_id = 1
tick_size = 1
lot_size = 1
max_order_lots = 1000000
band = { price_min = 1, price_max = 1000000 }
fees = { maker_bps = 1, taker_bps = 5 }

[[deposit]]
account_id = 1
asset_id = 1
transfer_id = 1
amount = 500000
[[deposit]]
account_id = 2
asset_id = 0
transfer_id = 1
amount = 700
"""


@pytest.fixture(scope="module")
def bare_server(pg_server, tmp_path_factory):
    """A running server with no market yet, and its admin key in a PEM file."""
    folder = tmp_path_factory.mktemp("admin")
    folder.chmod(0o755)
    process = ServerProcess(pg_server, folder).start()
    key_id, key = process.keys[ADMIN]
    key_file = folder / "admin.pem"
    key_file.write_bytes(key.private_pem())
    process.admin_options = ["--port", str(process.port), "--key", str(key_file), "--key-id", str(key_id),
                             "--account", str(ADMIN)]
    try:
        yield process
    finally:
        process.drop()


def _admin(server, *arguments: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "matchcore.cli", "admin", arguments[0], *server.admin_options, *arguments[1:]]
    return subprocess.run(command, capture_output=True, text=True, env=env_without_matchcore(), timeout=60)


def test_apply_builds_the_market_and_a_second_apply_changes_nothing(bare_server, tmp_path):
    market = tmp_path / "market.toml"
    market.write_text(MARKET)
    first = _admin(bare_server, "apply", str(market))
    assert first.returncode == 0, first.stdout + first.stderr
    assert "5 added" in first.stdout
    second = _admin(bare_server, "apply", str(market), "--json")
    assert second.returncode == 0, second.stdout + second.stderr
    lines = [json.loads(line) for line in second.stdout.splitlines()]
    assert lines[-1]["changed"] == 0 and lines[-1]["rejected"] == 0
    assert lines[-1]["summary"].startswith("nothing new: already as described")
    assert [line["status"] for line in lines[:5]] == ["already there"] * 5
    assert {line["command"] for line in lines[5:-1]} == {"set-band", "set-fees", "deposit"}
    conflict = tmp_path / "conflict.toml"
    conflict.write_text(MARKET.replace("amount = 700", "amount = 701"))
    refused = _admin(bare_server, "apply", str(conflict))
    assert refused.returncode == 1 and "TRANSFER_ID_REUSED" in refused.stderr


def test_each_command_prints_its_outcome_and_a_reject_exits_1_with_its_reason(bare_server, tmp_path):
    market = tmp_path / "market.toml"
    market.write_text(MARKET)
    assert _admin(bare_server, "apply", str(market)).returncode == 0
    done = _admin(bare_server, "deposit", "--account-id", "2", "--asset-id", "1", "--transfer-id", "9",
                  "--amount", "10")
    assert done.returncode == 0 and "deposit" in done.stdout and ": done" in done.stdout, done.stderr
    too_much = _admin(bare_server, "withdraw", "--account-id", "2", "--asset-id", "1", "--transfer-id", "10",
                      "--amount", "10000", "--json")
    assert too_much.returncode == 1
    assert json.loads(too_much.stdout)["reason"] == "INSUFFICIENT_FUNDS"
    assert _admin(bare_server, "halt", "--instrument-id", "0").returncode == 0
    again = _admin(bare_server, "halt", "--instrument-id", "0")
    assert again.returncode == 1 and "INSTRUMENT_HALTED" in again.stderr
    assert _admin(bare_server, "resume", "--instrument-id", "0").returncode == 0
    exists = _admin(bare_server, "add-asset", "--asset-id", "0", "--decimals", "2")
    assert exists.returncode == 1 and "ASSET_EXISTS" in exists.stderr


def test_no_server_is_one_line_and_exit_2(bare_server):
    options = list(bare_server.admin_options)
    options[1] = "1"
    result = subprocess.run([sys.executable, "-m", "matchcore.cli", "admin", "halt", *options,
                             "--instrument-id", "0"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr


def test_no_function_of_the_admin_cli_is_over_70_lines():
    tree = ast.parse(inspect.getsource(admin))
    lengths = {node.name: node.end_lineno - node.lineno + 1 for node in ast.walk(tree)
               if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}
    assert max(lengths.values()) <= 70, lengths

"""``matchcore admin ...``: the admin commands over the wire with an admin key, and ``admin apply
market.toml``, which brings a venue to the market a TOML file describes, idempotently.

Each command prints its outcome (text, or one JSON object with ``--json``) and exits 0 when the
engine carried it out, 1 on a reject (its reason name printed), 2 on a typed error (no server,
a bad key, a bad file)."""
from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import sys
import tomllib
from typing import Any

__all__ = ["register"]

#: subcommand -> (protocol message class name, its fields as (flag, help))
COMMANDS: dict[str, tuple[str, list[tuple[str, str]]]] = {
    "add-asset": ("AddAsset", [("asset_id", "new asset id"), ("decimals", "minor units per major, 0-18")]),
    "add-account": ("AddAccount", [("account_id", "new account id")]),
    "add-instrument": ("AddInstrument", [("instrument_id", ""), ("base_asset_id", ""), ("quote_asset_id", ""),
                                         ("tick_size", "ticks"), ("lot_size", "base minor units per lot"),
                                         ("max_order_lots", "lots")]),
    "set-band": ("SetPriceBand", [("instrument_id", ""), ("price_min", "ticks"), ("price_max", "ticks")]),
    "set-fees": ("SetFees", [("instrument_id", ""), ("maker_bps", "basis points"), ("taker_bps", "basis points")]),
    "halt": ("HaltInstrument", [("instrument_id", "")]),
    "pause": ("PauseInstrument", [("instrument_id", "")]),
    "resume": ("ResumeInstrument", [("instrument_id", "")]),
    "deposit": ("Deposit", [("account_id", ""), ("asset_id", ""), ("transfer_id", "rises per account, from 1"),
                            ("amount", "minor units")]),
    "withdraw": ("Withdraw", [("account_id", ""), ("asset_id", ""), ("transfer_id", "rises per account, from 1"),
                              ("amount", "minor units")]),
}
#: rejects that mean "already there" when applying a market file. DUPLICATE_TRANSFER_ID is one:
#: transfer ids rise per account and the file's do (market_steps checks), so an id below the
#: account's last was applied before (the engine keeps only the last transfer's content, so an
#: older one cannot be compared). TRANSFER_ID_REUSED is not: the engine answers a repeat of the
#: last id with the same content with its original outcome, so that reject means the id was used
#: for another transfer. The protocol has no query, so an existing asset, account or instrument
#: is not compared with the file (see docs/operations.md).
ALREADY_THERE = {"ASSET_EXISTS", "ACCOUNT_EXISTS", "INSTRUMENT_EXISTS", "DUPLICATE_TRANSFER_ID"}
#: commands the engine makes idempotent (a deposit by its transfer id, a setting by its value)
IDEMPOTENT = {"deposit", "set-band", "set-fees"}


def register(commands: argparse._SubParsersAction) -> None:
    admin = commands.add_parser("admin", help="admin commands over the wire (assets, accounts, instruments, funds)")
    subcommands = admin.add_subparsers(dest="admin", required=True)
    for name, (_, fields) in COMMANDS.items():
        parser = subcommands.add_parser(name, help=f"send {COMMANDS[name][0]}")
        _add_connection_options(parser)
        for field, text in fields:
            parser.add_argument(f"--{field.replace('_', '-')}", dest=field, type=int, required=True, help=text)
        parser.set_defaults(handler=admin_command)
    apply = subcommands.add_parser("apply", help="apply a market TOML file (assets, instruments, accounts, funding)")
    _add_connection_options(apply)
    apply.add_argument("market", help="the TOML file (see docs/operations.md)")
    apply.set_defaults(handler=admin_command)


def _add_connection_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7400)
    parser.add_argument("--key", required=True, help="the admin private key (PEM file)")
    parser.add_argument("--key-id", type=int, required=True)
    parser.add_argument("--account", type=int, required=True, help="the admin key's account")
    parser.add_argument("--passphrase-file", default=None, help="the key's passphrase, first line of this file")
    parser.add_argument("--tls-ca", default=None, help="TLS on, trusting this CA file (PEM)")
    parser.add_argument("--server-hostname", default=None, help="the name the server's certificate carries")
    parser.add_argument("--timeout-s", type=float, default=10.0)
    parser.add_argument("--json", action="store_true", help="print one JSON object per outcome")


def admin_command(args: argparse.Namespace) -> int:
    if args.admin == "apply":
        steps = market_steps(_read_market(args.market))
    else:
        name, fields = COMMANDS[args.admin]
        steps = [(args.admin, name, {field: getattr(args, field) for field, _ in fields})]
    return asyncio.run(_send_all(args, steps, applying=args.admin == "apply"))


def _read_market(path: str) -> dict[str, Any]:
    from matchcore.errors import ConfigError

    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(f"cannot read the market file {path}: {error}") from error


def market_steps(market: dict[str, Any]) -> list[tuple[str, str, dict[str, int]]]:
    """The commands a market file stands for, in dependency order: assets, accounts,
    instruments (with their band and fees), then deposits. Unknown keys are refused."""
    from matchcore.errors import ConfigError

    sections = {"asset": "add-asset", "account": "add-account", "instrument": "add-instrument",
                "deposit": "deposit"}
    unknown = set(market) - set(sections)
    if unknown:
        raise ConfigError(f"unknown section(s) in the market file: {', '.join(sorted(unknown))}")
    steps = []
    for section, command in sections.items():
        for entry in market.get(section, []):
            steps += _entry_steps(section, command, dict(entry))
    last_transfer: dict[int, int] = {}
    for command, _, fields in steps:
        if command == "deposit":
            account, transfer_id = fields["account_id"], fields["transfer_id"]
            if transfer_id <= last_transfer.get(account, 0):
                raise ConfigError(f"[[deposit]] of account {account}: transfer_id {transfer_id} does not "
                                  f"rise (transfer ids start at 1 and rise per account, in file order)")
            last_transfer[account] = transfer_id
    return steps


def _entry_steps(section: str, command: str, entry: dict[str, Any]) -> list[tuple[str, str, dict[str, int]]]:
    from matchcore.errors import ConfigError

    extras = {"band": ("set-band", ("price_min", "price_max")), "fees": ("set-fees", ("maker_bps", "taker_bps"))}
    name, fields = COMMANDS[command]
    wanted = {field for field, _ in fields}
    allowed = wanted | (set(extras) if section == "instrument" else set())
    if set(entry) - allowed or wanted - set(entry):
        raise ConfigError(f"[[{section}]] {entry}: needs exactly {sorted(wanted)}"
                          + (" and optional band, fees" if section == "instrument" else ""))
    steps = [(command, name, {field: int(entry[field]) for field in wanted})]
    for key, (extra, extra_fields) in extras.items():
        if key in entry:
            values = {field: int(entry[key][field]) for field in extra_fields}
            steps.append((extra, COMMANDS[extra][0], {"instrument_id": int(entry["instrument_id"]), **values}))
    return steps


async def _send_all(args: argparse.Namespace, steps, *, applying: bool) -> int:
    from matchcore.errors import MatchcoreError

    try:
        changed, failed = await _send_steps(args, steps, applying)
    except (OSError, asyncio.TimeoutError) as error:
        raise MatchcoreError(f"no answer from {args.host}:{args.port}: {error!r}") from error
    if applying:
        summary = (f"{changed} added" if changed else "nothing new: already as described") + \
            ("; deposits (by transfer id) and settings repeated change nothing" if not failed else f"; {failed} rejected")
        print(json.dumps({"summary": summary, "changed": changed, "rejected": failed}) if args.json else summary)
    return 1 if failed else 0


async def _send_steps(args: argparse.Namespace, steps, applying: bool) -> tuple[int, int]:
    from matchcore import protocol as p

    changed = failed = 0
    async with _client(args) as client:
        for request_id, (command, name, fields) in enumerate(steps, start=1):
            message_class = getattr(p, name)
            if "request_id" in inspect.signature(message_class).parameters:
                fields = {**fields, "request_id": request_id}
            outcome = await client.request(message_class(**fields), timeout_s=args.timeout_s)
            status = _status(outcome, applying)
            changed += status == "done" and command not in IDEMPOTENT
            failed += status == "rejected"
            _print(args, command, fields, status, outcome)
    return changed, failed


def _status(outcome, applying: bool) -> str:
    if outcome.accepted:
        return "done"
    return "already there" if applying and _reason_name(outcome) in ALREADY_THERE else "rejected"


def _reason_name(outcome) -> str:
    from matchcore import protocol as p
    from matchcore.core.codes import RejectReason

    if outcome.reject is not None:
        return p.SessionReason(outcome.reject.reason).name
    return RejectReason(outcome.reason).name


def _print(args: argparse.Namespace, command: str, fields: dict[str, int], status: str, outcome) -> None:
    reason = "" if outcome.accepted else _reason_name(outcome)
    if args.json:
        print(json.dumps({"command": command, **fields, "status": status, "reason": reason or None}))
        return
    text = " ".join(f"{key}={value}" for key, value in fields.items() if key != "request_id")
    stream = sys.stderr if status == "rejected" else sys.stdout
    print(f"{command} {text}: {status}" + (f" ({reason})" if reason else ""), file=stream)


def _client(args: argparse.Namespace):
    import ssl

    from matchcore.client import keys
    from matchcore.client.connection import Client
    from matchcore.errors import ConfigError

    try:
        with open(args.key, "rb") as handle:
            data = handle.read()
        password = None
        if args.passphrase_file:
            with open(args.passphrase_file, "rb") as handle:
                password = handle.readline().rstrip(b"\r\n")
        private_key = keys.load_private_key(data, password)
    except (OSError, ValueError, TypeError) as error:
        raise ConfigError(f"cannot load the admin key {args.key}: {error}") from error
    context = ssl.create_default_context(cafile=args.tls_ca) if args.tls_ca else None
    return Client(args.host, args.port, account_id=args.account, key_id=args.key_id, private_key=private_key,
                  ssl=context, server_hostname=args.server_hostname, connect_timeout_s=args.timeout_s)

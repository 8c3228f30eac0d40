"""``matchcore keys add|list|revoke``: client keys in the server's key table.

The private key is made here, on the operator's machine, and never stored by the server:
only its public half is registered."""
from __future__ import annotations

import argparse
import asyncio
import os
import sys

from matchcore.cli.database import add_database_options, database

__all__ = ["register"]


def register(commands: argparse._SubParsersAction) -> None:
    keys = commands.add_parser("keys", help="client keys: add, list, revoke")
    key_commands = keys.add_subparsers(dest="keys", required=True)
    add = key_commands.add_parser("add", help="make a key pair for an account; store the public key")
    add_database_options(add)
    add.add_argument("--account", type=int, required=True)
    add.add_argument("--admin", action="store_true", help="the key may send admin commands")
    add.add_argument("--label", default=None, help="a note stored with the key")
    add.add_argument("--out", default=None, help="write the private key (PEM) to this new file, mode 0600, "
                     "instead of printing it")
    add.set_defaults(handler=keys_command)
    listing = key_commands.add_parser("list", help="registered keys (public fingerprints only)")
    add_database_options(listing)
    listing.add_argument("--account", type=int, default=None)
    listing.set_defaults(handler=keys_command)
    revoke = key_commands.add_parser("revoke", help="revoke a key (logins with it are refused)")
    add_database_options(revoke)
    revoke.add_argument("key_id", type=int)
    revoke.set_defaults(handler=keys_command)


def keys_command(args: argparse.Namespace) -> int:
    with database(args) as dsn:
        return asyncio.run(_keys(args, dsn))


async def _keys(args: argparse.Namespace, dsn: str) -> int:
    from matchcore.gateway.key_store import PgKeyRegistry

    registry = await PgKeyRegistry.connect(dsn)
    try:
        if args.keys == "add":
            return await _add(args, registry)
        if args.keys == "list":
            return await _list(args, registry)
        if not await registry.revoke(args.key_id):
            print(f"no key {args.key_id}", file=sys.stderr)
            return 1
        print(f"key {args.key_id} revoked")
        return 0
    finally:
        await registry.close()


async def _add(args: argparse.Namespace, registry) -> int:
    from matchcore.client.keys import generate_key

    key = generate_key()
    record = await registry.add(args.account, key.public_key, admin=args.admin, label=args.label or "")
    secret = key.private_pem()
    described = (f"key_id {record.key_id} account {record.account_id} admin {record.admin} "
                 f"fingerprint {record.fingerprint}")
    if args.out:
        descriptor = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(secret)
        print(f"{described}; private key written to {args.out} (mode 0600)")
    else:
        print(described)
        print("private key (shown once, not stored by the server):")
        sys.stdout.write(secret.decode())
    return 0


async def _list(args: argparse.Namespace, registry) -> int:
    records = await registry.list(args.account)
    print(f"{'key_id':>8} {'account':>10} {'admin':>5} {'revoked':>7}  fingerprint")
    for record in records:
        print(f"{record.key_id:>8} {record.account_id:>10} {str(record.admin):>5} "
              f"{str(record.revoked):>7}  {record.fingerprint}")
    return 0

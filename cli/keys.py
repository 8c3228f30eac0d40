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
    role = add.add_mutually_exclusive_group()
    role.add_argument("--admin", action="store_true", help="the key may send admin commands")
    role.add_argument("--market-data-only", action="store_true",
                      help="the key may subscribe to market data and query, not enter orders")
    add.add_argument("--label", default=None, help="a note stored with the key")
    add.add_argument("--out", default=None, help="write the private key (PEM) to this new file, mode 0600, "
                     "instead of printing it (an existing file or a symlink there is refused)")
    protect = add.add_mutually_exclusive_group()
    protect.add_argument("--passphrase-file", default=None,
                         help="encrypt the private key (PKCS#8) with the first line of this file")
    protect.add_argument("--passphrase-prompt", action="store_true",
                         help="encrypt the private key with a passphrase asked on the terminal")
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
    """The private key's file is made first (O_EXCL | O_NOFOLLOW, 0600), the public key
    registered after, and on any failure after the file exists the file is removed and the
    key (if registered) revoked: no active key without its private half, no half-written file."""
    from matchcore.client.keys import generate_key

    try:
        passphrase = _passphrase(args)
    except (OSError, ValueError) as error:
        print(f"matchcore keys add: {error}", file=sys.stderr)
        return 2
    key = generate_key()
    secret = key.private_pem(passphrase)
    descriptor = -1
    if args.out:
        try:
            descriptor = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                                 0o600)
        except OSError as error:
            print(f"matchcore keys add: cannot create {args.out}: {error.strerror} (nothing registered)",
                  file=sys.stderr)
            return 2
    record = None
    try:
        record = await registry.add(args.account, key.public_key, admin=args.admin, label=args.label or "",
                                    market_data_only=args.market_data_only)
        if descriptor >= 0:
            _write_all(descriptor, secret)
            os.fsync(descriptor)
    except BaseException as error:
        await _undo(args.out if descriptor >= 0 else None, registry, record)
        if not isinstance(error, Exception):
            raise
        print(f"matchcore keys add: {error} (no key left active)", file=sys.stderr)
        return 2
    finally:
        if descriptor >= 0:
            os.close(descriptor)
    described = (f"key_id {record.key_id} account {record.account_id} admin {record.admin} "
                 f"fingerprint {record.fingerprint}")
    protected = "encrypted, " if passphrase else ""
    if args.out:
        print(f"{described}; private key written to {args.out} ({protected}mode 0600)")
    else:
        print(described)
        print(f"private key ({protected}shown once, not stored by the server):")
        sys.stdout.write(secret.decode())
    return 0


def _passphrase(args: argparse.Namespace) -> bytes | None:
    if args.passphrase_file:
        with open(args.passphrase_file, "rb") as handle:
            passphrase = handle.readline().rstrip(b"\r\n")
    elif args.passphrase_prompt:
        import getpass

        passphrase = getpass.getpass("passphrase for the new private key: ").encode()
        if getpass.getpass("again: ").encode() != passphrase:
            raise ValueError("the passphrases differ")
    else:
        return None
    if len(passphrase) < 8:
        raise ValueError("a passphrase has at least 8 bytes")
    return passphrase


def _write_all(descriptor: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(descriptor, view):]


async def _undo(path: str | None, registry, record) -> None:
    """After a failure: no file holding a half-written key, no active key nobody holds."""
    if path is not None:
        try:
            os.unlink(path)
        except OSError:
            pass
    if record is not None:
        try:
            await registry.revoke(record.key_id)
        except Exception as error:  # say so: the operator must revoke it by hand
            print(f"matchcore keys add: key {record.key_id} could not be revoked: {error}", file=sys.stderr)


async def _list(args: argparse.Namespace, registry) -> int:
    records = await registry.list(args.account)
    print(f"{'key_id':>8} {'account':>10} {'admin':>5} {'revoked':>7}  fingerprint")
    for record in records:
        print(f"{record.key_id:>8} {record.account_id:>10} {str(record.admin):>5} "
              f"{str(record.revoked):>7}  {record.fingerprint}")
    return 0

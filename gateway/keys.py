"""The server's side of authentication: the registry of public keys and the login check.

The server holds only public keys (``KeyRecord``), so nothing it stores lets anyone log in.
It hands each connection a fresh nonce in CHALLENGE (``new_nonce``); ``authenticate`` checks
a LOGIN's version, flags and nonce before it reads the registry, then its key, account and
signature, and returns the exact ``SessionReason``; ``public_reason`` folds the credential
failures into the one AUTH_FAILED a client is told. The client's half (signing) is ``matchcore.client.keys``; the signed bytes
are the protocol's (``matchcore.protocol.login_signed_bytes``).

The PostgreSQL-backed registry is ``key_store.PgKeyRegistry``; ``MemoryKeyRegistry``
implements the same ``KeyRegistry`` interface in memory. Nothing here logs.
"""
from __future__ import annotations

import abc
import dataclasses
import hmac
import secrets

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from matchcore.protocol import (
    LOGIN_FLAGS_DEFINED, NONCE_SIZE, PROTOCOL_VERSION, PUBLIC_KEY_SIZE, SIGNATURE_SIZE, Login, SessionReason, fingerprint,
    login_signed_bytes,
)

__all__ = [
    "PUBLIC_KEY_SIZE", "KeyRecord", "KeyRegistry", "MemoryKeyRegistry", "checked_new_key",
    "new_nonce", "verify_signature", "authenticate", "check_without_registry", "public_reason",
    "CREDENTIAL_REASONS",
]


def new_nonce() -> bytes:
    """A fresh login challenge: NONCE_SIZE bytes from the operating system's CSPRNG."""
    return secrets.token_bytes(NONCE_SIZE)


def verify_signature(public_key: bytes, signature: bytes, message: bytes) -> bool:
    """True when ``signature`` is ``public_key``'s Ed25519 signature of ``message``."""
    if len(public_key) != PUBLIC_KEY_SIZE or len(signature) != SIGNATURE_SIZE:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except InvalidSignature:
        return False
    return True


@dataclasses.dataclass(frozen=True, slots=True)
class KeyRecord:
    """A registered public key: what the server knows about a client key."""

    key_id: int
    account_id: int
    public_key: bytes  # raw Ed25519, 32 bytes
    admin: bool = False
    revoked: bool = False
    #: market data and queries only: order entry is refused NOT_AUTHORIZED
    market_data_only: bool = False

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.public_key)

    def __repr__(self) -> str:
        return (f"KeyRecord(key_id={self.key_id}, account_id={self.account_id}, "
                f"fingerprint={self.fingerprint}, admin={self.admin}, revoked={self.revoked}, "
                f"market_data_only={self.market_data_only})")


def checked_new_key(account_id: int, public_key: bytes) -> bytes:
    """What every registry's ``add`` checks: an Ed25519 public key (as bytes) and a u32
    account id; ValueError otherwise."""
    public_key = bytes(public_key)
    if len(public_key) != PUBLIC_KEY_SIZE:
        raise ValueError(f"an Ed25519 public key is {PUBLIC_KEY_SIZE} bytes")
    Ed25519PublicKey.from_public_bytes(public_key)  # rejects what is not a key
    if not 0 <= account_id <= 0xFFFFFFFF:
        raise ValueError("account_id must fit u32")
    return public_key


class KeyRegistry(abc.ABC):
    """Where the server looks keys up. Only public keys are stored. Methods are async so a
    database-backed registry fits the same interface."""

    @abc.abstractmethod
    async def lookup(self, key_id: int) -> KeyRecord | None:
        """The key ``key_id``, revoked or not, or None."""

    async def lookup_many(self, key_ids: list[int]) -> dict[int, KeyRecord]:
        """The keys among ``key_ids`` that exist, revoked or not, by key id."""
        found = {}
        for key_id in key_ids:
            record = await self.lookup(key_id)
            if record is not None:
                found[key_id] = record
        return found

    @abc.abstractmethod
    async def add(self, account_id: int, public_key: bytes, *, admin: bool = False,
                  market_data_only: bool = False) -> KeyRecord:
        """Register a public key for ``account_id``; the registry assigns the key id."""

    @abc.abstractmethod
    async def revoke(self, key_id: int) -> bool:
        """Revoke a key (kept, never reused); False if there is no such key."""

    @abc.abstractmethod
    async def list(self, account_id: int | None = None) -> list[KeyRecord]:
        """Keys in key id order, all or one account's."""


class MemoryKeyRegistry(KeyRegistry):
    """A ``KeyRegistry`` in memory, bounded by ``max_keys``. Key ids rise from 1."""

    __slots__ = ("_keys", "_max_keys")

    def __init__(self, max_keys: int = 100_000) -> None:
        if max_keys <= 0:
            raise ValueError("max_keys must be positive")
        self._keys: dict[int, KeyRecord] = {}
        self._max_keys = max_keys

    async def lookup(self, key_id: int) -> KeyRecord | None:
        return self._keys.get(key_id)

    async def add(self, account_id: int, public_key: bytes, *, admin: bool = False,
                  market_data_only: bool = False) -> KeyRecord:
        public_key = checked_new_key(account_id, public_key)
        if admin and market_data_only:
            raise ValueError("a key is either admin or market-data-only")
        if len(self._keys) >= self._max_keys:
            raise OverflowError(f"the registry holds its maximum of {self._max_keys} keys")
        record = KeyRecord(len(self._keys) + 1, account_id, public_key, admin, market_data_only=market_data_only)
        self._keys[record.key_id] = record
        return record

    async def revoke(self, key_id: int) -> bool:
        record = self._keys.get(key_id)
        if record is None:
            return False
        self._keys[key_id] = dataclasses.replace(record, revoked=True)
        return True

    async def list(self, account_id: int | None = None) -> list[KeyRecord]:
        return [record for record in self._keys.values()
                if account_id is None or record.account_id == account_id]


#: A valid Ed25519 public key no one holds the private half of (the Ed25519 base point):
#: a failed lookup is still followed by a signature check, so an unknown, revoked or
#: mismatched key id costs the same time as a wrong signature and is not told apart.
_DECOY_PUBLIC_KEY = bytes.fromhex("5866666666666666666666666666666666666666666666666666666666666666")

#: The checks that answer AUTH_FAILED on the wire (the log keeps which one failed).
CREDENTIAL_REASONS = frozenset({SessionReason.UNKNOWN_KEY, SessionReason.KEY_REVOKED,
                                SessionReason.ACCOUNT_MISMATCH, SessionReason.STALE_CHALLENGE,
                                SessionReason.BAD_SIGNATURE})


def public_reason(reason: SessionReason) -> SessionReason:
    """What the client is told: AUTH_FAILED for any credential failure, else ``reason``."""
    return SessionReason.AUTH_FAILED if reason in CREDENTIAL_REASONS else reason


def check_without_registry(login: Login, issued_nonce: bytes,
                           heartbeat_interval_ms_range: tuple[int, int] | None = None) -> SessionReason:
    """The checks that need no database, done before the key lookup: protocol version,
    flag bits, heartbeat interval (when a range is given), and the nonce of this connection."""
    if login.protocol_version != PROTOCOL_VERSION:
        return SessionReason.UNSUPPORTED_VERSION
    if login.login_flags & ~LOGIN_FLAGS_DEFINED:
        return SessionReason.UNSUPPORTED_LOGIN_FLAGS
    if heartbeat_interval_ms_range is not None and not (
            heartbeat_interval_ms_range[0] <= login.heartbeat_interval_ms <= heartbeat_interval_ms_range[1]):
        return SessionReason.INVALID_HEARTBEAT_INTERVAL
    if len(issued_nonce) != NONCE_SIZE or not hmac.compare_digest(login.nonce, issued_nonce):
        return SessionReason.STALE_CHALLENGE
    return SessionReason.NONE


async def authenticate(registry: KeyRegistry, login: Login, issued_nonce: bytes, *,
                       heartbeat_interval_ms_range: tuple[int, int] | None = None,
                       ) -> tuple[SessionReason, KeyRecord | None]:
    """Check a LOGIN against the nonce this connection was issued.

    Returns ``(NONE, record)`` when it may log in, else ``(reason, None)`` with the exact
    reason (for the log; ``public_reason`` is what the client gets). Order: everything that
    needs no database (``check_without_registry``), then the key lookup; the signature is
    verified whatever the lookup found (against a decoy key when there is no usable one),
    then: key known, not revoked, key of the named account, signature. (Heartbeat interval,
    event sequence and session limits are the server's.)
    """
    reason = check_without_registry(login, issued_nonce, heartbeat_interval_ms_range)
    if reason != SessionReason.NONE:
        return reason, None
    record = await registry.lookup(login.key_id)
    usable = record is not None and not record.revoked and record.account_id == login.account_id
    signed_ok = verify_signature(record.public_key if usable else _DECOY_PUBLIC_KEY, login.signature,
                                 login_signed_bytes(login.encode()))
    if record is None:
        return SessionReason.UNKNOWN_KEY, None
    if record.revoked:
        return SessionReason.KEY_REVOKED, None
    if record.account_id != login.account_id:
        return SessionReason.ACCOUNT_MISMATCH, None
    if not signed_ok:
        return SessionReason.BAD_SIGNATURE, None
    return SessionReason.NONE, record

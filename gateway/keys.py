"""The server's side of authentication: the registry of public keys and the login check.

The server holds only public keys (``KeyRecord``), so nothing it stores lets anyone log in.
It hands each connection a fresh nonce in CHALLENGE (``new_nonce``); ``authenticate`` checks
a LOGIN's key, account, nonce and signature, in that order, and returns a typed
``SessionReason``. The client's half (signing) is ``matchcore.client.keys``; the signed bytes
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
    NONCE_SIZE, PROTOCOL_VERSION, PUBLIC_KEY_SIZE, SIGNATURE_SIZE, Login, SessionReason, fingerprint,
    login_signed_bytes,
)

__all__ = [
    "PUBLIC_KEY_SIZE", "KeyRecord", "KeyRegistry", "MemoryKeyRegistry", "checked_new_key",
    "new_nonce", "verify_signature", "authenticate",
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

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.public_key)

    def __repr__(self) -> str:
        return (f"KeyRecord(key_id={self.key_id}, account_id={self.account_id}, "
                f"fingerprint={self.fingerprint}, admin={self.admin}, revoked={self.revoked})")


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

    @abc.abstractmethod
    async def add(self, account_id: int, public_key: bytes, *, admin: bool = False) -> KeyRecord:
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

    async def add(self, account_id: int, public_key: bytes, *, admin: bool = False) -> KeyRecord:
        public_key = checked_new_key(account_id, public_key)
        if len(self._keys) >= self._max_keys:
            raise OverflowError(f"the registry holds its maximum of {self._max_keys} keys")
        record = KeyRecord(len(self._keys) + 1, account_id, public_key, admin)
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


async def authenticate(registry: KeyRegistry, login: Login,
                       issued_nonce: bytes) -> tuple[SessionReason, KeyRecord | None]:
    """Check a LOGIN against the nonce this connection was issued.

    Returns ``(NONE, record)`` when it may log in, else ``(reason, None)``; checks in
    order: protocol version, key known, not revoked, key of the named account, nonce,
    signature. (Heartbeat interval, event sequence and session limits are the server's.)
    """
    if login.protocol_version != PROTOCOL_VERSION:
        return SessionReason.UNSUPPORTED_VERSION, None
    record = await registry.lookup(login.key_id)
    if record is None:
        return SessionReason.UNKNOWN_KEY, None
    if record.revoked:
        return SessionReason.KEY_REVOKED, None
    if record.account_id != login.account_id:
        return SessionReason.ACCOUNT_MISMATCH, None
    if len(issued_nonce) != NONCE_SIZE or not hmac.compare_digest(login.nonce, issued_nonce):
        return SessionReason.STALE_CHALLENGE, None
    if not verify_signature(record.public_key, login.signature, login_signed_bytes(login.encode())):
        return SessionReason.BAD_SIGNATURE, None
    return SessionReason.NONE, record

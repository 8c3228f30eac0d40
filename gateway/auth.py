"""Client authentication: Ed25519 keys, login challenges, and the registry of public keys.

The server holds only public keys, so nothing it stores lets anyone log in. A login is a
challenge-response: the server sends a random nonce in CHALLENGE; the client signs the
16-byte context ``matchcore-login1`` followed by bytes 0-63 of its LOGIN frame (the session
parameters and the nonce) with its private key; ``authenticate`` checks key, account,
nonce and signature, in that order, and returns a typed ``SessionReason``.

No secret is ever logged or shown: ``PrivateKey.__repr__`` names only the public key's
fingerprint, and nothing here logs. The PostgreSQL-backed registry comes with the server;
``MemoryKeyRegistry`` implements the same ``KeyRegistry`` interface in memory.
"""
from __future__ import annotations

import abc
import dataclasses
import hashlib
import hmac
import secrets

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from matchcore.gateway.protocol import (
    NONCE_SIZE, PROTOCOL_VERSION, SIGNATURE_SIZE, Login, SessionReason, login_signed_bytes,
)

__all__ = [
    "PUBLIC_KEY_SIZE", "PrivateKey", "KeyRecord", "KeyRegistry", "MemoryKeyRegistry", "checked_new_key",
    "generate_key", "load_private_key", "new_nonce", "fingerprint", "sign_login", "signed_login",
    "verify_signature", "authenticate",
]

#: Bytes of a raw Ed25519 public key.
PUBLIC_KEY_SIZE = 32


def fingerprint(public_key: bytes) -> str:
    """A short, safe-to-log name of a public key: the first 16 hex digits of its SHA-256."""
    return hashlib.sha256(public_key).hexdigest()[:16]


class PrivateKey:
    """An Ed25519 private key. Its repr shows only the public key's fingerprint."""

    __slots__ = ("_key",)

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key

    @property
    def public_key(self) -> bytes:
        """The raw 32-byte public key, what the server registers."""
        return self._key.public_key().public_bytes(serialization.Encoding.Raw,
                                                   serialization.PublicFormat.Raw)

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)

    def private_bytes_raw(self) -> bytes:
        """The raw 32-byte secret, for storing the key in a file the client owns."""
        return self._key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                       serialization.NoEncryption())

    def private_pem(self, password: bytes | None = None) -> bytes:
        """PKCS#8 PEM, encrypted when ``password`` is given."""
        encryption = (serialization.BestAvailableEncryption(password) if password
                      else serialization.NoEncryption())
        return self._key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       encryption)

    def __repr__(self) -> str:
        return f"PrivateKey(public={fingerprint(self.public_key)})"

    __str__ = __repr__

    def __reduce__(self):  # no accidental pickling of a secret into a log or a queue
        raise TypeError("PrivateKey is not picklable")


def generate_key() -> PrivateKey:
    """A new random Ed25519 key; register ``.public_key`` with the server, keep the rest."""
    return PrivateKey(Ed25519PrivateKey.generate())


def load_private_key(data: bytes, password: bytes | None = None) -> PrivateKey:
    """A private key from its raw 32 bytes or from PEM (PKCS#8)."""
    if len(data) == 32 and not data.startswith(b"-----"):
        return PrivateKey(Ed25519PrivateKey.from_private_bytes(data))
    key = serialization.load_pem_private_key(data, password=password)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("not an Ed25519 private key")
    return PrivateKey(key)


def new_nonce() -> bytes:
    """A fresh login challenge: NONCE_SIZE bytes from the operating system's CSPRNG."""
    return secrets.token_bytes(NONCE_SIZE)


def signed_login(key: PrivateKey, *, account_id: int, key_id: int, nonce: bytes,
                 next_event_seq: int = 0, login_flags: int = 0,
                 heartbeat_interval_ms: int = 1000) -> Login:
    """A LOGIN message for ``nonce``, signed with ``key``."""
    unsigned = Login(PROTOCOL_VERSION, login_flags, account_id, heartbeat_interval_ms, key_id,
                     next_event_seq, nonce, bytes(SIGNATURE_SIZE))
    return dataclasses.replace(unsigned, signature=sign_login(key, unsigned))


def sign_login(key: PrivateKey, login: Login) -> bytes:
    """The signature of ``login`` (its signature field is not covered)."""
    return key.sign(login_signed_bytes(login.encode()))


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

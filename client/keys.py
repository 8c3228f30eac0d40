"""A client's keys: its Ed25519 private key, and the signed LOGIN it answers a challenge with.

The server holds only public keys, so nothing it stores lets anyone log in. A login is a
challenge-response: the server sends a random nonce in CHALLENGE; the client signs the
16-byte context ``matchcore-login1`` followed by bytes 0-63 of its LOGIN frame (the session
parameters and the nonce) with its private key (``signed_login``).

No secret is ever logged or shown: ``PrivateKey.__repr__`` names only the public key's
fingerprint, and nothing here logs.
"""
from __future__ import annotations

import dataclasses

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from matchcore.protocol import PROTOCOL_VERSION, SIGNATURE_SIZE, Login, fingerprint, login_signed_bytes

__all__ = ["PrivateKey", "generate_key", "load_private_key", "sign_login", "signed_login"]


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

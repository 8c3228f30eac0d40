"""Login authentication accepts exactly a fresh, correctly signed login by a live key of the named account."""
from __future__ import annotations

import asyncio
import dataclasses
import logging

import pytest

pytest.importorskip("cryptography", reason="cryptography is a gateway dependency")

from matchcore.client import keys as client_keys  # noqa: E402

from matchcore.gateway import keys as server_keys  # noqa: E402

from matchcore import protocol as wire  # noqa: E402
from matchcore.protocol import SessionReason  # noqa: E402

ACCOUNT = 7


def run(coroutine):
    return asyncio.run(coroutine)


@pytest.fixture
def registry_and_key():
    registry = server_keys.MemoryKeyRegistry(max_keys=4)
    key = client_keys.generate_key()
    record = run(registry.add(ACCOUNT, key.public_key))
    return registry, key, record


def _login(key, record, nonce, **changes):
    login = client_keys.signed_login(key, account_id=record.account_id, key_id=record.key_id, nonce=nonce,
                              next_event_seq=1, heartbeat_interval_ms=1000)
    return dataclasses.replace(login, **changes) if changes else login


def test_a_good_signature_is_accepted(registry_and_key):
    registry, key, record = registry_and_key
    nonce = server_keys.new_nonce()
    assert run(server_keys.authenticate(registry, _login(key, record, nonce), nonce)) == (SessionReason.NONE, record)


def test_the_wrong_key_is_refused(registry_and_key):
    registry, _, record = registry_and_key
    nonce = server_keys.new_nonce()
    impostor = client_keys.generate_key()
    assert run(server_keys.authenticate(registry, _login(impostor, record, nonce), nonce))[0] == SessionReason.BAD_SIGNATURE


def test_a_revoked_key_is_refused(registry_and_key):
    registry, key, record = registry_and_key
    assert run(registry.revoke(record.key_id))
    nonce = server_keys.new_nonce()
    assert run(server_keys.authenticate(registry, _login(key, record, nonce), nonce))[0] == SessionReason.KEY_REVOKED
    assert not run(registry.revoke(99))


def test_a_signature_of_another_challenge_is_refused(registry_and_key):
    registry, key, record = registry_and_key
    old, fresh = server_keys.new_nonce(), server_keys.new_nonce()
    replayed = _login(key, record, old)
    assert run(server_keys.authenticate(registry, replayed, fresh))[0] == SessionReason.STALE_CHALLENGE
    # the nonce field swapped to the fresh one: the signature no longer matches
    forged = dataclasses.replace(replayed, nonce=fresh)
    assert run(server_keys.authenticate(registry, forged, fresh))[0] == SessionReason.BAD_SIGNATURE


def test_altered_session_parameters_break_the_signature(registry_and_key):
    registry, key, record = registry_and_key
    nonce = server_keys.new_nonce()
    for change in ({"next_event_seq": 2}, {"login_flags": 1}, {"heartbeat_interval_ms": 999}):
        altered = _login(key, record, nonce, **change)
        assert run(server_keys.authenticate(registry, altered, nonce))[0] == SessionReason.BAD_SIGNATURE


def test_unknown_key_other_account_and_version_are_refused(registry_and_key):
    registry, key, record = registry_and_key
    nonce = server_keys.new_nonce()
    assert run(server_keys.authenticate(registry, _login(key, record, nonce, key_id=42), nonce))[0] == SessionReason.UNKNOWN_KEY
    other = dataclasses.replace(record, account_id=ACCOUNT + 1)
    assert run(server_keys.authenticate(registry, _login(key, other, nonce), nonce))[0] == SessionReason.ACCOUNT_MISMATCH
    assert run(server_keys.authenticate(registry, _login(key, record, nonce, protocol_version=2), nonce))[0] == \
        SessionReason.UNSUPPORTED_VERSION


def test_registry_stores_public_keys_only_and_is_bounded():
    registry = server_keys.MemoryKeyRegistry(max_keys=2)
    key = client_keys.generate_key()
    admin = run(registry.add(1, key.public_key, admin=True))
    run(registry.add(2, client_keys.generate_key().public_key))
    assert admin.admin and not admin.revoked and admin.key_id == 1
    assert [r.key_id for r in run(registry.list())] == [1, 2]
    assert [r.account_id for r in run(registry.list(2))] == [2]
    with pytest.raises(OverflowError):
        run(registry.add(3, client_keys.generate_key().public_key))
    with pytest.raises(ValueError):
        run(server_keys.MemoryKeyRegistry().add(1, b"short"))
    secret = key.private_bytes_raw()
    for record in run(registry.list()):
        assert secret not in dataclasses.astuple(record)


def test_no_secret_in_reprs_or_logs(caplog):
    key = client_keys.generate_key()
    secret_hex = key.private_bytes_raw().hex()
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("matchcore").info("key %s %r", key, key)
    assert secret_hex not in caplog.text and secret_hex not in repr(key)
    assert wire.fingerprint(key.public_key) in repr(key)
    assert client_keys.load_private_key(key.private_bytes_raw()).public_key == key.public_key
    assert client_keys.load_private_key(key.private_pem(b"pw"), b"pw").public_key == key.public_key
    with pytest.raises(TypeError):
        import pickle

        pickle.dumps(key)


def test_login_throttle_budget_refill_and_bounded_table():
    from matchcore.gateway.login_throttle import LoginThrottle

    throttle = LoginThrottle(burst=2, refill_ms=1_000, addresses_max=3)
    ms = 1_000_000
    for _ in range(2):
        assert throttle.allowed("10.0.0.1", 0)
        throttle.failed("10.0.0.1", 0)
    assert not throttle.allowed("10.0.0.1", 0) and throttle.allowed("10.0.0.2", 0)
    assert not throttle.allowed("10.0.0.1", 999 * ms) and throttle.allowed("10.0.0.1", 1_000 * ms)
    for address in ("a", "b", "c", "d"):
        throttle.failed(address, 0)
    assert len(throttle) == 3  # the least recently seen address was forgotten


def test_undefined_login_flags_and_limits_fields_are_refused():
    import msgspec
    import pytest

    from matchcore import protocol as p
    from matchcore.gateway import keys
    from matchcore.gateway.sessions import GatewayLimits

    login = p.Login(p.PROTOCOL_VERSION, 0x80, 1, 1000, 1, 0, bytes(32), bytes(64))
    assert keys.check_without_registry(login, bytes(32)) == p.SessionReason.UNSUPPORTED_LOGIN_FLAGS
    assert keys.public_reason(p.SessionReason.UNKNOWN_KEY) == p.SessionReason.AUTH_FAILED
    assert keys.public_reason(p.SessionReason.UNSUPPORTED_VERSION) == p.SessionReason.UNSUPPORTED_VERSION
    with pytest.raises(msgspec.ValidationError):  # a misspelt limit is an error, not a default
        msgspec.convert({"session_age_ms_maxx": 5}, GatewayLimits)

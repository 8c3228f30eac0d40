"""Structured logs: one JSON object a line (msgspec), on standard error.

Every record has ``ts`` (ISO 8601, UTC, microseconds), ``level``, ``logger`` and ``event``
(the message); fields passed with ``extra={...}`` are added as they are. Nothing secret is
ever passed: keys appear only as key ids and public-key fingerprints, DSNs only redacted.
"""
from __future__ import annotations

import datetime
import logging
import re
import sys
from typing import Any, TextIO

import msgspec

__all__ = ["JsonFormatter", "configure", "redact_dsn", "dsn_has_password"]

# Attributes every LogRecord has; anything else on a record came from ``extra``.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
_encoder = msgspec.json.Encoder()


def _default(value: Any) -> Any:
    return repr(value)


_fallback_encoder = msgspec.json.Encoder(enc_hook=_default)


class JsonFormatter(logging.Formatter):
    """Formats a LogRecord as one line of JSON."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc)
            .isoformat(timespec="microseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        try:
            return _encoder.encode(entry).decode()
        except TypeError:
            return _fallback_encoder.encode(entry).decode()


def configure(level: str = "info", stream: TextIO | None = None) -> None:
    """Send every ``matchcore.*`` logger (and the root) to ``stream`` as JSON lines."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    pool_logger = logging.getLogger("asyncpg.pool")
    if not any(isinstance(f, _OneLine) for f in pool_logger.filters):
        pool_logger.addFilter(_OneLine())


class _OneLine(logging.Filter):
    """asyncpg's pool logs a traceback when it cannot reset a connection the database closed
    (a restart); the pool replaces the connection, so one line without the traceback says it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info:
            record.msg = f"{record.getMessage()}: {record.exc_info[1]!r}"
            record.args = None
            record.exc_info = None
        return True


# key=value DSN (libpq): password = value, the value bare or single-quoted with \' and \\ escapes
_KEY_VALUE_PASSWORD = re.compile(r"""(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s']+)""", re.IGNORECASE)
# URL query parameter: ?password=... or &password=..., up to the next & or #
_QUERY_PASSWORD = re.compile(r"([?&]password=)[^&#]*", re.IGNORECASE)


def redact_dsn(dsn: str) -> str:
    """Mask every password a DSN can carry: URL userinfo (``user:secret@``), a
    ``password=`` query parameter, and a key=value ``password=`` (bare or quoted)::

        postgresql://user:secret@host/db          -> postgresql://user:***@host/db
        postgresql://host/db?password=secret&x=1  -> postgresql://host/db?password=***&x=1
        host=db password='se cret' user=u         -> host=db password=*** user=u
    """
    head, sep, tail = dsn.partition("://")
    if not sep:
        return _KEY_VALUE_PASSWORD.sub(r"\1***", dsn)
    query_at = tail.find("?")
    before, query = (tail, "") if query_at < 0 else (tail[:query_at], tail[query_at:])
    if "@" in before:  # userinfo ends at the last "@" (a password may hold "@" or "/")
        credentials, _, location = before.rpartition("@")
        user, colon, _ = credentials.partition(":")
        before = f"{user}:***@{location}" if colon else f"{user}@{location}"
    return f"{head}://{before}" + _QUERY_PASSWORD.sub(r"\1***", query)


def dsn_has_password(dsn: str) -> bool:
    """True when ``dsn`` carries a password (which a command line shows in /proc)."""
    return redact_dsn(dsn) != dsn

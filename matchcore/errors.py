"""matchcore.errors: the one root of every public matchcore exception.

A caller that wants to catch anything matchcore raises on purpose catches ``MatchcoreError``;
each subsystem's errors sit under it, and keep their ``ValueError``/``RuntimeError`` base where
one was there before, so older ``except ValueError`` code still works::

    MatchcoreError
      ConfigError                 an engine or server setting missing, unknown or out of range
                                  (matchcore.core.config, matchcore.gateway.config)
      SnapshotError               a snapshot truncated, of another format, or inconsistent
                                  (matchcore.core.snapshot_format)
      CoreThreadError             the core thread could not start or stop (matchcore.core._core)
      ProtocolError               a frame that breaks the wire format (matchcore.protocol)
      ClientError                 the client library (matchcore.client)
        LoginRefused, ConnectionLost
      PersistenceError            the journal database (matchcore.persistence.errors)
        SchemaVersionError, EmbeddedPostgresError, QueueClosedError,
        JournalIntegrityError
          ChecksumError, SequenceGapError, SequenceOverlapError, ConflictingBatchError,
          ReplayMismatchError (matchcore.persistence.replay)

Only the root and ``ConfigError`` (shared by the engine and the server) are defined here; every
other class lives beside the code that raises it. This module imports nothing, so every layer,
the core included, may import it.
"""
from __future__ import annotations

import sys
from typing import Any, Callable

__all__ = ["MatchcoreError", "ConfigError", "run_command"]


class MatchcoreError(Exception):
    """Base of every exception matchcore raises on purpose."""


class ConfigError(MatchcoreError, ValueError):
    """A configuration value is missing, unknown or out of range (engine or server)."""


def run_command(name: str, handler: Callable[[Any], int], args: Any) -> int:
    """Run a command-line handler: its exit status, or 2 with one line on stderr for a
    MatchcoreError (typed and already explained: no traceback). Both ``matchcore`` and
    ``matchcore-bench`` run their subcommands through it."""
    try:
        return handler(args)
    except MatchcoreError as error:
        print(f"{name}: {error}", file=sys.stderr)
        return 2

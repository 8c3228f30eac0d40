"""Typed configuration of ``matchcore serve``: one msgspec Struct, from a TOML file, then the
environment (``MATCHCORE_*``), then command-line flags, validated at start.

Precedence, lowest first: the defaults below, the TOML file (``--config FILE``), environment
variables, flags. Every field carries its unit in its name. Sections of the TOML file are the
nested structs::

    listen_port = 7400
    [limits]
    max_sessions = 500
    [engine]
    max_accounts = 100000

An environment variable names a field by its path in capitals, sections joined by ``__``:
``MATCHCORE_LISTEN_PORT=7500``, ``MATCHCORE_LIMITS__MAX_SESSIONS=500``. Values are parsed
as TOML values when they can be (numbers, booleans), else taken as strings.

An unknown field is refused at every level (the structs forbid unknown fields), wherever it
comes from: ``--set limits.max_sesions=10``, the same typo in TOML, or
``MATCHCORE_LIMITS__MAX_SESIONS``; ``matchcore serve`` then exits 2 naming it.
"""
from __future__ import annotations

import os
import tomllib
from typing import Any, Mapping

import msgspec

from matchcore.core.config import EngineConfig
from matchcore.errors import ConfigError
from matchcore.gateway.sessions import GatewayLimits

__all__ = ["ServerConfig", "ConfigError", "load_config", "ENV_PREFIX"]

ENV_PREFIX = "MATCHCORE_"
#: Environment variables that are not configuration fields (read elsewhere or ignored here).
_ENV_IGNORED = {"MATCHCORE_DEBUG"}


class ServerConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Everything ``matchcore serve`` can be told. Units are in the names."""

    listen_host: str = "127.0.0.1"
    #: the trading port; 0 = any free port (printed and logged at start)
    listen_port: int = 7400
    metrics_host: str = "127.0.0.1"
    #: Prometheus metrics over HTTP; 0 = any free port, -1 = no metrics server
    metrics_port: int = 9400
    #: the metrics port's HTTP server (gateway/http_status.py): open connections at most; the
    #: time for a request to arrive (and for its answer to be taken); its largest size; how
    #: long one collection of the metrics text is served to every scrape
    metrics_connections_max: int = 16
    metrics_request_timeout_ms: int = 2_000
    metrics_request_bytes_max: int = 8_192
    metrics_cache_ms: int = 1_000
    #: /livez fails when the trading loop has not run for this long
    liveness_loop_stall_ms: int = 10_000
    #: /readyz fails when commands wait for their commit and none came for this long
    readiness_commit_stall_ms: int = 5_000
    #: /readyz checks the database (SELECT 1) at most this often, and not at all while commits come
    readiness_database_check_ms: int = 2_000
    #: PostgreSQL address (also ``MATCHCORE_DSN``); None = the embedded server
    dsn: str | None = None
    #: the embedded server's data folder; None = its default
    data_dir: str | None = None
    #: TLS: a PEM certificate chain and its private key; both or neither
    tls_cert: str | None = None
    tls_key: str | None = None
    log_level: str = "info"
    #: event frames kept in memory for recovery (all accounts together, 96 bytes each);
    #: older events are re-made from the journal
    recent_event_frames: int = 1 << 18
    #: session clock: login timeout, heartbeats and idle timeouts are checked this often
    clock_tick_ms: int = 50
    #: input and output rings of the core (records, powers of two)
    input_ring_capacity_records: int = 1 << 16
    output_ring_capacity_records: int = 1 << 18
    #: a core snapshot after this many commands (0 = never)
    snapshot_every_commands: int = 1_000_000
    #: the engine clock: a CLOCK command after this long without other commands, so GTD
    #: orders expire on a quiet market (0 = off: they expire at the next command)
    engine_clock_ms: int = 1000
    #: ``serve --standby``: how often the standby reads the journal's new rows from its
    #: PostgreSQL (a replica) and asks whether that PostgreSQL became the primary
    standby_poll_ms: int = 20
    #: journal rows: at most this many records (commands + events), waiting at most this long
    journal_batch_records_max: int = 8192
    journal_batch_delay_ms_max: float = 1.0
    #: journal rows on the wire at once, each on a connection of its own; they commit and are
    #: released in seq order (1: one at a time; 2 buys a little throughput at full load and
    #: costs latency below it on a small host: docs/benchmarks.md)
    journal_rows_in_flight_max: int = 1
    #: a checkpoint of the account event counters after this many commands (0 = only at stop)
    stream_checkpoint_every_commands: int = 1_000_000
    #: on SIGTERM/SIGINT: sessions get LOGOUT SERVER_SHUTDOWN, then this long to drain
    shutdown_grace_ms: int = 2000
    limits: GatewayLimits = GatewayLimits()
    engine: EngineConfig = EngineConfig()

    def validate(self) -> "ServerConfig":
        """Raise ConfigError unless every value is usable; return self."""
        checks = [
            (0 <= self.listen_port <= 65535, "listen_port must be in [0, 65535]"),
            (-1 <= self.metrics_port <= 65535, "metrics_port must be in [-1, 65535]"),
            (1 <= self.metrics_connections_max <= 1024, "metrics_connections_max must be in [1, 1024]"),
            (1 <= self.metrics_request_timeout_ms <= 60_000, "metrics_request_timeout_ms must be in [1, 60000]"),
            (256 <= self.metrics_request_bytes_max <= 1 << 20, "metrics_request_bytes_max must be in [256, 2**20]"),
            (0 <= self.metrics_cache_ms <= 60_000, "metrics_cache_ms must be in [0, 60000]"),
            (self.liveness_loop_stall_ms >= 1_000, "liveness_loop_stall_ms must be at least 1000"),
            (self.readiness_commit_stall_ms >= 100, "readiness_commit_stall_ms must be at least 100"),
            (self.readiness_database_check_ms >= 100, "readiness_database_check_ms must be at least 100"),
            ((self.tls_cert is None) == (self.tls_key is None), "tls_cert and tls_key go together"),
            (self.log_level.lower() in ("debug", "info", "warning", "error"),
             "log_level must be debug, info, warning or error"),
            (1 <= self.recent_event_frames <= 1 << 24, "recent_event_frames must be in [1, 2**24]"),
            (1 <= self.clock_tick_ms <= 1000, "clock_tick_ms must be in [1, 1000]"),
            (_power_of_two(self.input_ring_capacity_records), "input_ring_capacity_records must be a power of two"),
            (_power_of_two(self.output_ring_capacity_records), "output_ring_capacity_records must be a power of two"),
            (self.snapshot_every_commands >= 0, "snapshot_every_commands must be >= 0"),
            (0 <= self.engine_clock_ms <= 3_600_000, "engine_clock_ms must be in [0, 3600000]"),
            (1 <= self.standby_poll_ms <= 60_000, "standby_poll_ms must be in [1, 60000]"),
            (1 <= self.journal_batch_records_max <= 1 << 24,
             "journal_batch_records_max must be in [1, 2**24]"),
            (0 <= self.journal_batch_delay_ms_max <= 10_000, "journal_batch_delay_ms_max must be in [0, 10000]"),
            (1 <= self.journal_rows_in_flight_max <= 4, "journal_rows_in_flight_max must be in [1, 4]"),
            (self.shutdown_grace_ms >= 0, "shutdown_grace_ms must be >= 0"),
            (self.stream_checkpoint_every_commands >= 0, "stream_checkpoint_every_commands must be >= 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        for path in (self.tls_cert, self.tls_key):
            if path is not None and not os.path.isfile(path):
                raise ConfigError(f"TLS file {path} does not exist")
        try:
            self.limits.validate()
            self.engine.validate()
        except ValueError as error:
            raise ConfigError(str(error)) from error
        return self


def _power_of_two(value: int) -> bool:
    return value > 0 and value & (value - 1) == 0


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """``MATCHCORE_A__B=v`` -> ``{"a": {"b": v}}`` (``MATCHCORE_DSN`` included)."""
    tree: dict[str, Any] = {}
    for name, text in environ.items():
        if not name.startswith(ENV_PREFIX) or name in _ENV_IGNORED:
            continue
        path = name[len(ENV_PREFIX):].lower().split("__")
        _set_path(tree, path, parse_value(text), source=name)
    return tree


def _set_path(tree: dict[str, Any], path: list[str], value: Any, *, source: str | None = None) -> None:
    """``tree[a][b]... = value``; a section in the way that is a value is a ConfigError."""
    node = tree
    for index, part in enumerate(path[:-1]):
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            where = ".".join(path[:index + 1])
            raise ConfigError(f"{source or '.'.join(path)}: {where} is a value, not a section")
    node[path[-1]] = value


def parse_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_config(path: str | None = None, *, environ: Mapping[str, str] | None = None,
                overrides: Mapping[str, Any] | None = None) -> ServerConfig:
    """Defaults < TOML file ``path`` < environment < ``overrides`` (flags), validated.

    ``overrides`` maps field paths to values; a dotted key (``"limits.max_sessions"``) names a
    nested field. None values in ``overrides`` are skipped (a flag not given).
    """
    tree: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as handle:
                tree = tomllib.load(handle)
        except (OSError, tomllib.TOMLDecodeError) as error:
            raise ConfigError(f"cannot read the configuration file {path}: {error}") from error
    tree = _merge(tree, _env_overrides(os.environ if environ is None else environ))
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        _set_path(tree, key.split("."), value)
    try:
        config = msgspec.convert(tree, ServerConfig, strict=False)
    except msgspec.ValidationError as error:
        raise ConfigError(f"invalid configuration: {error}") from error
    return config.validate()

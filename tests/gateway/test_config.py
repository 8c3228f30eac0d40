"""Server configuration: defaults < TOML < environment < flags, typed and validated at start."""
from __future__ import annotations

import pytest

from matchcore.gateway.config import ConfigError, ServerConfig, load_config


def test_precedence_file_environment_flags(tmp_path):
    path = tmp_path / "server.toml"
    path.write_text('listen_port = 7500\nlog_level = "debug"\n[limits]\nmax_sessions = 50\n'
                    '[engine]\nmax_accounts = 99\n')
    environ = {"MATCHCORE_LISTEN_PORT": "7600", "MATCHCORE_LIMITS__LOGIN_TIMEOUT_MS": "1234",
               "MATCHCORE_DSN": "postgresql://u:p@h/db", "MATCHCORE_DEBUG": "1"}
    config = load_config(str(path), environ=environ, overrides={"listen_port": 7700, "metrics_port": None,
                                                                "limits.max_sessions": 60})
    assert config.listen_port == 7700 and config.metrics_port == ServerConfig().metrics_port
    assert config.log_level == "debug" and config.dsn == "postgresql://u:p@h/db"
    assert config.limits.max_sessions == 60 and config.limits.login_timeout_ms == 1234
    assert config.engine.max_accounts == 99


@pytest.mark.parametrize("overrides, message", [
    ({"limits.max_sessions": 0}, "max_sessions"),
    ({"input_ring_capacity_records": 1000}, "power of two"),
    ({"tls_cert": "/nonexistent"}, "tls_cert and tls_key"),
    ({"engine.max_accounts": 0}, "max_accounts"),
    ({"no_such_field": 1}, "invalid configuration"),
    ({"listen_port": "not a port"}, "invalid configuration"),
])
def test_bad_values_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, environ={}, overrides=overrides)


def test_unreadable_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(str(tmp_path / "missing.toml"), environ={})

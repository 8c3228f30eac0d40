"""`matchcore serve` refuses an unknown field at every level of its configuration, from flags, TOML and the environment."""
from __future__ import annotations

import subprocess
import sys

import pytest

from tests.e2e.conftest import env_without_matchcore

#: (section, misspelt field) at each level of ServerConfig
TYPOS = [(None, "listen_prot"), ("limits", "max_sesions"), ("engine", "max_acounts")]


def _serve(arguments: list[str], environment: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "matchcore.cli", "serve", *arguments], capture_output=True,
                          text=True, env={**env_without_matchcore(), **(environment or {})}, timeout=30)


def _assert_refused(result: subprocess.CompletedProcess, field: str) -> None:
    assert result.returncode == 2, result.stderr
    assert f"unknown field `{field}`" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("section, field", TYPOS)
def test_an_unknown_field_from_set_is_refused(section, field):
    path = f"{section}.{field}" if section else field
    _assert_refused(_serve(["--set", f"{path}=10"]), field)


@pytest.mark.parametrize("section, field", TYPOS)
def test_an_unknown_field_in_toml_is_refused(tmp_path, section, field):
    config = tmp_path / "server.toml"
    config.write_text(f"[{section}]\n{field} = 10\n" if section else f"{field} = 10\n")
    _assert_refused(_serve(["--config", str(config)]), field)


@pytest.mark.parametrize("section, field", TYPOS)
def test_an_unknown_field_from_the_environment_is_refused(section, field):
    name = f"MATCHCORE_{section.upper()}__{field.upper()}" if section else f"MATCHCORE_{field.upper()}"
    _assert_refused(_serve([], {name: "10"}), field)


def test_a_field_under_a_value_that_is_not_a_section_is_refused():
    result = _serve(["--set", "listen_port.extra=1"])
    assert result.returncode == 2 and "listen_port" in result.stderr and "Traceback" not in result.stderr

"""The layout holds: imports point one way between folders, the client carries no server code,
no production package imports the benchmarks, and no function grows past the style's length."""
from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: folder -> the matchcore packages its code may import (besides itself and matchcore.errors,
#: the error root, which imports nothing). docs/architecture.md draws the same graph.
ALLOWED = {
    "core": set(),
    "protocol": {"matchcore.core.records", "matchcore.core.codes"},
    "client": {"matchcore.protocol", "matchcore.core.records", "matchcore.core.codes"},
    # persistence.marketdata: the market data feed regenerated from the journal is wire frames
    "persistence": {"matchcore.core", "matchcore.protocol"},
    "gateway": {"matchcore.core", "matchcore.protocol", "matchcore.persistence"},
    "cli": {"matchcore.core", "matchcore.protocol", "matchcore.persistence", "matchcore.gateway",
            "matchcore.client"},
    "bench": {"matchcore.core", "matchcore.protocol", "matchcore.persistence", "matchcore.gateway",
              "matchcore.client"},
}
PACKAGE_OF = {folder: f"matchcore.{folder}" for folder in ALLOWED}
SOURCE_SUFFIXES = (".py", ".pyx", ".pxi", ".pxd")
#: one import line of Cython source (the .py files are read with ast)
_CYTHON_IMPORT = re.compile(r"^\s*(?:from\s+(matchcore(?:\.\w+)*)\s+c?import\s+(.+)|c?import\s+(matchcore(?:\.\w+)*))")
FUNCTION_LINES_MAX = 70


def _from_import(base: str, names: list[str]) -> set[str]:
    """``from base import names``: ``base.name`` for each name while base is a package
    (``matchcore`` or ``matchcore.<folder>``), else base itself."""
    if base.count(".") <= 1:
        return {f"{base}.{name}" for name in names}
    return {base}


def imported_modules(text: str, python: bool = True) -> set[str]:
    """Every matchcore module (or package member) a source text imports, in functions too."""
    found = set()
    if python:
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names if alias.name.startswith("matchcore"))
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("matchcore"):
                found |= _from_import(node.module, [alias.name for alias in node.names])
        return found
    for line in text.splitlines():
        match = _CYTHON_IMPORT.match(line)
        if match:
            base, names, plain = match.groups()
            found |= {plain} if plain else _from_import(
                base, [name.split()[0] for name in names.strip("()").split(",") if name.strip()])
    return found


def sources(folder: str):
    return [path for path in (ROOT / folder).rglob("*") if path.suffix in SOURCE_SUFFIXES
            and "tests" not in path.relative_to(ROOT / folder).parts]


def violations(folder: str) -> list[str]:
    own, allowed = PACKAGE_OF[folder], ALLOWED[folder] | {"matchcore.errors"}
    bad = []
    for path in sources(folder):
        for module in imported_modules(path.read_text(encoding="utf-8"), path.suffix == ".py"):
            if module == own or module.startswith(own + "."):
                continue
            if not any(module == ok or module.startswith(ok + ".") for ok in allowed):
                bad.append(f"{path.relative_to(ROOT)} imports {module}")
    return bad


@pytest.mark.parametrize("folder", sorted(ALLOWED))
def test_imports_point_one_way(folder):
    assert sources(folder), f"no sources found in {folder}/"
    assert violations(folder) == []


def test_the_checker_sees_a_wrong_import(tmp_path):
    """The rule is not vacuous: the parser finds each form of import the folders use."""
    text = ("from matchcore.gateway import keys\nimport matchcore.bench.workload\n"
            "def f():\n    from matchcore import protocol as p, cli\n"
            "from matchcore.core.records import (\n    COMMAND_DTYPE,\n)\n")
    expected = {"matchcore.gateway.keys", "matchcore.bench.workload", "matchcore.protocol",
                "matchcore.cli", "matchcore.core.records"}
    assert imported_modules(text) == expected
    cython = "from records cimport Command\nfrom matchcore.gateway import keys as k, sessions\n"
    assert imported_modules(cython, python=False) == {"matchcore.gateway.keys", "matchcore.gateway.sessions"}
    assert ALLOWED["protocol"].isdisjoint({"matchcore.gateway", "matchcore.client"})


def test_client_import_loads_no_server_code():
    code = ("import sys, matchcore.client, matchcore.client.connection, matchcore.client.keys\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[:2] in (['matchcore', 'gateway'], "
            "['matchcore', 'persistence'], ['matchcore', 'bench'], ['matchcore', 'cli']))\n"
            "print(','.join(bad))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/",
                            check=True)
    assert result.stdout.strip() == ""


def test_benchmark_tests_are_not_shipped():
    import matchcore.bench

    shipped = Path(matchcore.bench.__file__).parent
    assert not list(shipped.rglob("test_*.py"))


def _long_functions(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > FUNCTION_LINES_MAX]


def test_no_function_over_the_length_limit():
    long = [entry for folder in (*ALLOWED, "matchcore") for path in (ROOT / folder).rglob("*.py")
            for entry in _long_functions(path)]
    assert long == []

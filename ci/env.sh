# Sourced by the ci/ scripts: a project-local virtual environment with matchcore installed.
# Idempotent: re-running reuses .venv and reinstalls the project (rebuilding the extension).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q ".[test]"
export PATH="$ROOT/.venv/bin:$PATH"

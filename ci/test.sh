#!/usr/bin/env bash
# The README's test command: installs everything into .venv, then runs the benchmarks in their
# tiny CI size (so none can rot), the performance gate (callgrind instruction counts against
# ci/baseline.json, see docs/benchmarks.md), the property suite once against the debug build
# (ci/test_debug.sh, about a minute from clean) and the whole test suite (unit, property, integration and end
# to end against a real embedded PostgreSQL). Any failure fails the run.
source "$(dirname "$0")/env.sh"
python -m pytest -q -p no:cacheprovider --benchmark-disable bench/tests
python ci/gate.py
bash ci/test_debug.sh
python -m pytest -q tests "$@"

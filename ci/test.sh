#!/usr/bin/env bash
# The README's test command: installs everything into .venv, then runs the whole suite
# (unit, property, integration against a real embedded PostgreSQL) and the benchmarks in
# their tiny CI size.
source "$(dirname "$0")/env.sh"
python -m pytest -q tests "$@"

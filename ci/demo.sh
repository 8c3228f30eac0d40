#!/usr/bin/env bash
# The README's main job: installs everything into .venv and runs the core benchmark
# (Engine vs ReferenceEngine on the seeded mixed workload).
source "$(dirname "$0")/env.sh"
matchcore bench core "$@"

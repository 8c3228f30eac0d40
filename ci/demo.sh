#!/usr/bin/env bash
# The README's main job: installs everything into .venv, then `matchcore-bench demo`: a server on
# its embedded PostgreSQL, accounts, keys and instruments, a few seconds of load from several
# clients, throughput and ack latency, and a replay verification of the journal.
source "$(dirname "$0")/env.sh"
matchcore-bench demo "$@"

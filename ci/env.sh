# Sourced by the ci/ scripts: a project-local virtual environment with matchcore installed.
# Idempotent: re-running reuses .venv and reinstalls the project (rebuilding the extension).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
# The performance gate counts instructions under valgrind; it is on Debian's package list.
if ! command -v valgrind >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    apt-get update -qq && apt-get install -y -qq valgrind >/dev/null
fi
# A Debian package installed without starting a daemon it comes with (policy-rc.d denies it).
apt_install_no_daemon() {
    local made_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && made_policy=1
    fi
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
    if [ "$made_policy" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
}
# promtool checks the alert rules in deploy/ (tests/deploy); Debian ships it in `prometheus`.
if ! command -v promtool >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    apt_install_no_daemon prometheus
fi
# etcd, Patroni's consensus store, for the replication tests and `matchcore cluster`.
if ! command -v etcd >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    apt_install_no_daemon etcd-server
fi
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
rm -rf build/lib.* build/bdist.*  # setuptools copies stale modules from an old build/lib into the wheel
.venv/bin/python -m pip install -q ".[test,quant,replication]"
export PATH="$ROOT/.venv/bin:$PATH"

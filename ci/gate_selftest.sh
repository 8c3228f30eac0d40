#!/usr/bin/env bash
# Proves that ci/gate.py works: it passes on an unchanged tree several times in a row and fails
# on a tree with a real slowdown planted in the engine's hot path.
#
#   bash ci/gate_selftest.sh                   # against the committed ci/baseline.json
#   bash ci/gate_selftest.sh --fresh-baseline  # against a baseline recorded first from the
#                                              # unchanged copy (when the tree has moved on
#                                              # since the committed baseline was recorded)
#
# What it does, in a temporary directory (removed at the end):
#   1. copies this working tree (tracked and untracked files, not ignored ones: no build
#      output), builds the extensions in place: the "unchanged" tree;
#   2. copies that, plants an extra pass over each command record at the top of
#      Engine.apply_one in core/engine.pxi (PLANTED_PASSES passes over the 8 words of the
#      record through a volatile pointer: about +8% instructions per command with the
#      default 2, that is 2 x 8 loads, multiplies and adds; 4 gives about +16%), rebuilds:
#      the "planted" tree;
#   3. runs the gate on the unchanged tree RUNS times (default 3): each must exit 0;
#   4. runs the gate on the planted tree: it must exit 1 with the engine's instruction count
#      marked REGRESSED.
# Exit 0 when all of that holds. Takes about 3 minutes on 2 cores (two builds, 4-5 gate runs).
# Needs valgrind, a C compiler, and Cython, setuptools and numpy in the interpreter (installed
# with pip when missing). PYTHON selects the interpreter (default: python3 on PATH); KEEP=1
# keeps the temporary directory (both builds) for a closer look.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
RUNS="${RUNS:-3}"
PLANTED_PASSES="${PLANTED_PASSES:-2}"
FRESH=0
[ "${1:-}" = "--fresh-baseline" ] && FRESH=1

WORK="$(mktemp -d "${TMPDIR:-/tmp}/matchcore-gate-selftest.XXXXXX")"
if [ "${KEEP:-0}" = 1 ]; then
    trap 'echo "kept: $WORK"' EXIT
else
    trap 'rm -rf "$WORK"' EXIT
fi
say() { printf '\n=== selftest: %s\n' "$*"; }

"$PYTHON" -c "import Cython, setuptools, numpy" 2>/dev/null ||
    "$PYTHON" -m pip install -q "cython>=3.0.10" "setuptools>=68" numpy

say "copying the tree to $WORK/unchanged and building it"
mkdir "$WORK/unchanged"
(cd "$ROOT" && git ls-files -z --cached --others --exclude-standard |
    tar --null --ignore-failed-read -cf - -T - 2>/dev/null) | tar -C "$WORK/unchanged" -xf -
rm -f "$WORK"/unchanged/core/*.so "$WORK"/unchanged/protocol/*.so "$WORK"/unchanged/persistence/*.so
# Only the extensions are built here, from setup.py; pyproject.toml's metadata would make an
# older setuptools refuse to run at all (PEP 639 license strings need setuptools >= 77).
mv "$WORK/unchanged/pyproject.toml" "$WORK/unchanged/pyproject.toml.unused"
build() {
    if ! (cd "$1" && "$PYTHON" setup.py -q build_ext --inplace >"$1.build.log" 2>&1); then
        tail -30 "$1.build.log"
        echo "selftest FAILED: could not build $1"
        exit 2
    fi
}
build "$WORK/unchanged"

say "planting an extra pass per command ($PLANTED_PASSES passes over the record) in $WORK/planted"
cp -a "$WORK/unchanged" "$WORK/planted"
"$PYTHON" - "$WORK/planted/core/engine.pxi" "$PLANTED_PASSES" <<'EOF'
import sys
path, passes = sys.argv[1], int(sys.argv[2])
source = open(path).read()
anchor = "        self.command = command\n"
if source.count(anchor) != 1:
    sys.exit("selftest: the plant's anchor (Engine.apply_one's first assignment) is not found "
             "exactly once in core/engine.pxi; update ci/gate_selftest.sh")
helper = f'''cdef extern from *:
    """
    /* gate selftest plant: an extra pass over the command record, per command */
    static volatile unsigned long long mc_planted_sink;
    static void mc_planted_extra_pass(const void* record) {{
        const volatile unsigned long long* word = (const volatile unsigned long long*)record;
        unsigned long long sum = 0;
        for (int pass = 0; pass < {passes}; ++pass)
            for (int index = 0; index < 8; ++index)
                sum += word[index] * (unsigned long long)(pass + 1);
        mc_planted_sink = sum;
    }}
    """
    void mc_planted_extra_pass(const void* record) noexcept nogil

'''
source = source.replace(anchor, anchor + "        mc_planted_extra_pass(<const void*>command)\n")
open(path, "w").write(helper + source)
EOF
build "$WORK/planted"

BASELINE="$WORK/baseline.json"
cp "$ROOT/ci/baseline.json" "$BASELINE"
if [ "$FRESH" = 1 ]; then
    say "recording a fresh baseline from the unchanged tree (thresholds kept)"
    "$PYTHON" "$ROOT/ci/gate.py" --tree "$WORK/unchanged" --baseline "$BASELINE" \
        --output "$WORK/fresh.json" --update-baseline
fi

passed=0
for run in $(seq 1 "$RUNS"); do
    say "gate on the unchanged tree, run $run of $RUNS (must pass)"
    status=0
    "$PYTHON" "$ROOT/ci/gate.py" --tree "$WORK/unchanged" --baseline "$BASELINE" \
        --output "$WORK/unchanged-$run.json" || status=$?
    if [ "$status" != 0 ]; then
        echo "selftest FAILED: the gate exited $status on the unchanged tree (run $run)"
        exit 1
    fi
    passed=$((passed + 1))
done

say "gate on the planted tree (must fail with the engine figure REGRESSED)"
status=0
"$PYTHON" "$ROOT/ci/gate.py" --tree "$WORK/planted" --baseline "$BASELINE" \
    --output "$WORK/planted.json" || status=$?
"$PYTHON" - "$WORK/planted.json" "$status" "$passed" <<'EOF'
import json, sys
latest, status, passed = json.load(open(sys.argv[1])), int(sys.argv[2]), int(sys.argv[3])
rows = {row["figure"]: row for row in latest["rows"]}
engine = rows["engine_apply_instructions_per_command"]
if status != 1 or engine["verdict"] != "REGRESSED":
    sys.exit(f"selftest FAILED: on the planted tree the gate exited {status} and the engine "
             f"figure is {engine['verdict']} ({engine['change_pct']:+.2f}%)")
print(f"\nselftest PASSED: the unchanged tree passed the gate {passed} times in a row; the "
      f"planted slowdown ({engine['change_pct']:+.2f}% instructions per command, limit "
      f"{engine['limit_pct']:+.1f}%) failed it with exit status 1.")
EOF

#!/usr/bin/env python3
"""matchcore's performance regression gate: current figures against ci/baseline.json.

    python ci/gate.py                     measure, compare, print a table; exit 1 on a regression
    python ci/gate.py --update-baseline   measure and rewrite the baseline's values (thresholds,
                                          directions and notes already in the file are kept)
    python ci/gate.py --tree DIR          measure the extensions built in place in DIR
                                          (``python setup.py build_ext --inplace``) instead of
                                          the matchcore the interpreter imports

Exit status: 0 every figure within its threshold; 1 a figure regressed beyond its threshold;
2 the gate could not measure (valgrind missing, a workload failed, a symbol matched nothing).

The machine is shared and noisy, so the gate does not compare raw times with stored times.
Its figures are (see docs/benchmarks.md for each one's threshold and why):

- instruction counts under ``valgrind --tool=callgrind``, collected only inside the hot
  function (``--collect-atstart=no --toggle-collect=SYMBOL``) on fixed seeded workloads
  (``bench/callgrind_workload.py``), per unit of work: deterministic, the same binary and
  input give the same count on a busy or an idle machine;
- for the engine, a cycle estimate from callgrind's cache and branch simulation with a fixed
  cache geometry (Ir + 10 x L1 misses + 100 x last-level misses + 10 x mispredicted
  branches, the formula of callgrind_annotate), so a change that adds few instructions but
  touches more memory or branches less predictably still shows;
- one wall-clock figure, as a ratio measured in the same run: Engine against ReferenceEngine
  on the same commands, best of several runs each. It is reported, never gated (verdict
  "report only"): on a shared machine the same code gave 164 and 382, so any threshold wide
  enough for that noise catches nothing the instruction counts do not catch first.

Before measuring, the gate refuses (exit 2) a stale build: an installed (or, with --tree,
in-place) extension older than a native source of the tree (.pyx, .pxi, .pxd, .h, .c of
core/, protocol/, persistence/), since it would measure the code before the edit.

The callgrind outputs are kept in build/bench/callgrind/ (each run's as ``FIGURE.out``, a
passing run's also as ``FIGURE.pass.out``); on a regression the gate prints the functions
whose instruction counts moved most against the last passing run (callgrind_annotate).

The five callgrind workloads (mixed and deep-book engine, the per-command stepper, ring,
codec) run in parallel (about 90 s on 2 cores), then the ratio (about 10 s). The latest figures are written to build/bench/gate-latest.json for ``bench/report.py``.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASELINE_PATH = ROOT / "ci" / "baseline.json"
LATEST_PATH = ROOT / "build" / "bench" / "gate-latest.json"
WORKLOAD_MODULE = "matchcore.bench.callgrind_workload"
WORKLOAD_PATH = ROOT / "bench" / "callgrind_workload.py"

# Cache and branch simulation with a fixed cache geometry: the counts must not depend on the
# host's caches. Weights of callgrind_annotate's cycle estimate (CEst), in cycles per event.
SIMULATION_OPTIONS = ["--cache-sim=yes", "--branch-sim=yes", "--I1=32768,8,64",
                      "--D1=32768,8,64", "--LL=4194304,16,64"]
L1_MISS_CYCLES = 10
LL_MISS_CYCLES = 100
BRANCH_MISPREDICT_CYCLES = 10

# Defaults for a figure new to the baseline; the baseline file is authoritative afterwards.
FIGURES = {
    "engine_apply_instructions_per_command": {
        "unit": "instructions/command", "direction": "lower", "threshold_pct": 3.0,
        "measured": "callgrind Ir inside Engine.apply_batch: mixed workload seed 1, 20,000 "
                    "commands after 20,000 warm-up commands (bench/callgrind_workload.py)"},
    "engine_apply_cycles_estimate_per_command": {
        "unit": "estimated cycles/command", "direction": "lower", "threshold_pct": 5.0,
        "measured": "same run, simulated caches (I1/D1 32 KiB 8-way, LL 4 MiB 16-way) and "
                    "branch predictor: Ir + 10 x L1 misses + 100 x LL misses + 10 x "
                    "mispredicted branches (callgrind_annotate's estimate, not real cycles)"},
    "engine_apply_deep_instructions_per_command": {
        "unit": "instructions/command", "direction": "lower", "threshold_pct": 3.0,
        "measured": "callgrind Ir inside Engine.apply_batch: deep-book workload seed 1 (one "
                    "instrument, ~490 orders a level, one account per order), 40,000 commands "
                    "after 10,000 warm-up commands (bench/callgrind_workload.py)"},
    "engine_apply_deep_cycles_estimate_per_command": {
        "unit": "estimated cycles/command", "direction": "lower", "threshold_pct": 5.0,
        "measured": "same run, the simulated caches and branch predictor of "
                    "engine_apply_cycles_estimate_per_command"},
    "engine_step_instructions_per_command": {
        "unit": "instructions/command", "direction": "lower", "threshold_pct": 3.0,
        "measured": "callgrind Ir inside EngineStepper.step (its Python wrapper: arguments, "
                    "checks, apply_one, the events copied out), one call per command over the "
                    "20,000 measured commands of engine_apply (same events checksum). Not "
                    "engine_apply's figure plus a cost: apply_one alone runs no prefetch "
                    "stages; of 822.5 at the baseline, apply_one was 674.5 and the call 148"},
    "ring_push_pop_instructions_per_record": {
        "unit": "instructions/record", "direction": "lower", "threshold_pct": 3.0,
        "measured": "callgrind Ir inside Ring.try_push + Ring.pop_into, one thread, 262,144 "
                    "records of 64 bytes in batches of 256, capacity 4,096"},
    "codec_decode_instructions_per_message": {
        "unit": "instructions/message", "direction": "lower", "threshold_pct": 3.0,
        "measured": "callgrind Ir inside CommandDecoder.decode: 50,000 order-entry frames "
                    "(70% new, 20% cancel, 10% replace) into a 4,096-record array"},
    "engine_speedup_vs_reference": {
        "unit": "x (Engine cmds/s / ReferenceEngine cmds/s)", "direction": "higher",
        "threshold_pct": 50.0, "gated": False,
        "measured": "wall clock, same run: best of 5 Engine runs of 200,000 mixed commands "
                    "against best of 3 ReferenceEngine runs of their first 10,000"},
}


class GateError(Exception):
    """The gate could not measure: exit status 2."""


# ---------------------------------------------------------------- a stale build

NATIVE_FOLDERS = ("core", "protocol", "persistence")
NATIVE_SUFFIXES = (".pyx", ".pxi", ".pxd", ".h", ".c")
EXTENSIONS = ("matchcore.core._core", "matchcore.protocol._codec", "matchcore.persistence._checksum")
CALLGRIND_KEPT = ROOT / "build" / "bench" / "callgrind"


#: each extension's own folder, then folders whose declarations (.pxd, .h) it cimports too
EXTENSION_FOLDERS = {"matchcore.core._core": ("core",), "matchcore.protocol._codec": ("protocol", "core"),
                     "matchcore.persistence._checksum": ("persistence", "core")}


def native_sources(tree: Path, folders: tuple[str, ...] = NATIVE_FOLDERS) -> list[Path]:
    """The hand-written native sources in ``folders`` (Cython's generated .c excluded)."""
    sources = []
    for folder in folders:
        for path in sorted((tree / folder).iterdir()):
            if path.suffix not in NATIVE_SUFFIXES:
                continue
            if path.suffix == ".c" and path.with_suffix(".pyx").exists():
                continue  # generated from the .pyx by the build itself
            sources.append(path)
    return sources


def stale_extensions(extensions: dict[str, Path], tree: Path) -> list[str]:
    """One sentence per extension older than the newest of its own sources (mtimes: a build
    writes the extension after reading every source, so an edit since makes a source newer;
    each extension is compared with its own folders only, so rebuilding one is enough for it)."""
    stale = []
    for name, path in extensions.items():
        own, *shared = EXTENSION_FOLDERS.get(name, NATIVE_FOLDERS)
        sources = native_sources(tree, (own,)) + [source for source in native_sources(tree, tuple(shared))
                                                  if source.suffix in (".pxd", ".h")]
        if not sources:
            continue
        newest = max(sources, key=lambda source: source.stat().st_mtime_ns)
        if path.stat().st_mtime_ns < newest.stat().st_mtime_ns:
            stale.append(f"{name} ({path}) is older than {newest}")
    return stale


def extension_paths(python: str, env: dict) -> dict[str, Path]:
    """Where the workloads' interpreter finds each extension (without importing it)."""
    code = ("import importlib.util, json, sys; print(json.dumps({n: importlib.util.find_spec(n).origin "
            "for n in sys.argv[1:]}))")
    found = subprocess.run([python, "-c", code, *EXTENSIONS], env=env, capture_output=True, text=True)
    if found.returncode != 0:
        raise GateError(f"cannot find matchcore's extensions:\n{found.stderr[-2000:]}")
    return {name: Path(origin) for name, origin in json.loads(found.stdout).items()}


def refuse_stale_build(python: str, env: dict, tree: Path | None) -> None:
    """GateError when a measured extension predates the tree's native sources."""
    stale = stale_extensions(extension_paths(python, env), tree or ROOT)
    if stale:
        how = (f"python setup.py build_ext --inplace in {tree}" if tree else
               "rm -rf build/lib.* build/bdist.* && pip install --no-build-isolation .")
        raise GateError("the build is stale, so the gate would measure the code before your "
                        "edit: " + "; ".join(stale) + f". Rebuild first ({how}).")


# ---------------------------------------------------------------- measuring


def child_environment(tree: Path | None, scratch: Path) -> dict:
    """The environment of the workload processes: fixed hash seed; with a tree, its build."""
    env = dict(os.environ, PYTHONHASHSEED="0")
    if tree is not None:
        site = scratch / "site" / "matchcore"
        site.mkdir(parents=True)
        for folder in ("core", "protocol", "gateway", "persistence", "client", "cli", "bench"):
            (site / folder).symlink_to(tree.resolve() / folder)
        (site / "errors.py").symlink_to(tree.resolve() / "matchcore" / "errors.py")
        env["PYTHONPATH"] = str(scratch / "site")
    return env


def figure_symbols() -> dict[str, list[str]]:
    """FIGURE_SYMBOLS of the workload module, read from this tree (no build or install needed)."""
    spec = importlib.util.spec_from_file_location("_gate_workload", WORKLOAD_PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.FIGURE_SYMBOLS


def start_callgrind(figure: str, python: str, env: dict, scratch: Path, arguments: list[str],
                    simulation: bool) -> tuple[subprocess.Popen, Path]:
    out_path = scratch / f"callgrind.{figure}.out"
    command = ["valgrind", "--tool=callgrind", "--collect-atstart=no",
               f"--callgrind-out-file={out_path}"]
    command += [f"--toggle-collect={symbol}" for symbol in figure_symbols()[figure]]
    command += SIMULATION_OPTIONS if simulation else []
    command += [python, "-m", WORKLOAD_MODULE, figure, *arguments]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    return process, out_path


def callgrind_totals(out_path: Path) -> dict[str, int]:
    """Event name -> total count, from the summary line of a callgrind output file."""
    names, values = None, None
    for line in out_path.read_text().splitlines():
        if line.startswith("events:"):
            names = line.split()[1:]
        elif line.startswith(("summary:", "totals:")) and values is None:
            values = [int(v) for v in line.split()[1:]]
    if names is None or values is None:
        raise GateError(f"{out_path} has no events/summary line")
    return dict(zip(names, values))


def finish_callgrind(figure: str, process: subprocess.Popen, out_path: Path) -> dict:
    stdout, stderr = process.communicate()
    if process.returncode != 0:
        raise GateError(f"the {figure} workload failed under valgrind (exit "
                        f"{process.returncode}):\n{stderr[-3000:]}")
    report = json.loads(stdout.strip().splitlines()[-1])
    totals = callgrind_totals(out_path)
    if totals.get("Ir", 0) == 0:
        raise GateError(f"{figure}: no instruction was collected, so the --toggle-collect "
                        f"pattern matched no function. Find the measured function's C name "
                        f"in core/_core.c or protocol/_codec.c and update FIGURE_SYMBOLS in "
                        f"bench/callgrind_workload.py.")
    report["totals"] = totals
    return report


def cycles_estimate(totals: dict[str, int]) -> int:
    l1_misses = totals["I1mr"] + totals["D1mr"] + totals["D1mw"]
    ll_misses = totals["ILmr"] + totals["DLmr"] + totals["DLmw"]
    mispredicts = totals["Bcm"] + totals["Bim"]
    return (totals["Ir"] + L1_MISS_CYCLES * l1_misses + LL_MISS_CYCLES * ll_misses
            + BRANCH_MISPREDICT_CYCLES * mispredicts)


def measure_counts(python: str, env: dict, scratch: Path) -> tuple[dict, dict, dict]:
    """(figures, checksums, toolchain) of the five callgrind workloads, run in parallel."""
    engine_input = scratch / "engine_apply.npz"
    deep_input = scratch / "engine_apply_deep.npz"
    subprocess.run([python, "-m", WORKLOAD_MODULE, "prepare_engine_apply", str(engine_input)],
                   env=env, check=True)
    subprocess.run([python, "-m", WORKLOAD_MODULE, "prepare_engine_apply_deep", str(deep_input)],
                   env=env, check=True)
    runs = {
        "engine_apply": start_callgrind("engine_apply", python, env, scratch,
                                        [str(engine_input)], True),
        "engine_apply_deep": start_callgrind("engine_apply_deep", python, env, scratch,
                                             [str(deep_input)], True),
        "engine_step": start_callgrind("engine_step", python, env, scratch,
                                       [str(engine_input)], False),
        "ring_push_pop": start_callgrind("ring_push_pop", python, env, scratch, [], False),
        "codec_decode": start_callgrind("codec_decode", python, env, scratch, [], False),
    }
    reports = {figure: finish_callgrind(figure, *run) for figure, run in runs.items()}
    engine, ring, codec = reports["engine_apply"], reports["ring_push_pop"], reports["codec_decode"]
    deep, step = reports["engine_apply_deep"], reports["engine_step"]
    if step["checksum"] != engine["checksum"]:
        raise GateError(f"engine_step's events (checksum {step['checksum']}) differ from "
                        f"engine_apply's ({engine['checksum']}) on the same commands")
    figures = {
        "engine_apply_instructions_per_command": engine["totals"]["Ir"] / engine["units"],
        "engine_apply_cycles_estimate_per_command": cycles_estimate(engine["totals"]) / engine["units"],
        "engine_apply_deep_instructions_per_command": deep["totals"]["Ir"] / deep["units"],
        "engine_apply_deep_cycles_estimate_per_command": cycles_estimate(deep["totals"]) / deep["units"],
        "engine_step_instructions_per_command": step["totals"]["Ir"] / step["units"],
        "ring_push_pop_instructions_per_record": ring["totals"]["Ir"] / ring["units"],
        "codec_decode_instructions_per_message": codec["totals"]["Ir"] / codec["units"],
    }
    checksums = {
        "engine_apply_instructions_per_command": engine["checksum"],
        "engine_apply_cycles_estimate_per_command": engine["checksum"],
        "engine_apply_deep_instructions_per_command": deep["checksum"],
        "engine_apply_deep_cycles_estimate_per_command": deep["checksum"],
        "engine_step_instructions_per_command": step["checksum"],
        "ring_push_pop_instructions_per_record": ring["checksum"],
        "codec_decode_instructions_per_message": codec["checksum"],
    }
    toolchain = {key: engine[key] for key in ("compiler", "cython", "python", "numpy")}
    toolchain["valgrind"] = subprocess.run(["valgrind", "--version"], capture_output=True,
                                           text=True).stdout.strip()
    toolchain["binaries"] = engine["binaries"]
    return figures, checksums, toolchain


def measure_speedup(commands: int = 200_000, reference_commands: int = 10_000) -> dict:
    """Engine vs ReferenceEngine, wall clock, same process: best of runs, interleaved."""
    from matchcore.bench.workload import mixed_workload
    from matchcore.core import Engine, commands as c
    from matchcore.core.reference import ReferenceEngine

    workload = mixed_workload(commands, seed=1)
    setup = c.number(workload.setup.copy(), first_seq=1)
    measured = c.number(workload.commands.copy(), first_seq=len(setup) + 1)
    prefix = measured[:reference_commands]

    def timed(engine_class, batch):
        engine = engine_class(workload.config)
        engine.apply(setup)
        start = time.perf_counter()
        events = engine.apply(batch)
        return time.perf_counter() - start, events

    engine_seconds, reference_seconds = [], []
    for run in range(5):
        engine_seconds.append(timed(Engine, measured)[0])
        if run < 3:
            seconds, reference_events = timed(ReferenceEngine, prefix)
            reference_seconds.append(seconds)
    if timed(Engine, prefix)[1].tobytes() != reference_events.tobytes():
        raise AssertionError("Engine and ReferenceEngine disagree on the gate's workload")
    engine_rate = commands / min(engine_seconds)
    reference_rate = reference_commands / min(reference_seconds)
    return {"engine_speedup_vs_reference": engine_rate / reference_rate,
            "engine_cmds_per_s": engine_rate, "reference_cmds_per_s": reference_rate}


def measure(python: str, tree: Path | None) -> dict:
    """Every figure, with what it depends on. Raises GateError when something cannot run."""
    if shutil.which("valgrind") is None:
        raise GateError("valgrind is not installed; the gate's figures are callgrind counts "
                        "(apt-get install valgrind)")
    with tempfile.TemporaryDirectory(prefix="matchcore-gate-") as scratch_name:
        scratch = Path(scratch_name)
        env = child_environment(tree, scratch)
        refuse_stale_build(python, env, tree)
        started = time.perf_counter()
        figures, checksums, toolchain = measure_counts(python, env, scratch)
        counted = time.perf_counter()
        speedup = subprocess.run([python, str(Path(__file__).resolve()), "--measure-speedup"],
                                 env=env, capture_output=True, text=True)
        if speedup.returncode != 0:
            raise GateError(f"the speed-ratio measurement failed:\n{speedup.stderr[-3000:]}")
        ratio = json.loads(speedup.stdout.strip().splitlines()[-1])
        keep_callgrind_outputs(scratch)
    figures["engine_speedup_vs_reference"] = ratio["engine_speedup_vs_reference"]
    return {"figures": figures, "checksums": checksums, "toolchain": toolchain,
            "wall_clock": {"engine_cmds_per_s": ratio["engine_cmds_per_s"],
                           "reference_cmds_per_s": ratio["reference_cmds_per_s"]},
            "seconds": {"callgrind": counted - started, "ratio": time.perf_counter() - counted}}


def keep_callgrind_outputs(scratch: Path) -> None:
    """Copy this run's callgrind outputs to build/bench/callgrind/FIGURE.out."""
    CALLGRIND_KEPT.mkdir(parents=True, exist_ok=True)
    for out in scratch.glob("callgrind.*.out"):
        shutil.copyfile(out, CALLGRIND_KEPT / (out.name.removeprefix("callgrind.")))


def function_costs(out_path: Path) -> dict[str, int]:
    """Function -> exclusive Ir, from ``callgrind_annotate --threshold=100``."""
    annotated = subprocess.run(["callgrind_annotate", "--threshold=100", "--show=Ir",
                                "--inclusive=no", "--auto=no", str(out_path)],
                               capture_output=True, text=True)
    costs: dict[str, int] = {}
    for line in annotated.stdout.splitlines():
        parts = line.split()
        if len(parts) < 2 or not parts[0].replace(",", "").isdigit() or ":" not in parts[-1]:
            continue
        costs[parts[-1]] = costs.get(parts[-1], 0) + int(parts[0].replace(",", ""))
    return costs


def moved_functions(figure_run: str, count: int = 8) -> list[str]:
    """The functions whose Ir moved most between the last passing run and this one."""
    current, passed = CALLGRIND_KEPT / f"{figure_run}.out", CALLGRIND_KEPT / f"{figure_run}.pass.out"
    if not passed.exists():
        return [f"(no passing run of {figure_run} kept in {CALLGRIND_KEPT} to compare with; "
                f"annotate {current} with callgrind_annotate)"]
    new, old = function_costs(current), function_costs(passed)
    deltas = sorted(((new.get(f, 0) - old.get(f, 0), f) for f in set(new) | set(old)),
                    key=lambda item: -abs(item[0]))
    return [f"{delta:+,} Ir  {function}" for delta, function in deltas[:count] if delta]


def mark_passing_run() -> None:
    """This run passed: its callgrind outputs are what the next regression is compared with."""
    for out in CALLGRIND_KEPT.glob("*.out"):
        if not out.name.endswith(".pass.out"):
            shutil.copyfile(out, out.with_name(out.name.removesuffix(".out") + ".pass.out"))


# Which callgrind run measured each gated figure
FIGURE_RUNS = {"engine_apply_instructions_per_command": "engine_apply",
               "engine_apply_cycles_estimate_per_command": "engine_apply",
               "engine_apply_deep_instructions_per_command": "engine_apply_deep",
               "engine_apply_deep_cycles_estimate_per_command": "engine_apply_deep",
               "engine_step_instructions_per_command": "engine_step",
               "ring_push_pop_instructions_per_record": "ring_push_pop",
               "codec_decode_instructions_per_message": "codec_decode"}


# ---------------------------------------------------------------- comparing


def compare(baseline: dict, measured: dict) -> list[dict]:
    """One row per figure: baseline, current, change, limit, verdict."""
    rows = []
    known = baseline.get("figures", {})
    for name in sorted(set(known) | set(measured["figures"])):
        current = measured["figures"].get(name)
        spec = known.get(name)
        row = {"figure": name, "current": current, "baseline": None, "change_pct": None,
               "limit_pct": None, "verdict": "new"}
        if spec is None:
            rows.append(row)     # measured, not yet in the baseline: reported, never failed
            continue
        row["baseline"] = spec["value"]
        if current is not None and not spec.get("gated", FIGURES.get(name, {}).get("gated", True)):
            row["change_pct"] = (current - spec["value"]) / spec["value"] * 100.0
            row["verdict"] = "report only"
            rows.append(row)
            continue
        sign = 1.0 if spec["direction"] == "lower" else -1.0
        row["limit_pct"] = sign * spec["threshold_pct"]
        if current is None:
            row["verdict"] = "MISSING"
            rows.append(row)
            continue
        change_pct = (current - spec["value"]) / spec["value"] * 100.0
        row["change_pct"] = change_pct
        worse_pct = sign * change_pct
        if worse_pct > spec["threshold_pct"]:
            row["verdict"] = "REGRESSED"
        elif -worse_pct > spec["threshold_pct"]:
            row["verdict"] = "improved"
        else:
            row["verdict"] = "ok"
        rows.append(row)
    return rows


def format_table(rows: list[dict]) -> str:
    def number(value):
        return "-" if value is None else f"{value:,.1f}"

    def percent(value):
        return "-" if value is None else f"{value:+.2f}%"

    header = ("figure", "baseline", "current", "change", "limit", "verdict")
    lines = [[r["figure"], number(r["baseline"]), number(r["current"]),
              percent(r["change_pct"]), percent(r["limit_pct"]), r["verdict"]] for r in rows]
    widths = [max(len(str(line[i])) for line in [header, *lines]) for i in range(len(header))]
    out = ["  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in
                     enumerate(zip(header, widths)))]
    out += ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in
                      enumerate(zip(line, widths))) for line in lines]
    return "\n".join(out)


def toolchain_warnings(baseline: dict, measured: dict) -> list[str]:
    """Counts depend on the compiler, Python and numpy: say so when they differ."""
    warnings = []
    old = baseline.get("toolchain", {})
    for key in ("compiler", "cython", "python", "numpy", "valgrind"):
        if key in old and old[key] != measured["toolchain"].get(key):
            warnings.append(f"toolchain: {key} is {measured['toolchain'].get(key)!r}, the "
                            f"baseline was measured with {old[key]!r}; counts may differ for "
                            f"that reason alone")
    for name, checksum in measured["checksums"].items():
        old_checksum = baseline.get("figures", {}).get(name, {}).get("checksum")
        if old_checksum is not None and old_checksum != checksum:
            warnings.append(f"{name}: the workload's output changed (checksum {checksum}, "
                            f"baseline {old_checksum}): behaviour changed, so the work counted "
                            f"is not the same work")
    return warnings


def updated_baseline(baseline: dict, measured: dict) -> dict:
    figures = {}
    for name, value in measured["figures"].items():
        spec = {"value": round(value, 1), **FIGURES[name]}
        spec.update({k: v for k, v in baseline.get("figures", {}).get(name, {}).items()
                     if k not in ("value", "checksum")})
        if name in measured["checksums"]:
            spec["checksum"] = measured["checksums"][name]
        figures[name] = spec
    toolchain = {k: v for k, v in measured["toolchain"].items() if k != "binaries"}
    return {"about": "matchcore performance gate baseline. Compare: python ci/gate.py. "
                     "Update: python ci/gate.py --update-baseline. Thresholds: docs/benchmarks.md.",
            "toolchain": toolchain, "figures": figures}


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--update-baseline", action="store_true",
                        help="rewrite the baseline's values with this run's figures")
    parser.add_argument("--baseline", type=Path, default=BASELINE_PATH)
    parser.add_argument("--tree", type=Path, help="a source tree built in place to measure")
    parser.add_argument("--python", default=sys.executable, help="interpreter of the workloads")
    parser.add_argument("--output", type=Path, default=LATEST_PATH, help="latest figures (JSON)")
    parser.add_argument("--measure-speedup", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure_speedup:
        print(json.dumps(measure_speedup()))
        return 0
    baseline = json.loads(args.baseline.read_text()) if args.baseline.exists() else {}
    try:
        measured = measure(args.python, args.tree)
    except GateError as error:
        print(f"gate: cannot measure: {error}", file=sys.stderr)
        return 2
    rows = compare(baseline, measured)
    print(f"matchcore performance gate (baseline {args.baseline})")
    print(f"measured: {measured['toolchain']['binaries']['core']}")
    print(format_table(rows))
    for warning in toolchain_warnings(baseline, measured):
        print(f"warning: {warning}")
    seconds = measured["seconds"]
    print(f"took {seconds['callgrind']:.0f} s (callgrind) + {seconds['ratio']:.0f} s (ratio); "
          f"wall clock: Engine {measured['wall_clock']['engine_cmds_per_s']:,.0f} cmds/s, "
          f"ReferenceEngine {measured['wall_clock']['reference_cmds_per_s']:,.0f} cmds/s")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                       "baseline": str(args.baseline), "rows": rows,
                                       **measured}, indent=1))
    if args.update_baseline:
        args.baseline.write_text(json.dumps(updated_baseline(baseline, measured), indent=2) + "\n")
        print(f"baseline written: {args.baseline}")
        return 0
    failed = [row["figure"] for row in rows if row["verdict"] in ("REGRESSED", "MISSING")]
    if failed:
        for run in sorted({FIGURE_RUNS[f] for f in failed if f in FIGURE_RUNS}):
            print(f"{run}: functions that moved most since the last passing run "
                  f"(outputs kept in {CALLGRIND_KEPT}):")
            for line in moved_functions(run):
                print(f"  {line}")
        print(f"FAIL: {', '.join(failed)} beyond threshold (see docs/benchmarks.md; if the "
              f"change is intended, run: python ci/gate.py --update-baseline)")
        return 1
    improved = [row["figure"] for row in rows if row["verdict"] in ("improved", "new")]
    if improved:
        print(f"note: {', '.join(improved)} improved or new; lock in with --update-baseline")
    mark_passing_run()
    print("PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())

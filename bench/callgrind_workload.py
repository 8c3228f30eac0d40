"""Fixed, seeded workloads whose hot function ``ci/gate.py`` counts instructions of under callgrind.

Each workload does its set-up (imports, input, warm-up state) outside the measured function
and then calls the measured function on a fixed input; the gate runs it as

    valgrind --tool=callgrind --collect-atstart=no --toggle-collect=<SYMBOL> \\
        python -m matchcore.bench.callgrind_workload <figure> [input.npz]

so only the instructions executed inside ``SYMBOL`` (and everything it calls) are counted.
The engine's input is generated beforehand, outside valgrind, by
``python -m matchcore.bench.callgrind_workload prepare_engine_apply input.npz``.
The same binary and the same input give the same count on any machine, which is what makes
the figure usable as a regression gate on a noisy shared machine. The script prints one JSON
object: how many units (commands, records, messages) the measured calls processed and a
checksum of their output, so the gate divides by real work and can see it was the same work.

Figures (symbols are the C names Cython gives the functions in ``core/_core.c`` and
``protocol/_codec.c``; ``__pyx_f_`` is a ``cdef`` function, ``__pyx_pw_`` a Python-visible
method's wrapper, the outermost C frame of a call from Python):

- ``engine_apply``: ``Engine.apply_batch`` (the nogil per-command loop) over the measured
  part of ``mixed_workload`` after a warm-up part has filled the books. The engine state
  after set-up and warm-up is moved into a fresh ``Engine`` by snapshot/restore, so the
  only ``apply_batch`` call counted is the measured one.
- ``engine_apply_deep``: the same count over ``deep_workload`` (bench/deep_workload.py: one
  instrument, ~490 orders a level, one account per order), its measured part after a warm-up
  part, input written by ``prepare_engine_apply_deep``.
- ``engine_step``: ``EngineStepper.step`` (its Python-visible wrapper: argument parsing, the
  checks, apply_one, the copy of the events), once per command over the same commands as
  ``engine_apply``; the difference of the two counts is the per-call cost of the stepper.
- ``ring_push_pop``: ``Ring.try_push`` then ``Ring.pop_into`` of ``batch`` 64-byte records,
  repeated, in one thread (a two-thread transfer spins a scheduling-dependent number of
  times, so it is not deterministic). Includes the Python wrapper of each call, amortized
  over the batch.
- ``codec_decode``: ``CommandDecoder.decode`` of an order-entry frame stream (70% new
  orders, 20% cancels, 10% replaces) into a 4,096-record output array, until all decoded.
"""
from __future__ import annotations

import json
import sys
import zlib
from pathlib import Path

import numpy as np

__all__ = ["FIGURE_SYMBOLS", "ENGINE_COMMANDS", "ENGINE_WARMUP_COMMANDS", "ENGINE_DEEP_COMMANDS",
           "ENGINE_DEEP_WARMUP_COMMANDS", "write_engine_input", "main"]

#: Measured and warm-up commands of engine_apply (the mixed workload, seed 1).
ENGINE_COMMANDS = 20_000
ENGINE_WARMUP_COMMANDS = 20_000
ENGINE_SEED = 1
#: Measured and warm-up commands of engine_apply_deep (the deep-book workload, seed 1).
ENGINE_DEEP_COMMANDS = 40_000
ENGINE_DEEP_WARMUP_COMMANDS = 10_000
#: ring_push_pop: records pushed and popped, per call, ring capacity.
RING_RECORDS = 262_144
RING_BATCH_RECORDS = 256
RING_CAPACITY_RECORDS = 4096
RING_RECORD_SIZE_BYTES = 64
#: codec_decode: messages decoded, output array size (records).
CODEC_MESSAGES = 50_000
CODEC_OUTPUT_RECORDS = 4096
CODEC_SEED = 1

#: figure -> the callgrind --toggle-collect patterns of its measured functions. Each must
#: match exactly one function on the call chain (a nested match would toggle collection off).
FIGURE_SYMBOLS = {
    "engine_apply": ["__pyx_f_9matchcore_4core_5_core_6Engine_apply_batch"],
    "engine_apply_deep": ["__pyx_f_9matchcore_4core_5_core_6Engine_apply_batch"],
    "engine_step": ["__pyx_pw_9matchcore_4core_5_core_13EngineStepper_*step"],
    "ring_push_pop": ["__pyx_pw_9matchcore_4core_5_core_4Ring_*try_push",
                      "__pyx_pw_9matchcore_4core_5_core_4Ring_*pop_into"],
    "codec_decode": ["__pyx_pw_9matchcore_8protocol_6_codec_14CommandDecoder_*decode"],
}


def write_engine_input(path: Path, commands: int = ENGINE_COMMANDS,
                       warmup_commands: int = ENGINE_WARMUP_COMMANDS, seed: int = ENGINE_SEED,
                       deep: bool = False) -> None:
    """Generate the engine workload (mixed, or with ``deep`` the deep-book one) outside
    valgrind (the generator is a Python loop, slow under instrumentation) and store it:
    set-up + warm-up commands, measured commands, config."""
    from matchcore.bench.deep_workload import deep_workload
    from matchcore.bench.workload import mixed_workload
    from matchcore.core import commands as c

    workload = (deep_workload if deep else mixed_workload)(warmup_commands + commands, seed=seed)
    everything = c.number(workload.all().copy(), first_seq=1)
    prepare_count = len(workload.setup) + warmup_commands
    config = workload.config
    fields = {name: getattr(config, name) for name in config.__struct_fields__}
    np.savez(path, prepare=everything[:prepare_count], measured=everything[prepare_count:],
             config=np.array(json.dumps(fields)))


def _warm_engine(input_path: str):
    """The engine after set-up and warm-up, moved into a fresh Engine (nothing of it is
    counted), and the measured commands."""
    from matchcore.core import Engine, EngineConfig

    data = np.load(input_path)
    config = EngineConfig(**json.loads(str(data["config"])))
    warm = Engine(config)
    warm.apply(np.ascontiguousarray(data["prepare"]))
    engine = Engine.restore(warm.snapshot())
    del warm
    return engine, np.ascontiguousarray(data["measured"])


def _engine_apply(input_path: str) -> dict:
    engine, measured = _warm_engine(input_path)
    events = engine.apply(measured)            # the one counted apply_batch call
    return {"units": int(len(measured)), "unit": "command", "events": int(len(events)),
            "checksum": f"{zlib.crc32(events.tobytes()):08x}",
            "state_hash": f"{engine.state_hash():016x}"}


def _engine_step(input_path: str) -> dict:
    """One counted step() call per measured command; the checksum is over the events of
    all steps, so it equals engine_apply's on the same input."""
    engine, measured = _warm_engine(input_path)
    stepper = engine.stepper(measured)
    step = stepper.step
    checksum, events = 0, 0
    for index in range(len(measured)):
        count = step(index)
        checksum = zlib.crc32(stepper.events[:count], checksum)
        events += count
    return {"units": int(len(measured)), "unit": "command", "events": events,
            "checksum": f"{checksum:08x}", "state_hash": f"{engine.state_hash():016x}"}


def _ring_push_pop() -> dict:
    from matchcore.core._core import Ring

    words = RING_RECORD_SIZE_BYTES // 8
    source = np.arange(RING_RECORDS * words, dtype=np.uint64).reshape(RING_RECORDS, words)
    out = np.zeros((RING_BATCH_RECORDS, words), dtype=np.uint64)
    ring = Ring(RING_RECORD_SIZE_BYTES, RING_CAPACITY_RECORDS)
    checksum = 0
    moved = 0
    for first in range(0, RING_RECORDS, RING_BATCH_RECORDS):
        pushed = ring.try_push(source[first:first + RING_BATCH_RECORDS])
        popped = ring.pop_into(out[:pushed])
        if pushed != popped:
            raise RuntimeError(f"pushed {pushed} records, popped {popped}")
        checksum = zlib.crc32(out[:popped], checksum)
        moved += popped
    if moved != RING_RECORDS:
        raise RuntimeError(f"moved {moved} of {RING_RECORDS} records")
    return {"units": moved, "unit": "record", "checksum": f"{checksum:08x}"}


def _codec_decode() -> dict:
    from matchcore.core.records import COMMAND_DTYPE
    from matchcore.protocol import _codec
    from matchcore.bench.codec_bench import ACCOUNT, order_entry_commands
    from matchcore.protocol import DecodeStatus, NewOrder

    commands = order_entry_commands(CODEC_MESSAGES, seed=CODEC_SEED)
    frames = bytearray(CODEC_MESSAGES * NewOrder.LAYOUT.itemsize)  # the largest order-entry frame
    count, written = _codec.encode_commands(commands, frames)
    if count != CODEC_MESSAGES:
        raise RuntimeError(f"encoded {count} of {CODEC_MESSAGES} messages")
    stream = memoryview(bytes(frames[:written]))
    out = np.zeros(CODEC_OUTPUT_RECORDS, COMMAND_DTYPE)
    decoder = _codec.CommandDecoder(ACCOUNT)
    consumed, decoded, checksum = 0, 0, 0
    while consumed < written:
        status = decoder.decode(stream[consumed:], out, first_seq=decoded + 1)
        consumed += decoder.consumed_bytes
        decoded += decoder.commands_written
        checksum = zlib.crc32(out[:decoder.commands_written], checksum)
        if status not in (DecodeStatus.OK, DecodeStatus.OUTPUT_FULL):
            raise RuntimeError(f"decode stopped with {DecodeStatus(status).name}")
        if decoder.commands_written == 0 and status == DecodeStatus.OK:
            break
    if decoded != CODEC_MESSAGES:
        raise RuntimeError(f"decoded {decoded} of {CODEC_MESSAGES} messages")
    return {"units": decoded, "unit": "message", "checksum": f"{checksum:08x}"}


def _toolchain() -> dict:
    """What the counts depend on besides the source: the binaries measured and their builders."""
    import platform
    import re

    from matchcore.core import _core
    from matchcore.protocol import _codec

    binaries = {"core": _core.__file__, "codec": _codec.__file__}
    compilers, cythons = set(), set()
    for path in binaries.values():
        data = Path(path).read_bytes()
        compilers.update(c.decode() for c in re.findall(rb"GCC: \([^)]*\) [0-9.]+", data))
        cythons.update(".".join(v.decode() for v in version)
                       for version in re.findall(rb"_cython_(\d+)_(\d+)_(\d+)", data))
    return {"binaries": binaries, "python": platform.python_version(), "numpy": np.__version__,
            "compiler": " / ".join(sorted(compilers)) or "unknown",
            "cython": " / ".join(sorted(cythons)) or "unknown"}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 2 and argv[0] == "prepare_engine_apply":
        write_engine_input(Path(argv[1]))
        return 0
    if len(argv) == 2 and argv[0] == "prepare_engine_apply_deep":
        write_engine_input(Path(argv[1]), ENGINE_DEEP_COMMANDS, ENGINE_DEEP_WARMUP_COMMANDS,
                           deep=True)
        return 0
    if not argv or argv[0] not in FIGURE_SYMBOLS:
        print(f"usage: callgrind_workload.py {{{','.join(FIGURE_SYMBOLS)}}} [input.npz]\n"
              "       callgrind_workload.py prepare_engine_apply[_deep] output.npz", file=sys.stderr)
        return 2
    if argv[0] in ("engine_apply", "engine_apply_deep", "engine_step"):
        if len(argv) != 2:
            print(f"{argv[0]} needs the input file written by write_engine_input", file=sys.stderr)
            return 2
        result = (_engine_step if argv[0] == "engine_step" else _engine_apply)(argv[1])
    elif argv[0] == "ring_push_pop":
        result = _ring_push_pop()
    else:
        result = _codec_decode()
    result.update(_toolchain())
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

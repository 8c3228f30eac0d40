"""kill -9 of a real serving process under load, several times at random moments: after each
restart every released (acknowledged) command is in the recovered state, replay verifies, and
the final state equals a plain Engine run over the whole stream."""
import os
import random
import signal
import subprocess
import sys
import threading
import time

from matchcore.core import Engine, commands as c
from matchcore.persistence import Journal
from matchcore.bench.loadrun import workload_for
from matchcore.persistence.replay import replay

COMMANDS = 200_000
SEED = 5


def start(dsn):
    return subprocess.Popen(
        [sys.executable, "-m", "matchcore.bench.loadrun", "--dsn", dsn, "--commands",
         str(COMMANDS), "--seed", str(SEED), "--snapshot-every", "20000", "--chunk", "500", "--rate", "50000"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


class Reader:
    """Collects the process's stdout lines in a thread: the highest released seq, and more."""

    def __init__(self, process):
        self.released = 0
        self.recovered = None
        self.done = None
        self.ready = threading.Event()
        self._thread = threading.Thread(target=self._read, args=(process,), daemon=True)
        self._thread.start()

    def _read(self, process):
        for line in process.stdout:
            word, value, *rest = line.split()
            if word == "released":
                self.released = max(self.released, int(value))
            elif word == "recovered":
                self.recovered = int(value)
                self.ready.set()
            elif word == "done":
                self.done = rest[-1]

    def join(self):
        self._thread.join(10)


def test_sigkill_under_load_loses_nothing_released(db_dsn):
    rng = random.Random(2024)
    previous_released = 0
    for round_index in range(4):
        process = start(db_dsn)
        reader = Reader(process)
        assert reader.ready.wait(60), process.stderr.read()
        assert reader.recovered >= previous_released
        time.sleep(rng.uniform(0.3, 0.9))
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)
        reader.join()
        with Journal(db_dsn) as journal:
            result = replay(journal, verify=True)
        assert result.last_seq >= reader.released, "an acknowledged command was lost"
        assert reader.done is None, "the process finished before it was killed"
        previous_released = max(previous_released, reader.released)
        print(f"round {round_index}: recovered {reader.recovered}, released {reader.released}, journal {result.last_seq}")
    process = start(db_dsn)
    reader = Reader(process)
    assert process.wait(120) == 0, process.stderr.read()
    reader.join()
    workload = workload_for(COMMANDS, SEED)
    engine = Engine(workload.config)
    engine.apply(c.number(workload.all()))
    assert reader.done == f"{engine.state_hash():016x}"
    with Journal(db_dsn) as journal:
        assert replay(journal).engine.state_hash() == engine.state_hash()

"""On 100,000 generated commands of the realistic mix, Engine and ReferenceEngine give the
same events and the same state hash (the exchange-core check), and the invariants hold."""
from matchcore.bench.workload import mixed_workload
from matchcore.core import commands as c
from matchcore.core.reference import ReferenceEngine
from tests.conftest import engine_class
from tests.property.test_engine_differential import check_invariants


def test_hundred_thousand_commands_agree():
    Engine = engine_class("engine")
    workload = mixed_workload(100_000, seed=7, accounts=200, instruments=4)
    commands = c.number(workload.all())
    reference, engine = ReferenceEngine(workload.config), Engine(workload.config)
    for start in range(0, len(commands), 25_000):
        part = commands[start:start + 25_000]
        assert reference.apply(part).tobytes() == engine.apply(part).tobytes()
        assert reference.state_hash() == engine.state_hash()
    check_invariants(reference)
    assert engine.live_order_count() == reference.live_order_count() > 1000

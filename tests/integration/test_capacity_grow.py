"""Capacities grow on an existing journal: a restart with a larger engine config resizes the
recovered state and journals the change as a config epoch, so the command refused before is
accepted, and replay from seq 1 (verified, across the boundary) gives the live state hash; a
restart below what is in use, or with another fee account, is refused naming the field."""
import msgspec
import pytest
import uvloop

from matchcore.core import Engine, EngineConfig, commands as c
from matchcore.core.codes import EventKind, RejectReason
from matchcore.errors import ConfigError
from matchcore.gateway.durable_core import DurableCore, DurableCoreConfig
from matchcore.persistence import Journal
from matchcore.persistence.replay import EPOCHS_META_KEY, ConfigEpoch, apply_epochs, read_epochs, replay

SMALL = EngineConfig(max_accounts=4, max_assets=2, max_instruments=2, max_orders=64,
                     max_price_levels=16)
LARGE = msgspec.structs.replace(SMALL, max_accounts=16)


async def run(dsn, config, records, *, snapshot_every=0):
    """Start a DurableCore in ``config``, apply ``records`` and stop; (events, live hash, seq)."""
    released = []
    service = DurableCore(dsn, config, config=DurableCoreConfig(snapshot_every_commands=snapshot_every),
                          on_release=released.append)
    recovered = await service.start()
    stream = c.number(c.pack(records), first_seq=recovered.last_seq + 1) if records else None
    if stream is not None:
        await service.submit_all(stream)
        await service.wait_released(service.next_seq - 1)
    live_hash = service.engine.state_hash()
    await service.stop()
    events = [e for batch in released for e in batch.events]
    return events, live_hash, service.released_seq


def rejects(events):
    return [int(e["reason"]) for e in events if e["kind"] == EventKind.REJECTED]


@pytest.mark.parametrize("snapshot_every", [0, 3])
def test_grow_then_replay_across_the_boundary(db_dsn, snapshot_every):
    setup = [c.add_asset(0), c.add_asset(1), c.add_instrument(0, 0, 1)]
    setup += [c.add_account(a) for a in (1, 2, 3)] + [c.deposit(1, 1, 1_000, 1)]
    events, _, seq = uvloop.run(run(db_dsn, SMALL, setup + [c.add_account(4)], snapshot_every=snapshot_every))
    assert rejects(events) == [RejectReason.ACCOUNT_CAPACITY]
    events, live_hash, last = uvloop.run(run(db_dsn, LARGE, [c.add_account(4), c.add_account(15),
                                                             c.deposit(4, 0, 500, 2)],
                                             snapshot_every=snapshot_every))
    assert rejects(events) == [] and last == seq + 3
    with Journal(db_dsn) as journal:
        epochs = read_epochs(journal)
        assert [(e.from_seq, e.config) for e in epochs] == [(1, SMALL), (seq + 1, LARGE)]
        whole = replay(journal, from_seq=1, verify=True)
        assert (whole.commands, whole.engine.config) == (last, LARGE)
        assert whole.engine.state_hash() == live_hash
        assert replay(journal).engine.state_hash() == live_hash
        # at a past seq the engine is in that seq's config
        past = replay(journal, until_seq=seq, from_seq=1)
        assert past.engine.config == SMALL
    # a restart in the same (larger) config recovers without another epoch
    _, again, _ = uvloop.run(run(db_dsn, LARGE, []))
    assert again == live_hash
    with Journal(db_dsn) as journal:
        assert len(read_epochs(journal)) == 2


def test_a_boundary_inside_one_journal_batch(db_dsn):
    """Batches do not know of epochs: apply_epochs splits a batch at a boundary inside it."""
    setup = [c.add_asset(0), c.add_account(1), c.add_account(2), c.add_account(3), c.add_asset(1)]
    uvloop.run(run(db_dsn, SMALL, setup))
    epochs = [ConfigEpoch(from_seq=1, config=SMALL), ConfigEpoch(from_seq=3, config=LARGE)]
    with Journal(db_dsn) as journal:
        batches = list(journal.batches())
        assert len(batches) == 1
        commands = journal.commands()
    engine, last, applied, seen = apply_epochs(Engine(SMALL), batches, 0, epochs, verify=True)
    assert (engine.config, last, applied, seen) == (LARGE, 5, 5, 1)
    twin = Engine(SMALL)
    twin.apply(commands[:2].copy())
    twin = Engine.restore(twin.snapshot(), config=LARGE)
    twin.apply(commands[2:].copy())
    assert engine.state_hash() == twin.state_hash()
    # stopping at a seq before the boundary keeps that seq's config
    engine, last, _, _ = apply_epochs(Engine(SMALL), batches, 0, epochs, until_seq=2)
    assert (engine.config, last) == (SMALL, 2)


def test_lowering_below_use_is_refused_and_above_use_allowed(db_dsn):
    setup = [c.add_asset(0)] + [c.add_account(a) for a in (1, 2, 3)]
    uvloop.run(run(db_dsn, SMALL, setup))
    too_small = msgspec.structs.replace(SMALL, max_accounts=3)
    with pytest.raises(ConfigError) as refused:
        uvloop.run(run(db_dsn, too_small, []))
    message = str(refused.value)
    assert "\n" not in message
    assert "engine.max_accounts=3" in message and "4 in use" in message
    with pytest.raises(ConfigError, match="fee_account_id cannot change"):
        uvloop.run(run(db_dsn, msgspec.structs.replace(SMALL, fee_account_id=1), []))
    with Journal(db_dsn) as journal:  # nothing was journaled by the refused starts
        assert journal.read_meta(EPOCHS_META_KEY) is None
    # lower, but above what is in use: allowed (a smaller order table, for instance)
    lower = msgspec.structs.replace(SMALL, max_orders=8)
    _, live_hash, _ = uvloop.run(run(db_dsn, lower, [c.add_asset(1)]))
    with Journal(db_dsn) as journal:
        assert replay(journal, from_seq=1, verify=True).engine.state_hash() == live_hash


def test_a_journal_without_epochs_is_one_epoch(db_dsn):
    uvloop.run(run(db_dsn, SMALL, [c.add_asset(0)]))
    with Journal(db_dsn) as journal:
        assert journal.read_meta(EPOCHS_META_KEY) is None
        (epoch,) = read_epochs(journal)
        assert (epoch.from_seq, epoch.config) == (1, SMALL)

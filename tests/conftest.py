"""Shared helpers: both engines behind one fixture, and a small funded market."""
from __future__ import annotations

import numpy as np
import pytest

from matchcore.core import commands as c
from matchcore.core.config import EngineConfig
from matchcore.core.reference import ReferenceEngine

BASE, QUOTE = 0, 1
INSTRUMENT = 0
FEE_ACCOUNT = 0
ALICE, BOB, CAROL = 1, 2, 3
FUNDS = 10**12


def engine_class(name: str):
    if name == "reference":
        return ReferenceEngine
    from matchcore.core import Engine

    return Engine


@pytest.fixture(params=["reference", "engine"])
def engine_cls(request):
    return engine_class(request.param)


class Session:
    """An engine plus a sequence counter: ``run`` numbers commands and applies them."""

    def __init__(self, engine):
        self.engine = engine
        self.seq = 1

    def run(self, *records) -> np.ndarray:
        commands = c.pack(list(records))
        c.number(commands, first_seq=self.seq, timestamp_ns=1_700_000_000_000_000_000 + self.seq)
        self.seq += len(commands)
        return self.engine.apply(commands)

    def one(self, record) -> np.ndarray:
        return self.run(record)

    def at(self, timestamp_ns: int, *records) -> np.ndarray:
        """``run``, every command stamped ``timestamp_ns``."""
        commands = c.pack(list(records))
        c.number(commands, first_seq=self.seq, timestamp_ns=timestamp_ns)
        self.seq += len(commands)
        return self.engine.apply(commands)


def funded_market(engine_cls, config: EngineConfig | None = None, *, tick_size=1, lot_size=1,
                  maker_bps=0, taker_bps=0, max_order_lots=1_000_000) -> Session:
    """Two assets, one instrument, three funded accounts (plus the fee account)."""
    session = Session(engine_cls(config or EngineConfig(max_accounts=16, max_assets=4,
                                                        max_instruments=4, max_orders=1024,
                                                        max_price_levels=64)))
    setup = [c.add_asset(BASE), c.add_asset(QUOTE)]
    setup += [c.add_account(a) for a in (ALICE, BOB, CAROL)]
    setup.append(c.add_instrument(INSTRUMENT, BASE, QUOTE, tick_size=tick_size, lot_size=lot_size,
                                  max_order_lots=max_order_lots))
    if maker_bps or taker_bps:
        setup.append(c.set_fees(INSTRUMENT, maker_bps, taker_bps))
    transfer_id = 1
    for account in (ALICE, BOB, CAROL):
        for asset in (BASE, QUOTE):
            setup.append(c.deposit(account, asset, FUNDS, transfer_id))
            transfer_id += 1
    events = session.run(*setup)
    assert all(k in (69, 71) for k in events["kind"]), events
    return session


@pytest.fixture
def market(engine_cls):
    return funded_market(engine_cls)


@pytest.fixture(scope="session")
def pg_server():
    """A private PostgreSQL for the whole session, from the pip-installed package matchcore
    embeds, in a temporary folder; tests that stop it must start it again. Not pytest's
    tmp_path: its parent is 0700, and as root the server runs as another OS user that must
    enter the folder."""
    import shutil
    import tempfile
    from pathlib import Path

    from matchcore.persistence.embedded import EmbeddedPostgres

    base = Path(tempfile.mkdtemp(prefix="matchcore-tests-"))
    base.chmod(0o755)
    server = EmbeddedPostgres(base / "pg")
    server.start()
    try:
        yield server
    finally:
        server.stop("immediate")
        shutil.rmtree(base, ignore_errors=True)

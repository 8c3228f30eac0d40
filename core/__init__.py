"""matchcore.core: the deterministic, single-threaded matching and settlement engine."""
from matchcore.core.codes import (
    ALL_INSTRUMENTS,
    CancelReason,
    CommandKind,
    EventKind,
    Flags,
    OrderType,
    RejectReason,
    Side,
    StpMode,
    TimeInForce,
)
from matchcore.core.config import EngineConfig
from matchcore.core.records import COMMAND_DTYPE, EVENT_DTYPE
from matchcore.core._core import Engine

__all__ = [
    "ALL_INSTRUMENTS",
    "COMMAND_DTYPE",
    "EVENT_DTYPE",
    "Engine",
    "CancelReason",
    "CommandKind",
    "EngineConfig",
    "EventKind",
    "Flags",
    "OrderType",
    "RejectReason",
    "Side",
    "StpMode",
    "TimeInForce",
]

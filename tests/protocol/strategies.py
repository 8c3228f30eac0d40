"""Hypothesis strategies for protocol messages, built from their numpy layouts."""
from __future__ import annotations

import dataclasses

from hypothesis import strategies as st

from matchcore.core.codes import EventKind
from matchcore import protocol as p
from matchcore.protocol import messages

_RANGES = {"u8": (0, 2**8 - 1), "u16": (0, 2**16 - 1), "u32": (0, 2**32 - 1),
           "u64": (0, 2**64 - 1), "i64": (-(2**63), 2**63 - 1)}


def _field_strategy(cls: type[p.Message], name: str) -> st.SearchStrategy:
    field = cls.LAYOUT.fields[name][0]
    if field.subdtype is not None:
        return st.binary(min_size=field.itemsize, max_size=field.itemsize)
    low, high = _RANGES[messages._type_name(field)]
    # mostly small values (the interesting ones), sometimes anything in range
    return st.one_of(st.integers(0, 16).filter(lambda v: low <= v <= high), st.integers(low, high))


def message_strategy(cls: type[p.Message], **fixed) -> st.SearchStrategy:
    """Any message of ``cls``; ``fixed`` pins fields to values or strategies."""
    fields = {}
    for field in dataclasses.fields(cls):
        if field.name in fixed:
            value = fixed[field.name]
            fields[field.name] = value if isinstance(value, st.SearchStrategy) else st.just(value)
        elif field.name == "kind" and cls is p.EventMessage:
            fields[field.name] = st.sampled_from([int(k) for k in EventKind])
        elif field.name == "snapshot" and cls is p.MdLevel:
            fields[field.name] = st.sampled_from([0, 1])
        else:
            fields[field.name] = _field_strategy(cls, field.name)
    return st.builds(cls, **fields)


ALL_CLASSES = sorted(set(p.MESSAGE_CLASSES.values()), key=lambda c: c.__name__)
CLIENT_CLASSES = sorted({p.MESSAGE_CLASSES[t] for t in p.CLIENT_TYPES}, key=lambda c: c.__name__)
ORDER_ENTRY_CLASSES = [p.NewOrder, p.Cancel, p.Replace, p.MassCancel]
ADMIN_CLASSES = sorted({p.MESSAGE_CLASSES[t] for t in p.ADMIN_TYPES}, key=lambda c: c.__name__)

any_message = st.one_of([message_strategy(cls) for cls in ALL_CLASSES])


def client_message(account_id: int) -> st.SearchStrategy:
    """Client messages, order entry mostly for ``account_id`` (sometimes another account)."""
    own = [message_strategy(cls, account_id=st.sampled_from([account_id] * 7 + [account_id + 1]))
           for cls in ORDER_ENTRY_CLASSES]
    others = [message_strategy(cls) for cls in CLIENT_CLASSES if cls not in ORDER_ENTRY_CLASSES]
    return st.one_of(own + others)

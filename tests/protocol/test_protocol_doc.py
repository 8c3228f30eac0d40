"""docs/protocol.md tables every message layout and enum exactly as the code defines them."""
from __future__ import annotations

from pathlib import Path

import pytest

from matchcore.core import codes
from matchcore import protocol as p
from matchcore.protocol import doc as d

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
TABLES = d.parse_tables(DOC.read_text(encoding="utf-8"))
CLASSES = {cls.__name__: cls for cls in p.MESSAGE_CLASSES.values()}


def test_every_message_and_enum_is_tabled():
    assert {name for kind, name in TABLES if kind == "layout"} == set(CLASSES)
    assert {name for kind, name in TABLES if kind == "enum"} == set(d.DOC_ENUMS)
    for name in ("CommandKind", "EventKind", "Side", "OrderType", "TimeInForce", "StpMode",
                 "RejectReason", "CancelReason"):
        assert d.DOC_ENUMS[name] is getattr(codes, name)


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_layout_tables_match_the_code(name):
    rows = TABLES[("layout", name)]
    documented = [(int(offset), int(size), type_, field) for offset, size, type_, field, _ in rows]
    assert documented == [row[:4] for row in d.layout_rows(CLASSES[name])]
    frame_size = rows[0]
    assert frame_size[3] == "frame_size" and frame_size[4].startswith(f"{CLASSES[name].LAYOUT.itemsize}:")


@pytest.mark.parametrize("name", sorted(d.DOC_ENUMS))
def test_enum_tables_match_the_code(name):
    documented = [(member, int(number)) for member, number in TABLES[("enum", name)]]
    assert documented == [(m.name, int(m)) for m in d.DOC_ENUMS[name]]


def test_the_document_states_endianness_and_maximum_frame_size():
    text = DOC.read_text(encoding="utf-8")
    assert "All integers are little-endian" in text
    assert f"Maximum frame size: {p.MAX_FRAME_SIZE} bytes" in text
    assert p.LOGIN_SIGNATURE_CONTEXT.decode() in text
    assert d.refresh(text) == text  # regenerating the tables changes nothing

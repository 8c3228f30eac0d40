"""The tables of ``docs/protocol.md``, generated from the code, and their parser.

``python -m matchcore.protocol.doc`` prints every layout and enum table in the
document's format; ``tests/protocol/test_protocol_doc.py`` parses the document with
``parse_tables`` and checks each table against the code, so the two cannot drift. A table
follows a marker line ``<!-- layout: ClassName -->`` or ``<!-- enum: EnumName -->``;
``python -m matchcore.protocol.doc --refresh docs/protocol.md`` rewrites every
marked table of the document from the code and leaves the prose alone.
"""
from __future__ import annotations

import re
import sys
from enum import IntEnum

import numpy as np

from matchcore.core import codes
from matchcore.protocol import messages as protocol

__all__ = ["DOC_ENUMS", "layout_rows", "enum_rows", "render_layout", "render_enum", "render_all",
           "parse_tables", "refresh"]

#: Every enum the document tables, by the name its marker uses.
DOC_ENUMS: dict[str, type[IntEnum]] = {
    "MessageType": protocol.MessageType,
    "SessionReason": protocol.SessionReason,
    "LoginFlags": protocol.LoginFlags,
    "SessionFlags": protocol.SessionFlags,
    "Liquidity": protocol.Liquidity,
    "OrderState": protocol.OrderState,
    "TransferState": protocol.TransferState,
    "InstrumentState": codes.InstrumentState,
    "CommandKind": codes.CommandKind,
    "EventKind": codes.EventKind,
    "Side": codes.Side,
    "OrderType": codes.OrderType,
    "TimeInForce": codes.TimeInForce,
    "StpMode": codes.StpMode,
    "Flags": codes.Flags,
    "RejectReason": codes.RejectReason,
    "CancelReason": codes.CancelReason,
}

_MARKER = re.compile(r"^<!-- (layout|enum): (\w+) -->$")


def layout_rows(cls: type[protocol.Message]) -> list[tuple[int, int, str, str, str]]:
    """(offset, size, type, field, meaning) per field of ``cls``'s frame, header included."""
    layout: np.dtype = cls.LAYOUT
    header_notes = {"frame_size": f"{layout.itemsize}: the whole frame, bytes",
                    "type": _type_note(cls), "reserved_3": "0"}
    rows = []
    for name in layout.names:
        field, offset = layout.fields[name][0], layout.fields[name][1]
        note = header_notes.get(name, cls.NOTES.get(name, ""))
        if name.startswith("reserved_") and not note:
            note = "0"
        rows.append((offset, field.itemsize, protocol._type_name(field), name, note))
    return rows


def _type_note(cls: type[protocol.Message]) -> str:
    if cls is protocol.EventMessage:
        kinds = [int(kind) for kind in codes.EventKind]
        return f"EventKind ({min(kinds)}-{max(kinds)})"
    if cls is protocol.MdLevel:
        return "142 (MD_LEVEL) or 140 (MD_SNAPSHOT_LEVEL)"
    return f"{int(cls.TYPE)} ({cls.TYPE.name})"


def enum_rows(enum: type[IntEnum]) -> list[tuple[str, int]]:
    return [(member.name, int(member)) for member in enum]


def render_layout(cls: type[protocol.Message]) -> str:
    lines = [f"<!-- layout: {cls.__name__} -->", "| offset | size | type | field | meaning |",
             "|---:|---:|---|---|---|"]
    lines += [f"| {o} | {s} | {t} | `{n}` | {m} |" for o, s, t, n, m in layout_rows(cls)]
    return "\n".join(lines)


def render_enum(name: str) -> str:
    lines = [f"<!-- enum: {name} -->", "| name | number |", "|---|---:|"]
    lines += [f"| `{member}` | {number} |" for member, number in enum_rows(DOC_ENUMS[name])]
    return "\n".join(lines)


def render_all() -> str:
    classes = sorted(set(protocol.MESSAGE_CLASSES.values()), key=lambda c: min(
        t for t, k in protocol.MESSAGE_CLASSES.items() if k is c))
    parts = [f"#### {cls.__name__}\n\n{render_layout(cls)}" for cls in classes]
    parts += [f"#### {name}\n\n{render_enum(name)}" for name in DOC_ENUMS]
    return "\n\n".join(parts) + "\n"


def parse_tables(text: str) -> dict[tuple[str, str], list[tuple[str, ...]]]:
    """``{(kind, name): rows}`` for every marked table of a document; cells stripped of
    backquotes. A name marked twice is an error."""
    tables: dict[tuple[str, str], list[tuple[str, ...]]] = {}
    lines = text.splitlines()
    for index, line in enumerate(lines):
        match = _MARKER.match(line.strip())
        if not match:
            continue
        key = (match.group(1), match.group(2))
        if key in tables:
            raise ValueError(f"{key} is tabled twice")
        rows = []
        for row in lines[index + 3:]:  # marker, header row, separator row
            if not row.startswith("|"):
                break
            cells = [cell.strip().strip("`") for cell in row.strip().strip("|").split("|")]
            rows.append(tuple(cells))
        tables[key] = rows
    return tables


def refresh(text: str) -> str:
    """``text`` with every marked table replaced by the one rendered from the code."""
    classes = {cls.__name__: cls for cls in protocol.MESSAGE_CLASSES.values()}
    lines, out, index = text.splitlines(), [], 0
    while index < len(lines):
        match = _MARKER.match(lines[index].strip())
        if not match:
            out.append(lines[index])
            index += 1
            continue
        kind, name = match.group(1), match.group(2)
        out.append(render_layout(classes[name]) if kind == "layout" else render_enum(name))
        index += 1
        while index < len(lines) and lines[index].startswith("|"):
            index += 1
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--refresh":
        with open(sys.argv[2], encoding="utf-8") as file:
            refreshed = refresh(file.read())
        with open(sys.argv[2], "w", encoding="utf-8") as file:
            file.write(refreshed)
    else:
        sys.stdout.write(render_all())

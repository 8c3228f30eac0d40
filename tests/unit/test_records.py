"""The C records and their numpy twins agree byte for byte, and so do the code tables."""
import numpy as np

from matchcore.core import _core, codes
from matchcore.core.records import BOOK_CHANGE_DTYPE, COMMAND_DTYPE, EVENT_DTYPE, KIND_OFFSET


def _assert_same_layout(dtype: np.dtype, size: int, offsets: dict) -> None:
    assert dtype.itemsize == size
    assert set(dtype.names) == set(offsets)
    for name in dtype.names:
        assert dtype.fields[name][1] == offsets[name], name
    # no hidden padding: the fields tile the record exactly
    covered = sum(dtype.fields[name][0].itemsize for name in dtype.names)
    assert covered == size


def test_command_layout_matches_c():
    layout = _core.record_layout()
    _assert_same_layout(COMMAND_DTYPE, layout["command_size"], layout["command"])


def test_event_layout_matches_c():
    layout = _core.record_layout()
    _assert_same_layout(EVENT_DTYPE, layout["event_size"], layout["event"])


def test_book_change_layout_matches_c():
    layout = _core.record_layout()
    _assert_same_layout(BOOK_CHANGE_DTYPE, layout["book_change_size"], layout["book_change"])


def test_kind_byte_sits_at_the_same_offset_in_both_records():
    assert COMMAND_DTYPE.fields["kind"][1] == KIND_OFFSET
    assert EVENT_DTYPE.fields["kind"][1] == KIND_OFFSET
    assert max(codes.CommandKind) < min(codes.EventKind)


def test_python_and_cython_codes_agree():
    c_tables = _core.c_codes()
    for enum_name in ("CommandKind", "EventKind", "Side", "OrderType", "TimeInForce", "StpMode",
                      "Flags", "RejectReason", "CancelReason", "BookChangeKind"):
        python_enum = getattr(codes, enum_name)
        assert {member.name: int(member) for member in python_enum} == c_tables[enum_name], enum_name
    assert c_tables["ALL_INSTRUMENTS"] == codes.ALL_INSTRUMENTS
    assert c_tables["BPS_DENOMINATOR"] == codes.BPS_DENOMINATOR


def test_reject_reasons_are_unique_and_grouped_by_subsystem():
    numbers = [int(r) for r in codes.RejectReason]
    assert len(numbers) == len(set(numbers))
    for reason in codes.RejectReason:
        assert 1 <= reason < 500

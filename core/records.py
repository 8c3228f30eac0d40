"""numpy twins of the C records in ``records.pxd``: journals and replay read them zero-copy.

``COMMAND_DTYPE`` (96 bytes; 64 in contract 1) and ``EVENT_DTYPE`` (128 bytes; 96 in contract 1) have explicit offsets and no
padding; ``tests/unit/test_records.py`` proves they match the C structs byte for byte.
The ``kind`` byte sits at offset 16 in both, and command kinds (1-63) never overlap event
kinds (64-127), so one byte tells the records of a mixed stream apart.
"""
import numpy as np

__all__ = ["COMMAND_DTYPE", "EVENT_DTYPE", "BOOK_CHANGE_DTYPE", "COMMAND_SIZE", "EVENT_SIZE", "KIND_OFFSET"]

KIND_OFFSET = 16

COMMAND_DTYPE = np.dtype(
    [
        ("seq", "<u8"),
        ("timestamp_ns", "<i8"),
        ("kind", "u1"),
        ("side", "u1"),
        ("order_type", "u1"),
        ("time_in_force", "u1"),
        ("stp_mode", "u1"),
        ("flags", "u1"),
        ("asset_id", "<u2"),
        ("account_id", "<u4"),
        ("instrument_id", "<u4"),
        ("client_id", "<u8"),
        ("price", "<i8"),
        ("quantity", "<i8"),
        ("limit", "<i8"),
        ("expire_time_ns", "<i8"),
        ("trigger_price", "<i8"),
        ("display_quantity", "<i8"),
        ("reserved", "<u8"),
    ]
)

EVENT_DTYPE = np.dtype(
    [
        ("seq", "<u8"),
        ("timestamp_ns", "<i8"),
        ("kind", "u1"),
        ("side", "u1"),
        ("reason", "<u2"),
        ("instrument_id", "<u4"),
        ("account_id", "<u4"),
        ("counter_account_id", "<u4"),
        ("order_id", "<u8"),
        ("client_id", "<u8"),
        ("counter_order_id", "<u8"),
        ("trade_id", "<u8"),
        ("price", "<i8"),
        ("quantity", "<i8"),
        ("fee", "<i8"),
        ("counter_fee", "<i8"),
        ("counter_client_id", "<u8"),
        ("leaves", "<i8"),
        ("counter_leaves", "<i8"),
        ("reserved", "<u8"),
    ]
)

#: What a replica engine with ``enable_book_changes()`` records per command for market data
#: (records.pxd ``BookChange`` documents each kind's fields). Not journaled: derived.
BOOK_CHANGE_DTYPE = np.dtype(
    [
        ("seq", "<u8"),
        ("timestamp_ns", "<i8"),
        ("kind", "u1"),
        ("side", "u1"),
        ("state", "u1"),
        ("reserved_19", "u1"),
        ("instrument_id", "<u4"),
        ("order_count", "<u4"),
        ("reserved_28", "<u4"),
        ("price", "<i8"),
        ("quantity", "<i8"),
        ("other_price", "<i8"),
        ("other_quantity", "<i8"),
    ]
)

COMMAND_SIZE = COMMAND_DTYPE.itemsize
EVENT_SIZE = EVENT_DTYPE.itemsize
assert COMMAND_SIZE == 96, COMMAND_SIZE
assert EVENT_SIZE == 128, EVENT_SIZE
assert BOOK_CHANGE_DTYPE.itemsize == 64

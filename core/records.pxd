# Fixed-width records of the matchcore contract. Each struct has a numpy dtype twin in
# records.py (COMMAND_DTYPE, EVENT_DTYPE); tests/unit/test_records.py proves size, field
# offsets and the absence of hidden padding agree. Numbers of the enums below repeat
# core/codes.py (the source of truth); a unit test proves they agree.
#
# Units: price_ticks are quote minor units per lot; quantity_lots are lots; amounts are
# minor units of their asset; time stamps are nanoseconds since the Unix epoch, supplied
# by the gateway (the core never reads a clock). Native byte order (little-endian on every
# platform matchcore supports).
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t

cdef extern from *:
    """
    #define MC_ALL_INSTRUMENTS 0xFFFFFFFFu
    #define MC_BPS_DENOMINATOR 10000
    """
    uint32_t MC_ALL_INSTRUMENTS
    int64_t MC_BPS_DENOMINATOR

# A command, 96 bytes (64 in contract 1). Field use per kind is tabled in docs/engine.md; fields a kind does not
# use are ignored.
ctypedef struct Command:
    uint64_t seq             # global sequence number, assigned by the gateway
    int64_t timestamp_ns     # assigned by the gateway
    uint8_t kind             # CommandKind
    uint8_t side             # Side
    uint8_t order_type       # OrderType
    uint8_t time_in_force    # TimeInForce
    uint8_t stp_mode         # StpMode
    uint8_t flags            # Flags bits
    uint16_t asset_id        # transfers and ADD_ASSET; base asset of ADD_INSTRUMENT
    uint32_t account_id
    uint32_t instrument_id
    uint64_t client_id       # client order id, transfer id; quote asset of ADD_INSTRUMENT
    int64_t price            # ticks (limit price; market: worst price, 0 = none)
    int64_t quantity         # lots; transfers: amount in minor units
    int64_t limit            # market buy: maximum notional in quote minor units, 0 = none
    int64_t expire_time_ns   # GTD: the order expires at a command stamped at or after it; else 0
    int64_t trigger_price    # STOP_MARKET, STOP_LIMIT: ticks; else 0
    int64_t display_quantity # iceberg (GTC, GTD limit orders): lots shown at a time; 0 = all
    uint64_t reserved        # must be 0

# An event, 128 bytes (contract 2; 96 in contract 1). It carries the seq and timestamp of the
# command that produced it.
ctypedef struct Event:
    uint64_t seq
    int64_t timestamp_ns
    uint8_t kind             # EventKind
    uint8_t side
    uint16_t reason          # RejectReason or CancelReason, 0 otherwise
    uint32_t instrument_id   # transfers: asset id
    uint32_t account_id      # fill: taker account
    uint32_t counter_account_id  # fill: maker account
    uint64_t order_id        # fill: taker order
    uint64_t client_id       # client order id or transfer id; fill: taker's client order id
    uint64_t counter_order_id    # fill: maker order
    uint64_t trade_id
    int64_t price
    int64_t quantity
    int64_t fee              # fill: taker fee, quote minor units
    int64_t counter_fee      # fill: maker fee, quote minor units
    uint64_t counter_client_id   # fill: the maker's client order id
    int64_t leaves           # fill: the taker's open lots after this fill
    int64_t counter_leaves   # fill: the maker's open lots after this fill
    uint64_t reserved        # always 0 (room for the next contract)

# A change of an instrument's public book, 64 bytes: what a replica Engine with
# enable_book_changes() records after each command, for the market data feed. Not part of
# the journal: a pure function of the commands, so a replay makes the same ones.
#   LEVEL:  side, price = the level's price, quantity = its new shown lots (0: gone),
#           order_count = orders on it
#   TOP:    price/quantity = best bid, other_price/other_quantity = best ask (0/0: side empty)
#   STATUS: state (InstrumentState), price = band min, quantity = band max,
#           other_price = maker bps, other_quantity = taker bps
ctypedef struct BookChange:
    uint64_t seq             # the command's seq
    int64_t timestamp_ns     # the command's stamp
    uint8_t kind             # BookChangeKind
    uint8_t side             # LEVEL: Side
    uint8_t state            # STATUS: InstrumentState
    uint8_t reserved_19
    uint32_t instrument_id
    uint32_t order_count     # LEVEL: orders on the level after the command
    uint32_t reserved_28
    int64_t price
    int64_t quantity
    int64_t other_price
    int64_t other_quantity

cdef enum BookChangeKind:
    BOOK_LEVEL = 1
    BOOK_TOP = 2
    BOOK_STATUS = 3

cdef enum CommandKind:
    CMD_ADD_ASSET = 1
    CMD_ADD_ACCOUNT = 2
    CMD_ADD_INSTRUMENT = 3
    CMD_SET_PRICE_BAND = 4
    CMD_SET_FEES = 5
    CMD_HALT_INSTRUMENT = 6
    CMD_RESUME_INSTRUMENT = 7
    CMD_DEPOSIT = 8
    CMD_WITHDRAW = 9
    CMD_NEW_ORDER = 10
    CMD_CANCEL = 11
    CMD_REPLACE = 12
    CMD_MASS_CANCEL = 13
    CMD_PAUSE_INSTRUMENT = 14
    CMD_CLOCK = 15

cdef enum EventKind:
    EV_ACCEPTED = 64
    EV_REJECTED = 65
    EV_FILL = 66
    EV_CANCELED = 67
    EV_REPLACED = 68
    EV_TRANSFER_DONE = 69
    EV_TRANSFER_REJECTED = 70
    EV_COMMAND_DONE = 71
    EV_TRIGGERED = 72

cdef enum Side:
    SIDE_BUY = 1
    SIDE_SELL = 2

cdef enum OrderType:
    TYPE_LIMIT = 1
    TYPE_MARKET = 2
    TYPE_STOP_MARKET = 3
    TYPE_STOP_LIMIT = 4

cdef enum TimeInForce:
    TIF_GTC = 1
    TIF_IOC = 2
    TIF_FOK = 3
    TIF_GTD = 4

cdef enum StpMode:
    STP_CANCEL_TAKER = 1
    STP_CANCEL_MAKER = 2
    STP_CANCEL_BOTH = 3
    STP_DECREMENT = 4

cdef enum Flags:
    FLAG_POST_ONLY = 1

cdef enum RejectReason:
    R_UNKNOWN_COMMAND = 1
    R_INVALID_SIDE = 2
    R_INVALID_ORDER_TYPE = 3
    R_INVALID_TIME_IN_FORCE = 4
    R_INVALID_STP_MODE = 5
    R_INVALID_FLAGS = 6
    R_INVALID_QUANTITY = 7
    R_INVALID_PRICE = 8
    R_INVALID_LIMIT = 9
    R_INVALID_AMOUNT = 10
    R_INVALID_FEE = 11
    R_INVALID_INSTRUMENT_SPEC = 12
    R_INVALID_PRICE_BAND = 13
    R_POST_ONLY_NOT_ALLOWED = 14
    R_MARKET_PROTECTION_REQUIRED = 15
    R_INVALID_EXPIRE_TIME = 16
    R_INVALID_TRIGGER_PRICE = 17
    R_INVALID_DISPLAY_QUANTITY = 18
    R_UNKNOWN_ACCOUNT = 100
    R_UNKNOWN_ASSET = 101
    R_UNKNOWN_INSTRUMENT = 102
    R_ACCOUNT_EXISTS = 103
    R_ASSET_EXISTS = 104
    R_INSTRUMENT_EXISTS = 105
    R_INSTRUMENT_HALTED = 106
    R_INSTRUMENT_NOT_HALTED = 107
    R_PRICE_OFF_TICK = 108
    R_PRICE_OUT_OF_BAND = 109
    R_QUANTITY_ABOVE_MAXIMUM = 110
    R_INSTRUMENT_PAUSED = 111
    R_DUPLICATE_CLIENT_ORDER_ID = 200
    R_UNKNOWN_ORDER = 201
    R_POST_ONLY_WOULD_CROSS = 202
    R_REPLACE_NO_CHANGE = 203
    R_TRANSFER_ID_REUSED = 204
    R_DUPLICATE_TRANSFER_ID = 205
    R_STOP_WOULD_TRIGGER = 206
    R_INSUFFICIENT_FUNDS = 300
    R_AMOUNT_OVERFLOW = 301
    R_ORDER_CAPACITY = 400
    R_ACCOUNT_CAPACITY = 401
    R_ASSET_CAPACITY = 402
    R_INSTRUMENT_CAPACITY = 403
    R_PRICE_LEVEL_CAPACITY = 404

cdef enum InstrumentState:
    STATE_TRADING = 0
    STATE_HALTED = 1
    STATE_PAUSED = 2

cdef enum CancelReason:
    C_USER = 1
    C_IOC_REMAINDER = 2
    C_FOK_UNFILLED = 3
    C_SELF_TRADE = 4
    C_MASS_CANCEL = 5
    C_HALT = 6
    C_MARKET_PROTECTION = 7
    C_EXPIRED = 8
    C_BOOK_FULL = 9

# Layout facts of the C records, for the test that proves their numpy twins identical.
def record_layout():
    """Sizes and field offsets of Command and Event as the C compiler laid them out."""
    cdef Command c
    cdef Event e
    cdef char* cb = <char*>&c
    cdef char* eb = <char*>&e
    command = {
        "seq": <char*>&c.seq - cb, "timestamp_ns": <char*>&c.timestamp_ns - cb,
        "kind": <char*>&c.kind - cb, "side": <char*>&c.side - cb,
        "order_type": <char*>&c.order_type - cb, "time_in_force": <char*>&c.time_in_force - cb,
        "stp_mode": <char*>&c.stp_mode - cb, "flags": <char*>&c.flags - cb,
        "asset_id": <char*>&c.asset_id - cb, "account_id": <char*>&c.account_id - cb,
        "instrument_id": <char*>&c.instrument_id - cb, "client_id": <char*>&c.client_id - cb,
        "price": <char*>&c.price - cb, "quantity": <char*>&c.quantity - cb,
        "limit": <char*>&c.limit - cb, "expire_time_ns": <char*>&c.expire_time_ns - cb,
        "trigger_price": <char*>&c.trigger_price - cb,
        "display_quantity": <char*>&c.display_quantity - cb, "reserved": <char*>&c.reserved - cb,
    }
    event = {
        "seq": <char*>&e.seq - eb, "timestamp_ns": <char*>&e.timestamp_ns - eb,
        "kind": <char*>&e.kind - eb, "side": <char*>&e.side - eb, "reason": <char*>&e.reason - eb,
        "instrument_id": <char*>&e.instrument_id - eb, "account_id": <char*>&e.account_id - eb,
        "counter_account_id": <char*>&e.counter_account_id - eb,
        "order_id": <char*>&e.order_id - eb, "client_id": <char*>&e.client_id - eb,
        "counter_order_id": <char*>&e.counter_order_id - eb, "trade_id": <char*>&e.trade_id - eb,
        "price": <char*>&e.price - eb, "quantity": <char*>&e.quantity - eb,
        "fee": <char*>&e.fee - eb, "counter_fee": <char*>&e.counter_fee - eb,
        "counter_client_id": <char*>&e.counter_client_id - eb, "leaves": <char*>&e.leaves - eb,
        "counter_leaves": <char*>&e.counter_leaves - eb, "reserved": <char*>&e.reserved - eb,
    }
    cdef BookChange b
    cdef char* bb = <char*>&b
    book_change = {
        "seq": <char*>&b.seq - bb, "timestamp_ns": <char*>&b.timestamp_ns - bb,
        "kind": <char*>&b.kind - bb, "side": <char*>&b.side - bb, "state": <char*>&b.state - bb,
        "reserved_19": <char*>&b.reserved_19 - bb, "instrument_id": <char*>&b.instrument_id - bb,
        "order_count": <char*>&b.order_count - bb, "reserved_28": <char*>&b.reserved_28 - bb,
        "price": <char*>&b.price - bb, "quantity": <char*>&b.quantity - bb,
        "other_price": <char*>&b.other_price - bb, "other_quantity": <char*>&b.other_quantity - bb,
    }
    return {"command_size": sizeof(Command), "event_size": sizeof(Event),
            "book_change_size": sizeof(BookChange),
            "command": command, "event": event, "book_change": book_change}


def c_codes():
    """The enum numbers as Cython sees them, to prove they agree with codes.py."""
    return {
        "CommandKind": {"ADD_ASSET": CMD_ADD_ASSET, "ADD_ACCOUNT": CMD_ADD_ACCOUNT,
            "ADD_INSTRUMENT": CMD_ADD_INSTRUMENT, "SET_PRICE_BAND": CMD_SET_PRICE_BAND,
            "SET_FEES": CMD_SET_FEES, "HALT_INSTRUMENT": CMD_HALT_INSTRUMENT,
            "RESUME_INSTRUMENT": CMD_RESUME_INSTRUMENT, "DEPOSIT": CMD_DEPOSIT,
            "WITHDRAW": CMD_WITHDRAW, "NEW_ORDER": CMD_NEW_ORDER, "CANCEL": CMD_CANCEL,
            "REPLACE": CMD_REPLACE, "MASS_CANCEL": CMD_MASS_CANCEL,
            "PAUSE_INSTRUMENT": CMD_PAUSE_INSTRUMENT, "CLOCK": CMD_CLOCK},
        "EventKind": {"ACCEPTED": EV_ACCEPTED, "REJECTED": EV_REJECTED, "FILL": EV_FILL,
            "CANCELED": EV_CANCELED, "REPLACED": EV_REPLACED, "TRANSFER_DONE": EV_TRANSFER_DONE,
            "TRANSFER_REJECTED": EV_TRANSFER_REJECTED, "COMMAND_DONE": EV_COMMAND_DONE,
            "TRIGGERED": EV_TRIGGERED},
        "Side": {"BUY": SIDE_BUY, "SELL": SIDE_SELL},
        "OrderType": {"LIMIT": TYPE_LIMIT, "MARKET": TYPE_MARKET, "STOP_MARKET": TYPE_STOP_MARKET,
            "STOP_LIMIT": TYPE_STOP_LIMIT},
        "TimeInForce": {"GTC": TIF_GTC, "IOC": TIF_IOC, "FOK": TIF_FOK, "GTD": TIF_GTD},
        "StpMode": {"CANCEL_TAKER": STP_CANCEL_TAKER, "CANCEL_MAKER": STP_CANCEL_MAKER,
            "CANCEL_BOTH": STP_CANCEL_BOTH, "DECREMENT": STP_DECREMENT},
        "Flags": {"POST_ONLY": FLAG_POST_ONLY},
        "BookChangeKind": {"LEVEL": BOOK_LEVEL, "TOP": BOOK_TOP, "STATUS": BOOK_STATUS},
        "RejectReason": {
            "UNKNOWN_COMMAND": R_UNKNOWN_COMMAND, "INVALID_SIDE": R_INVALID_SIDE,
            "INVALID_ORDER_TYPE": R_INVALID_ORDER_TYPE,
            "INVALID_TIME_IN_FORCE": R_INVALID_TIME_IN_FORCE,
            "INVALID_STP_MODE": R_INVALID_STP_MODE, "INVALID_FLAGS": R_INVALID_FLAGS,
            "INVALID_QUANTITY": R_INVALID_QUANTITY, "INVALID_PRICE": R_INVALID_PRICE,
            "INVALID_LIMIT": R_INVALID_LIMIT, "INVALID_AMOUNT": R_INVALID_AMOUNT,
            "INVALID_FEE": R_INVALID_FEE, "INVALID_INSTRUMENT_SPEC": R_INVALID_INSTRUMENT_SPEC,
            "INVALID_PRICE_BAND": R_INVALID_PRICE_BAND,
            "POST_ONLY_NOT_ALLOWED": R_POST_ONLY_NOT_ALLOWED,
            "MARKET_PROTECTION_REQUIRED": R_MARKET_PROTECTION_REQUIRED,
            "INVALID_EXPIRE_TIME": R_INVALID_EXPIRE_TIME,
            "INVALID_TRIGGER_PRICE": R_INVALID_TRIGGER_PRICE,
            "INVALID_DISPLAY_QUANTITY": R_INVALID_DISPLAY_QUANTITY,
            "STOP_WOULD_TRIGGER": R_STOP_WOULD_TRIGGER,
            "UNKNOWN_ACCOUNT": R_UNKNOWN_ACCOUNT, "UNKNOWN_ASSET": R_UNKNOWN_ASSET,
            "UNKNOWN_INSTRUMENT": R_UNKNOWN_INSTRUMENT, "ACCOUNT_EXISTS": R_ACCOUNT_EXISTS,
            "ASSET_EXISTS": R_ASSET_EXISTS, "INSTRUMENT_EXISTS": R_INSTRUMENT_EXISTS,
            "INSTRUMENT_HALTED": R_INSTRUMENT_HALTED,
            "INSTRUMENT_NOT_HALTED": R_INSTRUMENT_NOT_HALTED, "PRICE_OFF_TICK": R_PRICE_OFF_TICK,
            "PRICE_OUT_OF_BAND": R_PRICE_OUT_OF_BAND,
            "QUANTITY_ABOVE_MAXIMUM": R_QUANTITY_ABOVE_MAXIMUM,
            "INSTRUMENT_PAUSED": R_INSTRUMENT_PAUSED,
            "DUPLICATE_CLIENT_ORDER_ID": R_DUPLICATE_CLIENT_ORDER_ID,
            "UNKNOWN_ORDER": R_UNKNOWN_ORDER, "POST_ONLY_WOULD_CROSS": R_POST_ONLY_WOULD_CROSS,
            "REPLACE_NO_CHANGE": R_REPLACE_NO_CHANGE, "TRANSFER_ID_REUSED": R_TRANSFER_ID_REUSED,
            "DUPLICATE_TRANSFER_ID": R_DUPLICATE_TRANSFER_ID,
            "INSUFFICIENT_FUNDS": R_INSUFFICIENT_FUNDS, "AMOUNT_OVERFLOW": R_AMOUNT_OVERFLOW,
            "ORDER_CAPACITY": R_ORDER_CAPACITY, "ACCOUNT_CAPACITY": R_ACCOUNT_CAPACITY,
            "ASSET_CAPACITY": R_ASSET_CAPACITY, "INSTRUMENT_CAPACITY": R_INSTRUMENT_CAPACITY,
            "PRICE_LEVEL_CAPACITY": R_PRICE_LEVEL_CAPACITY},
        "CancelReason": {"USER": C_USER, "IOC_REMAINDER": C_IOC_REMAINDER,
            "FOK_UNFILLED": C_FOK_UNFILLED, "SELF_TRADE": C_SELF_TRADE,
            "MASS_CANCEL": C_MASS_CANCEL, "HALT": C_HALT,
            "MARKET_PROTECTION": C_MARKET_PROTECTION, "EXPIRED": C_EXPIRED,
            "BOOK_FULL": C_BOOK_FULL},
        "InstrumentState": {"TRADING": STATE_TRADING, "HALTED": STATE_HALTED,
            "PAUSED": STATE_PAUSED},
        "ALL_INSTRUMENTS": MC_ALL_INSTRUMENTS,
        "BPS_DENOMINATOR": MC_BPS_DENOMINATOR,
    }

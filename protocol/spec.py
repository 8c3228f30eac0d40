"""The executable specification of the Cython codec, in plain Python.

``matchcore.protocol._codec`` is the fast path; this module says what it must do, message by
message: which command record a client message stands for (``message_to_command``) and back
(``command_to_message``), which EVENT frame an event record becomes for a recipient
(``event_to_message``, ``encode_event``), and how a stream of client bytes decodes
(``decode_client_stream``: the same stops, reasons, bytes consumed and commands as
``CommandDecoder.decode``). Tests compare the two on generated input; the server never calls
this module.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from matchcore.core.codes import CommandKind, EventKind
from matchcore.core.records import COMMAND_DTYPE, EVENT_DTYPE
from matchcore.protocol.messages import (
    ADMIN_TYPES, CLIENT_TYPES, CONTROL_TYPES, FRAME_SIZES, HEADER_SIZE, MAX_FRAME_SIZE,
    MESSAGE_CLASSES, ORDER_ENTRY_TYPES, AddAccount, MessageType, SessionReject, AddAsset, AddInstrument, Cancel, DecodeStatus,
    Deposit, EventMessage, HaltInstrument, Liquidity, PauseInstrument, MassCancel, Message, NewOrder,
    ProtocolError, Replace, ResumeInstrument, SessionReason, SetFees, SetPriceBand, Withdraw,
)

__all__ = ["message_to_command", "command_to_message", "event_to_message", "encode_event",
           "DecodeResult", "decode_client_stream", "market_data_messages"]

# ---------------------------------------------------------------------------- commands


def message_to_command(message: Message, account_id: int) -> dict[str, int]:
    """The command record fields (COMMAND_DTYPE names) a client command message stands for.

    ``account_id`` is the session's: order-entry commands always carry it. Admin commands
    carry the account they name (transfers, ADD_ACCOUNT) or none.
    """
    m = message
    if isinstance(m, NewOrder):
        return dict(kind=CommandKind.NEW_ORDER, account_id=account_id, instrument_id=m.instrument_id,
                    client_id=m.client_order_id, side=m.side, order_type=m.order_type,
                    time_in_force=m.time_in_force, stp_mode=m.stp_mode, flags=m.flags,
                    price=m.price, quantity=m.quantity, limit=m.max_notional,
                    expire_time_ns=m.expire_time_ns, trigger_price=m.trigger_price,
                    display_quantity=m.display_quantity)
    if isinstance(m, Cancel):
        return dict(kind=CommandKind.CANCEL, account_id=account_id, client_id=m.client_order_id)
    if isinstance(m, Replace):
        return dict(kind=CommandKind.REPLACE, account_id=account_id, client_id=m.client_order_id,
                    price=m.price, quantity=m.quantity)
    if isinstance(m, MassCancel):
        return dict(kind=CommandKind.MASS_CANCEL, account_id=account_id,
                    instrument_id=m.instrument_id, client_id=m.request_id)
    if isinstance(m, AddAsset):
        return dict(kind=CommandKind.ADD_ASSET, asset_id=m.asset_id, quantity=m.decimals,
                    client_id=m.request_id)
    if isinstance(m, AddAccount):
        return dict(kind=CommandKind.ADD_ACCOUNT, account_id=m.account_id, client_id=m.request_id)
    if isinstance(m, AddInstrument):
        return dict(kind=CommandKind.ADD_INSTRUMENT, instrument_id=m.instrument_id,
                    asset_id=m.base_asset_id, client_id=m.quote_asset_id, price=m.tick_size,
                    quantity=m.lot_size, limit=m.max_order_lots)
    if isinstance(m, SetPriceBand):
        return dict(kind=CommandKind.SET_PRICE_BAND, instrument_id=m.instrument_id,
                    client_id=m.request_id, price=m.price_min, limit=m.price_max)
    if isinstance(m, SetFees):
        return dict(kind=CommandKind.SET_FEES, instrument_id=m.instrument_id,
                    client_id=m.request_id, price=m.maker_bps, quantity=m.taker_bps)
    if isinstance(m, (HaltInstrument, PauseInstrument, ResumeInstrument)):
        kind = {HaltInstrument: CommandKind.HALT_INSTRUMENT, PauseInstrument: CommandKind.PAUSE_INSTRUMENT,
                ResumeInstrument: CommandKind.RESUME_INSTRUMENT}[type(m)]
        return dict(kind=kind, instrument_id=m.instrument_id, client_id=m.request_id)
    if isinstance(m, (Deposit, Withdraw)):
        kind = CommandKind.DEPOSIT if isinstance(m, Deposit) else CommandKind.WITHDRAW
        return dict(kind=kind, account_id=m.account_id, asset_id=m.asset_id,
                    client_id=m.transfer_id, quantity=m.amount)
    raise TypeError(f"{type(m).__name__} is not a command message")


def command_to_message(record: np.void | dict) -> Message:
    """The client message of one COMMAND_DTYPE record (the inverse of ``message_to_command``)."""
    r = {name: int(record[name]) for name in COMMAND_DTYPE.names}
    kind = r["kind"]
    if kind == CommandKind.NEW_ORDER:
        return NewOrder(r["side"], r["order_type"], r["time_in_force"], r["stp_mode"], r["account_id"],
                        r["instrument_id"], r["client_id"], r["price"], r["quantity"], r["limit"], r["flags"],
                        r["expire_time_ns"], r["trigger_price"], r["display_quantity"])
    if kind == CommandKind.CANCEL:
        return Cancel(r["account_id"], r["client_id"])
    if kind == CommandKind.REPLACE:
        return Replace(r["account_id"], r["client_id"], r["price"], r["quantity"])
    if kind == CommandKind.MASS_CANCEL:
        return MassCancel(r["account_id"], r["instrument_id"], r["client_id"])
    if kind == CommandKind.ADD_ASSET:
        return AddAsset(r["asset_id"], r["quantity"], r["client_id"])
    if kind == CommandKind.ADD_ACCOUNT:
        return AddAccount(r["account_id"], r["client_id"])
    if kind == CommandKind.ADD_INSTRUMENT:
        return AddInstrument(r["instrument_id"], r["asset_id"], r["client_id"], r["price"], r["quantity"], r["limit"])
    if kind == CommandKind.SET_PRICE_BAND:
        return SetPriceBand(r["instrument_id"], r["client_id"], r["price"], r["limit"])
    if kind == CommandKind.SET_FEES:
        return SetFees(r["instrument_id"], r["client_id"], r["price"], r["quantity"])
    if kind == CommandKind.HALT_INSTRUMENT:
        return HaltInstrument(r["instrument_id"], r["client_id"])
    if kind == CommandKind.RESUME_INSTRUMENT:
        return ResumeInstrument(r["instrument_id"], r["client_id"])
    if kind == CommandKind.PAUSE_INSTRUMENT:
        return PauseInstrument(r["instrument_id"], r["client_id"])
    if kind in (CommandKind.DEPOSIT, CommandKind.WITHDRAW):
        cls = Deposit if kind == CommandKind.DEPOSIT else Withdraw
        return cls(r["account_id"], r["asset_id"], r["client_id"], r["quantity"])
    raise ValueError(f"command kind {kind} has no client message")


# ---------------------------------------------------------------------------- events


def event_to_message(record: np.void | dict, recipient_account_id: int, event_seq: int) -> EventMessage:
    """The EVENT frame of one EVENT_DTYPE record as ``recipient_account_id`` sees it.

    A FILL is shown from the recipient's side: as the maker (the record's
    ``counter_account_id``, when that is not also the taker) the recipient gets its own
    order id, client order id, side, fee and open quantity; otherwise the taker's view. The
    counterparty's account and order are never sent.
    """
    r = {name: int(record[name]) for name in EVENT_DTYPE.names}
    side, liquidity = r["side"], Liquidity.NONE
    account_id, order_id, client_id, fee = r["account_id"], r["order_id"], r["client_id"], 0
    leaves = r["leaves"]
    if r["kind"] == EventKind.FILL:
        liquidity, fee = Liquidity.TAKER, r["fee"]
        if r["counter_account_id"] == recipient_account_id and r["account_id"] != recipient_account_id:
            liquidity, fee, leaves = Liquidity.MAKER, r["counter_fee"], r["counter_leaves"]
            account_id, order_id = r["counter_account_id"], r["counter_order_id"]
            client_id = r["counter_client_id"]
            side = 3 - side if side in (1, 2) else side
    else:
        fee = r["fee"]
    return EventMessage(kind=r["kind"], side=side, liquidity=int(liquidity), reason=r["reason"],
                        event_seq=event_seq, command_seq=r["seq"], timestamp_ns=r["timestamp_ns"],
                        account_id=account_id, instrument_id=r["instrument_id"], order_id=order_id,
                        client_id=client_id, trade_id=r["trade_id"], price=r["price"],
                        quantity=r["quantity"], fee=fee, leaves=leaves)


def encode_event(record: np.void | dict, recipient_account_id: int, event_seq: int) -> bytes:
    return event_to_message(record, recipient_account_id, event_seq).encode()


# ---------------------------------------------------------------------------- stream decoder


@dataclasses.dataclass(slots=True)
class DecodeResult:
    """What ``decode_client_stream`` (and the codec) report for one call."""

    status: DecodeStatus
    reason: SessionReason
    consumed_bytes: int
    commands: list[dict[str, int]]
    frame_offset: int  # CONTROL, REFUSED, FATAL: where the frame concerned starts; else -1
    frame_type: int    # its type byte, or -1 when unknown (FATAL before the type byte)
    #: session mode: frames handled (commands, heartbeats, refusals), heartbeats consumed,
    #: and the SESSION_REJECT frames written, in order
    frames_handled: int = 0
    heartbeats: int = 0
    replies: list[bytes] = dataclasses.field(default_factory=list)


def _header_check(buffer, offset: int, available: int, frame_size_bytes_max: int) -> tuple[SessionReason, int]:
    """(reason, frame_size) from a header; reason NONE when it is acceptable so far."""
    size = buffer[offset] | (buffer[offset + 1] << 8)
    if size > frame_size_bytes_max:
        return SessionReason.FRAME_TOO_LARGE, size
    if size < HEADER_SIZE:
        return SessionReason.MALFORMED_FRAME, size
    if available < 3:
        return SessionReason.NONE, size
    type_ = buffer[offset + 2]
    if type_ not in MESSAGE_CLASSES:
        return SessionReason.UNKNOWN_MESSAGE_TYPE, size
    if type_ not in CLIENT_TYPES:
        return SessionReason.UNEXPECTED_MESSAGE, size
    if size != FRAME_SIZES[type_]:
        return SessionReason.MALFORMED_FRAME, size
    if available >= HEADER_SIZE and buffer[offset + 3] != 0:
        return SessionReason.MALFORMED_FRAME, size
    return SessionReason.NONE, size


def decode_client_stream(buffer: bytes | bytearray | memoryview, account_id: int, admin: bool,
                         max_commands: int, frame_size_bytes_max: int = MAX_FRAME_SIZE, *,
                         session: bool = False, max_frames: int = -1,
                         replies_max: int = 0, order_entry: bool = True) -> DecodeResult:
    """Decode the client frames at the start of ``buffer`` into command field dicts.

    The executable specification of ``_codec.CommandDecoder.decode``: the same stops, the
    same reasons, the same bytes consumed and the same commands (seq and timestamp aside).
    Checks, in order, as soon as the bytes for each are there: frame_size above the maximum,
    below the header, type unknown, type not sent by clients, size not the type's, reserved
    header byte; then, with the whole frame: reserved body bytes, admin right, order-entry
    right (``order_entry`` False: a market-data-only key; order entry is NOT_AUTHORIZED), account.

    ``session``: the codec's session mode. Every frame handled counts against ``max_frames``
    (negative: no bound; then OUTPUT_FULL), HEARTBEATs are consumed, and a refused command is
    answered (a SESSION_REJECT) while fewer than ``replies_max`` were; then it stops REFUSED."""
    view = bytes(buffer)
    offset, total, commands = 0, len(view), []
    frames, heartbeats, replies = 0, 0, []

    def result(status: DecodeStatus, reason: SessionReason = SessionReason.NONE, at: int = -1,
               type_: int = -1) -> DecodeResult:
        return DecodeResult(DecodeStatus(status), SessionReason(reason), offset, commands, at, type_,
                            frames, heartbeats, replies)

    def refused(reason: SessionReason, message: Message) -> DecodeResult | None:
        """A refusal answered here (None: go on) or the REFUSED stop."""
        nonlocal offset, frames
        offset += size
        if session and len(replies) < replies_max:
            replies.append(SessionReject(type_, int(reason), _echoed_id(message)).encode())
            frames += 1
            return None
        return result(DecodeStatus.REFUSED, reason, offset - size, type_)

    while total - offset >= 2:
        reason, size = _header_check(view, offset, total - offset, frame_size_bytes_max)
        type_ = view[offset + 2] if total - offset >= 3 else -1
        if reason:
            return result(DecodeStatus.FATAL, reason, offset, type_)
        if total - offset < size:
            break
        try:
            message = MESSAGE_CLASSES[type_].decode(view[offset:offset + size])
        except ProtocolError as error:
            return result(DecodeStatus.FATAL, error.reason, offset, type_)
        if session and frames == max_frames:
            return result(DecodeStatus.OUTPUT_FULL)
        if type_ in CONTROL_TYPES:
            offset += size
            if session and type_ == MessageType.HEARTBEAT:
                heartbeats, frames = heartbeats + 1, frames + 1
                continue
            return result(DecodeStatus.CONTROL, SessionReason.NONE, offset - size, type_)
        if len(commands) >= max_commands:
            return result(DecodeStatus.OUTPUT_FULL)
        if (type_ in ADMIN_TYPES and not admin) or (type_ in ORDER_ENTRY_TYPES and not order_entry):
            stop = refused(SessionReason.NOT_AUTHORIZED, message)
            if stop is not None:
                return stop
            continue
        if type_ in ORDER_ENTRY_TYPES and message.account_id != account_id:
            stop = refused(SessionReason.WRONG_ACCOUNT, message)
            if stop is not None:
                return stop
            continue
        commands.append(message_to_command(message, account_id))
        frames += 1
        offset += size
    return result(DecodeStatus.OK)


def _echoed_id(message: Message) -> int:
    """The id a SESSION_REJECT echoes: the client order id, transfer id or request id."""
    for name in ("client_order_id", "transfer_id", "request_id"):
        value = getattr(message, name, None)
        if value is not None:
            return value
    return 0


# ---------------------------------------------------------------------------- market data


def market_data_messages(events: np.ndarray, changes: np.ndarray, md_seqs: np.ndarray,
                         tops: np.ndarray) -> list[Message]:
    """The specification of ``_codec.encode_market_data``: per command (in seq order) its
    trades (FILL events, in order), then its book changes in order (a TOP only when it differs
    from the last BBO published for the instrument); each message numbered with its
    instrument's next md_seq. ``md_seqs`` and ``tops`` are updated in place."""
    from matchcore.core.codes import BookChangeKind
    from matchcore.protocol.messages import MdBbo, MdLevel, MdStatus, MdTrade

    out: list[Message] = []
    seqs = sorted(set(int(s) for s in events["seq"]) | set(int(s) for s in changes["seq"]))
    for seq in seqs:
        for e in events[events["seq"] == seq]:
            if e["kind"] != EventKind.FILL:
                continue
            instrument = int(e["instrument_id"])
            md_seqs[instrument] += 1
            out.append(MdTrade(int(e["side"]), instrument, int(md_seqs[instrument]), seq, int(e["timestamp_ns"]),
                               int(e["trade_id"]), int(e["price"]), int(e["quantity"])))
        for b in changes[changes["seq"] == seq]:
            instrument = int(b["instrument_id"])
            values = (int(b["price"]), int(b["quantity"]), int(b["other_price"]), int(b["other_quantity"]))
            if b["kind"] == BookChangeKind.TOP:
                if tuple(int(v) for v in tops[instrument]) == values:
                    continue
                tops[instrument] = values
                md_seqs[instrument] += 1
                out.append(MdBbo(instrument, int(md_seqs[instrument]), seq, int(b["timestamp_ns"]), *values))
            elif b["kind"] == BookChangeKind.LEVEL:
                md_seqs[instrument] += 1
                out.append(MdLevel(0, int(b["side"]), instrument, int(b["order_count"]), int(md_seqs[instrument]),
                                   seq, int(b["timestamp_ns"]), values[0], values[1]))
            else:
                md_seqs[instrument] += 1
                out.append(MdStatus(int(b["state"]), instrument, int(md_seqs[instrument]), seq,
                                    int(b["timestamp_ns"]), *values))
    return out

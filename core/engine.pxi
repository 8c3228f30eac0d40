# Engine: the fast twin of core/reference.py (ReferenceEngine), which is the specification.
# Same events byte for byte, same state hash, same snapshot bytes, for every command stream;
# each handler below mirrors the reference's handler of the same name, check for check, so
# read them side by side. The Engine's fields (with their units) and cdef method signatures
# are declared in _core.pxd; its structs and tiny inline helpers in engine.pxd; the
# overflow-checked arithmetic and the fee formula in checked.h; the checks in atomics.h.
#
# Checks. Cheap ones (a compare on values at hand, per call) are mc_check and stay on in the
# release build; each says why it is cheap. The expensive one, check_invariants (a walk over
# every table and a snapshot round trip), runs after every command of apply() only in the
# debug build (MC_DEBUG_BUILD, set by MATCHCORE_DEBUG=1 at build time).
#
# The command path runs without the GIL and touches no Python object. The core thread calls
# apply_one per command (with prefetch_ahead before it when it holds a run of commands);
# apply() is the numpy batch API over apply_batch, which does both.
cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cython.view cimport array as _engine_view_array
from libc.stdint cimport INT64_MAX, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, malloc, qsort, realloc
from libc.string cimport memcmp, memcpy, memmove, memset
from posix.stdlib cimport posix_memalign

cdef extern from "malloc.h" nogil:
    size_t malloc_usable_size(void* block) noexcept

from engine cimport (
    _SC_PAGESIZE, _SC_PHYS_PAGES, MADV_HUGEPAGE, MC_HUGE_PAGE_BYTES, MC_NONE, Account, Asset,
    Balance, BookTouch, EventBuffer, IndexSlot, Instrument, Level, Order, WordSink,
    buy_hold_needed, event_buffer_free, event_buffer_init, event_buffer_push, level_key,
    level_search, order_shown, limit_hold_needed, madvise, mc_add_overflow, mc_fee, mc_hash_word,
    mc_index_tag, mc_key_hash, mc_mul_overflow, mc_prefetch, sink_put, sysconf,
)
from atomics cimport MC_DEBUG_BUILD, mc_check

import numpy as _engine_np

from matchcore.core.config import ConfigError as _EngineConfigError
from matchcore.core.config import EngineConfig as _EngineConfig
from matchcore.core.records import COMMAND_DTYPE as _ENGINE_COMMAND_DTYPE
from matchcore.core.records import EVENT_DTYPE as _ENGINE_EVENT_DTYPE
from matchcore.core.records import BOOK_CHANGE_DTYPE as _ENGINE_BOOK_CHANGE_DTYPE
from matchcore.core.snapshot_format import CONFIG_FIELDS as _ENGINE_CONFIG_FIELDS
from matchcore.core.snapshot_format import SnapshotError as _EngineSnapshotError
from matchcore.core.snapshot_format import check_fits as _engine_check_fits
from matchcore.core.snapshot_format import SnapshotReader as _EngineSnapshotReader

cdef enum:
    ENGINE_DECIMALS_MAX = 18
    ENGINE_BPS_MAX = 10000
    ENGINE_HEADER_WORDS = 10          # magic, version, 6 config words, 2 id counters
    ENGINE_INSTRUMENT_WORDS = 12
    ENGINE_STOP_WORDS = 16
    ENGINE_DISPLAY_MAX = 0x7FFFFFFF   # lots: an iceberg's peak fits Order.visible
    ENGINE_ORDER_WORDS = 11
    ENGINE_ACCOUNT_WORDS = 8          # id, last client order id, 6 words of the last transfer
    # prefetch_ahead: how many commands ahead each stage looks (a DRAM miss costs about
    # as much time as one or two commands; measured best on the mixed workload)
    ENGINE_PREFETCH_INDEX_DISTANCE = 4
    ENGINE_PREFETCH_ORDER_DISTANCE = 2
    ENGINE_PREFETCH_NEIGHBOUR_DISTANCE = 1
    # Levels of one cache line between book sides: with a power-of-two max_price_levels the
    # sides would start a power of two apart, and the tops of all books would compete for
    # the same few sets of the L1 and L2 caches.
    ENGINE_LEVEL_PADDING = 4
    # Level.book_mark wraps here (all marks are cleared then): a command count, not state
    ENGINE_BOOK_MARK_MAX = 0x7FFFFFFF

cdef uint64_t ENGINE_SNAPSHOT_MAGIC = 0x4D43534E41503031ULL   # snapshot_format.MAGIC
cdef uint64_t ENGINE_SNAPSHOT_VERSION = 2                      # snapshot_format.FORMAT_VERSION
cdef uint64_t ENGINE_HASH_SEED = 0xCBF29CE484222325ULL         # snapshot_format.HASH_SEED


cdef size_t _engine_pow2_at_least(size_t n) noexcept nogil:
    cdef size_t p = 1
    while p < n:
        p <<= 1
    return p



cdef void* _engine_table_allocate(size_t count, size_t size, bint prefault) noexcept nogil:
    """A zeroed table of count records; big tables are advised for transparent huge pages,
    which keeps random probes of the order index and pool from missing the TLB. NULL when
    short. With prefault, every page is faulted in now rather than in the hot path (and big
    tables are 2 MiB aligned); without it, the pages of a fresh mapping are left to the
    kernel to fault in, zeroed, on first touch: cheap to build, for engines (replays) that
    touch a small part of their capacity and do not mind a page fault on the command path."""
    if count == 0:
        count = 1
    if count > (<size_t>-1) // size:
        return NULL
    cdef size_t total_bytes = count * size
    cdef void* table = NULL
    cdef size_t start
    if not prefault:
        table = calloc(count, size)  # glibc maps big blocks fresh: zero, and not written
        if table != NULL and total_bytes >= 2 * MC_HUGE_PAGE_BYTES:
            start = (<size_t>table + MC_HUGE_PAGE_BYTES - 1) & ~(<size_t>MC_HUGE_PAGE_BYTES - 1)
            madvise(<void*>start, (<size_t>table + total_bytes - start)
                    & ~(<size_t>MC_HUGE_PAGE_BYTES - 1), MADV_HUGEPAGE)
        return table
    cdef size_t alignment = MC_HUGE_PAGE_BYTES if total_bytes >= MC_HUGE_PAGE_BYTES else 64
    if posix_memalign(&table, alignment, total_bytes) != 0:
        return NULL
    if alignment == MC_HUGE_PAGE_BYTES:
        madvise(table, total_bytes - total_bytes % MC_HUGE_PAGE_BYTES, MADV_HUGEPAGE)
    memset(table, 0, total_bytes)
    return table


cdef int _engine_u64_order(const void* a, const void* b) noexcept nogil:
    cdef uint64_t x = (<const uint64_t*>a)[0]
    cdef uint64_t y = (<const uint64_t*>b)[0]
    return -1 if x < y else (1 if x > y else 0)


cdef int _engine_touch_order(const void* a, const void* b) noexcept nogil:
    """qsort order of BookTouch: instrument, bids before asks, best price first, then the
    order they were touched in (``reserved``), so the first touch of a level comes first."""
    cdef const BookTouch* x = <const BookTouch*>a
    cdef const BookTouch* y = <const BookTouch*>b
    if x.instrument_id != y.instrument_id:
        return -1 if x.instrument_id < y.instrument_id else 1
    if x.side_index != y.side_index:
        return -1 if x.side_index < y.side_index else 1
    cdef int64_t kx = level_key(x.side_index, x.price)
    cdef int64_t ky = level_key(y.side_index, y.price)
    if kx != ky:
        return -1 if kx > ky else 1
    return -1 if x.reserved < y.reserved else (1 if x.reserved > y.reserved else 0)


cdef inline int _engine_expect(bint condition, str what) except -1:
    """An assert that release builds keep (they compile Cython's assert out)."""
    if not condition:
        raise AssertionError(what)
    return 0


@cython.final
cdef class _EngineCursor:
    """Bounds-checked reading of snapshot words (fields: _core.pxd)."""

    def __cinit__(self, const int64_t[::1] words, Py_ssize_t position):
        self.words = words
        self.position = position

    cdef int need(self, Py_ssize_t count) except -1:
        if count < 0 or self.position + count > self.words.shape[0]:
            raise _EngineSnapshotError("snapshot is truncated")
        return 0

    cdef int64_t take(self) noexcept:
        """The next word; need() has checked it is there."""
        self.position += 1
        return self.words[self.position - 1]

    cdef int64_t count(self, int64_t maximum, str what) except -1:
        self.need(1)
        cdef int64_t value = self.take()
        if value < 0 or value > maximum:
            raise _EngineSnapshotError(f"{value} {what}s, the config allows {maximum}")
        return value

    cdef int finish(self) except -1:
        if self.position != self.words.shape[0]:
            raise _EngineSnapshotError("trailing words after the snapshot")
        return 0


@cython.final
cdef class Engine:
    """Applies command records and returns event records, exactly like ``ReferenceEngine``.

    ``Engine(config)`` allocates every table from the config's capacities up front; an
    impossible config raises MemoryError here, never later. By default every page is faulted
    in at once, so the command path never takes a page fault (what a live core wants);
    ``prefault=False`` leaves that to first touch, which makes a large engine cheap to build
    for a replay that touches little of it. ``apply`` runs without the GIL
    and makes no Python object per command. Queries (``balance``, ``order``, ``depth``...),
    ``state_hash``, ``snapshot`` and ``restore`` behave as the reference's do.

    Fields and cdef methods are declared, with their units, in _core.pxd.
    """

    def __init__(self, config: _EngineConfig | None = None, *, bint prefault=True):
        if self.orders != NULL:
            raise RuntimeError("Engine is already initialized")
        config = (config or _EngineConfig()).validate()
        self.config = config
        self.max_accounts = config.max_accounts
        self.max_assets = config.max_assets
        self.max_instruments = config.max_instruments
        self.max_orders = config.max_orders
        self.max_price_levels = config.max_price_levels
        self.fee_account = config.fee_account_id
        self.next_order_id = 1
        self.next_trade_id = 1
        self._allocate(prefault)
        self.accounts[self.fee_account].exists = 1
        self.account_count = 1

    cdef _allocate(self, bint prefault):
        """Every table, zeroed (and with prefault, faulted in): after this the command path
        never allocates (the caller's event buffer aside) and, with prefault, never takes a
        page fault on engine state."""
        cdef size_t index_slots = _engine_pow2_at_least(2 * <size_t>self.max_orders)
        self.level_stride = <size_t>self.max_price_levels + ENGINE_LEVEL_PADDING
        cdef size_t level_slots = <size_t>self.max_instruments * 2 * self.level_stride
        cdef size_t balance_slots = <size_t>self.max_accounts * self.max_assets
        cdef size_t order_slots = <size_t>self.max_orders + 1
        # committing more than the machine has would end in the OOM killer, not an error
        total_bytes = (order_slots * (sizeof(Order) + 2 * sizeof(uint32_t))
                       + index_slots * sizeof(IndexSlot) + self.max_accounts * sizeof(Account)
                       + self.max_assets * sizeof(Asset) + balance_slots * sizeof(Balance)
                       + self.max_instruments * sizeof(Instrument) + level_slots * sizeof(Level))
        if total_bytes > <object>sysconf(_SC_PHYS_PAGES) * <object>sysconf(_SC_PAGESIZE):
            raise MemoryError(f"{self.config!r} needs {total_bytes} bytes, more than this "
                              f"machine's memory")
        with nogil:
            self.orders = <Order*>_engine_table_allocate(order_slots, sizeof(Order), prefault)
            self.free_orders = <uint32_t*>_engine_table_allocate(order_slots, sizeof(uint32_t),
                                                                 prefault)
            self.expiry_heap = <uint32_t*>_engine_table_allocate(order_slots, sizeof(uint32_t),
                                                                 prefault)
            self.index = <IndexSlot*>_engine_table_allocate(index_slots, sizeof(IndexSlot),
                                                            prefault)
            self.accounts = <Account*>_engine_table_allocate(self.max_accounts, sizeof(Account),
                                                             prefault)
            self.assets = <Asset*>_engine_table_allocate(self.max_assets, sizeof(Asset), prefault)
            self.balances = <Balance*>_engine_table_allocate(balance_slots, sizeof(Balance),
                                                             prefault)
            self.instruments = <Instrument*>_engine_table_allocate(
                self.max_instruments, sizeof(Instrument), prefault)
            self.levels = <Level*>_engine_table_allocate(level_slots, sizeof(Level), prefault)
        if (self.orders == NULL or self.free_orders == NULL or self.expiry_heap == NULL
                or self.index == NULL
                or self.accounts == NULL or self.assets == NULL or self.balances == NULL
                or self.instruments == NULL or self.levels == NULL):
            raise MemoryError(f"cannot allocate the tables of {self.config!r}")
        self.index_mask = <uint32_t>(index_slots - 1)

    def __dealloc__(self):
        free(self.orders)
        free(self.free_orders)
        free(self.expiry_heap)
        free(self.index)
        free(self.accounts)
        free(self.assets)
        free(self.balances)
        free(self.instruments)
        free(self.levels)
        free(self.touched)
        free(self.changes)

    # ================================================================== public API

    def apply(self, commands):
        """Apply command records in order; return the events they produced (EVENT_DTYPE)."""
        if commands.dtype != _ENGINE_COMMAND_DTYPE:
            raise TypeError("commands must be an array of COMMAND_DTYPE")
        if commands.ndim != 1:
            raise TypeError("commands must be a one-dimensional array")
        if self.broken:
            raise RuntimeError("engine state is undefined after an out-of-memory failure")
        cdef Py_ssize_t count = commands.shape[0]
        if count == 0:
            return _engine_np.zeros(0, dtype=_ENGINE_EVENT_DTYPE)
        contiguous = _engine_np.ascontiguousarray(commands)
        cdef const uint8_t[::1] raw = contiguous.view(_engine_np.uint8).reshape(-1)
        cdef const Command* first = <const Command*>&raw[0]
        cdef EventBuffer buffer
        if _engine_batch_buffer_init(&buffer, <size_t>count * 2 + 16) != 0:
            raise MemoryError("cannot allocate the event buffer")
        cdef int failed = 0
        if self.applying:
            event_buffer_free(&buffer)
            raise RuntimeError("Engine.apply is already running in another thread")
        self.applying = True
        try:
            if MC_DEBUG_BUILD:
                failed = self.apply_checked(first, <size_t>count, &buffer)
            else:
                with nogil:
                    failed = self.apply_batch(first, <size_t>count, &buffer)
        except BaseException:
            event_buffer_free(&buffer)
            raise
        finally:
            self.applying = False
        if failed:
            event_buffer_free(&buffer)
            raise MemoryError("out of memory while growing the event buffer")
        return _engine_events_array(&buffer)

    def balance(self, account_id, asset_id) -> tuple[int, int]:
        """(available, held) of one account in one asset, in minor units."""
        if not (0 <= account_id < self.max_accounts and 0 <= asset_id < self.max_assets):
            return 0, 0
        cdef Balance* balance = self.balance_of(account_id, asset_id)
        return balance.available, balance.held

    def balances_array(self):
        """int64 array [max_accounts, max_assets, 2] of (available, held)."""
        out = _engine_np.empty((self.max_accounts, self.max_assets, 2), dtype=_engine_np.int64)
        cdef int64_t[:, :, ::1] view = out
        memcpy(&view[0, 0, 0], self.balances,
               <size_t>self.max_accounts * self.max_assets * sizeof(Balance))
        return out

    def order(self, account_id, client_id) -> dict | None:
        """State of a live order, or None when it is not open."""
        if not (0 <= account_id <= 0xFFFFFFFF and 0 <= client_id <= 0xFFFFFFFFFFFFFFFF):
            return None
        cdef uint32_t slot
        cdef uint32_t order_index = self.index_find(account_id, client_id, &slot)
        if order_index == MC_NONE:
            return None
        cdef Order* order = &self.orders[order_index]
        return {"order_id": order.order_id, "instrument_id": order.instrument,
                "side": order.side, "price": order.price, "leaves": order.leaves,
                "hold": order.hold}

    def depth(self, instrument_id, side, levels_max=10):
        """Book depth best first: int64 array [n, 3] of (price, quantity, order count)."""
        if not (0 <= instrument_id < self.max_instruments
                and self.instruments[instrument_id].exists):
            return _engine_np.zeros((0, 3), dtype=_engine_np.int64)
        cdef Instrument* instrument = &self.instruments[instrument_id]
        cdef int side_index = 0 if side == 1 else 1
        cdef uint32_t level_count = instrument.level_count[side_index]
        # the reference slices book[:levels_max]; Python slice rules, negative values too
        shown = len(range(level_count)[:levels_max])
        out = _engine_np.zeros((shown, 3), dtype=_engine_np.int64)
        cdef int64_t[:, ::1] rows = out
        cdef Level* level
        cdef Py_ssize_t row
        for row in range(shown):
            level = &instrument.levels[side_index][level_count - 1 - row]
            rows[row, 0] = level.price
            rows[row, 1] = level.quantity       # an iceberg counts its shown part only
            rows[row, 2] = level.order_count
        return out

    def live_order_count(self) -> int:
        return self.live_orders()

    def enable_book_changes(self) -> None:
        """From now on record, after each command, the changes of the public books it made
        (BOOK_CHANGE_DTYPE: levels, tops, statuses), for ``take_book_changes``. For a replica
        that makes market data; the live core never turns it on (it costs a compare per
        level change when off). Again when on: nothing changes."""
        if self.book_changes_on:
            return
        self.book_marks_reset()
        self.book_changes_on = True
        self.change_count = 0

    def take_book_changes(self):
        """The book changes recorded since the last call, in command order (then dropped)."""
        out = _engine_np.empty(self.change_count, dtype=_ENGINE_BOOK_CHANGE_DTYPE)
        cdef uint8_t[::1] raw
        if self.change_count:
            raw = out.view(_engine_np.uint8)
            memcpy(&raw[0], self.changes, self.change_count * sizeof(BookChange))
        self.change_count = 0
        return out

    def instrument_ids(self) -> list[int]:
        """Ids of the instruments that exist, ascending."""
        return [i for i in range(self.max_instruments) if self.instruments[i].exists]

    def instrument(self, instrument_id) -> dict | None:
        """Reference data and status of an instrument, or None when it does not exist."""
        if not (0 <= instrument_id < self.max_instruments and self.instruments[instrument_id].exists):
            return None
        cdef Instrument* i = &self.instruments[instrument_id]
        return {"instrument_id": instrument_id, "base_asset_id": i.base_asset,
                "quote_asset_id": i.quote_asset, "tick_size": i.tick_size, "lot_size": i.lot_size,
                "max_order_lots": i.max_order_lots, "band_min": i.band_min, "band_max": i.band_max,
                "maker_bps": i.maker_bps, "taker_bps": i.taker_bps, "state": i.state,
                "last_price": i.last_price}

    def open_orders(self, account_id, after_order_id=0, limit=100) -> list[dict]:
        """Live orders of an account with an order id above ``after_order_id``, ascending,
        at most ``limit`` of them (a page; the next starts after the last one's id)."""
        out = []
        if not (0 <= account_id < self.max_accounts) or limit <= 0:
            return out
        cdef uint32_t order_index = self.accounts[account_id].order_head
        cdef Order* order
        while order_index != MC_NONE and len(out) < limit:
            order = &self.orders[order_index]
            order_index = order.account_next
            if order.order_id <= after_order_id:
                continue
            stop = order.order_type >= TYPE_STOP_MARKET
            out.append({"order_id": order.order_id, "client_id": order.client_id,
                        "instrument_id": order.instrument, "side": order.side,
                        "order_type": order.order_type, "time_in_force": order.time_in_force,
                        "price": order.price, "leaves": order.leaves,
                        "shown": 0 if stop else order_shown(order),
                        "display_quantity": 0 if stop else order.aux,
                        "trigger_price": order.aux if stop else 0,
                        "expire_time_ns": order.expire_time_ns, "hold": order.hold})
        return out

    def last_transfer(self, account_id) -> dict | None:
        """The account's last transfer and its outcome, or None before its first."""
        if not (0 <= account_id < self.max_accounts and self.accounts[account_id].exists):
            return None
        cdef Account* a = &self.accounts[account_id]
        if a.transfer_kind == 0:
            return None
        return {"transfer_id": a.last_transfer_id, "kind": a.transfer_kind,
                "asset_id": a.transfer_asset, "amount": a.transfer_amount,
                "event_kind": a.transfer_event_kind, "reason": a.transfer_reason}

    def totals(self, asset_id) -> tuple[int, int]:
        """(deposited, withdrawn) in minor units over the engine's life."""
        if not (0 <= asset_id < self.max_assets and self.assets[asset_id].exists):
            return 0, 0
        return self.assets[asset_id].deposited, self.assets[asset_id].withdrawn

    def state_hash(self) -> int:
        """64-bit hash of the canonical state words (snapshot_format.py)."""
        cdef WordSink sink
        sink.data = NULL
        sink.count = 0
        sink.hash = ENGINE_HASH_SEED
        self.write_state(&sink)
        return sink.hash

    def snapshot(self) -> bytes:
        """The canonical state words as little-endian bytes (snapshot_format.py)."""
        cdef WordSink sink
        cdef size_t word_count = self.state_word_count()
        out = PyBytes_FromStringAndSize(NULL, word_count * 8)
        sink.data = <uint64_t*>PyBytes_AS_STRING(out)
        sink.count = 0
        sink.hash = ENGINE_HASH_SEED
        self.write_state(&sink)
        if sink.count != word_count:
            raise AssertionError("snapshot word count disagrees with its estimate")
        return out

    def check_invariants(self) -> None:
        """Raise AssertionError unless the internal structures agree with each other: every
        resting order is indexed and on its account's list (ascending order id), counts
        match, books are sorted and not crossed, holds and balances add up (the checks of
        restore, applied to a copy). For tests; costs a full snapshot."""
        cdef uint32_t instrument_id, order_index, slot, found_index
        cdef int side_index
        cdef Py_ssize_t position
        cdef Instrument* instrument
        cdef Level* level
        cdef uint64_t booked = 0
        cdef uint64_t listed = 0
        cdef uint64_t previous_id
        cdef int64_t shown
        cdef uint32_t on_level
        for instrument_id in range(self.max_instruments):
            instrument = &self.instruments[instrument_id]
            if not instrument.exists:
                continue
            for side_index in range(2):
                for position in range(instrument.level_count[side_index]):
                    level = &instrument.levels[side_index][position]
                    _engine_expect(level.head != MC_NONE, "empty level")
                    shown = 0
                    on_level = 0
                    order_index = level.head
                    while order_index != MC_NONE:
                        shown += order_shown(&self.orders[order_index])
                        on_level += 1
                        _engine_expect(self.orders[order_index].price == level.price, "order off its level")
                        _engine_expect(self.orders[order_index].side == side_index + 1, "order on wrong side")
                        found_index = self.index_find(self.orders[order_index].account,
                                                      self.orders[order_index].client_id, &slot)
                        _engine_expect(found_index == order_index, "resting order not indexed")
                        booked += 1
                        order_index = self.orders[order_index].next
                    _engine_expect(level.quantity == shown, "level quantity is not its orders' shown lots")
                    _engine_expect(level.order_count == on_level, "level order count")
            # untriggered stops: live, indexed, off the book, on their list in order id order
            previous_id = 0
            order_index = instrument.stop_head
            while order_index != MC_NONE:
                _engine_expect(self.orders[order_index].order_type >= TYPE_STOP_MARKET, "a non-stop on the stops")
                _engine_expect(self.orders[order_index].order_id > previous_id, "stops unsorted")
                previous_id = self.orders[order_index].order_id
                found_index = self.index_find(self.orders[order_index].account,
                                              self.orders[order_index].client_id, &slot)
                _engine_expect(found_index == order_index, "stop not indexed")
                booked += 1
                order_index = self.orders[order_index].next
        _engine_expect(booked == self.live_orders(), "live count disagrees with the books and stops")
        # the expiry heap: the GTD orders of the pool, each where it says, in heap order
        cdef uint32_t gtd = 0
        for position in range(<Py_ssize_t>self.expiry_count):
            order_index = self.expiry_heap[position]
            _engine_expect(self.orders[order_index].expiry_position == position, "expiry heap position")
            _engine_expect(position == 0 or not self.expiry_before(
                order_index, self.expiry_heap[(position - 1) // 2]), "expiry heap order")
        for order_index in range(self.max_accounts):
            found_index = self.accounts[order_index].order_head
            while found_index != MC_NONE:
                gtd += self.orders[found_index].expire_time_ns != 0
                found_index = self.orders[found_index].account_next
        _engine_expect(gtd == self.expiry_count, "expiry heap disagrees with the GTD orders")
        for order_index in range(self.max_accounts):
            previous_id = 0
            found_index = self.accounts[order_index].order_head
            while found_index != MC_NONE:
                _engine_expect(self.orders[found_index].account == order_index, "order on wrong account")
                _engine_expect(self.orders[found_index].order_id > previous_id, "account list unsorted")
                previous_id = self.orders[found_index].order_id
                listed += 1
                found_index = self.orders[found_index].account_next
        _engine_expect(listed == self.live_orders(), "account lists disagree with the books")
        cdef uint64_t indexed = 0
        for position in range(<Py_ssize_t>self.index_mask + 1):
            if self.index[position].order != MC_NONE:
                indexed += 1
        _engine_expect(indexed == self.live_orders(), "index holds dead orders")
        try:
            # prefault=False: the copy is read once and dropped; faulting in every table of
            # the config each time would make this check cost as much as a new engine.
            Engine.restore(self.snapshot(), prefault=False)
        except _EngineSnapshotError as error:
            raise AssertionError(f"inconsistent state: {error}") from error

    def stepper(self, commands, events=None) -> EngineStepper:
        """A per-command path over a caller-owned command array: ``step(index)`` applies
        ``commands[index]`` and writes its events to the front of ``events`` (the stepper's
        ``events`` attribute); see EngineStepper."""
        return EngineStepper(self, commands, events)

    def apply_verified(self, commands, expected):
        """``apply(commands)`` checked against ``expected`` (EVENT_DTYPE, the journaled
        events) byte for byte without making an events array: None when they are the same,
        else the seq of the first event that differs (the journaled one's; when one side is
        a prefix of the other, that of the first event past it). The commands take effect
        either way. What verified replay runs per journal row."""
        if expected.dtype != _ENGINE_EVENT_DTYPE or expected.ndim != 1:
            raise TypeError("expected must be a one-dimensional array of EVENT_DTYPE")
        journaled = _engine_np.ascontiguousarray(expected)
        cdef EventBuffer buffer
        buffer.data = NULL
        buffer.count = 0
        buffer.capacity = 0
        try:
            _engine_apply_into(self, commands, &buffer)
            return _engine_first_difference(&buffer, journaled)
        finally:
            event_buffer_free(&buffer)

    @classmethod
    def restore(cls, data, *, config=None, bint prefault=True) -> Engine:
        """An engine in the state of a snapshot; SnapshotError when the bytes are not one.
        With ``config``, in that config instead of the header's (a resize): SnapshotError
        naming the field when the state does not fit it (snapshot_format.check_fits); the
        loaders below check every count and id against it again. ``prefault`` as for
        ``Engine()``."""
        reader = _EngineSnapshotReader(data)
        try:
            stored, next_order_id, next_trade_id = reader.header()
            if config is not None:
                config = config.validate()
        except _EngineConfigError as error:
            raise _EngineSnapshotError(f"snapshot config is invalid: {error}") from error
        if config is None:
            config = stored
        else:
            _engine_check_fits(data, config)
        if next_order_id < 1 or next_trade_id < 1:
            raise _EngineSnapshotError("snapshot id counters must be positive")
        cdef Engine engine = Engine(config, prefault=prefault)
        engine.next_order_id = next_order_id
        engine.next_trade_id = next_trade_id
        engine.accounts[engine.fee_account].exists = 0
        engine.account_count = 0
        words = _engine_np.frombuffer(data, dtype="<i8")
        engine.load(words, ENGINE_HEADER_WORDS)
        return engine

    # ================================================================== the command path

    cdef int apply_one(self, const Command* command, EventBuffer* out) noexcept nogil:
        """Apply one command, appending its events to out. 0, or -1 when out could not grow
        (the command still took effect but lost events: the engine refuses more)."""
        if self.broken:
            return -1
        self.command = command
        self.out = out
        self.out_of_memory = False
        # GTD orders due at this command's stamp expire first (one compare when none is due)
        if self.expiry_count and self.orders[self.expiry_heap[0]].expire_time_ns <= command.timestamp_ns:
            self.expire_due(command.timestamp_ns)
        cdef uint8_t kind = command.kind
        if kind == CMD_NEW_ORDER:
            self.cmd_new_order(command)
        elif kind == CMD_CANCEL:
            self.cmd_cancel(command)
        elif kind == CMD_REPLACE:
            self.cmd_replace(command)
        elif kind == CMD_MASS_CANCEL:
            self.cmd_mass_cancel(command)
        elif kind == CMD_DEPOSIT or kind == CMD_WITHDRAW:
            self.cmd_transfer(command)
        elif kind == CMD_ADD_ASSET:
            self.cmd_add_asset(command)
        elif kind == CMD_ADD_ACCOUNT:
            self.cmd_add_account(command)
        elif kind == CMD_ADD_INSTRUMENT:
            self.cmd_add_instrument(command)
        elif kind == CMD_SET_PRICE_BAND:
            self.cmd_set_price_band(command)
        elif kind == CMD_SET_FEES:
            self.cmd_set_fees(command)
        elif kind == CMD_HALT_INSTRUMENT:
            self.cmd_halt(command)
        elif kind == CMD_RESUME_INSTRUMENT:
            self.cmd_resume(command)
        elif kind == CMD_PAUSE_INSTRUMENT:
            self.cmd_pause(command)
        elif kind == CMD_CLOCK:
            self.done(command, command.instrument_id, command.quantity)
        else:
            self.reject(command, R_UNKNOWN_COMMAND)
        if self.book_changes_on:
            self.book_finish(command)
        self.command = NULL
        self.out = NULL
        if self.out_of_memory:
            self.broken = True
            return -1
        return 0

    cdef int apply_batch(self, const Command* commands, size_t count,
                         EventBuffer* out) noexcept nogil:
        """apply_one over a run of commands, with prefetch_ahead. 0, or -1 as apply_one."""
        cdef size_t position
        for position in range(count):
            self.prefetch_ahead(commands, count, position)
            if self.apply_one(&commands[position], out) != 0:
                return -1
        return 0

    cdef int apply_checked(self, const Command* commands, size_t count,
                           EventBuffer* out) except -2:
        """Debug build only: apply_one per command, each followed by check_invariants (an
        AssertionError on the first command after which the structures disagree). 0, or -1
        as apply_one. Without prefetch_ahead, which changes no state."""
        cdef size_t position
        cdef int failed
        for position in range(count):
            with nogil:
                failed = self.apply_one(&commands[position], out)
            if failed != 0:
                return -1
            self.check_invariants()
        return 0

    cdef inline void prefetch_ahead(self, const Command* commands, size_t count,
                                    size_t position) noexcept nogil:
        """Call before apply_one(&commands[position]) when the next commands are at hand:
        prefetches, in three stages, what the commands a few places ahead will touch, so
        the cache misses of several commands overlap instead of adding up (a cancel of an
        old order otherwise waits for three DRAM round trips in a row)."""
        if position + ENGINE_PREFETCH_INDEX_DISTANCE < count:
            self.prefetch_index(&commands[position + ENGINE_PREFETCH_INDEX_DISTANCE])
        if position + ENGINE_PREFETCH_ORDER_DISTANCE < count:
            self.prefetch_order(&commands[position + ENGINE_PREFETCH_ORDER_DISTANCE])
        if position + ENGINE_PREFETCH_NEIGHBOUR_DISTANCE < count:
            self.prefetch_neighbours(&commands[position + ENGINE_PREFETCH_NEIGHBOUR_DISTANCE])

    cdef void prefetch_index(self, const Command* command) noexcept nogil:
        """Prefetch stage 1: the index slot an order command will probe; for a new order
        also the balance it will hold from."""
        cdef uint8_t kind = command.kind
        cdef const Instrument* instrument
        if kind == CMD_NEW_ORDER or kind == CMD_CANCEL or kind == CMD_REPLACE:
            mc_prefetch(&self.index[mc_index_tag(command.account_id, command.client_id)
                                    & self.index_mask])
            self.prefetch_account(command.account_id)
        if kind == CMD_CANCEL or kind == CMD_REPLACE:
            self.prefetch_balance_row(command.account_id)
        if (kind == CMD_NEW_ORDER and command.account_id < self.max_accounts
                and command.instrument_id < self.max_instruments):
            instrument = &self.instruments[command.instrument_id]
            mc_prefetch(self.balance_of(command.account_id,
                                        instrument.quote_asset if command.side == SIDE_BUY
                                        else instrument.base_asset))

    cdef inline uint32_t indexed_order(self, const Command* command) noexcept nogil:
        """The order a cancel or replace probably names (home slot only), or MC_NONE."""
        cdef uint32_t tag = mc_index_tag(command.account_id, command.client_id)
        cdef const IndexSlot* slot = &self.index[tag & self.index_mask]
        return slot.order if slot.tag == tag else MC_NONE

    cdef void prefetch_order(self, const Command* command) noexcept nogil:
        """Prefetch stage 2: the order a cancel or replace names, read from the slot stage 1
        fetched; for a new order, its account's newest order, which a resting order links
        to. Only hints: the state may change before the command runs."""
        cdef uint8_t kind = command.kind
        cdef uint32_t order_index
        if kind == CMD_CANCEL or kind == CMD_REPLACE:
            order_index = self.indexed_order(command)
            if order_index != MC_NONE:
                mc_prefetch(&self.orders[order_index])
        elif kind == CMD_NEW_ORDER and command.account_id < self.max_accounts:
            mc_prefetch(&self.orders[self.accounts[command.account_id].order_tail])
            # the pool slot it would rest in (both lines of it)
            order_index = (self.free_orders[self.free_count - 1] if self.free_count > 0
                           else self.orders_used + 1)
            if order_index <= self.max_orders:
                mc_prefetch(&self.orders[order_index])
                mc_prefetch(<const char*>&self.orders[order_index] + sizeof(Order) - 1)

    cdef void prefetch_neighbours(self, const Command* command) noexcept nogil:
        """Prefetch stage 3: the orders a cancel or replace will relink when it takes its
        order off the level's queue and the account's list."""
        cdef uint8_t kind = command.kind
        cdef uint32_t order_index
        cdef const Order* order
        if kind == CMD_CANCEL or kind == CMD_REPLACE:
            order_index = self.indexed_order(command)
            if order_index == MC_NONE:
                return
            order = &self.orders[order_index]
            mc_prefetch(&self.orders[order.prev])
            mc_prefetch(&self.orders[order.next])
            mc_prefetch(&self.orders[order.account_prev])
            mc_prefetch(&self.orders[order.account_next])
            if order.instrument < self.max_instruments and order.account < self.max_accounts:
                mc_prefetch(self.hold_balance(order, &self.instruments[order.instrument]))

    # ------------------------------------------------------------------ deep-book prefetch
    # (issue 17) On a deep book with an account per order, what a command touches beyond
    # its order is cold: its account and its balance row, and for a taker that fills several
    # makers each maker's account, balances and index slot. These hints extend the three
    # prefetch stages above; they change no state. (Prefetching the first maker of a crossing
    # order in the stages too was measured: no faster on the deep book, 94 instructions a
    # command more on the mixed one.)

    cdef inline void prefetch_account(self, uint32_t account) noexcept nogil:
        """Both cache lines an Account may straddle (exists, last client id, order list)."""
        if account < self.max_accounts:
            mc_prefetch(&self.accounts[account])
            mc_prefetch(<const char*>&self.accounts[account] + sizeof(Account) - 1)

    cdef inline void prefetch_balance_row(self, uint32_t account) noexcept nogil:
        """A cancel's or replace's balance before its order is known: the whole balance row
        of the account when it is at most two cache lines (few assets; stage 3 fetches the
        exact balance otherwise)."""
        cdef size_t row_bytes = <size_t>self.max_assets * sizeof(Balance)
        if account < self.max_accounts and row_bytes <= 64:
            mc_prefetch(self.balance_of(account, 0))
            mc_prefetch(<const char*>self.balance_of(account, 0) + row_bytes - 1)

    cdef inline void prefetch_next_maker(self, const Order* maker,
                                         const Instrument* instrument) noexcept nogil:
        """In match, before a fill that leaves the taker open: what the maker behind this
        one touches when it trades (its order line was prefetched the step before: reading
        it now only moves forward a load the next step makes anyway), and the one behind."""
        if maker.next == MC_NONE:
            return
        cdef const Order* next_maker = &self.orders[maker.next]
        if next_maker.account >= self.max_accounts:
            return
        self.prefetch_account(next_maker.account)
        mc_prefetch(self.balance_of(next_maker.account, instrument.base_asset))
        mc_prefetch(self.balance_of(next_maker.account, instrument.quote_asset))
        mc_prefetch(&self.index[mc_index_tag(next_maker.account, next_maker.client_id)
                                & self.index_mask])
        mc_prefetch(&self.orders[next_maker.next])

    # ------------------------------------------------------------------ book changes

    cdef void book_marks_reset(self) noexcept nogil:
        """Every level unmarked, the next mark 1 (at start, and when the mark wraps)."""
        cdef uint32_t instrument_id, position
        cdef int side_index
        for instrument_id in range(self.max_instruments):
            for side_index in range(2):
                for position in range(self.instruments[instrument_id].level_count[side_index]):
                    self.instruments[instrument_id].levels[side_index][position].book_mark = 0
        self.book_mark = 1

    cdef inline void book_touch(self, const Instrument* instrument, int side_index,
                                Level* level) noexcept nogil:
        """Book changes on: remember a level's state before the current command first
        changes it. Off: one compare, inline."""
        if self.book_changes_on and level.book_mark != self.book_mark:
            self.book_remember(instrument, side_index, level)

    cdef void book_remember(self, const Instrument* instrument, int side_index,
                            Level* level) noexcept nogil:
        cdef BookTouch* grown
        cdef size_t capacity
        if self.touched_count == self.touched_capacity:
            capacity = self.touched_capacity * 2 if self.touched_capacity else 64
            grown = <BookTouch*>realloc(self.touched, capacity * sizeof(BookTouch))
            if grown == NULL:
                self.out_of_memory = True
                return
            self.touched = grown
            self.touched_capacity = capacity
        level.book_mark = self.book_mark
        cdef BookTouch* touch = &self.touched[self.touched_count]
        touch.price = level.price
        touch.quantity_before = level.quantity
        touch.order_count_before = level.order_count
        touch.instrument_id = <uint32_t>(instrument - self.instruments)
        touch.side_index = <uint32_t>side_index
        touch.reserved = <uint32_t>self.touched_count     # touch order, for the sort
        self.touched_count += 1

    cdef BookChange* book_change_push(self, uint8_t kind, uint32_t instrument_id) noexcept nogil:
        """A zeroed book change of the current command (NULL when memory is short)."""
        cdef BookChange* grown
        cdef size_t capacity
        if self.change_count == self.change_capacity:
            capacity = self.change_capacity * 2 if self.change_capacity else 1024
            grown = <BookChange*>realloc(self.changes, capacity * sizeof(BookChange))
            if grown == NULL:
                self.out_of_memory = True
                return NULL
            self.changes = grown
            self.change_capacity = capacity
        cdef BookChange* change = &self.changes[self.change_count]
        self.change_count += 1
        memset(change, 0, sizeof(BookChange))
        change.seq = self.command.seq
        change.timestamp_ns = self.command.timestamp_ns
        change.kind = kind
        change.instrument_id = instrument_id
        return change

    cdef void book_finish(self, const Command* command) noexcept nogil:
        """After a command: a LEVEL change per level whose shown lots or order count differ
        from before the command (instrument, bids then asks, best first), the TOP of each
        instrument with one, then the STATUS of an instrument an admin command changed."""
        cdef size_t i
        cdef BookTouch* touch
        cdef Instrument* instrument
        cdef Level* level
        cdef BookChange* change
        cdef bint found
        cdef bint changed = False
        cdef uint32_t position, order_count
        cdef int64_t quantity
        if self.touched_count:
            if self.touched_count > 1:
                qsort(self.touched, self.touched_count, sizeof(BookTouch), _engine_touch_order)
            for i in range(self.touched_count):
                touch = &self.touched[i]
                if not (i > 0 and self.touched[i - 1].instrument_id == touch.instrument_id
                        and self.touched[i - 1].side_index == touch.side_index
                        and self.touched[i - 1].price == touch.price):
                    instrument = &self.instruments[touch.instrument_id]
                    position = level_search(instrument.levels[touch.side_index],
                                            instrument.level_count[touch.side_index],
                                            touch.side_index, touch.price, &found)
                    quantity, order_count = 0, 0
                    if found:
                        level = &instrument.levels[touch.side_index][position]
                        quantity, order_count = level.quantity, level.order_count
                    if quantity != touch.quantity_before or order_count != touch.order_count_before:
                        change = self.book_change_push(BOOK_LEVEL, touch.instrument_id)
                        if change != NULL:
                            change.side = <uint8_t>(touch.side_index + 1)
                            change.price = touch.price
                            change.quantity = quantity
                            change.order_count = order_count
                        changed = True
                if changed and (i + 1 == self.touched_count
                                or self.touched[i + 1].instrument_id != touch.instrument_id):
                    self.book_top(touch.instrument_id)
                    changed = False
            self.touched_count = 0
        cdef uint8_t kind = command.kind
        if ((kind == CMD_ADD_INSTRUMENT or kind == CMD_SET_PRICE_BAND or kind == CMD_SET_FEES
                or kind == CMD_HALT_INSTRUMENT or kind == CMD_RESUME_INSTRUMENT
                or kind == CMD_PAUSE_INSTRUMENT)
                and self.out.count and self.out.data[self.out.count - 1].kind == EV_COMMAND_DONE):
            self.book_status(command.instrument_id)
        self.book_mark += 1
        if self.book_mark == ENGINE_BOOK_MARK_MAX:
            self.book_marks_reset()

    cdef void book_top(self, uint32_t instrument_id) noexcept nogil:
        cdef Instrument* instrument = &self.instruments[instrument_id]
        cdef BookChange* change = self.book_change_push(BOOK_TOP, instrument_id)
        cdef uint32_t count
        if change == NULL:
            return
        count = instrument.level_count[0]
        if count:
            change.price = instrument.levels[0][count - 1].price
            change.quantity = instrument.levels[0][count - 1].quantity
        count = instrument.level_count[1]
        if count:
            change.other_price = instrument.levels[1][count - 1].price
            change.other_quantity = instrument.levels[1][count - 1].quantity

    cdef void book_status(self, uint32_t instrument_id) noexcept nogil:
        cdef Instrument* instrument = &self.instruments[instrument_id]
        cdef BookChange* change = self.book_change_push(BOOK_STATUS, instrument_id)
        if change == NULL:
            return
        change.state = instrument.state
        change.price = instrument.band_min
        change.quantity = instrument.band_max
        change.other_price = instrument.maker_bps
        change.other_quantity = instrument.taker_bps

    # ------------------------------------------------------------------ events

    cdef Event* emit(self, uint8_t kind, uint8_t side, uint16_t reason, uint32_t instrument_id,
                     uint32_t account_id, uint32_t counter_account_id, uint64_t order_id,
                     uint64_t client_id, uint64_t counter_order_id, uint64_t trade_id,
                     int64_t price, int64_t quantity, int64_t fee,
                     int64_t counter_fee) noexcept nogil:
        """Append an event (the fill-only fields zero) and return it, for fill() to complete."""
        cdef Event* event = event_buffer_push(self.out)
        if event == NULL:
            self.out_of_memory = True
            event = &self.scratch_event
        event.seq = self.command.seq
        event.timestamp_ns = self.command.timestamp_ns
        event.kind = kind
        event.side = side
        event.reason = reason
        event.instrument_id = instrument_id
        event.account_id = account_id
        event.counter_account_id = counter_account_id
        event.order_id = order_id
        event.client_id = client_id
        event.counter_order_id = counter_order_id
        event.trade_id = trade_id
        event.price = price
        event.quantity = quantity
        event.fee = fee
        event.counter_fee = counter_fee
        event.counter_client_id = 0
        event.leaves = 0
        event.counter_leaves = 0
        event.reserved = 0
        return event

    cdef void reject(self, const Command* c, uint16_t reason) noexcept nogil:
        self.emit(EV_REJECTED, c.side, reason, c.instrument_id, c.account_id, 0, 0, c.client_id,
                  0, 0, c.price, c.quantity, 0, 0)

    cdef void done(self, const Command* c, uint32_t instrument_id, int64_t quantity) noexcept nogil:
        self.emit(EV_COMMAND_DONE, 0, 0, instrument_id, c.account_id, 0, 0, c.client_id, 0, 0,
                  c.price, quantity, 0, 0)

    cdef void emit_canceled(self, const Order* order, uint16_t reason) noexcept nogil:
        self.emit(EV_CANCELED, order.side, reason, order.instrument, order.account, 0,
                  order.order_id, order.client_id, 0, 0, order.price, order.leaves, 0, 0)

    cdef void transfer_event(self, const Command* c, uint8_t event_kind,
                             uint16_t reason) noexcept nogil:
        self.emit(event_kind, 0, reason, c.asset_id, c.account_id, 0, 0, c.client_id, 0, 0, 0,
                  c.quantity, 0, 0)

    # ------------------------------------------------------------------ lookups

    cdef inline Balance* balance_of(self, uint32_t account, uint32_t asset) noexcept nogil:
        return &self.balances[<size_t>account * self.max_assets + asset]

    cdef inline bint account_exists(self, uint32_t account) noexcept nogil:
        return account < self.max_accounts and self.accounts[account].exists

    cdef inline bint asset_exists(self, uint64_t asset) noexcept nogil:
        return asset < self.max_assets and self.assets[asset].exists

    cdef inline Instrument* instrument_of(self, uint32_t instrument_id) noexcept nogil:
        """The instrument, or NULL when it does not exist."""
        if instrument_id >= self.max_instruments or not self.instruments[instrument_id].exists:
            return NULL
        return &self.instruments[instrument_id]

    # ------------------------------------------------------------------ reference data

    cdef void cmd_add_asset(self, const Command* c) noexcept nogil:
        cdef int64_t decimals = c.quantity
        if decimals < 0 or decimals > ENGINE_DECIMALS_MAX:
            self.reject(c, R_INVALID_QUANTITY)
            return
        if self.asset_exists(c.asset_id):
            self.reject(c, R_ASSET_EXISTS)
            return
        if c.asset_id >= self.max_assets:
            self.reject(c, R_ASSET_CAPACITY)
            return
        cdef Asset* asset = &self.assets[c.asset_id]
        asset.exists = 1
        asset.decimals = decimals
        asset.deposited = 0
        asset.withdrawn = 0
        self.asset_count += 1
        self.done(c, c.asset_id, c.quantity)

    cdef void cmd_add_account(self, const Command* c) noexcept nogil:
        if self.account_exists(c.account_id):
            self.reject(c, R_ACCOUNT_EXISTS)
            return
        if c.account_id >= self.max_accounts:
            self.reject(c, R_ACCOUNT_CAPACITY)
            return
        self.accounts[c.account_id].exists = 1
        self.account_count += 1
        self.done(c, c.instrument_id, c.quantity)

    cdef void cmd_add_instrument(self, const Command* c) noexcept nogil:
        cdef int64_t tick_size = c.price
        cdef int64_t lot_size = c.quantity
        cdef int64_t max_order_lots = c.limit
        cdef uint64_t base_asset = c.asset_id
        cdef uint64_t quote_asset = c.client_id
        if tick_size <= 0 or lot_size <= 0 or max_order_lots <= 0 or base_asset == quote_asset:
            self.reject(c, R_INVALID_INSTRUMENT_SPEC)
            return
        if not self.asset_exists(base_asset) or not self.asset_exists(quote_asset):
            self.reject(c, R_UNKNOWN_ASSET)
            return
        if self.instrument_of(c.instrument_id) != NULL:
            self.reject(c, R_INSTRUMENT_EXISTS)
            return
        if c.instrument_id >= self.max_instruments:
            self.reject(c, R_INSTRUMENT_CAPACITY)
            return
        self.instrument_init(c.instrument_id, <uint16_t>base_asset, <uint16_t>quote_asset,
                             tick_size, lot_size, max_order_lots)
        self.done(c, c.instrument_id, c.quantity)

    cdef Instrument* instrument_init(self, uint32_t instrument_id, uint16_t base_asset,
                                     uint16_t quote_asset, int64_t tick_size, int64_t lot_size,
                                     int64_t max_order_lots) noexcept nogil:
        cdef Instrument* instrument = &self.instruments[instrument_id]
        cdef size_t first_level = <size_t>instrument_id * 2 * self.level_stride
        instrument.levels[0] = &self.levels[first_level]
        instrument.levels[1] = &self.levels[first_level + self.level_stride]
        instrument.level_count[0] = 0
        instrument.level_count[1] = 0
        instrument.base_asset = base_asset
        instrument.quote_asset = quote_asset
        instrument.tick_size = tick_size
        instrument.lot_size = lot_size
        instrument.max_order_lots = max_order_lots
        instrument.band_min = tick_size
        instrument.band_max = INT64_MAX
        instrument.maker_bps = 0
        instrument.taker_bps = 0
        instrument.last_price = 0
        instrument.stop_head = MC_NONE
        instrument.stop_tail = MC_NONE
        instrument.stop_count = 0
        instrument.state = STATE_TRADING
        instrument.exists = 1
        self.instrument_count += 1
        return instrument

    cdef void cmd_set_price_band(self, const Command* c) noexcept nogil:
        cdef int64_t band_min = c.price
        cdef int64_t band_max = c.limit
        if band_min <= 0 or band_max < band_min:
            self.reject(c, R_INVALID_PRICE_BAND)
            return
        cdef Instrument* instrument = self.instrument_of(c.instrument_id)
        if instrument == NULL:
            self.reject(c, R_UNKNOWN_INSTRUMENT)
            return
        instrument.band_min = band_min
        instrument.band_max = band_max
        self.done(c, c.instrument_id, c.quantity)

    cdef void cmd_set_fees(self, const Command* c) noexcept nogil:
        cdef int64_t maker_bps = c.price
        cdef int64_t taker_bps = c.quantity
        if (maker_bps < 0 or maker_bps > ENGINE_BPS_MAX
                or taker_bps < 0 or taker_bps > ENGINE_BPS_MAX):
            self.reject(c, R_INVALID_FEE)
            return
        cdef Instrument* instrument = self.instrument_of(c.instrument_id)
        if instrument == NULL:
            self.reject(c, R_UNKNOWN_INSTRUMENT)
            return
        instrument.maker_bps = maker_bps
        instrument.taker_bps = taker_bps
        self.done(c, c.instrument_id, c.quantity)

    cdef void cmd_halt(self, const Command* c) noexcept nogil:
        cdef Instrument* instrument = self.instrument_of(c.instrument_id)
        if instrument == NULL:
            self.reject(c, R_UNKNOWN_INSTRUMENT)
            return
        if instrument.state == STATE_HALTED:
            self.reject(c, R_INSTRUMENT_HALTED)
            return
        cdef int64_t canceled = 0
        cdef int side_index
        cdef uint32_t position, order_index, next_index
        cdef Order* order
        # bids best to worst, then asks best to worst, each level in time priority
        for side_index in range(2):
            position = instrument.level_count[side_index]
            while position > 0:
                position -= 1
                self.book_touch(instrument, side_index, &instrument.levels[side_index][position])
                order_index = instrument.levels[side_index][position].head
                while order_index != MC_NONE:
                    order = &self.orders[order_index]
                    next_index = order.next
                    self.drop_order(order_index, instrument, C_HALT)
                    canceled += 1
                    order_index = next_index
            instrument.level_count[side_index] = 0
        order_index = instrument.stop_head      # then the untriggered stops, ascending order id
        while order_index != MC_NONE:
            order = &self.orders[order_index]
            next_index = order.next
            self.drop_order(order_index, instrument, C_HALT)
            canceled += 1
            order_index = next_index
        instrument.stop_head = MC_NONE
        instrument.stop_tail = MC_NONE
        instrument.stop_count = 0
        instrument.state = STATE_HALTED
        self.done(c, c.instrument_id, canceled)

    cdef void cmd_pause(self, const Command* c) noexcept nogil:
        cdef Instrument* instrument = self.instrument_of(c.instrument_id)
        if instrument == NULL:
            self.reject(c, R_UNKNOWN_INSTRUMENT)
            return
        if instrument.state != STATE_TRADING:
            self.reject(c, R_INSTRUMENT_HALTED if instrument.state == STATE_HALTED
                        else R_INSTRUMENT_PAUSED)
            return
        instrument.state = STATE_PAUSED
        self.done(c, c.instrument_id, c.quantity)

    cdef void cmd_resume(self, const Command* c) noexcept nogil:
        cdef Instrument* instrument = self.instrument_of(c.instrument_id)
        if instrument == NULL:
            self.reject(c, R_UNKNOWN_INSTRUMENT)
            return
        if instrument.state == STATE_TRADING:
            self.reject(c, R_INSTRUMENT_NOT_HALTED)
            return
        instrument.state = STATE_TRADING
        self.done(c, c.instrument_id, c.quantity)

    # ------------------------------------------------------------------ transfers

    cdef void cmd_transfer(self, const Command* c) noexcept nogil:
        cdef int64_t amount = c.quantity
        if amount <= 0:
            self.transfer_event(c, EV_TRANSFER_REJECTED, R_INVALID_AMOUNT)
            return
        if not self.account_exists(c.account_id):
            self.transfer_event(c, EV_TRANSFER_REJECTED, R_UNKNOWN_ACCOUNT)
            return
        if not self.asset_exists(c.asset_id):
            self.transfer_event(c, EV_TRANSFER_REJECTED, R_UNKNOWN_ASSET)
            return
        cdef Account* account = &self.accounts[c.account_id]
        cdef uint64_t transfer_id = c.client_id
        if transfer_id == account.last_transfer_id and account.transfer_kind != 0:
            if (account.transfer_kind != c.kind or account.transfer_asset != c.asset_id
                    or account.transfer_amount != amount):
                self.transfer_event(c, EV_TRANSFER_REJECTED, R_TRANSFER_ID_REUSED)
                return
            self.transfer_event(c, account.transfer_event_kind, account.transfer_reason)
            return
        if transfer_id <= account.last_transfer_id:
            self.transfer_event(c, EV_TRANSFER_REJECTED, R_DUPLICATE_TRANSFER_ID)
            return
        cdef uint16_t reason = self.move_transfer(c, amount)
        cdef uint8_t event_kind = EV_TRANSFER_REJECTED if reason else EV_TRANSFER_DONE
        account.last_transfer_id = transfer_id
        account.transfer_kind = c.kind
        account.transfer_asset = c.asset_id
        account.transfer_amount = amount
        account.transfer_event_kind = event_kind
        account.transfer_reason = reason
        self.transfer_event(c, event_kind, reason)

    cdef uint16_t move_transfer(self, const Command* c, int64_t amount) noexcept nogil:
        cdef Balance* balance = self.balance_of(c.account_id, c.asset_id)
        cdef Asset* asset = &self.assets[c.asset_id]
        cdef int64_t total
        if c.kind == CMD_DEPOSIT:
            if mc_add_overflow(asset.deposited, amount, &total):
                return R_AMOUNT_OVERFLOW
            asset.deposited = total
            balance.available += amount
            return 0
        if balance.available < amount:
            return R_INSUFFICIENT_FUNDS
        asset.withdrawn += amount
        balance.available -= amount
        return 0

    # ------------------------------------------------------------------ holds

    cdef inline Balance* hold_balance(self, const Order* order,
                                      const Instrument* instrument) noexcept nogil:
        """The balance an order holds from: quote for a buy, base for a sell."""
        return self.balance_of(order.account, instrument.quote_asset if order.side == SIDE_BUY
                               else instrument.base_asset)

    cdef inline void release(self, Order* order, const Instrument* instrument,
                             int64_t amount) noexcept nogil:
        if amount == 0:
            return
        cdef Balance* balance = self.hold_balance(order, instrument)
        balance.held -= amount
        balance.available += amount
        order.hold -= amount

    cdef inline void release_excess(self, Order* order, const Instrument* instrument) noexcept nogil:
        """A resting buy holds exactly price * leaves plus its maximum fee; free the rest."""
        cdef int64_t needed = order.hold
        if buy_hold_needed(order.price, order.leaves, order.fee_cap_bps, &needed):
            # cannot happen: leaves only shrank since the same product was checked. Always
            # on: it costs nothing on the path taken.
            mc_check(False, "a partly filled buy needs more than int64")
            return
        self.release(order, instrument, order.hold - needed)

    # ------------------------------------------------------------------ order pool and index

    cdef inline uint32_t live_orders(self) noexcept nogil:
        """Resting orders (the reference's len(orders)): every pool index handed out and
        not back on the free list is a resting order."""
        return self.orders_used - self.free_count

    cdef inline uint32_t order_allocate(self) noexcept nogil:
        # Always on (cheap: a subtraction and a compare per new order): validation rejected a
        # full pool already, so this guards the free list against a bookkeeping slip.
        mc_check(self.live_orders() < self.max_orders, "order pool exhausted")
        if self.free_count > 0:
            self.free_count -= 1
            return self.free_orders[self.free_count]
        self.orders_used += 1
        return self.orders_used

    cdef uint32_t index_find(self, uint32_t account, uint64_t client_id,
                             uint32_t* slot_out) noexcept nogil:
        """Pool index of the live order (account, client id), or MC_NONE; its slot in slot_out."""
        cdef uint32_t tag = mc_index_tag(account, client_id)
        cdef uint32_t position = tag & self.index_mask
        cdef IndexSlot* slot
        cdef Order* order
        while True:
            slot = &self.index[position]
            if slot.order == MC_NONE:
                return MC_NONE
            if slot.tag == tag:
                order = &self.orders[slot.order]
                if order.client_id == client_id and order.account == account:
                    slot_out[0] = position
                    return slot.order
            position = (position + 1) & self.index_mask

    cdef void index_insert(self, uint32_t order_index) noexcept nogil:
        """Index a live order whose key is not indexed yet."""
        cdef Order* order = &self.orders[order_index]
        cdef uint32_t tag = mc_index_tag(order.account, order.client_id)
        cdef uint32_t position = tag & self.index_mask
        while self.index[position].order != MC_NONE:
            position = (position + 1) & self.index_mask
        self.index[position].tag = tag
        self.index[position].order = order_index

    cdef void index_erase(self, uint32_t position) noexcept nogil:
        """Empty a slot, shifting later entries of its cluster back (no tombstones)."""
        cdef uint32_t mask = self.index_mask
        cdef uint32_t hole = position
        cdef uint32_t probe = position
        cdef uint32_t home
        while True:
            probe = (probe + 1) & mask
            if self.index[probe].order == MC_NONE:
                break
            home = self.index[probe].tag & mask
            # the entry may fill the hole unless its home lies cyclically in (hole, probe]
            if ((probe - home) & mask) >= ((probe - hole) & mask):
                self.index[hole] = self.index[probe]
                hole = probe
        self.index[hole].order = MC_NONE

    cdef uint32_t index_slot_of(self, uint32_t order_index) noexcept nogil:
        cdef Order* order = &self.orders[order_index]
        cdef uint32_t position = mc_index_tag(order.account, order.client_id) & self.index_mask
        while self.index[position].order != order_index:
            # always on (cheap: the slot is already loaded for the loop's own test)
            mc_check(self.index[position].order != MC_NONE, "live order not indexed")
            position = (position + 1) & self.index_mask
        return position

    cdef inline void account_append(self, uint32_t order_index) noexcept nogil:
        cdef Order* order = &self.orders[order_index]
        cdef Account* account = &self.accounts[order.account]
        order.account_next = MC_NONE
        order.account_prev = account.order_tail
        if account.order_tail != MC_NONE:
            self.orders[account.order_tail].account_next = order_index
        else:
            account.order_head = order_index
        account.order_tail = order_index

    cdef inline void account_unlink(self, const Order* order) noexcept nogil:
        cdef Account* account = &self.accounts[order.account]
        if order.account_prev != MC_NONE:
            self.orders[order.account_prev].account_next = order.account_next
        else:
            account.order_head = order.account_next
        if order.account_next != MC_NONE:
            self.orders[order.account_next].account_prev = order.account_prev
        else:
            account.order_tail = order.account_prev

    cdef void forget_order(self, uint32_t order_index, uint32_t index_position) noexcept nogil:
        """A live order is done: out of the index, its account's list and the pool (not the
        book: callers unlink it first). index_position is its index slot, or MC_NONE to find."""
        if index_position == MC_NONE:
            index_position = self.index_slot_of(order_index)
        self.index_erase(index_position)
        self.account_unlink(&self.orders[order_index])
        if self.orders[order_index].expire_time_ns:
            self.expiry_remove(order_index)
        self.free_orders[self.free_count] = order_index
        self.free_count += 1

    # ------------------------------------------------------------------ GTD expiry

    cdef inline bint expiry_before(self, uint32_t a, uint32_t b) noexcept nogil:
        """Does order a expire before order b? (expiry, then order id: a total order.)"""
        cdef const Order* x = &self.orders[a]
        cdef const Order* y = &self.orders[b]
        return x.expire_time_ns < y.expire_time_ns or (x.expire_time_ns == y.expire_time_ns
                                                       and x.order_id < y.order_id)

    cdef inline void expiry_place(self, uint32_t position, uint32_t order_index) noexcept nogil:
        self.expiry_heap[position] = order_index
        self.orders[order_index].expiry_position = position

    cdef void expiry_sift(self, uint32_t position) noexcept nogil:
        """Move the heap entry at position up, or else down, until the heap order holds."""
        cdef uint32_t order_index = self.expiry_heap[position]
        cdef uint32_t parent, child
        while position > 0:
            parent = (position - 1) // 2
            if not self.expiry_before(order_index, self.expiry_heap[parent]):
                break
            self.expiry_place(position, self.expiry_heap[parent])
            position = parent
        while True:
            child = 2 * position + 1
            if child >= self.expiry_count:
                break
            if (child + 1 < self.expiry_count
                    and self.expiry_before(self.expiry_heap[child + 1], self.expiry_heap[child])):
                child += 1
            if not self.expiry_before(self.expiry_heap[child], order_index):
                break
            self.expiry_place(position, self.expiry_heap[child])
            position = child
        self.expiry_place(position, order_index)

    cdef void expiry_push(self, uint32_t order_index) noexcept nogil:
        self.expiry_place(self.expiry_count, order_index)
        self.expiry_count += 1
        self.expiry_sift(self.expiry_count - 1)

    cdef void expiry_remove(self, uint32_t order_index) noexcept nogil:
        cdef uint32_t position = self.orders[order_index].expiry_position
        self.expiry_count -= 1
        if position != self.expiry_count:
            self.expiry_place(position, self.expiry_heap[self.expiry_count])
            self.expiry_sift(position)

    cdef void expire_due(self, int64_t now_ns) noexcept nogil:
        """Cancel, reason EXPIRED, every GTD order whose expiry is at or before now: earliest
        expiry first, then ascending order id. Its events open the command's events."""
        cdef uint32_t order_index
        while self.expiry_count > 0:
            order_index = self.expiry_heap[0]
            if self.orders[order_index].expire_time_ns > now_ns:
                return
            self.cancel_resting(order_index, MC_NONE, C_EXPIRED)

    # ------------------------------------------------------------------ book

    cdef inline bint would_cross(self, const Instrument* instrument, uint8_t side,
                                 int64_t price) noexcept nogil:
        cdef int opposite = 2 - side
        cdef uint32_t count = instrument.level_count[opposite]
        if count == 0:
            return False
        cdef int64_t best = instrument.levels[opposite][count - 1].price
        return best <= price if side == SIDE_BUY else best >= price

    cdef void level_insert(self, Instrument* instrument, int side_index, uint32_t position,
                           int64_t price, uint32_t order_index) noexcept nogil:
        """A new level holding one order, at its sorted position (the caller checked room)."""
        cdef Level* levels = instrument.levels[side_index]
        cdef uint32_t count = instrument.level_count[side_index]
        # always on (cheap: one compare per new level; validation rejected a full side already)
        mc_check(count < self.max_price_levels, "level insert into a full book side")
        if position < count:
            memmove(&levels[position + 1], &levels[position], (count - position) * sizeof(Level))
        levels[position].price = price
        levels[position].quantity = 0      # rest_at adds the order
        levels[position].head = order_index
        levels[position].tail = order_index
        levels[position].order_count = 0
        levels[position].book_mark = 0
        instrument.level_count[side_index] = count + 1

    cdef inline void level_remove(self, Instrument* instrument, int side_index,
                                  uint32_t position) noexcept nogil:
        cdef Level* levels = instrument.levels[side_index]
        cdef uint32_t count = instrument.level_count[side_index] - 1
        if position < count:
            memmove(&levels[position], &levels[position + 1], (count - position) * sizeof(Level))
        instrument.level_count[side_index] = count

    cdef void rest(self, uint32_t order_index, Instrument* instrument) noexcept nogil:
        """Put an order at the back of its price level (a new level when there is none)."""
        cdef Order* order = &self.orders[order_index]
        cdef int side_index = order.side - 1
        cdef bint found
        cdef uint32_t position = level_search(instrument.levels[side_index],
                                              instrument.level_count[side_index], side_index,
                                              order.price, &found)
        self.rest_at(order_index, instrument, position, found)

    cdef inline void rest_at(self, uint32_t order_index, Instrument* instrument,
                             uint32_t position, bint found) noexcept nogil:
        cdef Order* order = &self.orders[order_index]
        cdef int side_index = order.side - 1
        cdef Level* level
        order.next = MC_NONE
        if order.aux:   # an iceberg (resting orders are LIMIT) rests with a fresh peak
            order.visible = <uint32_t>min(order.aux, order.leaves)
        if found:
            level = &instrument.levels[side_index][position]
            self.book_touch(instrument, side_index, level)
            order.prev = level.tail
            self.orders[level.tail].next = order_index
            level.tail = order_index
        else:
            order.prev = MC_NONE
            self.level_insert(instrument, side_index, position, order.price, order_index)
            level = &instrument.levels[side_index][position]
            self.book_touch(instrument, side_index, level)
        level.quantity += order_shown(order)
        level.order_count += 1

    cdef void unlink(self, uint32_t order_index, Instrument* instrument) noexcept nogil:
        """Take a resting order off its level (and the level off the book when empty), or an
        untriggered stop off its instrument's stop list."""
        cdef Order* order = &self.orders[order_index]
        if order.order_type >= TYPE_STOP_MARKET:
            self.stop_unlink(order_index, instrument)
            return
        cdef int side_index = order.side - 1
        cdef bint found
        cdef uint32_t position = level_search(instrument.levels[side_index],
                                              instrument.level_count[side_index], side_index,
                                              order.price, &found)
        # always on (cheap: the search computed found anyway)
        mc_check(found, "resting order not found on its level")
        cdef Level* level = &instrument.levels[side_index][position]
        self.book_touch(instrument, side_index, level)
        level.quantity -= order_shown(order)
        level.order_count -= 1
        if order.prev != MC_NONE:
            self.orders[order.prev].next = order.next
        else:
            level.head = order.next
        if order.next != MC_NONE:
            self.orders[order.next].prev = order.prev
        else:
            level.tail = order.prev
        if level.head == MC_NONE:
            self.level_remove(instrument, side_index, position)

    cdef void cancel_resting(self, uint32_t order_index, uint32_t index_position,
                             uint16_t reason) noexcept nogil:
        """Cancel a resting order: event, off the book, hold released, forgotten."""
        cdef Order* order = &self.orders[order_index]
        cdef Instrument* instrument = &self.instruments[order.instrument]
        self.emit_canceled(order, reason)
        self.unlink(order_index, instrument)
        self.release(order, instrument, order.hold)
        self.forget_order(order_index, index_position)

    cdef inline void drop_order(self, uint32_t order_index, const Instrument* instrument,
                         uint16_t reason) noexcept nogil:
        """An order in the pool and off the book (or its book about to be cleared) ends: its
        CANCELED event when ``reason`` is not 0 (a filled order has none), all it holds
        released, forgotten."""
        cdef Order* order = &self.orders[order_index]
        if reason:
            self.emit_canceled(order, reason)
        self.release(order, instrument, order.hold)
        self.forget_order(order_index, MC_NONE)

    # ------------------------------------------------------------------ new order

    cdef uint16_t validate_new_order(self, const Command* c) noexcept nogil:
        cdef bint market = c.order_type == TYPE_MARKET or c.order_type == TYPE_STOP_MARKET
        cdef bint stop = c.order_type == TYPE_STOP_MARKET or c.order_type == TYPE_STOP_LIMIT
        if c.side != SIDE_BUY and c.side != SIDE_SELL:
            return R_INVALID_SIDE
        if not (TYPE_LIMIT <= c.order_type <= TYPE_STOP_LIMIT):
            return R_INVALID_ORDER_TYPE
        if (c.time_in_force != TIF_GTC and c.time_in_force != TIF_IOC and c.time_in_force != TIF_FOK
                and c.time_in_force != TIF_GTD):
            return R_INVALID_TIME_IN_FORCE
        if market and (c.time_in_force == TIF_GTC or c.time_in_force == TIF_GTD):
            return R_INVALID_TIME_IN_FORCE
        if (c.stp_mode != STP_CANCEL_TAKER and c.stp_mode != STP_CANCEL_MAKER
                and c.stp_mode != STP_CANCEL_BOTH and c.stp_mode != STP_DECREMENT):
            return R_INVALID_STP_MODE
        if c.flags & ~FLAG_POST_ONLY:
            return R_INVALID_FLAGS
        if c.quantity <= 0:
            return R_INVALID_QUANTITY
        if c.price < 0 or (not market and c.price == 0):
            return R_INVALID_PRICE
        if c.limit < 0 or (c.limit != 0 and not (c.order_type == TYPE_MARKET and c.side == SIDE_BUY)):
            return R_INVALID_LIMIT
        if c.flags & FLAG_POST_ONLY and (stop or (c.time_in_force != TIF_GTC
                                                  and c.time_in_force != TIF_GTD)):
            return R_POST_ONLY_NOT_ALLOWED
        if market and c.price == 0 and c.limit == 0:
            return R_MARKET_PROTECTION_REQUIRED
        if ((c.time_in_force == TIF_GTD) != (c.expire_time_ns != 0)
                or (c.time_in_force == TIF_GTD and c.expire_time_ns <= c.timestamp_ns)):
            return R_INVALID_EXPIRE_TIME
        if stop != (c.trigger_price != 0) or c.trigger_price < 0:
            return R_INVALID_TRIGGER_PRICE
        if not (0 <= c.display_quantity <= ENGINE_DISPLAY_MAX) or (c.display_quantity and not (
                c.order_type == TYPE_LIMIT and (c.time_in_force == TIF_GTC or c.time_in_force == TIF_GTD))):
            return R_INVALID_DISPLAY_QUANTITY
        if not self.account_exists(c.account_id):
            return R_UNKNOWN_ACCOUNT
        cdef Instrument* instrument = self.instrument_of(c.instrument_id)
        if instrument == NULL:
            return R_UNKNOWN_INSTRUMENT
        if instrument.state != STATE_TRADING:
            return R_INSTRUMENT_HALTED if instrument.state == STATE_HALTED else R_INSTRUMENT_PAUSED
        if (c.price != 0 and c.price % instrument.tick_size != 0) or \
                c.trigger_price % instrument.tick_size != 0:
            return R_PRICE_OFF_TICK
        if c.price != 0 and not (instrument.band_min <= c.price <= instrument.band_max):
            return R_PRICE_OUT_OF_BAND
        if c.quantity > instrument.max_order_lots:
            return R_QUANTITY_ABOVE_MAXIMUM
        if c.client_id <= self.accounts[c.account_id].last_client_id:
            return R_DUPLICATE_CLIENT_ORDER_ID
        if c.flags & FLAG_POST_ONLY and self.would_cross(instrument, c.side, c.price):
            return R_POST_ONLY_WOULD_CROSS
        if stop and self.stop_triggered(instrument, c.side, c.trigger_price):
            return R_STOP_WOULD_TRIGGER
        return 0

    cdef bint new_order_hold(self, const Command* c, const Instrument* instrument,
                             int64_t fee_cap_bps, int64_t* hold) noexcept nogil:
        """What the order must hold before it rests or matches. True on overflow."""
        if c.side == SIDE_SELL or c.order_type != TYPE_MARKET:
            return limit_hold_needed(c.side, c.price, c.quantity, instrument.lot_size, fee_cap_bps, hold)
        cdef int64_t notional_max
        if c.price > 0:
            if mc_mul_overflow(c.price, c.quantity, &notional_max):
                return True
            if c.limit > 0 and c.limit < notional_max:
                notional_max = c.limit
        else:
            notional_max = c.limit
        return mc_add_overflow(notional_max, mc_fee(notional_max, fee_cap_bps), hold)

    cdef void cmd_new_order(self, const Command* c) noexcept nogil:
        cdef uint16_t reason = self.validate_new_order(c)
        if reason:
            self.reject(c, reason)
            return
        cdef Instrument* instrument = &self.instruments[c.instrument_id]
        cdef int64_t fee_cap_bps = max(instrument.maker_bps, instrument.taker_bps)
        cdef int64_t hold
        if self.new_order_hold(c, instrument, fee_cap_bps, &hold):
            self.reject(c, R_AMOUNT_OVERFLOW)
            return
        cdef Balance* balance = self.balance_of(
            c.account_id, instrument.quote_asset if c.side == SIDE_BUY else instrument.base_asset)
        if balance.available < hold:
            self.reject(c, R_INSUFFICIENT_FUNDS)
            return
        if self.live_orders() >= self.max_orders:
            self.reject(c, R_ORDER_CAPACITY)
            return
        cdef bint rests = c.order_type == TYPE_LIMIT and (c.time_in_force == TIF_GTC
                                                          or c.time_in_force == TIF_GTD)
        cdef int side_index = c.side - 1
        cdef bint found = False
        cdef uint32_t position = 0
        if rests:
            # the order's own side does not change while it matches: find its level once
            position = level_search(instrument.levels[side_index],
                                    instrument.level_count[side_index], side_index, c.price,
                                    &found)
            if not found and instrument.level_count[side_index] >= self.max_price_levels:
                self.reject(c, R_PRICE_LEVEL_CAPACITY)
                return
        # pipeline: risk hold -> accept -> match -> settle -> rest or release
        balance.available -= hold
        balance.held += hold
        cdef Order taker
        taker.order_id = self.next_order_id
        taker.client_id = c.client_id
        taker.price = c.price
        taker.leaves = c.quantity
        taker.hold = hold
        taker.expire_time_ns = c.expire_time_ns
        taker.aux = c.trigger_price if c.trigger_price else c.display_quantity  # one is 0
        taker.visible = 0
        taker.time_in_force = c.time_in_force
        taker.expiry_position = MC_NONE
        taker.account = c.account_id
        taker.instrument = c.instrument_id
        taker.prev = MC_NONE
        taker.next = MC_NONE
        taker.account_prev = MC_NONE
        taker.account_next = MC_NONE
        taker.fee_cap_bps = <uint16_t>fee_cap_bps
        taker.side = c.side
        taker.stp_mode = c.stp_mode
        taker.flags = c.flags
        taker.order_type = c.order_type
        self.next_order_id += 1
        self.accounts[c.account_id].last_client_id = c.client_id
        self.emit(EV_ACCEPTED, c.side, 0, c.instrument_id, c.account_id, 0, taker.order_id,
                  c.client_id, 0, 0, c.price, c.quantity, 0, 0)
        if c.trigger_price:      # a stop: held, live, off the book until triggered
            self.store_stop(&taker, instrument)
            return
        cdef int64_t last_price = instrument.last_price
        if c.time_in_force == TIF_FOK and not self.fok_fillable(&taker, instrument, c.limit):
            self.emit_canceled(&taker, C_FOK_UNFILLED)
            self.release(&taker, instrument, taker.hold)
            return
        cdef uint16_t end_reason = self.match(&taker, instrument, c.limit)
        if end_reason == 0 and taker.leaves > 0 and not rests:
            end_reason = C_IOC_REMAINDER
        if end_reason:
            self.emit_canceled(&taker, end_reason)
            self.release(&taker, instrument, taker.hold)
        elif taker.leaves == 0:
            self.release(&taker, instrument, taker.hold)
        else:
            self.rest_new(&taker, instrument, position, found)
        if instrument.stop_count and instrument.last_price != last_price:
            self.trigger_stops(instrument)

    cdef void take(self, uint32_t order_index, Instrument* instrument, bint rests) noexcept nogil:
        """A taker in the pool, off the book (a replace, a triggered stop), matches, then
        rests (if it may) or ends."""
        cdef Order* order = &self.orders[order_index]
        cdef uint16_t end_reason = self.match(order, instrument, 0)
        if end_reason == 0 and order.leaves > 0 and not rests:
            end_reason = C_IOC_REMAINDER
        if end_reason or order.leaves == 0:
            self.drop_order(order_index, instrument, end_reason)
        else:
            self.rest(order_index, instrument)

    # ------------------------------------------------------------------ stop orders

    cdef inline bint stop_triggered(self, const Instrument* instrument, uint8_t side,
                                    int64_t trigger_price) noexcept nogil:
        """Has the last trade price reached a stop's trigger (never before the first trade)?"""
        if instrument.last_price == 0:
            return False
        return (instrument.last_price >= trigger_price if side == SIDE_BUY
                else instrument.last_price <= trigger_price)

    cdef void store_stop(self, const Order* taker, Instrument* instrument) noexcept nogil:
        """An accepted stop: into the pool, the index, its account's list, the expiry heap
        (GTD) and, last, its instrument's stop list (ascending order id: appended)."""
        cdef uint32_t order_index = self.order_allocate()
        self.orders[order_index] = taker[0]
        self.index_insert(order_index)
        self.account_append(order_index)
        if taker.expire_time_ns:
            self.expiry_push(order_index)
        self.stop_append(order_index, instrument)

    cdef void stop_append(self, uint32_t order_index, Instrument* instrument) noexcept nogil:
        """At the tail of the instrument's stops: their order is ascending order id."""
        cdef Order* order = &self.orders[order_index]
        order.prev = instrument.stop_tail
        order.next = MC_NONE
        if instrument.stop_tail != MC_NONE:
            self.orders[instrument.stop_tail].next = order_index
        else:
            instrument.stop_head = order_index
        instrument.stop_tail = order_index
        instrument.stop_count += 1

    cdef void stop_unlink(self, uint32_t order_index, Instrument* instrument) noexcept nogil:
        cdef Order* order = &self.orders[order_index]
        if order.prev != MC_NONE:
            self.orders[order.prev].next = order.next
        else:
            instrument.stop_head = order.next
        if order.next != MC_NONE:
            self.orders[order.next].prev = order.prev
        else:
            instrument.stop_tail = order.prev
        order.prev = MC_NONE
        order.next = MC_NONE
        instrument.stop_count -= 1

    cdef void trigger_stops(self, Instrument* instrument) noexcept nogil:
        """Stops whose trigger the last trade price reached enter one at a time, the lowest
        order id first; each may trade and trigger more (a cascade), so the list is walked
        again after each. Cost: the stops of the instrument per triggered stop."""
        cdef uint32_t order_index
        cdef Order* order
        while instrument.stop_count:
            order_index = instrument.stop_head
            while order_index != MC_NONE:
                order = &self.orders[order_index]
                if self.stop_triggered(instrument, order.side, order.aux):
                    break
                order_index = order.next
            if order_index == MC_NONE:
                return
            self.enter_triggered(order_index, instrument)

    cdef void enter_triggered(self, uint32_t order_index, Instrument* instrument) noexcept nogil:
        """TRIGGERED, then the order enters as a market (STOP_MARKET) or limit order."""
        self.stop_unlink(order_index, instrument)
        cdef Order* order = &self.orders[order_index]
        order.aux = 0     # no trigger now, and no display: a stop is never an iceberg
        order.order_type = TYPE_MARKET if order.order_type == TYPE_STOP_MARKET else TYPE_LIMIT
        self.emit(EV_TRIGGERED, order.side, 0, order.instrument, order.account, 0, order.order_id,
                  order.client_id, 0, 0, order.price, order.leaves, 0, 0)
        cdef bint rests = order.order_type == TYPE_LIMIT and (order.time_in_force == TIF_GTC
                                                              or order.time_in_force == TIF_GTD)
        cdef int side_index = order.side - 1
        cdef bint found = True
        cdef uint16_t reason = 0
        if rests:
            level_search(instrument.levels[side_index], instrument.level_count[side_index],
                         side_index, order.price, &found)
            if not found and instrument.level_count[side_index] >= self.max_price_levels:
                reason = C_BOOK_FULL
        if reason == 0 and order.time_in_force == TIF_FOK and not self.fok_fillable(order, instrument, 0):
            reason = C_FOK_UNFILLED
        if reason:
            self.drop_order(order_index, instrument, reason)
            return
        self.take(order_index, instrument, rests)

    cdef void rest_new(self, const Order* taker, Instrument* instrument, uint32_t position,
                       bint found) noexcept nogil:
        """A new order that rests: into the pool, the index, its account's list and its level."""
        cdef uint32_t order_index = self.order_allocate()
        self.orders[order_index] = taker[0]
        self.index_insert(order_index)
        self.account_append(order_index)
        if taker.expire_time_ns:
            self.expiry_push(order_index)
        self.rest_at(order_index, instrument, position, found)

    # ------------------------------------------------------------------ matching

    cdef bint fok_fillable(self, const Order* taker, const Instrument* instrument,
                           int64_t budget) noexcept nogil:
        """Walk the book as matching would; can the whole quantity fill?"""
        cdef int64_t needed = taker.leaves
        cdef int opposite = 2 - taker.side
        cdef const Level* levels = instrument.levels[opposite]
        cdef uint32_t position = instrument.level_count[opposite]
        cdef int64_t price, quantity
        cdef uint32_t order_index
        cdef const Order* maker
        while position > 0:
            position -= 1
            price = levels[position].price
            if taker.price != 0 and (price > taker.price if taker.side == SIDE_BUY
                                     else price < taker.price):
                return False
            order_index = levels[position].head
            while order_index != MC_NONE:
                maker = &self.orders[order_index]
                order_index = maker.next
                if maker.account == taker.account:
                    if taker.stp_mode == STP_CANCEL_MAKER:
                        continue
                    return False
                quantity = min(needed, maker.leaves)
                if budget > 0:
                    if budget // price < quantity:
                        return False
                    budget -= quantity * price
                needed -= quantity
                if needed == 0:
                    return True
        return False

    cdef uint16_t match(self, Order* taker, Instrument* instrument, int64_t budget) noexcept nogil:
        """Match a taker against the opposite book. Returns a CancelReason ending the taker
        early (self-trade, market protection), or 0."""
        cdef int opposite = 2 - taker.side
        cdef Level* levels = instrument.levels[opposite]
        cdef int64_t spent = 0
        cdef int64_t price, quantity
        cdef uint32_t count, maker_index
        cdef Level* level
        cdef Order* maker
        while taker.leaves > 0:
            count = instrument.level_count[opposite]
            if count == 0:
                break
            level = &levels[count - 1]
            price = level.price
            if taker.price != 0 and (price > taker.price if taker.side == SIDE_BUY
                                     else price < taker.price):
                break
            maker_index = level.head
            maker = &self.orders[maker_index]
            if maker.account == taker.account:
                if taker.stp_mode == STP_CANCEL_TAKER:
                    return C_SELF_TRADE
                if taker.stp_mode == STP_DECREMENT:
                    if taker.leaves < maker.leaves:     # the taker is the smaller: canceled
                        self.book_touch(instrument, opposite, level)
                        level.quantity -= order_shown(maker)
                        self.decrement(maker, instrument, taker.leaves)
                        level.quantity += order_shown(maker)
                        return C_SELF_TRADE
                    quantity = maker.leaves
                    self.cancel_resting(maker_index, MC_NONE, C_SELF_TRADE)
                    if quantity == taker.leaves:        # equal: both canceled, maker first
                        return C_SELF_TRADE
                    self.decrement(taker, instrument, quantity)
                    continue
                self.cancel_resting(maker_index, MC_NONE, C_SELF_TRADE)
                if taker.stp_mode == STP_CANCEL_BOTH:
                    return C_SELF_TRADE
                continue
            # an iceberg trades at most its visible part before it refills
            quantity = min(taker.leaves, maker.visible if maker.aux else maker.leaves)
            if budget > 0:
                quantity = min(quantity, (budget - spent) // price)
                if quantity == 0:
                    return C_MARKET_PROTECTION
                spent += quantity * price
            if taker.leaves > quantity:     # the taker goes on to the next maker
                self.prefetch_next_maker(maker, instrument)
            self.book_touch(instrument, opposite, level)
            self.fill(taker, maker, instrument, price, quantity)
            level.quantity -= quantity
            if maker.leaves == 0:
                # the maker heads the best level: pop it without a search
                level.order_count -= 1
                level.head = maker.next
                if level.head == MC_NONE:
                    instrument.level_count[opposite] = count - 1
                else:
                    self.orders[level.head].prev = MC_NONE
                self.drop_order(maker_index, instrument, 0)
            elif maker.aux and maker.visible == 0:
                # the peak is gone: refill it and go to the back of the level (new priority)
                maker.visible = <uint32_t>min(maker.aux, maker.leaves)
                level.quantity += maker.visible
                if maker.next != MC_NONE:
                    level.head = maker.next
                    self.orders[level.head].prev = MC_NONE
                    maker.prev = level.tail
                    maker.next = MC_NONE
                    self.orders[level.tail].next = maker_index
                    level.tail = maker_index
        return 0

    cdef void decrement(self, Order* order, const Instrument* instrument,
                        int64_t quantity) noexcept nogil:
        """STP decrement: ``quantity`` fewer open lots, time priority kept, a REPLACED event
        (reason SELF_TRADE) with the new open quantity; the hold follows the leaves."""
        order.leaves -= quantity
        if order.visible > order.leaves:
            order.visible = <uint32_t>order.leaves
        self.emit(EV_REPLACED, order.side, C_SELF_TRADE, order.instrument, order.account, 0,
                  order.order_id, order.client_id, 0, 0, order.price, order.leaves, 0, 0)
        if order.side == SIDE_SELL:
            self.release(order, instrument, quantity * instrument.lot_size)
        elif order.order_type == TYPE_LIMIT:
            self.release_excess(order, instrument)

    cdef void fill(self, Order* taker, Order* maker, Instrument* instrument, int64_t price,
                   int64_t quantity) noexcept nogil:
        """Settle one trade by double entry: buyer, seller, fee account."""
        cdef int64_t notional = price * quantity
        cdef int64_t taker_fee = mc_fee(notional, min(instrument.taker_bps, <int64_t>taker.fee_cap_bps))
        cdef int64_t maker_fee = mc_fee(notional, min(instrument.maker_bps, <int64_t>maker.fee_cap_bps))
        cdef Order* buyer
        cdef Order* seller
        cdef int64_t buyer_fee, seller_fee
        if taker.side == SIDE_BUY:
            buyer, seller, buyer_fee, seller_fee = taker, maker, taker_fee, maker_fee
        else:
            buyer, seller, buyer_fee, seller_fee = maker, taker, maker_fee, taker_fee
        cdef int64_t base_amount = quantity * instrument.lot_size
        cdef uint32_t quote = instrument.quote_asset
        cdef uint32_t base = instrument.base_asset
        self.balance_of(buyer.account, quote).held -= notional + buyer_fee
        buyer.hold -= notional + buyer_fee
        self.balance_of(buyer.account, base).available += base_amount
        self.balance_of(seller.account, base).held -= base_amount
        seller.hold -= base_amount
        self.balance_of(seller.account, quote).available += notional - seller_fee
        self.balance_of(self.fee_account, quote).available += taker_fee + maker_fee
        # always on (cheap: two compares per fill on values just written), split so a failure
        # says which side broke
        mc_check(buyer.hold >= 0, "a fill took more of the buyer than its hold")
        mc_check(seller.hold >= 0, "a fill took more of the seller than its hold")
        cdef Event* event = self.emit(EV_FILL, taker.side, 0, taker.instrument, taker.account,
                                      maker.account, taker.order_id, taker.client_id,
                                      maker.order_id, self.next_trade_id, price, quantity,
                                      taker_fee, maker_fee)
        self.next_trade_id += 1
        instrument.last_price = price
        taker.leaves -= quantity
        maker.leaves -= quantity
        if maker.aux:
            maker.visible -= <uint32_t>quantity
        event.counter_client_id = maker.client_id
        event.leaves = taker.leaves
        event.counter_leaves = maker.leaves
        if buyer.leaves > 0 and buyer.order_type == TYPE_LIMIT:
            self.release_excess(buyer, instrument)

    # ------------------------------------------------------------------ cancel, replace

    cdef void cmd_cancel(self, const Command* c) noexcept nogil:
        if not self.account_exists(c.account_id):
            self.reject(c, R_UNKNOWN_ACCOUNT)
            return
        cdef uint32_t position
        cdef uint32_t order_index = self.index_find(c.account_id, c.client_id, &position)
        if order_index == MC_NONE:
            self.reject(c, R_UNKNOWN_ORDER)
            return
        self.cancel_resting(order_index, position, C_USER)

    cdef void cmd_mass_cancel(self, const Command* c) noexcept nogil:
        if not self.account_exists(c.account_id):
            self.reject(c, R_UNKNOWN_ACCOUNT)
            return
        cdef bint every = c.instrument_id == MC_ALL_INSTRUMENTS
        if not every and self.instrument_of(c.instrument_id) == NULL:
            self.reject(c, R_UNKNOWN_INSTRUMENT)
            return
        cdef int64_t canceled = 0
        cdef uint32_t order_index = self.accounts[c.account_id].order_head
        cdef uint32_t next_index
        # the account's list is in ascending order id, the reference's sort order
        while order_index != MC_NONE:
            next_index = self.orders[order_index].account_next
            if every or self.orders[order_index].instrument == c.instrument_id:
                self.cancel_resting(order_index, MC_NONE, C_MASS_CANCEL)
                canceled += 1
            order_index = next_index
        self.done(c, c.instrument_id, canceled)

    cdef uint16_t validate_replace(self, const Command* c, uint32_t* order_out) noexcept nogil:
        if c.quantity <= 0:
            return R_INVALID_QUANTITY
        if c.price <= 0:
            return R_INVALID_PRICE
        if not self.account_exists(c.account_id):
            return R_UNKNOWN_ACCOUNT
        cdef uint32_t position
        cdef uint32_t order_index = self.index_find(c.account_id, c.client_id, &position)
        if order_index == MC_NONE:
            return R_UNKNOWN_ORDER
        order_out[0] = order_index
        cdef Order* order = &self.orders[order_index]
        cdef Instrument* instrument = &self.instruments[order.instrument]
        if instrument.state == STATE_PAUSED:
            return R_INSTRUMENT_PAUSED
        if c.price % instrument.tick_size != 0:
            return R_PRICE_OFF_TICK
        if not (instrument.band_min <= c.price <= instrument.band_max):
            return R_PRICE_OUT_OF_BAND
        if c.quantity > instrument.max_order_lots:
            return R_QUANTITY_ABOVE_MAXIMUM
        if c.price == order.price and c.quantity == order.leaves:
            return R_REPLACE_NO_CHANGE
        if order.flags & FLAG_POST_ONLY and self.would_cross(instrument, order.side, c.price):
            return R_POST_ONLY_WOULD_CROSS
        return 0

    cdef void cmd_replace(self, const Command* c) noexcept nogil:
        cdef uint32_t order_index = MC_NONE
        cdef uint16_t reason = self.validate_replace(c, &order_index)
        if reason:
            self.reject(c, reason)
            return
        cdef Order* order = &self.orders[order_index]
        cdef Instrument* instrument = &self.instruments[order.instrument]
        cdef int64_t needed
        if limit_hold_needed(order.side, c.price, c.quantity, instrument.lot_size,
                             order.fee_cap_bps, &needed):
            self.reject(c, R_AMOUNT_OVERFLOW)
            return
        cdef Balance* balance = self.hold_balance(order, instrument)
        if needed - order.hold > balance.available:
            self.reject(c, R_INSUFFICIENT_FUNDS)
            return
        if order.order_type >= TYPE_STOP_MARKET:  # untriggered: off the book, nothing to match
            balance.available -= needed - order.hold
            balance.held += needed - order.hold
            order.hold = needed
            order.price = c.price
            order.leaves = c.quantity
            self.emit(EV_REPLACED, order.side, 0, order.instrument, order.account, 0,
                      order.order_id, order.client_id, 0, 0, c.price, c.quantity, 0, 0)
            return
        cdef bint keeps_priority = c.price == order.price and c.quantity < order.leaves
        cdef int side_index = order.side - 1
        cdef bint found
        if not keeps_priority and c.price != order.price:
            level_search(instrument.levels[side_index], instrument.level_count[side_index],
                         side_index, c.price, &found)
            # a full side refuses a new level, unless the order leaves a level it is alone on
            if (not found and instrument.level_count[side_index] >= self.max_price_levels
                    and not (order.prev == MC_NONE and order.next == MC_NONE)):
                self.reject(c, R_PRICE_LEVEL_CAPACITY)
                return
        # adjust the hold to exactly what the new price and size need
        balance.available -= needed - order.hold
        balance.held += needed - order.hold
        order.hold = needed
        self.emit(EV_REPLACED, order.side, 0, order.instrument, order.account, 0, order.order_id,
                  order.client_id, 0, 0, c.price, c.quantity, 0, 0)
        cdef Level* level
        cdef uint32_t position
        if keeps_priority:
            position = level_search(instrument.levels[side_index], instrument.level_count[side_index],
                                    side_index, order.price, &found)
            mc_check(found, "resting order not found on its level")
            level = &instrument.levels[side_index][position]
            self.book_touch(instrument, side_index, level)
            level.quantity -= order_shown(order)
            order.leaves = c.quantity
            if order.visible > order.leaves:
                order.visible = <uint32_t>order.leaves
            level.quantity += order_shown(order)
            return
        self.unlink(order_index, instrument)
        order.price = c.price
        order.leaves = c.quantity
        cdef int64_t last_price = instrument.last_price
        self.take(order_index, instrument, True)
        if instrument.stop_count and instrument.last_price != last_price:
            self.trigger_stops(instrument)

    # ================================================================== snapshot

    cdef size_t state_word_count(self) noexcept nogil:
        cdef size_t words = ENGINE_HEADER_WORDS + 3 + 4 * <size_t>self.asset_count
        words += <size_t>self.account_count * (ENGINE_ACCOUNT_WORDS + 2 * <size_t>self.asset_count)
        words += <size_t>self.instrument_count * (ENGINE_INSTRUMENT_WORDS + 3)
        cdef uint32_t instrument_id
        for instrument_id in range(self.max_instruments):
            if self.instruments[instrument_id].exists:
                words += 2 * (<size_t>self.instruments[instrument_id].level_count[0]
                              + self.instruments[instrument_id].level_count[1])
                # stops are live orders (counted below) with five more words each
                words += ((ENGINE_STOP_WORDS - ENGINE_ORDER_WORDS)
                          * <size_t>self.instruments[instrument_id].stop_count)
        words += ENGINE_ORDER_WORDS * <size_t>self.live_orders()
        return words

    cdef write_state(self, WordSink* sink):
        """The canonical words of snapshot_format.py, in its order."""
        cdef uint32_t i, asset_id
        sink_put(sink, ENGINE_SNAPSHOT_MAGIC)
        sink_put(sink, ENGINE_SNAPSHOT_VERSION)
        for name in _ENGINE_CONFIG_FIELDS:
            sink_put(sink, <uint64_t><int64_t>getattr(self.config, name))
        sink_put(sink, self.next_order_id)
        sink_put(sink, self.next_trade_id)
        sink_put(sink, self.asset_count)
        for i in range(self.max_assets):
            if self.assets[i].exists:
                sink_put(sink, i)
                sink_put(sink, <uint64_t>self.assets[i].decimals)
                sink_put(sink, <uint64_t>self.assets[i].deposited)
                sink_put(sink, <uint64_t>self.assets[i].withdrawn)
        sink_put(sink, self.account_count)
        cdef Balance* balance
        for i in range(self.max_accounts):
            if not self.accounts[i].exists:
                continue
            sink_put(sink, i)
            sink_put(sink, self.accounts[i].last_client_id)
            sink_put(sink, self.accounts[i].last_transfer_id)
            sink_put(sink, self.accounts[i].transfer_kind)
            sink_put(sink, self.accounts[i].transfer_asset)
            sink_put(sink, <uint64_t>self.accounts[i].transfer_amount)
            sink_put(sink, self.accounts[i].transfer_event_kind)
            sink_put(sink, self.accounts[i].transfer_reason)
            for asset_id in range(self.max_assets):
                if self.assets[asset_id].exists:
                    balance = self.balance_of(i, asset_id)
                    sink_put(sink, <uint64_t>balance.available)
                    sink_put(sink, <uint64_t>balance.held)
        sink_put(sink, self.instrument_count)
        for i in range(self.max_instruments):
            if self.instruments[i].exists:
                self.write_instrument(sink, i)

    cdef void write_instrument(self, WordSink* sink, uint32_t instrument_id) noexcept nogil:
        cdef Instrument* instrument = &self.instruments[instrument_id]
        sink_put(sink, instrument_id)
        sink_put(sink, instrument.base_asset)
        sink_put(sink, instrument.quote_asset)
        sink_put(sink, <uint64_t>instrument.tick_size)
        sink_put(sink, <uint64_t>instrument.lot_size)
        sink_put(sink, <uint64_t>instrument.max_order_lots)
        sink_put(sink, <uint64_t>instrument.band_min)
        sink_put(sink, <uint64_t>instrument.band_max)
        sink_put(sink, <uint64_t>instrument.maker_bps)
        sink_put(sink, <uint64_t>instrument.taker_bps)
        sink_put(sink, instrument.state)
        sink_put(sink, <uint64_t>instrument.last_price)
        cdef int side_index
        cdef uint32_t position, order_index
        cdef uint64_t order_count
        cdef Level* level
        cdef Order* order
        for side_index in range(2):
            position = instrument.level_count[side_index]
            sink_put(sink, position)
            while position > 0:      # best level first
                position -= 1
                level = &instrument.levels[side_index][position]
                order_count = 0
                order_index = level.head
                while order_index != MC_NONE:
                    order_count += 1
                    order_index = self.orders[order_index].next
                sink_put(sink, <uint64_t>level.price)
                sink_put(sink, order_count)
                order_index = level.head
                while order_index != MC_NONE:
                    order = &self.orders[order_index]
                    self.write_order_words(sink, order)
                    sink_put(sink, <uint64_t>order.aux)       # the display quantity
                    sink_put(sink, order.visible)
                    order_index = order.next
        sink_put(sink, instrument.stop_count)
        order_index = instrument.stop_head
        while order_index != MC_NONE:
            order = &self.orders[order_index]
            self.write_order_words(sink, order)
            sink_put(sink, 0)                          # a stop shows no display
            sink_put(sink, 0)
            sink_put(sink, order.side)
            sink_put(sink, order.order_type)
            sink_put(sink, order.time_in_force)
            sink_put(sink, <uint64_t>order.price)
            sink_put(sink, <uint64_t>order.aux)           # the trigger price
            order_index = order.next

    cdef void write_order_words(self, WordSink* sink, const Order* order) noexcept nogil:
        """The nine words every order has in the snapshot (load_order reads them)."""
        sink_put(sink, order.order_id)
        sink_put(sink, order.account)
        sink_put(sink, order.client_id)
        sink_put(sink, <uint64_t>order.leaves)
        sink_put(sink, <uint64_t>order.hold)
        sink_put(sink, order.fee_cap_bps)
        sink_put(sink, order.stp_mode)
        sink_put(sink, order.flags)
        sink_put(sink, <uint64_t>order.expire_time_ns)

    # ------------------------------------------------------------------ restore

    cdef load(self, const int64_t[::1] words, Py_ssize_t start):
        """Rebuild the state from snapshot words after the header; SnapshotError on any
        inconsistency, so a malformed snapshot can never reach the command path."""
        cdef _EngineCursor cursor = _EngineCursor(words, start)
        self.load_assets(cursor)
        self.load_accounts(cursor)
        cdef int64_t count = cursor.count(self.max_instruments, "instrument")
        cdef int64_t previous = -1
        cdef int64_t instrument_id
        for _ in range(count):
            cursor.need(ENGINE_INSTRUMENT_WORDS)
            instrument_id = cursor.take()
            if not (previous < instrument_id < self.max_instruments):
                raise _EngineSnapshotError(f"instrument id {instrument_id} out of order or range")
            previous = instrument_id
            self.load_instrument(cursor, <uint32_t>instrument_id)
        cursor.finish()
        self.load_account_lists()
        self.check_money()

    cdef load_assets(self, _EngineCursor cursor):
        cdef int64_t count = cursor.count(self.max_assets, "asset")
        cdef int64_t previous = -1
        cdef int64_t asset_id
        cdef Asset* asset
        for _ in range(count):
            cursor.need(4)
            asset_id = cursor.take()
            if not (previous < asset_id < self.max_assets):
                raise _EngineSnapshotError(f"asset id {asset_id} out of order or range")
            previous = asset_id
            asset = &self.assets[asset_id]
            asset.exists = 1
            asset.decimals = cursor.take()
            asset.deposited = cursor.take()
            asset.withdrawn = cursor.take()
            if not (0 <= asset.decimals <= ENGINE_DECIMALS_MAX):
                raise _EngineSnapshotError(f"asset {asset_id} has {asset.decimals} decimals")
            if asset.deposited < 0 or asset.withdrawn < 0 or asset.withdrawn > asset.deposited:
                raise _EngineSnapshotError(f"asset {asset_id} totals are inconsistent")
            self.asset_count += 1

    cdef load_accounts(self, _EngineCursor cursor):
        cdef int64_t count = cursor.count(self.max_accounts, "account")
        cdef int64_t previous = -1
        cdef int64_t account_id
        cdef uint32_t asset_id
        cdef Balance* balance
        for _ in range(count):
            cursor.need(ENGINE_ACCOUNT_WORDS + 2 * <Py_ssize_t>self.asset_count)
            account_id = cursor.take()
            if not (previous < account_id < self.max_accounts):
                raise _EngineSnapshotError(f"account id {account_id} out of order or range")
            previous = account_id
            self.accounts[account_id].exists = 1
            self.accounts[account_id].last_client_id = <uint64_t>cursor.take()
            self.load_last_transfer(cursor, &self.accounts[account_id])
            self.account_count += 1
            for asset_id in range(self.max_assets):
                if not self.assets[asset_id].exists:
                    continue
                balance = self.balance_of(<uint32_t>account_id, asset_id)
                balance.available = cursor.take()
                balance.held = cursor.take()
                if balance.available < 0 or balance.held < 0:
                    raise _EngineSnapshotError(f"account {account_id} has a negative balance")
        if not self.accounts[self.fee_account].exists:
            raise _EngineSnapshotError("the fee account is missing")

    cdef load_last_transfer(self, _EngineCursor cursor, Account* account):
        """An account's last transfer: none (all zero) or a consistent one."""
        cdef uint64_t transfer_id = <uint64_t>cursor.take()
        cdef int64_t kind = cursor.take()
        cdef int64_t asset = cursor.take()
        cdef int64_t amount = cursor.take()
        cdef int64_t event_kind = cursor.take()
        cdef int64_t reason = cursor.take()
        if kind == 0:
            if transfer_id or asset or amount or event_kind or reason:
                raise _EngineSnapshotError("an account without transfers has transfer words")
            return
        if transfer_id == 0 or (kind != CMD_DEPOSIT and kind != CMD_WITHDRAW):
            raise _EngineSnapshotError(f"last transfer {transfer_id} of kind {kind}")
        if asset < 0 or not self.asset_exists(<uint64_t>asset) or amount <= 0:
            raise _EngineSnapshotError("transfer of an unknown asset or a bad amount")
        if not ((event_kind == EV_TRANSFER_DONE and reason == 0)
                or (event_kind == EV_TRANSFER_REJECTED and 0 < reason <= 0xFFFF)):
            raise _EngineSnapshotError("transfer with an inconsistent outcome")
        account.last_transfer_id = transfer_id
        account.transfer_kind = <uint8_t>kind
        account.transfer_asset = <uint16_t>asset
        account.transfer_amount = amount
        account.transfer_event_kind = <uint8_t>event_kind
        account.transfer_reason = <uint16_t>reason

    cdef load_instrument(self, _EngineCursor cursor, uint32_t instrument_id):
        cdef int64_t base = cursor.take()
        cdef int64_t quote = cursor.take()
        cdef int64_t tick_size = cursor.take()
        cdef int64_t lot_size = cursor.take()
        cdef int64_t max_order_lots = cursor.take()
        if (base < 0 or quote < 0 or base == quote or not self.asset_exists(<uint64_t>base)
                or not self.asset_exists(<uint64_t>quote)):
            raise _EngineSnapshotError(f"instrument {instrument_id} has invalid assets")
        if tick_size <= 0 or lot_size <= 0 or max_order_lots <= 0:
            raise _EngineSnapshotError(f"instrument {instrument_id} has an invalid spec")
        cdef Instrument* instrument = self.instrument_init(instrument_id, <uint16_t>base,
                                                           <uint16_t>quote, tick_size, lot_size,
                                                           max_order_lots)
        instrument.band_min = cursor.take()
        instrument.band_max = cursor.take()
        instrument.maker_bps = cursor.take()
        instrument.taker_bps = cursor.take()
        cdef int64_t state = cursor.take()
        instrument.last_price = cursor.take()
        if instrument.band_min <= 0 or instrument.band_max < instrument.band_min:
            raise _EngineSnapshotError(f"instrument {instrument_id} has an invalid price band")
        if not (0 <= instrument.maker_bps <= ENGINE_BPS_MAX
                and 0 <= instrument.taker_bps <= ENGINE_BPS_MAX):
            raise _EngineSnapshotError(f"instrument {instrument_id} has invalid fees")
        if not (STATE_TRADING <= state <= STATE_PAUSED):
            raise _EngineSnapshotError(f"instrument {instrument_id} has state {state}")
        instrument.state = <uint8_t>state
        if instrument.last_price < 0:
            raise _EngineSnapshotError(f"instrument {instrument_id} has a negative last price")
        self.load_side(cursor, instrument, instrument_id, 0)
        self.load_side(cursor, instrument, instrument_id, 1)
        self.load_stops(cursor, instrument, instrument_id)
        if instrument.state == STATE_HALTED and (instrument.level_count[0] or instrument.level_count[1]
                                                 or instrument.stop_count):
            raise _EngineSnapshotError(f"halted instrument {instrument_id} has orders")
        if (instrument.level_count[0] and instrument.level_count[1]
                and instrument.levels[0][instrument.level_count[0] - 1].price
                >= instrument.levels[1][instrument.level_count[1] - 1].price):
            raise _EngineSnapshotError(f"instrument {instrument_id} has a crossed book")

    cdef load_side(self, _EngineCursor cursor, Instrument* instrument, uint32_t instrument_id,
                   int side_index):
        cdef int64_t level_count = cursor.count(self.max_price_levels, "level")
        cdef Level* levels = instrument.levels[side_index]
        cdef int64_t price, order_count
        cdef Py_ssize_t level_number
        cdef Level* level
        cdef uint32_t order_index
        for level_number in range(level_count):
            cursor.need(2)
            price = cursor.take()
            order_count = cursor.take()
            # written best first; stored worst first, so the best level ends the array
            if price <= 0 or (level_number > 0 and level_key(side_index, price)
                              >= level_key(side_index, levels[level_count - level_number].price)):
                raise _EngineSnapshotError(f"instrument {instrument_id}: level prices out of order")
            if order_count < 1 or order_count > <int64_t>(self.max_orders - self.live_orders()):
                raise _EngineSnapshotError(f"instrument {instrument_id}: bad order count {order_count}")
            level = &levels[level_count - 1 - level_number]
            level.price = price
            level.quantity = 0
            level.head = MC_NONE
            level.tail = MC_NONE
            level.order_count = 0
            level.book_mark = 0
            instrument.level_count[side_index] += 1
            for _ in range(order_count):
                order_index = self.load_order(cursor, instrument, instrument_id, side_index + 1,
                                              price)
                self.orders[order_index].next = MC_NONE
                self.orders[order_index].prev = level.tail
                if level.tail != MC_NONE:
                    self.orders[level.tail].next = order_index
                else:
                    level.head = order_index
                level.tail = order_index
                level.quantity += order_shown(&self.orders[order_index])
                level.order_count += 1

    cdef uint32_t load_order(self, _EngineCursor cursor, Instrument* instrument,
                             uint32_t instrument_id, uint8_t side, int64_t price,
                             bint stop=False) except? 0:
        """One order's words into the pool and the index. A stop's hold is checked by
        load_stops, which reads its side and price after these words."""
        cursor.need(ENGINE_ORDER_WORDS)
        cdef int64_t order_id = cursor.take()
        cdef int64_t account = cursor.take()
        cdef uint64_t client_id = <uint64_t>cursor.take()
        cdef int64_t leaves = cursor.take()
        cdef int64_t hold = cursor.take()
        cdef int64_t fee_cap_bps = cursor.take()
        cdef int64_t stp_mode = cursor.take()
        cdef int64_t flags = cursor.take()
        cdef int64_t expire_time_ns = cursor.take()
        cdef int64_t display_quantity = cursor.take()
        cdef int64_t visible = cursor.take()
        cdef int64_t needed
        cdef bint overflow
        if not (1 <= order_id < <int64_t>self.next_order_id):
            raise _EngineSnapshotError(f"order id {order_id} is not below the next order id")
        if not (0 <= account < self.max_accounts and self.accounts[account].exists):
            raise _EngineSnapshotError(f"order {order_id} of unknown account {account}")
        if client_id == 0 or client_id > self.accounts[account].last_client_id:
            raise _EngineSnapshotError(f"order {order_id} has a client order id never accepted")
        if leaves <= 0 or not (0 <= fee_cap_bps <= ENGINE_BPS_MAX):
            raise _EngineSnapshotError(f"order {order_id} has bad leaves or fee cap")
        if not (STP_CANCEL_TAKER <= stp_mode <= STP_DECREMENT) or flags & ~FLAG_POST_ONLY:
            raise _EngineSnapshotError(f"order {order_id} has bad stp mode or flags")
        if expire_time_ns < 0:
            raise _EngineSnapshotError(f"order {order_id} has a negative expiry")
        if not ((display_quantity == 0 and visible == 0)
                or (not stop and 0 < display_quantity <= ENGINE_DISPLAY_MAX
                    and 0 < visible <= min(display_quantity, leaves))):
            raise _EngineSnapshotError(f"order {order_id} has display {display_quantity}, visible {visible}")
        overflow = limit_hold_needed(side, price, leaves, instrument.lot_size, fee_cap_bps, &needed)
        if not stop and (overflow or hold != needed):
            raise _EngineSnapshotError(f"order {order_id} holds {hold}, not what it needs")
        cdef uint32_t position
        if self.index_find(<uint32_t>account, client_id, &position) != MC_NONE:
            raise _EngineSnapshotError(f"order {order_id} repeats a live client order id")
        cdef uint32_t order_index = self.order_allocate()
        cdef Order* order = &self.orders[order_index]
        order.order_id = <uint64_t>order_id
        order.client_id = client_id
        order.price = price
        order.leaves = leaves
        order.hold = hold
        order.account = <uint32_t>account
        order.instrument = instrument_id
        order.account_prev = MC_NONE
        order.account_next = MC_NONE
        order.fee_cap_bps = <uint16_t>fee_cap_bps
        order.side = side
        order.stp_mode = <uint8_t>stp_mode
        order.flags = <uint8_t>flags
        order.order_type = TYPE_LIMIT
        order.time_in_force = TIF_GTD if expire_time_ns else TIF_GTC
        order.aux = display_quantity
        order.visible = <uint32_t>visible
        order.expire_time_ns = expire_time_ns
        order.expiry_position = MC_NONE
        self.index_insert(order_index)
        if expire_time_ns:
            self.expiry_push(order_index)
        return order_index

    cdef load_stops(self, _EngineCursor cursor, Instrument* instrument, uint32_t instrument_id):
        """An instrument's untriggered stops, ascending order id: each a live order (the
        checks of load_order) off the book, with a trigger the last price has not reached."""
        cdef int64_t count = cursor.count(self.max_orders, "stop")
        cdef int64_t side, order_type, tif, price, trigger, needed
        cdef uint64_t previous_id = 0
        cdef uint32_t order_index
        cdef Order* order
        for _ in range(count):
            cursor.need(ENGINE_STOP_WORDS)
            # the order words of load_order, then side, type, time in force, price, trigger
            order_index = self.load_order(cursor, instrument, instrument_id, SIDE_BUY, 1, True)
            order = &self.orders[order_index]
            side = cursor.take()
            order_type = cursor.take()
            tif = cursor.take()
            price = cursor.take()
            trigger = cursor.take()
            if order.order_id <= previous_id:
                raise _EngineSnapshotError(f"stops of instrument {instrument_id} out of order")
            previous_id = order.order_id
            if side != SIDE_BUY and side != SIDE_SELL:
                raise _EngineSnapshotError(f"stop {order.order_id} has side {side}")
            if not ((order_type == TYPE_STOP_MARKET and (tif == TIF_IOC or tif == TIF_FOK))
                    or (order_type == TYPE_STOP_LIMIT and TIF_GTC <= tif <= TIF_GTD)):
                raise _EngineSnapshotError(f"stop {order.order_id} has type {order_type}, tif {tif}")
            if (tif == TIF_GTD) != (order.expire_time_ns != 0):
                raise _EngineSnapshotError(f"stop {order.order_id} has an expiry that is not GTD's")
            if price <= 0 or trigger <= 0 or self.stop_triggered(instrument, <uint8_t>side, trigger):
                raise _EngineSnapshotError(f"stop {order.order_id} has a bad price or trigger")
            order.side = <uint8_t>side
            order.order_type = <uint8_t>order_type
            order.time_in_force = <uint8_t>tif
            order.price = price
            order.aux = trigger
            if limit_hold_needed(order.side, price, order.leaves, instrument.lot_size,
                                 order.fee_cap_bps, &needed) or needed != order.hold:
                raise _EngineSnapshotError(f"stop {order.order_id} holds {order.hold}, not what it needs")
            self.stop_append(order_index, instrument)

    cdef load_account_lists(self):
        """Per-account order lists in ascending order id (mass cancel order); ids unique."""
        if self.live_orders() == 0:
            return
        # (order id << 32 | pool index) would not fit; sort (order id, index) pairs instead
        cdef uint64_t* pairs = <uint64_t*>malloc(self.live_orders() * 2 * sizeof(uint64_t))
        if pairs == NULL:
            raise MemoryError("cannot sort the restored orders")
        cdef uint32_t order_index
        cdef size_t count = 0
        cdef size_t position
        for order_index in range(1, self.orders_used + 1):
            pairs[2 * count] = self.orders[order_index].order_id
            pairs[2 * count + 1] = order_index
            count += 1
        qsort(pairs, count, 2 * sizeof(uint64_t), _engine_u64_order)
        try:
            for position in range(count):
                if position > 0 and pairs[2 * position] == pairs[2 * position - 2]:
                    raise _EngineSnapshotError(f"order id {pairs[2 * position]} is repeated")
                self.account_append(<uint32_t>pairs[2 * position + 1])
        finally:
            free(pairs)

    cdef check_money(self):
        """Holds add up to the held balances, and per asset the balances add up to deposits
        minus withdrawals: then no later command can overflow an amount."""
        cdef size_t cells = <size_t>self.max_accounts * self.max_assets
        cdef int64_t* held = <int64_t*>calloc(cells, sizeof(int64_t))
        if held == NULL:
            raise MemoryError("cannot check the restored balances")
        cdef uint32_t order_index, account_id, asset_id
        cdef Order* order
        cdef Instrument* instrument
        cdef size_t cell
        cdef int64_t total
        cdef bint bad = False
        try:
            for order_index in range(1, self.orders_used + 1):
                order = &self.orders[order_index]
                instrument = &self.instruments[order.instrument]
                cell = (<size_t>order.account * self.max_assets
                        + (instrument.quote_asset if order.side == SIDE_BUY
                           else instrument.base_asset))
                bad = bad or mc_add_overflow(held[cell], order.hold, &held[cell])
            for asset_id in range(self.max_assets):
                if not self.assets[asset_id].exists:
                    continue
                total = 0
                for account_id in range(self.max_accounts):
                    cell = <size_t>account_id * self.max_assets + asset_id
                    if self.balances[cell].held != held[cell]:
                        raise _EngineSnapshotError(
                            f"account {account_id} holds {self.balances[cell].held} of asset "
                            f"{asset_id}, its orders {held[cell]}")
                    bad = bad or mc_add_overflow(total, self.balances[cell].available, &total)
                    bad = bad or mc_add_overflow(total, self.balances[cell].held, &total)
                if bad or total != self.assets[asset_id].deposited - self.assets[asset_id].withdrawn:
                    raise _EngineSnapshotError(f"asset {asset_id}: balances do not add up")
        finally:
            free(held)


# One recycled event block. Writing fresh memory costs a page fault and the kernel's zeroing
# of every page, which for a big batch is a large part of apply(); so when the numpy array
# of a big batch is freed, its block is kept here (only the largest one) for the next batch.
cdef void* _engine_spare_events = NULL


cdef void _engine_events_release(void* data) noexcept:
    """Free callback of apply()'s event arrays (runs with the GIL, as arrays are freed)."""
    global _engine_spare_events
    if malloc_usable_size(data) < MC_HUGE_PAGE_BYTES:
        free(data)
        return
    if _engine_spare_events != NULL:
        if malloc_usable_size(_engine_spare_events) >= malloc_usable_size(data):
            free(data)
            return
        free(_engine_spare_events)
    _engine_spare_events = data


cdef int _engine_batch_buffer_init(EventBuffer* buffer, size_t capacity):
    """An event buffer for one apply() batch (called with the GIL): like event_buffer_init,
    but a big one reuses the spare block, or is advised for huge pages so writing it takes a
    page fault per 2 MiB rather than per 4 KiB."""
    global _engine_spare_events
    if capacity > (<size_t>-1) // sizeof(Event):
        return -1
    cdef size_t total_bytes = capacity * sizeof(Event)
    if total_bytes < MC_HUGE_PAGE_BYTES:
        return event_buffer_init(buffer, capacity)
    cdef void* spare = _engine_spare_events
    cdef void* data = NULL
    _engine_spare_events = NULL
    if spare != NULL and malloc_usable_size(spare) >= total_bytes:
        data = spare
    else:
        free(spare)
    if data == NULL:
        if posix_memalign(&data, MC_HUGE_PAGE_BYTES, total_bytes) != 0:
            return -1
        madvise(data, total_bytes - total_bytes % MC_HUGE_PAGE_BYTES, MADV_HUGEPAGE)
    buffer.data = <Event*>data
    buffer.count = 0
    buffer.capacity = capacity
    return 0


cdef object _engine_events_array(EventBuffer* buffer):
    """Hand a filled event buffer to numpy without a copy (numpy frees it)."""
    cdef Event* data = buffer.data
    if buffer.count == 0:
        event_buffer_free(buffer)
        return _engine_np.zeros(0, dtype=_ENGINE_EVENT_DTYPE)
    if buffer.capacity * sizeof(Event) < MC_HUGE_PAGE_BYTES:
        # a small block: give back the unused part (a big one keeps it for reuse; its
        # unwritten pages were never committed)
        data = <Event*>realloc(buffer.data, buffer.count * sizeof(Event))
        if data == NULL:
            data = buffer.data
    buffer.data = NULL
    cdef _engine_view_array storage = _engine_view_array(
        shape=(buffer.count * sizeof(Event),), itemsize=1, format="B", mode="c",
        allocate_buffer=False)
    storage.data = <char*>data
    storage.callback_free_data = _engine_events_release
    return _engine_np.frombuffer(storage, dtype=_ENGINE_EVENT_DTYPE)


# ================================================================== per-command path (issue 17)
# Driving the engine one command at a time from Python (backtests, simulators): apply() of a
# one-record array costs microseconds in numpy (an array per call for the events, a view of
# the input, a buffer allocation). A stepper binds the caller's command array and an events
# array once; step(index) is then one method call: apply_one into the stepper's own event
# buffer (grown like apply's, never shrunk) and a copy of the events into the events array.

cdef int _engine_apply_into(Engine engine, commands, EventBuffer* buffer) except -1:
    """apply()'s checks and run, into ``buffer`` (allocated here; the caller frees it)."""
    if commands.dtype != _ENGINE_COMMAND_DTYPE or commands.ndim != 1:
        raise TypeError("commands must be a one-dimensional array of COMMAND_DTYPE")
    if engine.broken:
        raise RuntimeError("engine state is undefined after an out-of-memory failure")
    cdef Py_ssize_t count = commands.shape[0]
    if event_buffer_init(buffer, <size_t>count * 2 + 16) != 0:
        raise MemoryError("cannot allocate the event buffer")
    if count == 0:
        return 0
    contiguous = _engine_np.ascontiguousarray(commands)
    cdef const uint8_t[::1] raw = contiguous.view(_engine_np.uint8).reshape(-1)
    cdef const Command* first = <const Command*>&raw[0]
    cdef int failed = 0
    if engine.applying:
        raise RuntimeError("Engine.apply is already running in another thread")
    engine.applying = True
    try:
        if MC_DEBUG_BUILD:
            failed = engine.apply_checked(first, <size_t>count, buffer)
        else:
            with nogil:
                failed = engine.apply_batch(first, <size_t>count, buffer)
    finally:
        engine.applying = False
    if failed:
        raise MemoryError("out of memory while growing the event buffer")
    return 0


cdef object _engine_first_difference(const EventBuffer* produced, journaled):
    """None when the produced events are the journaled ones byte for byte; else the seq of
    the first event that differs (replay's ReplayMismatchError names it)."""
    cdef size_t journaled_count = len(journaled)
    cdef const uint8_t[::1] raw
    cdef const Event* expected = NULL
    if journaled_count:
        raw = journaled.view(_engine_np.uint8).reshape(-1)
        expected = <const Event*>&raw[0]
    cdef size_t shared = min(produced.count, journaled_count)
    cdef size_t index
    if shared and memcmp(produced.data, expected, shared * sizeof(Event)) != 0:
        for index in range(shared):
            if memcmp(&produced.data[index], &expected[index], sizeof(Event)) != 0:
                return expected[index].seq
    if produced.count == journaled_count:
        return None
    return produced.data[shared].seq if produced.count > shared else expected[shared].seq


cdef Py_ssize_t ENGINE_STEPPER_EVENTS_DEFAULT = 64   # events array length when none is given


@cython.final
cdef class EngineStepper:
    """Applies one command of a caller-owned array per ``step`` call, exactly like apply().

    ``commands``: a one-dimensional, C-contiguous COMMAND_DTYPE array the caller writes
    commands into (one record or many); the stepper reads it in place, never copies it.
    ``events``: an EVENT_DTYPE array the events of each step are written to (from index 0),
    by default 64 records. ``step(index=0)`` applies ``commands[index]`` and returns its event
    count ``n``: the events are ``stepper.events[:n]``, the same records apply() would give.
    When one command produces more events than ``events`` holds, ``stepper.events`` is
    replaced by a bigger array first (so read the attribute after a step rather than keeping
    the array you passed in). The events of a step are overwritten by the next step.
    """

    def __cinit__(self):
        self.buffer.data = NULL
        self.buffer.count = 0
        self.buffer.capacity = 0

    def __init__(self, Engine engine not None, commands, events=None):
        if commands.dtype != _ENGINE_COMMAND_DTYPE or commands.ndim != 1:
            raise TypeError("commands must be a one-dimensional array of COMMAND_DTYPE")
        if not commands.flags.c_contiguous:
            raise TypeError("commands must be C-contiguous (the stepper reads it in place)")
        if events is None:
            events = _engine_np.zeros(ENGINE_STEPPER_EVENTS_DEFAULT, dtype=_ENGINE_EVENT_DTYPE)
        if events.dtype != _ENGINE_EVENT_DTYPE or events.ndim != 1 or len(events) == 0:
            raise TypeError("events must be a non-empty one-dimensional array of EVENT_DTYPE")
        if not (events.flags.c_contiguous and events.flags.writeable):
            raise TypeError("events must be C-contiguous and writeable")
        self.engine = engine
        self.commands = commands
        self.command_count = len(commands)
        self.command_bytes = commands.view(_engine_np.uint8).reshape(-1) if len(commands) else None
        self.use_events(events)
        if event_buffer_init(&self.buffer, <size_t>len(events)) != 0:
            raise MemoryError("cannot allocate the stepper's event buffer")

    def __dealloc__(self):
        event_buffer_free(&self.buffer)

    cdef use_events(self, events):
        self.events = events
        self.event_capacity = len(events)
        self.event_bytes = events.view(_engine_np.uint8).reshape(-1)

    def step(self, Py_ssize_t index=0) -> int:
        """Apply ``commands[index]``; return how many events it produced (in ``events[:n]``)."""
        if index < 0 or index >= self.command_count:
            raise IndexError(f"command index {index} is outside [0, {self.command_count})")
        cdef Engine engine = self.engine
        if engine.broken:
            raise RuntimeError("engine state is undefined after an out-of-memory failure")
        if engine.applying:
            raise RuntimeError("Engine.apply is already running in another thread")
        cdef const Command* command = <const Command*>&self.command_bytes[index * sizeof(Command)]
        cdef int failed
        event_buffer_clear(&self.buffer)
        engine.applying = True
        try:
            if MC_DEBUG_BUILD:
                failed = engine.apply_checked(command, 1, &self.buffer)
            else:
                failed = engine.apply_one(command, &self.buffer)
        finally:
            engine.applying = False
        if failed:
            raise MemoryError("out of memory while growing the event buffer")
        cdef Py_ssize_t count = <Py_ssize_t>self.buffer.count
        if count > self.event_capacity:
            self.use_events(_engine_np.zeros(max(count, 2 * self.event_capacity),
                                             dtype=_ENGINE_EVENT_DTYPE))
        if count:
            memcpy(&self.event_bytes[0], self.buffer.data, <size_t>count * sizeof(Event))
        return count

# The matching engine's C state (engine.pxi holds the code): every struct below lives in an
# array allocated once, when the Engine is built, from the capacities of its EngineConfig.
# Nothing is allocated per command; the one exception is the caller's EventBuffer, which
# doubles when a single command emits more events than it has ever held.
#
# Units, as in records.pxd: prices in ticks (quote minor units per lot), quantities in lots,
# amounts in minor units of their asset, fees in basis points (1/10_000 of the notional).
#
# Links between orders are uint32 indices into the order pool. Index 0 of the pool is never
# handed out, so MC_NONE == 0 means "no order" everywhere, and zero-filled memory (calloc,
# lazily mapped by the kernel) is already a valid empty state for every table.
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc, realloc

from records cimport SIDE_SELL, BookChange, Command, Event

cdef extern from "checked.h" nogil:
    uint32_t MC_NONE
    # Nonzero when the exact result does not fit in int64 (then *out is unspecified).
    bint mc_mul_overflow(int64_t a, int64_t b, int64_t* out) noexcept
    bint mc_add_overflow(int64_t a, int64_t b, int64_t* out) noexcept
    # floor(notional * bps / 10_000), through a 128-bit product when 64 bits overflow.
    int64_t mc_fee(int64_t notional, int64_t bps) noexcept
    uint64_t mc_key_hash(uint32_t account, uint64_t id) noexcept
    uint32_t mc_index_tag(uint32_t account, uint64_t client_id) noexcept
    uint64_t mc_hash_word(uint64_t h, uint64_t word) noexcept

cdef extern from "sys/mman.h" nogil:
    int MADV_HUGEPAGE
    int madvise(void* address, size_t length, int advice) noexcept

cdef extern from "unistd.h" nogil:
    int _SC_PHYS_PAGES
    int _SC_PAGESIZE
    long sysconf(int name) noexcept

cdef extern from *:
    """
    #define MC_HUGE_PAGE_BYTES ((size_t)2 << 20)
    #if defined(__x86_64__) || defined(__i386__)
    /* PREFETCHW: measured effective where PREFETCHT0 was not (AMD EPYC guest); the lines
     * prefetched are about to be written anyway. A NOP on CPUs without it. */
    #define mc_prefetch(address) __asm__ volatile("prefetchw %0" :: "m"(*(const char*)(address)))
    #else
    #define mc_prefetch(address) __builtin_prefetch((address), 1, 3)
    #endif
    """
    size_t MC_HUGE_PAGE_BYTES        # the transparent huge page size of x86-64 and arm64
    void mc_prefetch(const void* address) noexcept nogil


# A live order: resting on a book, an untriggered stop (on its instrument's stop list, linked
# by prev/next), or (during one command) the taker being matched. 96 bytes.
ctypedef struct Order:
    uint64_t order_id        # engine-assigned, ascending in acceptance order
    uint64_t client_id       # the account's client order id
    int64_t price            # ticks; 0 only for a market order without a worst price
    int64_t leaves           # lots still open
    int64_t hold             # minor units of the hold asset (quote: buy, base: sell) reserved
    int64_t expire_time_ns   # GTD: expiry, ns since the epoch; 0: no expiry
    # by order type: STOP_MARKET, STOP_LIMIT (untriggered): the trigger price (ticks); LIMIT:
    # the display quantity (an iceberg's peak, lots, < 2**31; 0 = not an iceberg); else 0
    int64_t aux
    uint32_t account
    uint32_t instrument
    uint32_t prev            # FIFO of the price level: the order ahead (older), or MC_NONE
    uint32_t next            # the order behind (newer), or MC_NONE
    uint32_t account_prev    # the account's live orders in ascending order id
    uint32_t account_next
    uint32_t expiry_position # GTD orders in the pool: the order's place in the expiry heap
    uint32_t visible         # a resting iceberg: lots shown now (1..peak); 0 otherwise
    uint16_t fee_cap_bps     # max(maker, taker) bps when accepted; the hold covers this fee
    uint8_t side             # Side
    uint8_t stp_mode         # StpMode
    uint8_t flags            # Flags bits
    uint8_t order_type       # OrderType (a stop's becomes MARKET or LIMIT when it triggers)
    uint8_t time_in_force    # TimeInForce


# One price level of one side of a book: a FIFO of orders in time priority. 32 bytes.
ctypedef struct Level:
    int64_t price            # ticks
    int64_t quantity         # lots shown: the open lots of its orders, an iceberg's peak only
    uint32_t head            # oldest order (first to match)
    uint32_t tail            # newest order
    uint32_t order_count     # orders on the level
    uint32_t book_mark       # book changes on: the command that last recorded this level's
                             # state before it changed (Engine.book_mark); not state


# Book changes on (a replica's market data): a level about to change in the current command,
# with its state before the command's first change of it.
ctypedef struct BookTouch:
    int64_t price
    int64_t quantity_before
    uint32_t instrument_id
    uint32_t order_count_before
    uint32_t side_index
    uint32_t reserved


# Side index of the per-side arrays: 0 bids, 1 asks (= side - 1; the opposite is 2 - side).
ctypedef struct Instrument:
    # levels[s][0 .. level_count[s]) sorted worst to best: the best level is the LAST one,
    # so adding or removing near the top of the book moves little memory.
    Level* levels[2]
    uint32_t level_count[2]
    int64_t tick_size        # ticks: prices must be multiples of it
    int64_t lot_size         # base minor units per lot
    int64_t max_order_lots   # lots
    int64_t band_min         # ticks, inclusive
    int64_t band_max         # ticks, inclusive
    int64_t maker_bps
    int64_t taker_bps
    int64_t last_price       # ticks: the last trade's price; 0 before the first trade
    uint32_t stop_head       # untriggered stop orders, ascending order id (a linked list)
    uint32_t stop_tail
    uint32_t stop_count
    uint16_t base_asset
    uint16_t quote_asset
    uint8_t exists
    uint8_t state            # InstrumentState: trading, halted (book canceled), paused (kept)


ctypedef struct Account:
    uint64_t last_client_id  # highest accepted client order id; a new one must exceed it
    uint32_t order_head      # live orders of the account, ascending order id (mass cancel)
    uint32_t order_tail
    # the account's last transfer (deposit or withdrawal) and its outcome: a new transfer id
    # must exceed last_transfer_id; a resend of it with the same content gets this outcome
    uint64_t last_transfer_id
    int64_t transfer_amount      # minor units, as requested
    uint16_t transfer_asset
    uint16_t transfer_reason     # RejectReason of the outcome, 0 when done
    uint8_t transfer_kind        # CommandKind (DEPOSIT or WITHDRAW); 0 before the first
    uint8_t transfer_event_kind  # EventKind of the outcome
    uint8_t exists


ctypedef struct Asset:
    int64_t decimals         # minor units per major unit, as a power of ten (0-18)
    int64_t deposited        # minor units, over the engine's life
    int64_t withdrawn        # minor units, over the engine's life
    uint8_t exists


# Balances are a dense [max_accounts][max_assets] array of these (the numpy layout of
# balances_array(), so that query is one copy).
ctypedef struct Balance:
    int64_t available        # minor units, free to hold or withdraw
    int64_t held             # minor units reserved by live orders


# Client order id index: open addressing, linear probing, backward-shift deletion, keyed by
# (account, client order id) of live orders. The key itself is read from the order.
ctypedef struct IndexSlot:
    uint32_t tag             # mc_index_tag of the key; tag & mask is the home slot
    uint32_t order           # pool index, MC_NONE when the slot is empty


# Remembered transfer ids: insert-only open addressing keyed by (account, transfer id).
# Events of apply_one are appended here; the caller owns the buffer.
ctypedef struct EventBuffer:
    Event* data
    size_t count             # events written
    size_t capacity          # events that fit before the next doubling


# The canonical state words of snapshot_format.py, hashed as they are produced and stored
# when data is not NULL (snapshot) or only hashed (state_hash).
ctypedef struct WordSink:
    uint64_t* data
    size_t count
    uint64_t hash


cdef inline int event_buffer_init(EventBuffer* buffer, size_t capacity) noexcept nogil:
    """Allocate room for capacity events (at least 16); 0, or -1 when memory is short."""
    if capacity < 16:
        capacity = 16
    buffer.count = 0
    buffer.data = <Event*>malloc(capacity * sizeof(Event))
    if buffer.data == NULL:
        buffer.capacity = 0
        return -1
    buffer.capacity = capacity
    return 0


cdef inline void event_buffer_free(EventBuffer* buffer) noexcept nogil:
    free(buffer.data)
    buffer.data = NULL
    buffer.count = 0
    buffer.capacity = 0


cdef inline void event_buffer_clear(EventBuffer* buffer) noexcept nogil:
    """Forget the events, keep the memory."""
    buffer.count = 0


cdef inline int event_buffer_grow(EventBuffer* buffer) noexcept nogil:
    """Double the capacity; 0, or -1 (buffer unchanged) when memory is short."""
    cdef size_t capacity = buffer.capacity * 2 if buffer.capacity >= 16 else 16
    if capacity > (<size_t>-1) // sizeof(Event):
        return -1
    cdef Event* data = <Event*>realloc(buffer.data, capacity * sizeof(Event))
    if data == NULL:
        return -1
    buffer.data = data
    buffer.capacity = capacity
    return 0


cdef inline Event* event_buffer_push(EventBuffer* buffer) noexcept nogil:
    """The next free event slot (counted as written), or NULL when growing failed."""
    if buffer.count == buffer.capacity:
        if event_buffer_grow(buffer) != 0:
            return NULL
    buffer.count += 1
    return &buffer.data[buffer.count - 1]


cdef inline void sink_put(WordSink* sink, uint64_t word) noexcept nogil:
    if sink.data != NULL:
        sink.data[sink.count] = word
    sink.count += 1
    sink.hash = mc_hash_word(sink.hash, word)


cdef inline int64_t level_key(int side_index, int64_t price) noexcept nogil:
    """Rank of a price on one side: larger is better (bids: higher price, asks: lower)."""
    return price if side_index == 0 else -price


cdef inline int64_t order_shown(const Order* order) noexcept nogil:
    """Lots a resting order shows on its level: an iceberg its peak, any other all it has."""
    return order.visible if order.aux else order.leaves


cdef inline uint32_t level_search(const Level* levels, uint32_t count, int side_index,
                                  int64_t price, bint* found) noexcept nogil:
    """Position of price in a side's level array (binary search); found[0] says if it is there."""
    cdef int64_t key = level_key(side_index, price)
    cdef uint32_t low = 0
    cdef uint32_t high = count
    cdef uint32_t middle
    while low < high:
        middle = (low + high) >> 1
        if level_key(side_index, levels[middle].price) < key:
            low = middle + 1
        else:
            high = middle
    found[0] = low < count and levels[low].price == price
    return low


cdef inline bint buy_hold_needed(int64_t price, int64_t leaves, int64_t fee_cap_bps,
                                 int64_t* out) noexcept nogil:
    """What a buy limit order holds: price * leaves plus its maximum fee. True on overflow."""
    cdef int64_t notional
    if mc_mul_overflow(price, leaves, &notional):
        return True
    return mc_add_overflow(notional, mc_fee(notional, fee_cap_bps), out)


cdef inline bint limit_hold_needed(uint8_t side, int64_t price, int64_t leaves, int64_t lot_size,
                                   int64_t fee_cap_bps, int64_t* out) noexcept nogil:
    """What a resting limit order holds: a sell its base (leaves lots), a buy its quote
    (``buy_hold_needed``). True on overflow, also when a sell's notional (price * leaves, a
    price given) would leave int64: every order's price * size fits."""
    cdef int64_t notional
    if side == SIDE_SELL:
        if price > 0 and mc_mul_overflow(price, leaves, &notional):
            return True
        return mc_mul_overflow(leaves, lot_size, out)
    return buy_hold_needed(price, leaves, fee_cap_bps, out)

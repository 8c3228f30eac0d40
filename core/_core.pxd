# The cdef classes of matchcore.core._core: every field with its unit, every cdef method's
# signature, in the one place a reader looks first (asyncpg's coreproto.pxd habit). Cython
# reads this file when it compiles _core.pyx; the class bodies in engine.pxi, ring.pxi and
# pipeline.pxi hold the code and must match these declarations exactly.
#
# The C structs the fields point to are declared beside their code: records.pxd (Command,
# Event), engine.pxd (Order, Level, Instrument...), ring.pxd (RecordRing, TransferSide),
# pipeline.pxd (CoreControl). Units, as there: prices in ticks, quantities in lots, amounts in
# minor units of their asset, fees in basis points, times in nanoseconds.
cimport cython
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t

from engine cimport (
    Account, Asset, Balance, BookTouch, EventBuffer, IndexSlot, Instrument, Level, Order, WordSink,
)
from pipeline cimport CoreControl
from records cimport BookChange, Command, Event
from ring cimport RecordRing, TransferSide


# ---- engine.pxi --------------------------------------------------------------------------

cdef class Engine


# The per-command path (issue 17): step(index) applies one command of a caller-owned array.
@cython.final
cdef class EngineStepper:
    cdef readonly Engine engine
    cdef readonly object commands      # COMMAND_DTYPE [command_count], read in place
    cdef readonly object events        # EVENT_DTYPE [event_capacity]: each step's events
    cdef const uint8_t[::1] command_bytes
    cdef uint8_t[::1] event_bytes
    cdef Py_ssize_t command_count      # records of commands
    cdef Py_ssize_t event_capacity     # records of events
    cdef EventBuffer buffer            # apply_one's output, copied into events after a step

    cdef use_events(self, events)


@cython.final
cdef class _EngineCursor:
    cdef const int64_t[::1] words      # the snapshot, as little-endian int64 words
    cdef Py_ssize_t position           # index of the next word to take

    cdef int need(self, Py_ssize_t count) except -1
    cdef int64_t take(self) noexcept
    cdef int64_t count(self, int64_t maximum, str what) except -1
    cdef int finish(self) except -1


@cython.final
cdef class Engine:
    cdef readonly object config        # the validated EngineConfig the tables were sized from
    # capacities, from config (counts of each thing)
    cdef uint32_t max_accounts
    cdef uint32_t max_assets
    cdef uint32_t max_instruments
    cdef uint32_t max_orders
    cdef uint32_t max_price_levels     # per side of one book
    cdef uint32_t fee_account          # account id credited with every fee
    cdef uint64_t next_order_id        # the next accepted order's id (ids ascend from 1)
    cdef uint64_t next_trade_id        # the next fill's trade id (ascending from 1)
    # order pool: indices 1..max_orders (0 is MC_NONE); freed indices are reused LIFO
    cdef Order* orders                 # [max_orders + 1]
    cdef uint32_t* free_orders         # [max_orders + 1]: a stack of freed pool indices
    cdef uint32_t free_count           # entries on the free_orders stack
    cdef uint32_t orders_used          # pool high-water mark: indices 1..orders_used handed out
    cdef uint32_t* expiry_heap         # [max_orders]: pool indices of the GTD orders in the
                                       # pool, a binary min-heap by (expire_time_ns, order_id)
    cdef uint32_t expiry_count         # entries of expiry_heap
    cdef IndexSlot* index              # client order id index, [index_mask + 1] slots
    cdef uint32_t index_mask           # slots - 1 (slots: a power of two >= 2 * max_orders)
    # reference data and balances
    cdef Account* accounts             # [max_accounts]
    cdef uint32_t account_count        # accounts that exist
    cdef Asset* assets                 # [max_assets]
    cdef uint32_t asset_count          # assets that exist
    cdef Balance* balances             # [max_accounts][max_assets]
    cdef Instrument* instruments       # [max_instruments]
    cdef uint32_t instrument_count     # instruments that exist
    cdef Level* levels                 # [max_instruments][2][level_stride]
    cdef size_t level_stride           # levels: max_price_levels + ENGINE_LEVEL_PADDING
    # the command being applied and where its events go
    cdef const Command* command
    cdef EventBuffer* out
    cdef Event scratch_event           # absorbs events after the buffer failed to grow
    cdef bint out_of_memory            # the current command lost an event
    cdef bint broken                   # a command lost events: the engine refuses more
    cdef bint applying                 # apply() runs (without the GIL): no second one
    # book changes (enable_book_changes: a replica's market data; off in the live core)
    cdef bint book_changes_on
    cdef uint32_t book_mark            # this command's mark (Level.book_mark), from 1
    cdef BookTouch* touched            # levels the current command changed, first change first
    cdef size_t touched_count
    cdef size_t touched_capacity
    cdef bint status_changed           # the current command changed an instrument's status
    cdef uint32_t status_instrument
    cdef BookChange* changes           # recorded since the last take_book_changes()
    cdef size_t change_count
    cdef size_t change_capacity

    # construction
    cdef _allocate(self, bint prefault)
    # the command path (no GIL, no Python object)
    cdef int apply_one(self, const Command* command, EventBuffer* out) noexcept nogil
    cdef int apply_batch(self, const Command* commands, size_t count,
                         EventBuffer* out) noexcept nogil
    cdef int apply_checked(self, const Command* commands, size_t count,
                           EventBuffer* out) except -2
    cdef inline void prefetch_ahead(self, const Command* commands, size_t count,
                                    size_t position) noexcept nogil
    cdef void prefetch_index(self, const Command* command) noexcept nogil
    cdef inline uint32_t indexed_order(self, const Command* command) noexcept nogil
    cdef void prefetch_order(self, const Command* command) noexcept nogil
    cdef void prefetch_neighbours(self, const Command* command) noexcept nogil
    # book changes
    cdef void book_marks_reset(self) noexcept nogil
    cdef inline void book_touch(self, const Instrument* instrument, int side_index,
                                Level* level) noexcept nogil
    cdef void book_remember(self, const Instrument* instrument, int side_index,
                            Level* level) noexcept nogil
    cdef BookChange* book_change_push(self, uint8_t kind, uint32_t instrument_id) noexcept nogil
    cdef void book_finish(self, const Command* command) noexcept nogil
    cdef void book_top(self, uint32_t instrument_id) noexcept nogil
    cdef void book_status(self, uint32_t instrument_id) noexcept nogil
    # deep-book prefetch (issue 17): accounts, balance rows, the next maker of a taker
    cdef inline void prefetch_account(self, uint32_t account) noexcept nogil
    cdef inline void prefetch_balance_row(self, uint32_t account) noexcept nogil
    cdef inline void prefetch_next_maker(self, const Order* maker,
                                         const Instrument* instrument) noexcept nogil
    # events
    cdef Event* emit(self, uint8_t kind, uint8_t side, uint16_t reason, uint32_t instrument_id,
                     uint32_t account_id, uint32_t counter_account_id, uint64_t order_id,
                     uint64_t client_id, uint64_t counter_order_id, uint64_t trade_id,
                     int64_t price, int64_t quantity, int64_t fee,
                     int64_t counter_fee) noexcept nogil
    cdef void reject(self, const Command* c, uint16_t reason) noexcept nogil
    cdef void done(self, const Command* c, uint32_t instrument_id, int64_t quantity) noexcept nogil
    cdef void emit_canceled(self, const Order* order, uint16_t reason) noexcept nogil
    cdef void transfer_event(self, const Command* c, uint8_t event_kind,
                             uint16_t reason) noexcept nogil
    # lookups
    cdef inline Balance* balance_of(self, uint32_t account, uint32_t asset) noexcept nogil
    cdef inline bint account_exists(self, uint32_t account) noexcept nogil
    cdef inline bint asset_exists(self, uint64_t asset) noexcept nogil
    cdef inline Instrument* instrument_of(self, uint32_t instrument_id) noexcept nogil
    # reference data
    cdef void cmd_add_asset(self, const Command* c) noexcept nogil
    cdef void cmd_add_account(self, const Command* c) noexcept nogil
    cdef void cmd_add_instrument(self, const Command* c) noexcept nogil
    cdef Instrument* instrument_init(self, uint32_t instrument_id, uint16_t base_asset,
                                     uint16_t quote_asset, int64_t tick_size, int64_t lot_size,
                                     int64_t max_order_lots) noexcept nogil
    cdef void cmd_set_price_band(self, const Command* c) noexcept nogil
    cdef void cmd_set_fees(self, const Command* c) noexcept nogil
    cdef void cmd_halt(self, const Command* c) noexcept nogil
    cdef void cmd_resume(self, const Command* c) noexcept nogil
    cdef void cmd_pause(self, const Command* c) noexcept nogil
    # transfers
    cdef void cmd_transfer(self, const Command* c) noexcept nogil
    cdef uint16_t move_transfer(self, const Command* c, int64_t amount) noexcept nogil
    # holds
    cdef inline Balance* hold_balance(self, const Order* order,
                                      const Instrument* instrument) noexcept nogil
    cdef inline void release(self, Order* order, const Instrument* instrument,
                             int64_t amount) noexcept nogil
    cdef inline void release_excess(self, Order* order, const Instrument* instrument) noexcept nogil
    # order pool, client order id index, account lists
    cdef inline uint32_t live_orders(self) noexcept nogil
    cdef inline uint32_t order_allocate(self) noexcept nogil
    cdef uint32_t index_find(self, uint32_t account, uint64_t client_id,
                             uint32_t* slot_out) noexcept nogil
    cdef void index_insert(self, uint32_t order_index) noexcept nogil
    cdef void index_erase(self, uint32_t position) noexcept nogil
    cdef uint32_t index_slot_of(self, uint32_t order_index) noexcept nogil
    cdef inline void account_append(self, uint32_t order_index) noexcept nogil
    cdef inline void account_unlink(self, const Order* order) noexcept nogil
    cdef void forget_order(self, uint32_t order_index, uint32_t index_position) noexcept nogil
    cdef inline void drop_order(self, uint32_t order_index, const Instrument* instrument,
                         uint16_t reason) noexcept nogil
    # GTD expiry
    cdef inline bint expiry_before(self, uint32_t a, uint32_t b) noexcept nogil
    cdef inline void expiry_place(self, uint32_t position, uint32_t order_index) noexcept nogil
    cdef void expiry_sift(self, uint32_t position) noexcept nogil
    cdef void expiry_push(self, uint32_t order_index) noexcept nogil
    cdef void expiry_remove(self, uint32_t order_index) noexcept nogil
    cdef void expire_due(self, int64_t now_ns) noexcept nogil
    # books
    cdef inline bint would_cross(self, const Instrument* instrument, uint8_t side,
                                 int64_t price) noexcept nogil
    cdef void level_insert(self, Instrument* instrument, int side_index, uint32_t position,
                           int64_t price, uint32_t order_index) noexcept nogil
    cdef inline void level_remove(self, Instrument* instrument, int side_index,
                                  uint32_t position) noexcept nogil
    cdef void rest(self, uint32_t order_index, Instrument* instrument) noexcept nogil
    cdef inline void rest_at(self, uint32_t order_index, Instrument* instrument,
                             uint32_t position, bint found) noexcept nogil
    cdef void unlink(self, uint32_t order_index, Instrument* instrument) noexcept nogil
    cdef void cancel_resting(self, uint32_t order_index, uint32_t index_position,
                             uint16_t reason) noexcept nogil
    # new orders and matching
    cdef uint16_t validate_new_order(self, const Command* c) noexcept nogil
    cdef bint new_order_hold(self, const Command* c, const Instrument* instrument,
                             int64_t fee_cap_bps, int64_t* hold) noexcept nogil
    cdef void cmd_new_order(self, const Command* c) noexcept nogil
    cdef void take(self, uint32_t order_index, Instrument* instrument, bint rests) noexcept nogil
    # stop orders
    cdef inline bint stop_triggered(self, const Instrument* instrument, uint8_t side,
                                    int64_t trigger_price) noexcept nogil
    cdef void store_stop(self, const Order* taker, Instrument* instrument) noexcept nogil
    cdef void stop_append(self, uint32_t order_index, Instrument* instrument) noexcept nogil
    cdef void stop_unlink(self, uint32_t order_index, Instrument* instrument) noexcept nogil
    cdef void trigger_stops(self, Instrument* instrument) noexcept nogil
    cdef void enter_triggered(self, uint32_t order_index, Instrument* instrument) noexcept nogil
    cdef void rest_new(self, const Order* taker, Instrument* instrument, uint32_t position,
                       bint found) noexcept nogil
    cdef bint fok_fillable(self, const Order* taker, const Instrument* instrument,
                           int64_t budget) noexcept nogil
    cdef uint16_t match(self, Order* taker, Instrument* instrument, int64_t budget) noexcept nogil
    cdef void decrement(self, Order* order, const Instrument* instrument,
                        int64_t quantity) noexcept nogil
    cdef void fill(self, Order* taker, Order* maker, Instrument* instrument, int64_t price,
                   int64_t quantity) noexcept nogil
    # cancel, replace
    cdef void cmd_cancel(self, const Command* c) noexcept nogil
    cdef void cmd_mass_cancel(self, const Command* c) noexcept nogil
    cdef uint16_t validate_replace(self, const Command* c, uint32_t* order_out) noexcept nogil
    cdef void cmd_replace(self, const Command* c) noexcept nogil
    # state words: state_hash, snapshot
    cdef size_t state_word_count(self) noexcept nogil
    cdef write_state(self, WordSink* sink)
    cdef void write_instrument(self, WordSink* sink, uint32_t instrument_id) noexcept nogil
    cdef void write_order_words(self, WordSink* sink, const Order* order) noexcept nogil
    # restore
    cdef load(self, const int64_t[::1] words, Py_ssize_t start)
    cdef load_assets(self, _EngineCursor cursor)
    cdef load_accounts(self, _EngineCursor cursor)
    cdef load_last_transfer(self, _EngineCursor cursor, Account* account)
    cdef load_instrument(self, _EngineCursor cursor, uint32_t instrument_id)
    cdef load_side(self, _EngineCursor cursor, Instrument* instrument, uint32_t instrument_id,
                   int side_index)
    cdef load_stops(self, _EngineCursor cursor, Instrument* instrument, uint32_t instrument_id)
    cdef uint32_t load_order(self, _EngineCursor cursor, Instrument* instrument,
                             uint32_t instrument_id, uint8_t side, int64_t price,
                             bint stop=*) except? 0
    cdef load_account_lists(self)
    cdef check_money(self)


# ---- ring.pxi ----------------------------------------------------------------------------

cdef class Ring:
    cdef RecordRing* _ring             # owned: ring_create in __cinit__, ring_destroy at the end
    cdef bint _transfer_running        # ring_transfer's threads own both sides meanwhile

    cdef int _check_idle(self) except -1


cdef class _TransferThread:
    cdef TransferSide side             # this thread's work and what it saw
    cdef Ring ring                     # keeps the ring alive while the C loop uses it
    cdef object batch_sizes            # keeps side.batch_sizes' memory alive


# ---- pipeline.pxi ------------------------------------------------------------------------

cdef class Pipeline:
    cdef readonly Engine engine        # applied by the core thread only while it runs
    cdef RecordRing* _input            # Command records (64 bytes), Python -> core thread
    cdef RecordRing* _output           # 128-byte slots (command, then its events) -> drain()
    cdef CoreControl _control          # flags and counters shared with the core thread
    cdef object _thread                # the core thread (threading.Thread), or None
    cdef int _exit                     # CoreExit: RUNNING while it runs, then why it stopped
    cdef readonly uint64_t next_seq    # sequence number submit() gives the next command
    cdef readonly int64_t last_stamp_ns  # the stamp of the last command submitted (never down)
    cdef readonly int wake_fd          # eventfd the consumer waits on (drain side)

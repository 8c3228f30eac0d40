"""matchcore.persistence: the PostgreSQL journal, its embedded server, snapshots, replay input.

- ``embedded``: ``EmbeddedPostgres``, a private server from the pip-installed package.
- ``schema``: the versioned schema, applied at start.
- ``batch``: ``Batch``, the packed row format and its CRC-32.
- ``batch_queue``: ``BatchQueue``, chunks in, bounded batches out (backpressure).
- ``writer``: ``JournalWriter``, one row per batch, release only after commit, retries.
- ``journal``: ``Journal`` / ``AsyncJournal``, batches back as numpy arrays, snapshots, meta.
"""
from matchcore.persistence.batch import Batch, batch_checksum
from matchcore.persistence.batch_queue import BatchQueue, BatchSource
from matchcore.persistence.embedded import EmbeddedPostgres, EmbeddedPostgresError
from matchcore.persistence.errors import (
    ChecksumError,
    ConflictingBatchError,
    JournalFencedError,
    PredecessorMissingError,
    ContractVersionError,
    JournalIntegrityError,
    PersistenceError,
    SchemaVersionError,
    SequenceGapError,
    SequenceOverlapError,
)
from matchcore.persistence.journal import AccountHistory, AsyncJournal, Journal, Snapshot
from matchcore.persistence.schema import SCHEMA_VERSION, apply_schema, check_schema
from matchcore.persistence.writer import JournalWriter, WriterConfig, WriterStats, insert_batch, take_journal

__all__ = [
    "AccountHistory",
    "AsyncJournal",
    "Batch",
    "BatchQueue",
    "BatchSource",
    "ChecksumError",
    "ConflictingBatchError",
    "JournalFencedError",
    "PredecessorMissingError",
    "ContractVersionError",
    "EmbeddedPostgres",
    "EmbeddedPostgresError",
    "Journal",
    "JournalIntegrityError",
    "JournalWriter",
    "PersistenceError",
    "SCHEMA_VERSION",
    "SchemaVersionError",
    "SequenceGapError",
    "SequenceOverlapError",
    "Snapshot",
    "WriterConfig",
    "WriterStats",
    "apply_schema",
    "batch_checksum",
    "check_schema",
    "insert_batch",
    "take_journal",
]

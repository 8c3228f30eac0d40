"""The errors of matchcore.persistence: one short hierarchy, each naming what it is about.

``PersistenceError``
  - ``SchemaVersionError``: the database's schema is not the one this code knows.
  - ``JournalIntegrityError`` (``.seq``): the journal is not what was written.
      - ``ChecksumError``: a stored row or snapshot fails its checksum.
      - ``SequenceGapError``: a sequence number is missing (``.seq`` is the first missing one).
      - ``SequenceOverlapError``: two rows cover the same sequence number.
      - ``ConflictingBatchError``: a write found a different row already stored under its key.
"""
from __future__ import annotations

from matchcore.errors import MatchcoreError

__all__ = [
    "ChecksumError",
    "ConflictingBatchError",
    "ContractVersionError",
    "JournalFencedError",
    "PredecessorMissingError",
    "JournalIntegrityError",
    "PersistenceError",
    "SchemaVersionError",
    "SequenceGapError",
    "SequenceOverlapError",
]


class PersistenceError(MatchcoreError):
    """Base of every error raised by matchcore.persistence."""


class SchemaVersionError(PersistenceError):
    """The database holds schema version ``found`` (None: no schema) but the code knows ``known``."""

    def __init__(self, found: int | None, known: int, message: str | None = None):
        self.found = found
        self.known = known
        if message is None:
            if found is None:
                message = f"the database has no matchcore schema (this code knows version {known})"
            elif found > known:
                message = (f"the database has schema version {found}, newer than version {known} "
                           f"that this code knows: upgrade matchcore before running against it")
            else:
                message = (f"the database has schema version {found}; this code needs {known}: "
                           f"starting the server (matchcore serve) brings it up to date, or "
                           f"Journal(dsn, apply=True) from Python")
        super().__init__(message)


class ContractVersionError(PersistenceError):
    """The journal was written by engine contract ``found``; this code runs ``known``."""

    def __init__(self, found: int, known: int):
        self.found = found
        self.known = known
        super().__init__(
            f"the journal was written by engine contract {found}; this matchcore runs engine "
            f"contract {known}, which would replay it differently: use a new database for "
            f"contract {known}, or the matchcore release of contract {found} for this journal "
            f"(docs/operations.md, 'Contract versions')")


class JournalIntegrityError(PersistenceError):
    """The stored journal disagrees with itself or with what was written, at sequence ``seq``."""

    def __init__(self, seq: int, message: str):
        self.seq = seq
        super().__init__(message)


class ChecksumError(JournalIntegrityError):
    """A stored journal row (keyed by its first seq) or a snapshot fails its checksum."""


class SequenceGapError(JournalIntegrityError):
    """Sequence number ``seq`` is missing from the journal."""


class SequenceOverlapError(JournalIntegrityError):
    """Sequence number ``seq`` is stored in two journal rows."""


class ConflictingBatchError(JournalIntegrityError):
    """A batch was written under key ``seq`` (its first seq) where a different row is stored."""


class PredecessorMissingError(PersistenceError):
    """A journal row reached its commit while the row before it was not committed (it was
    still on its way, or its write failed): PostgreSQL refused it (SQLSTATE MC002) and stored
    nothing. The writer sends it again once the row before it is committed. ``seq``: its first."""

    def __init__(self, seq: int, message: str):
        self.seq = seq
        super().__init__(message)


class JournalFencedError(PersistenceError):
    """Another writer took the journal (a later epoch of ``journal_fence``): this one may
    neither write nor release anything again. ``epoch`` is this writer's."""

    def __init__(self, epoch: int, message: str):
        self.epoch = epoch
        super().__init__(message)

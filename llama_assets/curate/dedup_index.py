"""The persistent, incrementally updated dedup index over every batch.

One SQLite file (``<root>/dedup/index.sqlite``) holds, for each surviving
document of each batch, its content hash, its MinHash signature and its LSH
band keys, all tagged with the batch's partition key. A new batch costs work
in proportion to its own size: its band keys and hashes are looked up through
B-tree indexes (no re-reading of earlier batches, no LSH rebuilt in memory),
and only the candidates found are loaded for verification.

Entries are kept by batch: `replace_batch` deletes a batch's entries and
inserts the new ones in one transaction, so re-materialising a batch replaces
its own entries, and `lookup` only returns entries of the batches it is told
are earlier, so a batch never matches its own earlier copy nor later batches.

Two stores hold the same tables behind the same interface (`open_dedup_index`):

- SQLite, one file under a local data root (the embedded default);
- PostgreSQL (`PostgresDedupIndex`), for an S3 data root, where run workers
  (pods) share no disk: the instance's Postgres, or ``LLAMA_DEDUP_INDEX_URL``.
  Chosen over a LanceDB table on S3 because the index's access pattern is
  many point lookups of band keys through a B-tree plus transactional
  replace-by-batch, which Postgres does natively, and because a batch must
  see every batch indexed before it: `exclusive()` takes a lock (an advisory
  lock that dies with the session; an flock for SQLite) for the whole batch,
  so two batch runs that race on the index are serialised and neither loses
  the other's entries or keeps a copy the other already kept.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
import zlib
from collections.abc import Iterable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from llama_assets.curate.dedup import DEFAULT_BANDS, DEFAULT_NUM_PERM, DEFAULT_ROWS, band_keys

SCHEMA_VERSION = 2
"""v2: integer document ids and one (key, doc) band table without rowids, a
third of v1's write cost; v1 files are migrated in place when opened."""

_DDL = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS docs (
    id INTEGER PRIMARY KEY,
    doc_id TEXT NOT NULL UNIQUE,
    batch_key TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    signature BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS docs_by_batch ON docs (batch_key);
CREATE INDEX IF NOT EXISTS docs_by_hash ON docs (content_hash);
CREATE TABLE IF NOT EXISTS bands (
    key INTEGER NOT NULL,
    doc INTEGER NOT NULL,
    PRIMARY KEY (key, doc)
) WITHOUT ROWID;
"""

CACHE_KIB = 65_536
"""SQLite page cache per connection, in KiB (64 MiB)."""

# One distinct odd constant per band, XORed into its keys, so that all bands
# share one table and one B-tree without keys of different bands matching.
_BAND_SALT = np.uint64(0x9E3779B97F4A7C15)


@dataclass
class PriorDocuments:
    """Entries of earlier batches that may duplicate the current documents."""

    doc_ids: list[str]
    batch_keys: list[str]
    hashes: list[str]
    signatures: np.ndarray


class DedupIndex:
    """Handle on the SQLite index file; every method opens its own connection."""

    def __init__(
        self,
        path: Path,
        num_perm: int = DEFAULT_NUM_PERM,
        bands: int = DEFAULT_BANDS,
        rows: int = DEFAULT_ROWS,
    ) -> None:
        self.path = Path(path)
        self.num_perm, self.bands, self.rows = num_perm, bands, rows
        self.path.parent.mkdir(parents=True, exist_ok=True)
        params = f"v{SCHEMA_VERSION}:perm={num_perm}:bands={bands}x{rows}"
        with closing(self._connect()) as db, db:
            db.execute("BEGIN IMMEDIATE")
            db.execute(
                "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
            )
            found = db.execute("SELECT value FROM meta WHERE key='params'").fetchone()
            if found is not None and found[0] == params.replace("v2:", "v1:", 1):
                self._migrate_v1(db)
            elif found is not None and found[0] != params:
                raise ValueError(
                    f"{self.path} was built with {found[0]}, not {params}: signatures are "
                    "incomparable; delete the file and re-materialise clean_shards"
                )
            for statement in _DDL.split(";"):
                db.execute(statement)
            db.execute("INSERT OR REPLACE INTO meta VALUES ('params', ?)", (params,))

    def _connect(self) -> sqlite3.Connection:
        # Transactions are explicit (BEGIN IMMEDIATE: writers queue, never deadlock).
        db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        # The band B-tree takes random keys; a larger page cache keeps its inner
        # pages in memory (SQLite's default is 2 MB).
        db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
        return db

    def _keys(self, signatures: np.ndarray) -> np.ndarray:
        """(n, bands) int64 band keys, salted per band."""
        keys = band_keys(signatures, self.bands, self.rows)
        keys ^= np.arange(1, self.bands + 1, dtype=np.uint64) * _BAND_SALT
        return keys.view(np.int64)

    def _insert(self, db: sqlite3.Connection, batch_key, doc_ids, hashes, signatures) -> None:
        first = db.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM docs").fetchone()[0]
        ids = range(first, first + len(doc_ids))
        db.executemany(
            "INSERT INTO docs VALUES (?, ?, ?, ?, ?)",
            zip(
                ids,
                doc_ids,
                [batch_key] * len(doc_ids),
                hashes,
                map(bytes, signatures),
                strict=True,
            ),
        )
        keys = self._keys(signatures).ravel()
        docs = np.repeat(np.asarray(ids, dtype=np.int64), self.bands)
        # In key order: consecutive inserts land on the same B-tree pages.
        order = np.argsort(keys, kind="stable")
        db.executemany(
            "INSERT INTO bands VALUES (?, ?)",
            zip(keys[order].tolist(), docs[order].tolist(), strict=True),
        )

    def _migrate_v1(self, db: sqlite3.Connection) -> None:
        """Rewrite a v1 file (text-keyed bands) as v2, from the stored signatures."""
        db.execute("DROP TABLE bands")
        db.execute("DROP INDEX IF EXISTS docs_by_batch")
        db.execute("DROP INDEX IF EXISTS docs_by_hash")
        db.execute("ALTER TABLE docs RENAME TO docs_v1")
        for statement in _DDL.split(";"):
            db.execute(statement)
        rows = db.execute(
            "SELECT doc_id, batch_key, content_hash, signature FROM docs_v1 ORDER BY rowid"
        ).fetchall()
        for batch in sorted({r[1] for r in rows}):
            mine = [r for r in rows if r[1] == batch]
            signatures = np.frombuffer(b"".join(r[3] for r in mine), np.uint32)
            self._insert(
                db,
                batch,
                [r[0] for r in mine],
                [r[2] for r in mine],
                signatures.reshape(len(mine), self.num_perm),
            )
        db.execute("DROP TABLE docs_v1")

    def replace_batch(
        self,
        batch_key: str,
        doc_ids: Sequence[str],
        hashes: Sequence[str],
        signatures: np.ndarray,
        *,
        keep_existing: bool = False,
    ) -> None:
        """Make `batch_key`'s entries exactly these documents (atomically).

        With `keep_existing` the documents are added to the batch's entries
        instead (a batch written shard by shard). doc_ids are unique across
        batches (`make_doc_id` scopes them by batch): indexing one twice raises
        sqlite3.IntegrityError.
        """
        signatures = np.ascontiguousarray(signatures, dtype=np.uint32)
        with closing(self._connect()) as db, db:
            db.execute("BEGIN IMMEDIATE")
            if not keep_existing:
                mine = "SELECT id FROM docs WHERE batch_key = ?"
                db.execute(f"DELETE FROM bands WHERE doc IN ({mine})", (batch_key,))
                db.execute("DELETE FROM docs WHERE batch_key = ?", (batch_key,))
            self._insert(db, batch_key, list(doc_ids), list(hashes), signatures)

    def forget_batch(self, batch_key: str) -> None:
        self.replace_batch(batch_key, [], [], np.zeros((0, self.num_perm), np.uint32))

    def lookup(
        self,
        hashes: Sequence[str],
        signatures: np.ndarray,
        earlier_batches: Iterable[str],
    ) -> PriorDocuments:
        """Entries of `earlier_batches` that share a content hash or an LSH band
        with any of the given documents, ordered by doc_id."""
        earlier = list(dict.fromkeys(earlier_batches))
        signatures = np.ascontiguousarray(signatures, dtype=np.uint32)
        empty = PriorDocuments([], [], [], np.zeros((0, self.num_perm), np.uint32))
        if not earlier or len(hashes) == 0:
            return empty
        keys = np.unique(self._keys(signatures)).tolist()
        with closing(self._connect()) as db:
            # The query values travel as JSON arrays (json_each), not row by row.
            rows = db.execute(
                """
                SELECT doc_id, batch_key, content_hash, signature FROM docs
                WHERE batch_key IN (SELECT value FROM json_each(:batches)) AND id IN (
                    SELECT id FROM docs
                    WHERE content_hash IN (SELECT value FROM json_each(:hashes))
                    UNION
                    SELECT doc FROM bands WHERE key IN (SELECT value FROM json_each(:keys))
                )
                ORDER BY doc_id
                """,
                {
                    "batches": json.dumps(earlier),
                    "hashes": json.dumps(list(hashes)),
                    "keys": json.dumps(keys),
                },
            ).fetchall()
        if not rows:
            return empty
        return PriorDocuments(
            doc_ids=[r[0] for r in rows],
            batch_keys=[r[1] for r in rows],
            hashes=[r[2] for r in rows],
            signatures=np.frombuffer(b"".join(r[3] for r in rows), dtype=np.uint32).reshape(
                len(rows), -1
            ),
        )

    def batch_counts(self) -> dict[str, int]:
        """Documents indexed per batch."""
        with closing(self._connect()) as db:
            return dict(db.execute("SELECT batch_key, COUNT(*) FROM docs GROUP BY batch_key"))

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the index for one batch from its first lookup to its last insert."""
        fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)


def set_aside(path: Path) -> Path:
    """Move an index file SQLite cannot read (and its WAL and shared-memory files)
    aside as ``<name>.corrupt-<UTC time>``, for a person to inspect; returns the
    new path. The next `DedupIndex` starts empty and is rebuilt from the clean
    shards (`curate.clean.reconcile_index`)."""
    path = Path(path)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    for suffix in ("", "-wal", "-shm"):
        part = Path(f"{path}{suffix}")
        if part.exists():
            os.replace(part, Path(f"{aside}{suffix}"))
    return aside


_PG_DDL = """
CREATE TABLE IF NOT EXISTS {s}.meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS {s}.docs (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    doc_id TEXT NOT NULL UNIQUE,
    batch_key TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    signature BYTEA NOT NULL
);
CREATE INDEX IF NOT EXISTS docs_by_batch ON {s}.docs (batch_key);
CREATE INDEX IF NOT EXISTS docs_by_hash ON {s}.docs (content_hash);
CREATE TABLE IF NOT EXISTS {s}.bands (
    key BIGINT NOT NULL,
    doc BIGINT NOT NULL REFERENCES {s}.docs (id) ON DELETE CASCADE,
    PRIMARY KEY (key, doc)
);
CREATE INDEX IF NOT EXISTS bands_by_doc ON {s}.bands (doc);
"""

DEFAULT_SCHEMA = "llama_dedup"


def postgres_dsn(url: str) -> str:
    """A libpq URL from a SQLAlchemy-style one (``postgresql+psycopg2://``)."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme.split('+', 1)[0]}{sep}{rest}"


class PostgresDedupIndex(DedupIndex):
    """The same index in PostgreSQL (schema `schema`), shared by every run worker."""

    def __init__(
        self,
        url: str,
        num_perm: int = DEFAULT_NUM_PERM,
        bands: int = DEFAULT_BANDS,
        rows: int = DEFAULT_ROWS,
        schema: str = DEFAULT_SCHEMA,
    ) -> None:
        self.url, self.schema = postgres_dsn(url), schema
        self.path = Path(schema)  # shown in messages and metadata as its name
        self.num_perm, self.bands, self.rows = num_perm, bands, rows
        params = f"v{SCHEMA_VERSION}:perm={num_perm}:bands={bands}x{rows}"
        with self._transaction() as cur:
            # Serialise concurrent first openings (CREATE ... IF NOT EXISTS races).
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (self._lock_key,))
            cur.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
            cur.execute(_PG_DDL.format(s=schema))
            cur.execute(f"SELECT value FROM {schema}.meta WHERE key = 'params'")
            found = cur.fetchone()
            if found is not None and found[0] != params:
                raise ValueError(
                    f"the dedup index {schema} was built with {found[0]}, not {params}: "
                    "signatures are incomparable; drop the schema and re-materialise clean_shards"
                )
            cur.execute(
                f"INSERT INTO {schema}.meta VALUES ('params', %s) "
                "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                (params,),
            )

    def __str__(self) -> str:
        return f"postgres schema {self.schema}"

    @property
    def _lock_key(self) -> int:
        return zlib.crc32(f"llama-dedup-index:{self.schema}".encode())

    def _connect(self):
        import psycopg2

        return psycopg2.connect(self.url)

    @contextlib.contextmanager
    def _transaction(self):
        db = self._connect()
        try:
            with db, db.cursor() as cur:
                yield cur
        finally:
            db.close()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        # A session-level advisory lock on its own connection: released when the
        # batch is done, or by the server when the worker dies.
        db = self._connect()
        db.autocommit = True
        try:
            with db.cursor() as cur:
                cur.execute("SELECT pg_advisory_lock(%s)", (self._lock_key,))
            yield
        finally:
            db.close()

    def replace_batch(
        self,
        batch_key: str,
        doc_ids: Sequence[str],
        hashes: Sequence[str],
        signatures: np.ndarray,
        *,
        keep_existing: bool = False,
    ) -> None:
        signatures = np.ascontiguousarray(signatures, dtype=np.uint32)
        s = self.schema
        with self._transaction() as cur:
            if not keep_existing:
                cur.execute(f"DELETE FROM {s}.docs WHERE batch_key = %s", (batch_key,))
            if not len(doc_ids):
                return
            # doc_ids are unique across batches: a duplicate raises (IntegrityError).
            cur.execute(
                f"INSERT INTO {s}.docs (doc_id, batch_key, content_hash, signature) "
                "SELECT d, %s, h, g FROM unnest(%s::text[], %s::text[], %s::bytea[]) AS t(d, h, g) "
                "RETURNING id, doc_id",
                (batch_key, list(doc_ids), list(hashes), [bytes(x) for x in signatures]),
            )
            id_of = dict((doc, i) for i, doc in cur.fetchall())
            ids = np.asarray([id_of[d] for d in doc_ids], dtype=np.int64)
            keys = self._keys(signatures).ravel()
            docs = np.repeat(ids, self.bands)
            cur.execute(
                f"INSERT INTO {s}.bands (key, doc) "
                "SELECT * FROM unnest(%s::bigint[], %s::bigint[]) ON CONFLICT DO NOTHING",
                (keys.tolist(), docs.tolist()),
            )

    def lookup(
        self,
        hashes: Sequence[str],
        signatures: np.ndarray,
        earlier_batches: Iterable[str],
    ) -> PriorDocuments:
        earlier = list(dict.fromkeys(earlier_batches))
        signatures = np.ascontiguousarray(signatures, dtype=np.uint32)
        empty = PriorDocuments([], [], [], np.zeros((0, self.num_perm), np.uint32))
        if not earlier or len(hashes) == 0:
            return empty
        keys = np.unique(self._keys(signatures)).tolist()
        s = self.schema
        with self._transaction() as cur:
            # COLLATE "C": the byte order SQLite uses, so survivors are the same.
            cur.execute(
                f"""
                SELECT doc_id, batch_key, content_hash, signature FROM {s}.docs
                WHERE batch_key = ANY(%(batches)s) AND id IN (
                    SELECT id FROM {s}.docs WHERE content_hash = ANY(%(hashes)s)
                    UNION
                    SELECT doc FROM {s}.bands WHERE key = ANY(%(keys)s)
                )
                ORDER BY doc_id COLLATE "C"
                """,
                {"batches": earlier, "hashes": list(hashes), "keys": keys},
            )
            rows = cur.fetchall()
        if not rows:
            return empty
        return PriorDocuments(
            doc_ids=[r[0] for r in rows],
            batch_keys=[r[1] for r in rows],
            hashes=[r[2] for r in rows],
            signatures=np.frombuffer(b"".join(bytes(r[3]) for r in rows), dtype=np.uint32).reshape(
                len(rows), -1
            ),
        )

    def batch_counts(self) -> dict[str, int]:
        with self._transaction() as cur:
            cur.execute(f"SELECT batch_key, COUNT(*) FROM {self.schema}.docs GROUP BY batch_key")
            return dict(cur.fetchall())


def open_dedup_index(target: str | Path, schema: str = DEFAULT_SCHEMA) -> DedupIndex:
    """The index at `target`: a ``postgresql://`` URL (tables in `schema`), or a
    local SQLite file."""
    text = str(target)
    if text.startswith(("postgresql://", "postgres://", "postgresql+")):
        return PostgresDedupIndex(text, schema=schema)
    return DedupIndex(Path(text))

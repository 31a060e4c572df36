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
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from llama_assets.curate.dedup import DEFAULT_BANDS, DEFAULT_NUM_PERM, DEFAULT_ROWS, band_keys

SCHEMA_VERSION = 1

_DDL = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS docs (
    doc_id TEXT PRIMARY KEY,
    batch_key TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    signature BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS docs_by_batch ON docs (batch_key);
CREATE INDEX IF NOT EXISTS docs_by_hash ON docs (content_hash);
CREATE TABLE IF NOT EXISTS bands (
    band INTEGER NOT NULL,
    key INTEGER NOT NULL,
    doc_id TEXT NOT NULL,
    batch_key TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS bands_by_key ON bands (band, key);
CREATE INDEX IF NOT EXISTS bands_by_batch ON bands (batch_key);
"""


@dataclass
class PriorDocuments:
    """Entries of earlier batches that may duplicate the current documents."""

    doc_ids: list[str]
    batch_keys: list[str]
    hashes: list[str]
    signatures: np.ndarray


class DedupIndex:
    """Handle on the index file; every method opens its own connection."""

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
        with closing(self._connect()) as db, db:
            db.executescript(_DDL)
            params = f"v{SCHEMA_VERSION}:perm={num_perm}:bands={bands}x{rows}"
            found = db.execute("SELECT value FROM meta WHERE key='params'").fetchone()
            if found is None:
                db.execute("INSERT INTO meta VALUES ('params', ?)", (params,))
            elif found[0] != params:
                raise ValueError(
                    f"{self.path} was built with {found[0]}, not {params}: signatures are "
                    "incomparable; delete the file and re-materialise clean_shards"
                )

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=60)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        return db

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
        instead (a batch written shard by shard).
        """
        signatures = np.ascontiguousarray(signatures, dtype=np.uint32)
        keys = band_keys(signatures, self.bands, self.rows).view(np.int64)
        with closing(self._connect()) as db, db:
            if not keep_existing:
                db.execute("DELETE FROM docs WHERE batch_key = ?", (batch_key,))
                db.execute("DELETE FROM bands WHERE batch_key = ?", (batch_key,))
            db.executemany(
                "INSERT OR REPLACE INTO docs VALUES (?, ?, ?, ?)",
                (
                    (d, batch_key, h, s.tobytes())
                    for d, h, s in zip(doc_ids, hashes, signatures, strict=True)
                ),
            )
            db.executemany(
                "INSERT INTO bands VALUES (?, ?, ?, ?)",
                (
                    (band, int(keys[i, band]), doc_id, batch_key)
                    for i, doc_id in enumerate(doc_ids)
                    for band in range(self.bands)
                ),
            )

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
        keys = band_keys(signatures, self.bands, self.rows).view(np.int64)
        with closing(self._connect()) as db:
            db.execute("CREATE TEMP TABLE q_batches (batch_key TEXT PRIMARY KEY)")
            db.execute("CREATE TEMP TABLE q_hashes (content_hash TEXT PRIMARY KEY)")
            db.execute("CREATE TEMP TABLE q_bands (band INTEGER, key INTEGER)")
            db.executemany("INSERT INTO q_batches VALUES (?)", ((b,) for b in earlier))
            db.executemany("INSERT OR IGNORE INTO q_hashes VALUES (?)", ((h,) for h in hashes))
            db.executemany(
                "INSERT INTO q_bands VALUES (?, ?)",
                ((band, int(key)) for row in keys for band, key in enumerate(row.tolist())),
            )
            rows = db.execute(
                """
                SELECT d.doc_id, d.batch_key, d.content_hash, d.signature FROM docs d
                WHERE d.batch_key IN (SELECT batch_key FROM q_batches) AND d.doc_id IN (
                    SELECT doc_id FROM docs
                    WHERE content_hash IN (SELECT content_hash FROM q_hashes)
                    UNION
                    SELECT b.doc_id FROM q_bands q JOIN bands b ON b.band = q.band AND b.key = q.key
                )
                ORDER BY d.doc_id
                """
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

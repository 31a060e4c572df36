"""The embedding cache: a chunk is embedded once per model, whatever batch it is in.

Keyed by the embedder's fingerprint (its files and encode settings) and the
sha256 of the chunk text, so re-materialising a batch whose text did not change
embeds nothing, a batch where 1% of the documents changed embeds only their
new chunks, and a chunk that moves between batches or documents keeps its
vector. It lives under the data root at ``cache/embeddings/`` as a LanceDB
database with one table per model fingerprint (``m_<fingerprint>``): columns
``text_sha256`` and ``vector``. Inserts merge on the key, so two runs that embed
the same text concurrently cannot duplicate it. Deleting the folder is always
safe: the next run re-embeds what it needs.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from llama_assets.base.store import Location
from llama_assets.retrieval.chunking import text_hash
from llama_assets.retrieval.index import connect

if TYPE_CHECKING:
    import lancedb

LOOKUP_GROUP = 1000  # keys per ``IN (...)`` lookup
_SHA256 = re.compile(r"[0-9a-f]{64}")


def cache_schema(dim: int) -> pa.Schema:
    return pa.schema([("text_sha256", pa.string()), ("vector", pa.list_(pa.float32(), dim))])


@dataclass
class EmbeddingCache:
    uri: Location | Path | str
    fingerprint: str
    dim: int

    def __post_init__(self) -> None:
        self._table = connect(self.uri).create_table(
            f"m_{self.fingerprint}", schema=cache_schema(self.dim), exist_ok=True
        )

    @property
    def table(self) -> lancedb.table.Table:
        return self._table

    def lookup(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        """The cached vectors among ``keys``."""
        found: dict[str, np.ndarray] = {}
        unique = sorted(set(keys))
        bad = [k for k in unique if not _SHA256.fullmatch(k)]
        if bad:
            # Keys go into a filter string: only hex digests are allowed there.
            raise ValueError(f"embedding cache keys must be sha256 hex digests, got {bad[0]!r}")
        if not unique or self._table.count_rows() == 0:
            return found
        for i in range(0, len(unique), LOOKUP_GROUP):
            group = unique[i : i + LOOKUP_GROUP]
            where = "text_sha256 IN (" + ",".join(f"'{k}'" for k in group) + ")"
            rows = self._table.search().where(where).limit(len(group)).to_arrow()
            vectors = rows.column("vector").combine_chunks().flatten().to_numpy()
            vectors = vectors.reshape(-1, self.dim)
            for key, vector in zip(rows.column("text_sha256").to_pylist(), vectors, strict=True):
                found[key] = vector
        return found

    def add(self, keys: Sequence[str], vectors: np.ndarray) -> None:
        if not len(keys):
            return
        rows = pa.table(
            {
                "text_sha256": pa.array(list(keys), pa.string()),
                "vector": pa.FixedSizeListArray.from_arrays(
                    pa.array(np.ascontiguousarray(vectors, np.float32).ravel()), self.dim
                ),
            }
        )
        (self._table.merge_insert("text_sha256").when_not_matched_insert_all().execute(rows))

    def __len__(self) -> int:
        return self._table.count_rows()


@dataclass(frozen=True)
class EmbedResult:
    vectors: np.ndarray
    embedded: int  # chunks actually sent to the model
    cached: int  # chunks whose vector came from the cache
    unique_texts: int


def embed_with_cache(
    texts: Sequence[str],
    cache: EmbeddingCache,
    encode: Callable[[list[str]], np.ndarray],
) -> EmbedResult:
    """Vectors for ``texts`` (input order): cached ones looked up, the rest encoded
    (each distinct text once, sorted by length by ``encode``) and added to the cache."""
    keys = [text_hash(t) for t in texts]
    found = cache.lookup(keys)
    missing: dict[str, str] = {}
    for key, text in zip(keys, texts, strict=True):
        if key not in found and key not in missing:
            missing[key] = text
    if missing:
        new = encode(list(missing.values()))
        cache.add(list(missing), new)
        found.update(zip(missing, new, strict=True))
    vectors = (
        np.stack([found[k] for k in keys]).astype(np.float32, copy=False)
        if keys
        else np.zeros((0, cache.dim), np.float32)
    )
    cached = sum(1 for k in keys if k not in missing)
    return EmbedResult(vectors, embedded=len(missing), cached=cached, unique_texts=len(set(keys)))

"""Deduplication of one batch against itself and every earlier batch.

The dedup index of a batch (doc_id, content hash, MinHash signature of each
surviving document) is kept beside its shards, so a later batch is compared
with all earlier survivors without re-reading or re-hashing their text.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from llama_assets.curate.dedup import (
    DedupDecision,
    content_hash,
    find_duplicates,
    minhash_signatures,
)

NUM_PERM = 128


@dataclass
class DedupOutcome:
    kept: pl.DataFrame
    decisions: list[DedupDecision]
    index: pl.DataFrame  # doc_id, content_hash, signature of the kept documents


def empty_index() -> pl.DataFrame:
    return pl.DataFrame(
        schema={
            "doc_id": pl.String,
            "content_hash": pl.String,
            "signature": pl.Array(pl.UInt32, NUM_PERM),
        }
    )


def deduplicate(docs: pl.DataFrame, prior_index: pl.DataFrame) -> DedupOutcome:
    texts = docs["text"].to_list()
    doc_ids = docs["doc_id"].to_list()
    hashes = [content_hash(t) for t in texts]
    signatures = (
        minhash_signatures(texts, num_perm=NUM_PERM)
        if texts
        else np.zeros((0, NUM_PERM), dtype=np.uint32)
    )
    prior_signatures = (
        prior_index["signature"].to_numpy().astype(np.uint32) if prior_index.height else None
    )
    decisions = find_duplicates(
        doc_ids,
        hashes,
        signatures,
        prior_doc_ids=prior_index["doc_id"].to_list(),
        prior_hashes=prior_index["content_hash"].to_list(),
        prior_signatures=prior_signatures,
    )
    removed = {d.doc_id for d in decisions}
    keep_mask = np.array([d not in removed for d in doc_ids], dtype=bool)
    index = pl.DataFrame(
        {
            "doc_id": [d for d, k in zip(doc_ids, keep_mask, strict=True) if k],
            "content_hash": [h for h, k in zip(hashes, keep_mask, strict=True) if k],
            "signature": signatures[keep_mask] if len(doc_ids) else signatures,
        },
        schema=empty_index().schema,
    )
    return DedupOutcome(docs.filter(pl.Series(keep_mask)), decisions, index)

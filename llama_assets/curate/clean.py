"""Deduplication of one batch, part by part, against the persistent index.

Each part of the validated table is hashed and MinHashed (the costly part,
independent per part, so it runs in worker processes: `fingerprint_part`),
its candidates are looked up in the persistent `DedupIndex` (earlier batches, plus this batch's
parts already processed), verified, and its survivors are added to the index
under this batch's key before the next part. Memory is bounded by one part
plus its candidates, whatever the batch or corpus size.

Which copy survives is fixed: the earliest batch, then (within a batch) the
earlier part, then the smallest doc_id. A re-materialised batch first forgets
its own entries, so it is never deduplicated against its own earlier copy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from llama_assets.curate.dedup import (
    DedupDecision,
    find_duplicates,
    fingerprints,
)
from llama_assets.curate.dedup_index import DedupIndex

NUM_PERM = 128


@dataclass
class DedupStats:
    input_rows: int = 0
    kept_rows: int = 0
    candidates_from_index: int = 0
    decisions: list[DedupDecision] = field(default_factory=list)
    later_batches_with_duplicates: set[str] = field(default_factory=set)
    """Later batches, indexed before this one, holding copies of its survivors."""

    @property
    def exact(self) -> int:
        return sum(d.reason == "exact_duplicate" for d in self.decisions)

    @property
    def near(self) -> int:
        return len(self.decisions) - self.exact


@dataclass
class FingerprintedPart:
    """A part of the validated table with each document's content hash and
    MinHash signature (computed in a worker process; see `fingerprint_part`)."""

    docs: pl.DataFrame
    hashes: list[str]
    signatures: np.ndarray


def fingerprint_part(docs: pl.DataFrame) -> FingerprintedPart:
    """The expensive, independent half of deduplicating a part."""
    hashes, signatures = fingerprints(docs["text"].to_list(), num_perm=NUM_PERM)
    return FingerprintedPart(docs, hashes, signatures)


def deduplicate_part(
    part: pl.DataFrame | FingerprintedPart,
    index: DedupIndex,
    batch_key: str,
    batch_order: Sequence[str],
    stats: DedupStats,
    later_batches: Sequence[str] = (),
) -> pl.DataFrame:
    """The surviving rows of one part; records decisions in `stats` and adds the
    survivors to `index` under `batch_key`.

    `batch_order` is every batch that counts as earlier, oldest first, ending
    with `batch_key` itself (whose entries are this batch's earlier parts).
    `later_batches` (arrived after this one) are checked for copies of the
    survivors, which they only hold when they were deduplicated first.
    """
    if isinstance(part, pl.DataFrame):
        part = fingerprint_part(part)
    docs, hashes, signatures = part.docs, part.hashes, part.signatures
    doc_ids = docs["doc_id"].to_list()
    prior = index.lookup(hashes, signatures, batch_order)
    order = {k: i for i, k in enumerate(batch_order)}
    decisions = find_duplicates(
        doc_ids,
        hashes,
        signatures,
        prior_doc_ids=prior.doc_ids,
        prior_hashes=prior.hashes,
        prior_signatures=prior.signatures if prior.doc_ids else None,
        prior_ranks=[(order[b], d) for b, d in zip(prior.batch_keys, prior.doc_ids, strict=True)],
    )
    removed = {d.doc_id for d in decisions}
    keep = np.array([d not in removed for d in doc_ids], dtype=bool)
    survivors = FingerprintedPart(
        docs.filter(pl.Series(keep)),
        [h for h, k in zip(hashes, keep, strict=True) if k],
        signatures[keep],
    )
    index.replace_batch(
        batch_key,
        survivors.docs["doc_id"].to_list(),
        survivors.hashes,
        survivors.signatures,
        keep_existing=True,
    )
    if later_batches:
        stats.later_batches_with_duplicates |= later_duplicate_batches(
            survivors, index, later_batches
        )
    stats.input_rows += docs.height
    stats.kept_rows += survivors.docs.height
    stats.candidates_from_index += len(prior.doc_ids)
    stats.decisions.extend(decisions)
    return survivors.docs


def deduplicate_batch(
    parts: Iterable[pl.DataFrame | FingerprintedPart],
    index: DedupIndex,
    batch_key: str,
    earlier_batches: Sequence[str],
    stats: DedupStats,
    later_batches: Sequence[str] = (),
) -> Iterator[tuple[pl.DataFrame, pl.DataFrame]]:
    """(part, its survivors) for each part of a batch, in order (see the module
    docstring). Parts may come fingerprinted already (`fingerprint_part`)."""
    order = [*[b for b in earlier_batches if b != batch_key], batch_key]
    # One batch at a time holds the index, whichever worker runs it.
    with index.exclusive():
        index.forget_batch(batch_key)
        for part in parts:
            kept = deduplicate_part(part, index, batch_key, order, stats, later_batches)
            yield (part.docs if isinstance(part, FingerprintedPart) else part), kept


def later_duplicate_batches(
    survivors: FingerprintedPart, index: DedupIndex, later_batches: Sequence[str]
) -> set[str]:
    """Later batches whose indexed documents duplicate one of `survivors`.

    Batches are deduplicated in arrival order when they run in order; when a
    later batch ran first, its copies of an earlier batch's documents were
    kept, but the earliest copy must survive, so that batch needs
    deduplicating again (sensors/dedup_order.py requests it).
    """
    found = index.lookup(survivors.hashes, survivors.signatures, later_batches)
    if not found.doc_ids:
        return set()
    ours = survivors.docs["doc_id"].to_list()
    decisions = find_duplicates(
        found.doc_ids,
        found.hashes,
        found.signatures,
        prior_doc_ids=ours,
        prior_hashes=survivors.hashes,
        prior_signatures=survivors.signatures,
    )
    batch_of = dict(zip(found.doc_ids, found.batch_keys, strict=True))
    mine = set(ours)
    # Only copies of our documents: later documents may also match each other.
    return {batch_of[d.doc_id] for d in decisions if d.cluster_id in mine}


def reconcile_index(
    index: DedupIndex,
    expected_rows: dict[str, int | None],
    reindex: Callable[[str], Iterable[FingerprintedPart]],
) -> dict[str, str]:
    """Make the index hold what the clean shards hold, for the batches given.

    The index is derived data: each batch's entries are its clean shards'
    documents. If it was lost (deleted, or corrupt and set aside), a batch
    deduplicated against it would admit duplicates of earlier batches silently.
    So `expected_rows` (the row count of each batch's clean-shard manifest, None
    for a batch without clean shards) is compared with the entries per batch:
    a batch short or over is re-indexed from its shards (`reindex(key)` yields
    them fingerprinted), one with entries but no shards is forgotten. Returns
    what was done, per batch, in words.
    """
    counts = index.batch_counts()
    done: dict[str, str] = {}
    for key, rows in expected_rows.items():
        have = counts.get(key, 0)
        if rows is None:
            if have:
                index.forget_batch(key)
                done[key] = f"forgot {have} entries: the batch has no clean shards"
            continue
        if have == rows:
            continue
        index.forget_batch(key)
        for part in reindex(key):
            index.replace_batch(
                key,
                part.docs["doc_id"].to_list(),
                part.hashes,
                part.signatures,
                keep_existing=True,
            )
        done[key] = f"re-indexed {rows} documents from its clean shards (the index held {have})"
    return done

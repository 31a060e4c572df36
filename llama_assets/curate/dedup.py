"""Exact and near-duplicate detection: content hashes, MinHash and LSH.

Duplicates waste training compute and make a model memorise; near duplicates
(the same page with a changed date, a mirrored article) are most of them on
real corpora. Exact duplicates are found by a hash of normalised text. Near
duplicates by MinHash over word 5-grams (Broder 1997; the recipe of Gopher,
RefinedWeb and FineWeb), with LSH banding to find candidate pairs without
comparing all pairs, and a verification of each candidate's estimated Jaccard
similarity against the threshold, so that LSH only decides what is compared,
never what is removed.

Banding: with b bands of r rows, a pair with Jaccard J becomes a candidate
with probability 1 - (1 - J**r)**b. `datasketch`'s choice for threshold 0.8
with 128 permutations, 9 bands x 13 rows, catches only ~20% of pairs at
J=0.75 and ~45% at J=0.8 (see FACTS.md). We use 16 bands x 8 rows (all 128
permutations): J=0.9 -> 99.9%, J=0.8 -> 94.7%, J=0.75 -> 81.5%, while a pair at
J=0.5 becomes a candidate only 6% of the time and is then rejected by
verification, so the extra candidates cost little.

Everything is deterministic across processes and machines: word hashes are
CRC-32 (not Python's salted `hash()`), and the permutations come from
`np.random.default_rng(seed)`. Signatures of earlier batches stay comparable
as long as `num_perm`, `ngram` and `seed` do not change.
"""

from __future__ import annotations

import hashlib
import itertools
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_NUM_PERM = 128
"""MinHash permutations: the standard error of an estimated Jaccard J is
sqrt(J(1-J)/num_perm), about 0.035 at J=0.8."""

DEFAULT_NGRAM = 5
"""Shingle size in words (Gopher, RefinedWeb and FineWeb use 5-grams)."""

DEFAULT_SEED = 1
"""Seed of the permutations; changing it makes old signatures incomparable."""

DEFAULT_BANDS = 16
DEFAULT_ROWS = 8
"""LSH banding: 16 bands x 8 rows; see the module docstring for the choice."""

DEFAULT_THRESHOLD = 0.8
"""Estimated Jaccard similarity of 5-gram sets from which a pair is a near duplicate."""

CHUNK_SHINGLES = 16_384
"""Shingles hashed per vectorised step: bounds the (shingles x num_perm)
uint64 working array to ~16 MiB at 128 permutations."""

FINGERPRINT_CHUNK = 2_048
"""Texts shingled together (see `fingerprints`)."""

_SHIFT_32 = np.uint64(32)
_NON_WORD = re.compile(r"[^\w\s]+")
_ASCII_NON_WORD = bytes(c for c in range(128) if _NON_WORD.match(chr(c)))
# Fixed odd 64-bit multipliers that weight a word by its position in a shingle.
_POSITION_MULTIPLIERS = np.array(
    [
        0x9E3779B97F4A7C15,
        0xC2B2AE3D27D4EB4F,
        0x165667B19E3779F9,
        0xD6E8FEB86659FD93,
        0xFF51AFD7ED558CCD,
        0xC4CEB9FE1A85EC53,
        0x85EBCA77C2B2AE63,
        0xA0761D6478BD642F,
    ],
    dtype=np.uint64,
)


def normalise_for_hash(text: str) -> str:
    """Text reduced to what makes two documents "the same" content.

    Case-folded, punctuation and symbols removed, whitespace collapsed, so that
    re-wrapped, re-cased or re-punctuated copies hash alike.
    """
    folded = text.lower() if text.isascii() else text.casefold()
    # ASCII punctuation is deleted on the UTF-8 bytes (fast, in C; UTF-8
    # multi-byte sequences hold no ASCII bytes); the regex, only needed for
    # non-ASCII punctuation, then runs on what is left.
    stripped = (
        folded.encode("utf-8", "surrogatepass")
        .translate(None, _ASCII_NON_WORD)
        .decode("utf-8", "surrogatepass")
    )
    if not stripped.isascii():
        stripped = _NON_WORD.sub("", stripped)
    return " ".join(stripped.split())


def content_hash(text: str) -> str:
    """Hash of the normalised text (sha256, first 32 hex characters)."""
    return _hash_normalised(normalise_for_hash(text))


def _hash_normalised(normalised: str) -> str:
    return hashlib.sha256(normalised.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: spreads CRC-32 based hashes over 64 bits."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _shingles(normalised: Sequence[str], ngram: int) -> tuple[np.ndarray, np.ndarray]:
    """64-bit hashes of the word n-grams of every (normalised) text, concatenated,
    and the number of shingles of each text.

    A shingle combines the CRC-32 of its words, weighted by position. The words
    of all texts are hashed as one array and the n-grams are formed across it;
    n-grams that would span two texts are dropped. A text shorter than `ngram`
    words is one shingle of all its words; an empty text has none.
    """
    if ngram > len(_POSITION_MULTIPLIERS):
        raise ValueError(f"ngram must be at most {len(_POSITION_MULTIPLIERS)}")
    words = [text.encode("utf-8", "surrogatepass").split() for text in normalised]
    lengths = np.fromiter(map(len, words), dtype=np.int64, count=len(words))
    flat = np.fromiter(
        map(zlib.crc32, itertools.chain.from_iterable(words)),
        dtype=np.uint64,
        count=int(lengths.sum()),
    )
    # width[i]: the shingle width of text i; first[i]: index of its first word.
    width = np.minimum(lengths, ngram)
    first = np.cumsum(lengths) - lengths
    counts = np.where(lengths > 0, lengths - width + 1, 0)
    # Start word of every shingle, in text order.
    starts = np.repeat(first, counts) + (
        np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    )
    widths = np.repeat(width, counts).astype(np.uint64)
    combined = np.zeros(len(starts), dtype=np.uint64)
    padded = np.concatenate([flat, np.zeros(ngram, dtype=np.uint64)])
    for k in range(ngram):
        # Words past a short text's width must not count: weight them by 0.
        weight = np.where(widths > k, _POSITION_MULTIPLIERS[k], np.uint64(0))
        combined += padded[starts + k] * weight
    # Shingles of different widths (short texts) must not collide with each other.
    combined += widths
    return _mix64(combined), counts


def shingle_hashes(text: str, ngram: int = DEFAULT_NGRAM) -> np.ndarray:
    """64-bit hashes of the word n-grams of `text` (normalised as for hashing)."""
    return _shingles([normalise_for_hash(text)], ngram)[0]


def _permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Multiply-shift hash parameters: odd multipliers a, offsets b (uint64)."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 2**64, size=num_perm, dtype=np.uint64) | np.uint64(1)
    b = rng.integers(0, 2**64, size=num_perm, dtype=np.uint64)
    return a, b


def _signatures(shingles: np.ndarray, counts: np.ndarray, num_perm: int, seed: int) -> np.ndarray:
    """MinHash signatures from concatenated shingles (see `minhash_signatures`)."""
    a, b = _permutations(num_perm, seed)
    out = np.full((len(counts), num_perm), np.iinfo(np.uint64).max, dtype=np.uint64)
    owner = np.repeat(np.arange(len(counts)), counts)
    # Chunks of ~CHUNK_SHINGLES shingles bound the (num_perm, shingles) array.
    for start in range(0, len(shingles), CHUNK_SHINGLES):
        piece = shingles[start : start + CHUNK_SHINGLES]
        owners = owner[start : start + CHUNK_SHINGLES]
        # (num_perm, shingles) layout: reducing along the contiguous axis is
        # ~6x faster than the transposed one.
        hashed = a[:, None] * piece[None, :]
        hashed += b[:, None]
        bounds = np.flatnonzero(np.diff(owners, prepend=-1))
        # The minimum of the full 64-bit value has the minimal top 32 bits too.
        mins = np.minimum.reduceat(hashed, bounds, axis=1)
        rows = owners[bounds]
        out[rows] = np.minimum(out[rows], mins.T)
    return (out >> _SHIFT_32).astype(np.uint32)


def minhash_signatures(
    texts: Sequence[str],
    num_perm: int = DEFAULT_NUM_PERM,
    ngram: int = DEFAULT_NGRAM,
    seed: int = DEFAULT_SEED,
) -> np.ndarray:
    """MinHash signatures of `texts`, shape (len(texts), num_perm), uint32.

    Permutation i maps a shingle hash x to (a_i * x + b_i) mod 2**64 >> 32
    (multiply-shift). A text without words gets all-ones (0xFFFFFFFF) signatures.
    """
    return fingerprints(texts, num_perm, ngram, seed)[1]


def fingerprints(
    texts: Sequence[str],
    num_perm: int = DEFAULT_NUM_PERM,
    ngram: int = DEFAULT_NGRAM,
    seed: int = DEFAULT_SEED,
) -> tuple[list[str], np.ndarray]:
    """`content_hash` and `minhash_signatures` of every text, normalising each once.

    Texts are shingled FINGERPRINT_CHUNK at a time: their word lists and
    shingle arrays are the working memory."""
    hashes: list[str] = []
    signatures = [np.zeros((0, num_perm), dtype=np.uint32)]
    for start in range(0, len(texts), FINGERPRINT_CHUNK):
        normalised = [normalise_for_hash(t) for t in texts[start : start + FINGERPRINT_CHUNK]]
        hashes.extend(_hash_normalised(n) for n in normalised)
        signatures.append(_signatures(*_shingles(normalised, ngram), num_perm, seed))
    return hashes, np.concatenate(signatures)


def _band_keys(band: np.ndarray) -> np.ndarray:
    """One 64-bit key per row of a (n, rows) uint32 band."""
    key = np.zeros(band.shape[0], dtype=np.uint64)
    for column in band.T:
        key = _mix64(key ^ column.astype(np.uint64))
    return key


def band_keys(
    signatures: np.ndarray, bands: int = DEFAULT_BANDS, rows: int = DEFAULT_ROWS
) -> np.ndarray:
    """The LSH band keys of each signature, shape (n, bands), uint64.

    Two documents are an LSH candidate pair when any column matches; the keys
    are what the persistent dedup index stores and looks up.
    """
    signatures = np.asarray(signatures)
    if signatures.ndim != 2 or bands * rows > signatures.shape[1]:
        raise ValueError(
            f"need a 2-d array with at least bands*rows={bands * rows} columns, "
            f"got shape {signatures.shape}"
        )
    out = np.empty((signatures.shape[0], bands), dtype=np.uint64)
    for band in range(bands):
        out[:, band] = _band_keys(signatures[:, band * rows : (band + 1) * rows])
    return out


def near_duplicate_pairs(
    signatures: np.ndarray, bands: int = DEFAULT_BANDS, rows: int = DEFAULT_ROWS
) -> set[tuple[int, int]]:
    """Candidate pairs (i < j) that share at least one LSH band.

    Candidates still need verification (`estimated_jaccard`): a shared band
    makes a pair likely, not certain, to be similar.
    """
    signatures = np.asarray(signatures)
    if signatures.ndim != 2 or bands * rows > signatures.shape[1]:
        raise ValueError(
            f"need a 2-d array with at least bands*rows={bands * rows} columns, "
            f"got shape {signatures.shape}"
        )
    pairs: set[tuple[int, int]] = set()
    if signatures.shape[0] < 2:
        return pairs
    for band_index in range(bands):
        keys = _band_keys(signatures[:, band_index * rows : (band_index + 1) * rows])
        order = np.argsort(keys, kind="stable")
        sorted_keys = keys[order]
        # Runs of equal keys: boundaries where the key changes.
        change = np.flatnonzero(sorted_keys[1:] != sorted_keys[:-1]) + 1
        bounds = np.concatenate(([0], change, [len(keys)]))
        sizes = np.diff(bounds)
        for start, size in zip(bounds[:-1][sizes > 1], sizes[sizes > 1], strict=True):
            members = sorted(order[start : start + size].tolist())
            pairs.update(itertools.combinations(members, 2))
    return pairs


def estimated_jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> float:
    """Share of equal MinHash values: an unbiased estimate of Jaccard similarity."""
    return float(np.mean(np.asarray(sig_a) == np.asarray(sig_b)))


@dataclass(frozen=True)
class DedupDecision:
    """A removed document: what it duplicates and which cluster it belongs to.

    `duplicate_of` is the document it matched (the exact copy, or the verified
    near neighbour with the highest similarity); `cluster_id` is the doc_id of
    the cluster's survivor. `reason` is "exact_duplicate" or "near_duplicate".
    """

    doc_id: str
    duplicate_of: str
    cluster_id: str
    reason: str


class _UnionFind:
    def __init__(self, size: int) -> None:
        self.parent = list(range(size))

    def find(self, node: int) -> int:
        root = node
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[node] != root:
            self.parent[node], node = root, self.parent[node]
        return root

    def union(self, x: int, y: int) -> None:
        rx, ry = self.find(x), self.find(y)
        if rx != ry:
            self.parent[max(rx, ry)] = min(rx, ry)


def find_duplicates(
    doc_ids: Sequence[str],
    hashes: Sequence[str],
    signatures: np.ndarray,
    *,
    prior_doc_ids: Sequence[str] = (),
    prior_hashes: Sequence[str] = (),
    prior_signatures: np.ndarray | None = None,
    prior_ranks: Sequence[tuple] | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    bands: int = DEFAULT_BANDS,
    rows: int = DEFAULT_ROWS,
) -> list[DedupDecision]:
    """Which documents of the current batch to remove as duplicates.

    A current document is removed when it is an exact duplicate (same
    `content_hash`) or a near duplicate (LSH candidate whose estimated Jaccard
    is >= `threshold`) of a prior document - from an earlier batch; prior
    documents always survive - or of another current document. Duplicates form
    clusters (transitively, by union-find); a cluster with a prior document
    keeps only prior documents, otherwise it keeps the current document with
    the smallest doc_id. Among prior documents the survivor is the one with
    the smallest `prior_ranks` entry (pass (batch arrival index, doc_id) for
    "earliest batch, then smallest doc_id"); by default the smallest doc_id.
    Decisions come sorted by doc_id.

    `prior_*` must not contain the current batch's documents (pass the other
    batches when re-materialising one), else every document would duplicate
    itself; overlapping ids raise ValueError.
    """
    n = len(doc_ids)
    if len(hashes) != n or np.asarray(signatures).shape[0] != n:
        raise ValueError("doc_ids, hashes and signatures must have the same length")
    if len(set(doc_ids)) != n:
        raise ValueError("doc_ids must be unique")
    m = len(prior_doc_ids)
    if prior_signatures is None:
        prior_signatures = np.empty((0, np.asarray(signatures).shape[1]), dtype=np.uint32)
    if len(prior_hashes) != m or prior_signatures.shape[0] != m:
        raise ValueError("prior_doc_ids, prior_hashes and prior_signatures must match")
    overlap = set(doc_ids) & set(prior_doc_ids)
    if overlap:
        raise ValueError(f"{len(overlap)} doc_ids are both current and prior, e.g. {min(overlap)}")
    if n == 0:
        return []

    # Nodes 0..m-1 are prior documents, m..m+n-1 current ones.
    ids = [*prior_doc_ids, *doc_ids]
    if prior_ranks is None:
        prior_ranks = [(d,) for d in prior_doc_ids]
    if len(prior_ranks) != m:
        raise ValueError("prior_ranks must have one entry per prior document")
    forest = _UnionFind(m + n)

    # Exact duplicates: the first holder of a hash, prior before current, and
    # among current documents the smallest doc_id.
    prior_holder: dict[str, int] = {}
    for node in sorted(range(m), key=lambda i: prior_ranks[i]):
        prior_holder.setdefault(prior_hashes[node], node)
    current_holder: dict[str, int] = {}
    for node in sorted(range(m, m + n), key=lambda i: ids[i]):
        current_holder.setdefault(hashes[node - m], node)
    exact_of: dict[int, int] = {}
    for node in range(m, m + n):
        h = hashes[node - m]
        holder = prior_holder.get(h, current_holder[h])
        if holder != node:
            exact_of[node] = holder
            forest.union(node, holder)

    # Near duplicates among prior documents and the current hash holders.
    current_reps = [node for node in range(m, m + n) if node not in exact_of]
    nodes = np.array([*range(m), *current_reps], dtype=np.int64)
    stacked = np.concatenate(
        [prior_signatures, np.asarray(signatures)[np.array(current_reps, dtype=np.int64) - m]]
    )
    best_match: dict[int, tuple[float, str, int]] = {}
    candidates = [
        (i, j) for i, j in near_duplicate_pairs(stacked, bands, rows) if nodes[j] >= m
    ]  # i < j and prior nodes come first: skip prior-prior pairs
    if candidates:
        left = np.array([i for i, _ in candidates])
        right = np.array([j for _, j in candidates])
        similarity = np.mean(stacked[left] == stacked[right], axis=1)
        for i, j, sim in zip(left.tolist(), right.tolist(), similarity.tolist(), strict=True):
            if sim < threshold:
                continue
            x, y = int(nodes[i]), int(nodes[j])
            forest.union(x, y)
            for node, other in ((x, y), (y, x)):
                if node >= m:
                    key = (-sim, ids[other], other)
                    if node not in best_match or key < best_match[node]:
                        best_match[node] = key

    # Survivor of each cluster: its smallest prior doc_id, else smallest current doc_id.
    def rank(node: int) -> tuple[bool, tuple]:
        return (False, tuple(prior_ranks[node])) if node < m else (True, (ids[node],))

    survivor: dict[int, int] = {}
    for node in range(m + n):
        root = forest.find(node)
        if root not in survivor or rank(node) < rank(survivor[root]):
            survivor[root] = node

    decisions: list[DedupDecision] = []
    for node in range(m, m + n):
        keeper = survivor[forest.find(node)]
        if keeper == node:
            continue
        if node in exact_of:
            reason, matched = "exact_duplicate", exact_of[node]
        else:
            reason, matched = "near_duplicate", best_match[node][2]
        decisions.append(
            DedupDecision(
                doc_id=ids[node],
                duplicate_of=ids[matched],
                cluster_id=ids[keeper],
                reason=reason,
            )
        )
    return sorted(decisions, key=lambda d: d.doc_id)

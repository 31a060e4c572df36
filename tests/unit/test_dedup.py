"""Exact and near-duplicate removal on a corpus with planted duplicates."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from llama_assets.curate.dedup import (
    DedupDecision,
    content_hash,
    estimated_jaccard,
    find_duplicates,
    fingerprints,
    minhash_signatures,
    near_duplicate_pairs,
    normalise_for_hash,
    shingle_hashes,
)

ROOT = Path(__file__).resolve().parents[2]
VOCAB = [f"{w}{i}" for i in range(400) for w in ("alpha", "beta", "gamma", "delta", "omega")]


def _doc(rng: random.Random, words: int = 300) -> str:
    return " ".join(rng.choice(VOCAB) for _ in range(words))


def _replace_every(text: str, every: int, rng: random.Random) -> str:
    """Replace one word in each run of `every` words by a word not in VOCAB."""
    words = text.split()
    for start in range(0, len(words), every):
        words[start + rng.randrange(min(every, len(words) - start))] = f"edit{start}"
    return " ".join(words)


def _shingles(text: str, n: int = 5) -> set[tuple[str, ...]]:
    words = normalise_for_hash(text).split()
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def _jaccard(a: str, b: str) -> float:
    sa, sb = _shingles(a), _shingles(b)
    return len(sa & sb) / len(sa | sb)


@pytest.fixture(scope="module")
def corpus() -> tuple[dict[str, str], dict[str, str]]:
    rng = random.Random(7)
    a, b, c, f = (_doc(rng) for _ in range(4))
    p1, p2, p3 = (_doc(rng) for _ in range(3))
    prior = {"prior-1": p1, "prior-2": p2, "prior-3": p3}
    current = {
        "doc-a": a,
        # Same words, different case, punctuation and wrapping: an exact duplicate.
        "doc-a-copy": a.upper().replace(" ", ",\n  ", 50) + "!",
        "doc-b": b,
        "doc-b-copy": b,
        "doc-0-b-near": _replace_every(b, 100, rng),  # ~1 word in 100: near duplicate
        "doc-c": c,
        "doc-c-edited": _replace_every(c, 8, rng),  # ~1 word in 8: a different document
        "doc-d-from-prior": p1,
        "doc-e-near-prior": _replace_every(p2, 100, rng),
        "doc-f": f,
    }
    return prior, current


def _run(prior: dict[str, str], current: dict[str, str], **kwargs) -> list[DedupDecision]:
    ids = list(current)
    return find_duplicates(
        ids,
        [content_hash(t) for t in current.values()],
        minhash_signatures(list(current.values())),
        prior_doc_ids=list(prior),
        prior_hashes=[content_hash(t) for t in prior.values()],
        prior_signatures=minhash_signatures(list(prior.values())),
        **kwargs,
    )


def test_planted_duplicates_exactly(corpus) -> None:
    prior, current = corpus
    assert _run(prior, current) == [
        DedupDecision("doc-a-copy", "doc-a", "doc-a", "exact_duplicate"),
        DedupDecision("doc-b", "doc-0-b-near", "doc-0-b-near", "near_duplicate"),
        DedupDecision("doc-b-copy", "doc-b", "doc-0-b-near", "exact_duplicate"),
        DedupDecision("doc-d-from-prior", "prior-1", "prior-1", "exact_duplicate"),
        DedupDecision("doc-e-near-prior", "prior-2", "prior-2", "near_duplicate"),
    ]


def test_without_prior_and_in_any_order(corpus) -> None:
    _, current = corpus
    shuffled = dict(sorted(current.items(), key=lambda kv: kv[0][::-1]))
    expected = [
        DedupDecision("doc-a-copy", "doc-a", "doc-a", "exact_duplicate"),
        DedupDecision("doc-b", "doc-0-b-near", "doc-0-b-near", "near_duplicate"),
        DedupDecision("doc-b-copy", "doc-b", "doc-0-b-near", "exact_duplicate"),
    ]
    assert _run({}, current) == expected
    assert _run({}, shuffled) == expected


def test_planted_similarities(corpus) -> None:
    _, current = corpus
    near, far = current["doc-0-b-near"], current["doc-c-edited"]
    assert 0.85 < _jaccard(current["doc-b"], near) < 0.95
    assert _jaccard(current["doc-c"], far) < 0.5
    sigs = minhash_signatures([current["doc-b"], near, current["doc-c"], far])
    assert abs(estimated_jaccard(sigs[0], sigs[1]) - _jaccard(current["doc-b"], near)) < 0.08
    assert abs(estimated_jaccard(sigs[2], sigs[3]) - _jaccard(current["doc-c"], far)) < 0.08


def test_threshold_decides_near_duplicates(corpus) -> None:
    prior, current = corpus
    reasons = {d.doc_id: d.reason for d in _run(prior, current, threshold=0.99)}
    assert reasons == {
        "doc-a-copy": "exact_duplicate",
        "doc-b-copy": "exact_duplicate",
        "doc-d-from-prior": "exact_duplicate",
    }


def test_content_hash_normalises() -> None:
    assert normalise_for_hash("  Hello,\tWORLD!  ça   va? ") == "hello world ça va"
    assert content_hash("Hello, World!") == content_hash("hello   world")
    assert content_hash("Hello, World!") != content_hash("Hello, Word!")
    assert len(content_hash("x")) == 32


def test_ascii_fast_path_matches_unicode_path() -> None:
    rng = random.Random(3)
    alphabet = [chr(i) for i in range(128)]
    for _ in range(300):
        text = "".join(rng.choice(alphabet) for _ in range(40))
        # Appending a non-ASCII letter forces the regex path; it must agree.
        assert normalise_for_hash(text + " é")[:-2].rstrip() == normalise_for_hash(text)


def test_signatures_shape_dtype_and_short_texts() -> None:
    sigs = minhash_signatures(["a b c", "A, b. C!", "a b d", "", "one two three four five six"])
    assert sigs.shape == (5, 128)
    assert sigs.dtype == np.uint32
    assert estimated_jaccard(sigs[0], sigs[1]) == 1.0  # fewer than 5 words: one shingle
    assert estimated_jaccard(sigs[0], sigs[2]) == 0.0
    assert (sigs[3] == np.uint32(0xFFFFFFFF)).all()
    assert len(shingle_hashes("one two three four five six")) == 2
    assert minhash_signatures([]).shape == (0, 128)


def test_long_text_spanning_chunks_is_consistent() -> None:
    rng = random.Random(11)
    long_text = _doc(rng, 40_000)  # > CHUNK_SHINGLES shingles in one document
    alone = minhash_signatures([long_text])
    together = minhash_signatures(["x y z", long_text, "p q r"])
    assert np.array_equal(alone[0], together[1])


def test_signatures_are_deterministic_across_processes() -> None:
    code = (
        "from llama_assets.curate.dedup import minhash_signatures;"
        "print(minhash_signatures(['the quick brown fox jumps over the lazy dog'])[0][:4].tolist())"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONHASHSEED": seed},
        ).stdout
        for seed in ("1", "2")
    }
    in_process = minhash_signatures(["the quick brown fox jumps over the lazy dog"])[0][:4]
    assert outputs == {f"{in_process.tolist()}\n"}


def test_signatures_are_stable_across_versions() -> None:
    """The persistent dedup index compares new signatures with stored ones: any
    change to shingling or hashing must change SCHEMA_VERSION, not these values."""
    texts = [
        "the quick brown fox jumps over the lazy dog",
        "a b",
        "Ünïcode café words here and there again",
    ]
    hashes, sigs = fingerprints(texts)
    assert sigs[:, :4].tolist() == [
        [614161345, 609377001, 570750749, 320355779],
        [3683298642, 2096877342, 1067976734, 2431533746],
        [2353317219, 380077032, 562840936, 858858272],
    ]
    assert hashes == [content_hash(t) for t in texts]
    assert content_hash("Hello, World!") == "b94d27b9934d3e08a52e52d7da7dabfa"


def test_part_shingling_equals_per_text_shingling() -> None:
    rng = random.Random(5)
    texts = ["", "one", "two words", _doc(rng, 4), _doc(rng, 5), _doc(rng, 300), "x y z"]
    together = minhash_signatures(texts)
    for i, text in enumerate(texts):
        assert np.array_equal(minhash_signatures([text])[0], together[i])


def test_lsh_pairs() -> None:
    rng = np.random.default_rng(0)
    sigs = rng.integers(0, 2**32, size=(5, 128), dtype=np.uint32)
    sigs[3] = sigs[1]
    sigs[4, :8] = sigs[0, :8]  # shares exactly one band with doc 0
    assert near_duplicate_pairs(sigs) == {(1, 3), (0, 4)}
    assert near_duplicate_pairs(sigs, bands=2, rows=8) == {(1, 3), (0, 4)}
    assert near_duplicate_pairs(sigs[:, 8:], bands=15, rows=8) == {(1, 3)}
    with pytest.raises(ValueError):
        near_duplicate_pairs(sigs, bands=17, rows=8)


def test_rejects_inconsistent_input() -> None:
    sig = minhash_signatures(["a b c"])
    with pytest.raises(ValueError, match="both current and prior"):
        find_duplicates(
            ["x"], ["h"], sig, prior_doc_ids=["x"], prior_hashes=["h"], prior_signatures=sig
        )
    with pytest.raises(ValueError, match="unique"):
        find_duplicates(["x", "x"], ["h", "h"], np.vstack([sig, sig]))
    with pytest.raises(ValueError, match="same length"):
        find_duplicates(["x"], [], sig)
    assert find_duplicates([], [], np.empty((0, 128), dtype=np.uint32)) == []

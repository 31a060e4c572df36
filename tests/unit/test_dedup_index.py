"""The persistent dedup index: across batches, incremental, never matching itself."""

from __future__ import annotations

import random
import uuid

import numpy as np
import polars as pl
import pytest

from llama_assets.curate.clean import DedupStats, deduplicate_batch
from llama_assets.curate.dedup_index import DedupIndex, PostgresDedupIndex


def _text(seed: int, words: int = 200) -> str:
    rng = random.Random(seed)
    return " ".join(f"w{rng.randrange(50_000)}" for _ in range(words))


def _replace(text: str, every: int, seed: int) -> str:
    words = text.split()
    rng = random.Random(seed)
    for i in rng.sample(range(len(words)), len(words) // every):
        words[i] = f"changed{i}"
    return " ".join(words)


def _frame(rows: dict[str, str]) -> pl.DataFrame:
    return pl.DataFrame({"doc_id": list(rows), "text": list(rows.values())})


def _run(index, key, earlier, rows, part_rows=1000):
    stats = DedupStats()
    frame = _frame(rows)
    parts = [frame.slice(i, part_rows) for i in range(0, frame.height, part_rows)]
    kept = [k for _, k in deduplicate_batch(parts, index, key, earlier, stats)]
    return sorted(pl.concat(kept)["doc_id"].to_list()), stats


@pytest.fixture(params=["sqlite", "postgres"])
def index(request, tmp_path):
    """The same index in SQLite (local root) and PostgreSQL (shared by run workers)."""
    if request.param == "sqlite":
        return DedupIndex(tmp_path / "dedup" / "index.sqlite")
    return PostgresDedupIndex(
        request.getfixturevalue("pg_url"), schema=f"t_{uuid.uuid4().hex[:12]}"
    )


def test_duplicates_across_batches_exactly(index) -> None:
    base = {f"a{i}": _text(i) for i in range(20)}
    kept, stats = _run(index, "s/b1", [], base)
    assert kept == sorted(base) and not stats.decisions

    second = {
        "b-exact": base["a0"].upper(),  # normalised text hash equal
        "b-near": _replace(base["a1"], 100, 1),  # ~1 word in 100: Jaccard ~0.9
        "b-far": _replace(base["a2"], 8, 2),  # ~1 word in 8: Jaccard ~0.3
        "b-new": _text(99),
        "b-near-self": _replace(_text(98), 100, 3),
        "b-orig-self": _text(98),
    }
    kept, stats = _run(index, "s/b2", ["s/b1"], second)
    assert kept == ["b-far", "b-near-self", "b-new"]
    by_id = {d.doc_id: d for d in stats.decisions}
    assert set(by_id) == {"b-exact", "b-near", "b-orig-self"}
    assert (by_id["b-exact"].reason, by_id["b-exact"].cluster_id) == ("exact_duplicate", "a0")
    assert (by_id["b-near"].reason, by_id["b-near"].cluster_id) == ("near_duplicate", "a1")
    # within a batch the smallest doc_id survives
    assert by_id["b-orig-self"].cluster_id == "b-near-self"
    assert index.batch_counts() == {"s/b1": 20, "s/b2": 3}


def test_rematerialising_a_batch_never_matches_its_own_copy(index) -> None:
    rows = {f"a{i}": _text(i) for i in range(10)}
    first, _ = _run(index, "s/b1", [], rows)
    again, stats = _run(index, "s/b1", [], rows)
    assert again == first == sorted(rows) and not stats.decisions
    assert index.batch_counts() == {"s/b1": 10}


def test_later_batches_are_not_earlier(index) -> None:
    rows = {f"a{i}": _text(i) for i in range(5)}
    _run(index, "s/b1", [], rows)
    copies = {f"c{i}": t for i, t in enumerate(rows.values())}
    kept, _ = _run(index, "s/b2", ["s/b1"], copies)
    assert kept == []
    # b1 re-materialised: b2 came later, so nothing of b1 is removed
    kept, stats = _run(index, "s/b1", [], rows)
    assert kept == sorted(rows) and not stats.decisions


def test_earliest_batch_survives_and_parts_stream(index) -> None:
    text = _text(7)
    _run(index, "s/b1", [], {"z-first": text})
    _run(index, "s/b2", ["s/b1"], {"a-second": _text(8)})
    kept, stats = _run(index, "s/b3", ["s/b1", "s/b2"], {"m": text, "n": _text(9)}, part_rows=1)
    assert kept == ["n"]
    assert stats.decisions[0].cluster_id == "z-first"  # earliest batch, not smallest id


def test_parameters_are_pinned(tmp_path) -> None:
    path = tmp_path / "index.sqlite"
    DedupIndex(path)
    with pytest.raises(ValueError, match="incomparable"):
        DedupIndex(path, bands=8, rows=16)


def test_lookup_returns_only_earlier_batches(index) -> None:
    sig = np.arange(128, dtype=np.uint32)[None, :]
    index.replace_batch("s/b1", ["x"], ["h"], sig)
    index.replace_batch("s/b2", ["y"], ["h"], sig)
    assert index.lookup(["h"], sig, ["s/b1"]).doc_ids == ["x"]
    assert index.lookup(["h"], sig, []).doc_ids == []


_V1_DDL = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE docs (doc_id TEXT PRIMARY KEY, batch_key TEXT NOT NULL,
    content_hash TEXT NOT NULL, signature BLOB NOT NULL);
CREATE INDEX docs_by_batch ON docs (batch_key);
CREATE INDEX docs_by_hash ON docs (content_hash);
CREATE TABLE bands (band INTEGER NOT NULL, key INTEGER NOT NULL, doc_id TEXT NOT NULL,
    batch_key TEXT NOT NULL);
CREATE INDEX bands_by_key ON bands (band, key);
CREATE INDEX bands_by_batch ON bands (batch_key);
INSERT INTO meta VALUES ('params', 'v1:perm=128:bands=16x8');
"""


def test_a_v1_index_is_migrated_in_place(tmp_path) -> None:
    """Files written by the previous schema keep their entries and still match."""
    import sqlite3

    from llama_assets.curate.dedup import fingerprints

    path = tmp_path / "index.sqlite"
    rows = {f"a{i}": _text(i) for i in range(6)}
    hashes, sigs = fingerprints(list(rows.values()))
    with sqlite3.connect(path) as db:
        db.executescript(_V1_DDL)
        db.executemany(
            "INSERT INTO docs VALUES (?, 's/b1', ?, ?)",
            [(d, h, s.tobytes()) for d, h, s in zip(rows, hashes, sigs, strict=True)],
        )
    index = DedupIndex(path)
    assert index.batch_counts() == {"s/b1": 6}
    kept, stats = _run(index, "s/b2", ["s/b1"], {"b-near": _replace(rows["a3"], 100, 1)})
    assert kept == [] and stats.decisions[0].cluster_id == "a3"
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT value FROM meta").fetchone()[0].startswith("v2:")


def test_a_doc_id_is_indexed_once(index) -> None:
    import sqlite3

    import psycopg2

    from llama_assets.curate.dedup import fingerprints

    hashes, sigs = fingerprints([_text(1)])
    index.replace_batch("s/b1", ["d1"], hashes, sigs)
    with pytest.raises((sqlite3.IntegrityError, psycopg2.IntegrityError)):
        index.replace_batch("s/b2", ["d1"], hashes, sigs)
    assert index.batch_counts() == {"s/b1": 1}  # the failed batch wrote nothing


def test_two_batches_racing_on_the_index_are_serialised(index) -> None:
    """Two workers deduplicating at once (threads here, pods in production): the
    second waits for the first, so no copy survives twice and nothing is lost."""
    import threading
    import time

    shared = {f"x{i}": _text(200 + i) for i in range(30)}
    first = {f"a-{k}": v for k, v in shared.items()} | {"a-own": _text(300)}
    second = {f"b-{k}": v for k, v in shared.items()} | {"b-own": _text(301)}
    results = {}
    slow_start = threading.Event()

    def run(key, earlier, rows):
        stats = DedupStats()
        frame = _frame(rows)
        parts = [frame.slice(i, 8) for i in range(0, frame.height, 8)]
        kept = []
        for _, part in deduplicate_batch(parts, index, key, earlier, stats):
            kept.extend(part["doc_id"].to_list())
            slow_start.set()
            time.sleep(0.05)  # hold the index long enough for the other run to try
        results[key] = sorted(kept)

    a = threading.Thread(target=run, args=("s/a", [], first))
    b = threading.Thread(target=run, args=("s/b", ["s/a"], second))
    a.start()
    slow_start.wait(10)
    b.start()
    a.join(60)
    b.join(60)
    assert results["s/a"] == sorted(first)
    assert results["s/b"] == ["b-own"]
    assert index.batch_counts() == {"s/a": len(first), "s/b": 1}

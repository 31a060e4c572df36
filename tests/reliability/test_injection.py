"""Injection and secrets: names and queries made of quotes, SQL and control
characters are refused or treated as data, never as a statement; secrets from
the environment appear in no output, log, metadata, event log or report."""

from __future__ import annotations

import uuid
from pathlib import Path

import dagster as dg
import lancedb
import numpy as np
import polars as pl
import pytest

from llama_assets import cli
from llama_assets.curate.clean import fingerprint_part
from llama_assets.curate.dedup_index import DedupIndex
from llama_assets.jobs import BATCH_ASSETS
from llama_assets.partitions import BATCHES
from llama_assets.retrieval import index
from llama_assets.retrieval.embedding_cache import EmbeddingCache
from llama_assets.retrieval.search import search
from tests.landing import TOPIC_KEYS, land, topic
from tests.unit.test_index import rows

HOSTILE = [
    "' OR 1=1 --",
    "b1' OR '1'='1",
    'b1" OR "1"="1',
    "b1; DROP TABLE chunks; --",
    "b1\x00",
    "b1\n",
    "b1\x1b[2J",
    "%",
    "*",
    "b1) OR (1=1",
]


def encode(texts):
    return np.full((len(texts), 4), 0.5, np.float32)


@pytest.fixture
def table(tmp_path):
    table = index.open_table(index.connect(tmp_path), dim=4)
    index.upsert_batch(table, rows([f"a-{i}" for i in range(12)], "b1"), "s", "b1")
    index.upsert_batch(table, rows([f"b-{i}" for i in range(12)], "b2"), "s", "b2")
    index.maintain_indexes(table)
    return table


@pytest.mark.parametrize("name", HOSTILE)
def test_a_hostile_batch_name_never_reaches_a_filter(table, name):
    version, count = table.version, table.count_rows()
    with pytest.raises(ValueError, match="invalid"):
        index.batch_filter("s", name)
    with pytest.raises(ValueError, match="invalid"):
        index.delete_batch(table, "s", name)
    with pytest.raises(ValueError, match="invalid"):
        index.delete_batch(table, name, "b1")
    assert (table.version, table.count_rows()) == (version, count)


def test_hostile_queries_are_text_and_k_is_checked(table):
    version, count = table.version, table.count_rows()
    for query in [*HOSTILE, "text:a-1 OR text:*", "a-1^100", '"unbalanced', "(((", "\\"]:
        for mode in ("vector", "fts", "hybrid"):
            hits = search(table, encode, [query], k=3, mode=mode)[0]
            assert len(hits) <= 3
    assert (table.version, table.count_rows()) == (version, count)
    for k in (0, -1, True, 2.5):
        with pytest.raises(ValueError, match="at least 1"):
            search(table, encode, ["x"], k=k, mode="hybrid")
    for blank in ("", "   ", "\n"):
        with pytest.raises(ValueError, match="some text"):
            search(table, encode, [blank], k=3, mode="fts")


def test_cache_keys_and_dedup_batch_keys_are_data(tmp_path):
    cache = EmbeddingCache(tmp_path / "cache", "m", 4)
    with pytest.raises(ValueError, match="sha256"):
        cache.lookup(["' OR 1=1 --"])
    # The dedup index binds every value as a parameter: a key made of SQL is a key.
    dedup = DedupIndex(tmp_path / "index.sqlite")
    part = fingerprint_part(pl.DataFrame({"doc_id": ["d"], "text": [topic(0)]}))
    dedup.replace_batch("x' OR 1=1 --", ["d"], part.hashes, part.signatures)
    assert dedup.lookup(part.hashes, part.signatures, ["' OR 1=1 --"]).doc_ids == []
    assert dedup.lookup(part.hashes, part.signatures, ["x' OR 1=1 --"]).doc_ids == ["d"]
    dedup.forget_batch("' OR 1=1 --")
    assert dedup.batch_counts() == {"x' OR 1=1 --": 1}


SECRET_VARIABLES = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "HF_TOKEN",
    "PGPASSWORD",
    "DAGSTER_POSTGRES_PASSWORD",
    "OPENAI_API_KEY",
    "LLAMA_GATEWAY_API_KEY",
)


def test_hostile_cli_input_and_planted_secrets_leak_nothing(
    layout, instance, resources, monkeypatch, capfd, tmp_path: Path
):
    """The batch pipeline and the CLI with secrets planted in the environment: no
    planted value in any output, the instance (event log, runs, compute logs) or
    the data root; SQL-shaped names are refused with a sentence."""
    planted = {name: f"planted{uuid.uuid4().hex}" for name in SECRET_VARIABLES}
    for name, value in planted.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("LLAMA_DATA_ROOT", str(layout.root))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    key = "docs/one"
    land(layout, key, {f"{TOPIC_KEYS[i]}.txt": topic(i) for i in range(3)})
    instance.add_dynamic_partitions(BATCHES, [key])
    assert dg.materialize(
        BATCH_ASSETS, instance=instance, resources=resources, partition_key=key
    ).success
    table = lancedb.connect(str(layout.lancedb)).open_table("chunks")
    version, count = table.version, table.count_rows()
    src = tmp_path / "in"
    src.mkdir()
    (src / "a.txt").write_text(topic(5))
    for args, code in (
        (["ingest", str(src), "--source", "docs", "--batch", "b1' OR 1=1 --"], 2),
        (["search", "' OR 1=1 --", "--mode", "fts"], 0),
        (["search", "\x1b[2J; DROP TABLE chunks", "--mode", "fts"], 0),
        (["remove-batch", "docs/one' OR '1'='1", "--yes"], 2),
    ):
        assert cli.main(args) == code, args
    out, err = capfd.readouterr()
    assert err.count("invalid batch name") == 2 and "Traceback" not in err
    assert out.count("hit(s), fts search") == 2
    table = lancedb.connect(str(layout.lancedb)).open_table("chunks")
    assert (table.version, table.count_rows()) == (version, count)

    values = [v.encode() for v in planted.values()]
    assert not any(v.decode() in out + err for v in values)
    scanned = 0
    for root in (tmp_path / "dagster_home", layout.root.local):
        for path in root.rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                scanned += 1
                assert not any(v in data for v in values), path
    assert scanned > 20

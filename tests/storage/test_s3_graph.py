"""The whole graph on an S3 data root equals the graph on a local root.

Both roots run the same CLI commands in this process (ingest, run, status,
search, restore-index, remove-batch --dry-run, rollback), against a real S3
server (SeaweedFS on loopback) and the machine's PostgreSQL for the shared
dedup index. Then: the same clean-shard checksums, the same `chunks` rows and
the same eval figures. Last, the S3 root's day two: a backfill, a second batch
and a second champion, a real rollback, an index restore and a batch removal.
"""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
from click.testing import CliRunner

from llama_assets.base.layout import DataLayout
from llama_assets.base.shards import read_manifest
from llama_assets.cli import cli
from llama_assets.retrieval.index import TABLE_NAME, connect
from tests.landing import TOPIC_KEYS, topic

pytestmark = pytest.mark.s3_e2e

KEY = "docs/one"
LENIENT_GATE = """
[tiny]
min_improvement_vs_base = -1e9
max_bits_per_byte = 1e9
min_cloze_accuracy = 0.0
min_retrieval_recall = 0.0
max_hallucination_rate = 1.0
max_safety_violation_rate = 1.0
max_extraction_rate = 1.0
max_pii_output_rate = 1.0
max_ttft_p95_ms = 1e9
max_load_seconds = 1e9
max_cost_per_1k_tokens_usd = 1e9
"""


def invoke(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, f"{args} failed:\n{result.output}"
    return result.output


def run_graph(root: str, home: Path, corpus: Path, monkeypatch) -> dict:
    """The CLI, as a user runs it, on `root`; returns what the comparison needs."""
    monkeypatch.setenv("LLAMA_DATA_ROOT", root)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    # Four training steps beat no base: a lenient gate (the data root's gate.toml,
    # read through the storage layer) lets the chain reach promoted_model on both.
    DataLayout(root).gate_config.write_text(LENIENT_GATE)
    assert KEY in invoke("ingest", str(corpus), "--source", "docs", "--batch", "one")
    out = invoke("run", "--max-steps", "4")
    assert "✓ rag_index" in out and "✓ promoted_model" in out
    status = invoke("status")
    assert "docs/one" in status and "champion=" in status
    hits = invoke("search", topic(2).split("\n")[0], "-k", "3")
    versions = invoke("restore-index")
    plan = invoke("remove-batch", KEY, "--dry-run")
    refused = CliRunner().invoke(cli, ["rollback"])
    assert refused.exit_code == 1 and "first champion" in refused.output

    layout = DataLayout(root)
    version = (layout.models("tiny") / "latest.json").read_json()["version"]
    table = connect(layout.lancedb).open_table(TABLE_NAME).to_arrow().sort_by("chunk_id")
    return {
        "shards": [s["sha256"] for s in read_manifest(layout.shards(KEY))["shards"]],
        "rows": read_manifest(layout.shards(KEY))["rows"],
        "chunks": table,
        "report": json.loads((layout.reports("tiny", version) / "report.json").read_text()),
        "hits": hits.splitlines()[0],
        "versions": versions,
        "plan": plan,
        "champion": (layout.aliases("tiny")).read_json()["champion"],
        "home": home,
    }


def flat(figures: dict, prefix: str = "") -> dict:
    """A nested report section as one level of `a/b/c` keys (numbers and texts)."""
    out = {}
    for key, value in figures.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}/"))
        else:
            out[f"{prefix}{key}"] = value
    return out


@pytest.fixture(scope="module")
def graphs(tmp_path_factory, s3_server, pg_url):
    tmp = tmp_path_factory.mktemp("graphs")
    corpus = tmp / "corpus"
    corpus.mkdir()
    for i in range(10):
        (corpus / f"{TOPIC_KEYS[i]}.txt").write_text(topic(i))
    with pytest.MonkeyPatch.context() as monkeypatch:
        for name, value in s3_server.env.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        monkeypatch.setenv("LLAMA_CACHE_DIR", str(tmp / "cache"))
        monkeypatch.delenv("LLAMA_EMBEDDING_CACHE")  # each root's own: the S3 one on S3
        local = run_graph(str(tmp / "local"), tmp / "home-local", corpus, monkeypatch)
        # Run workers on S3 share no disk: the dedup index lives in PostgreSQL.
        monkeypatch.setenv("LLAMA_DEDUP_INDEX_URL", pg_url)
        uri = f"s3://llama/graph-{tmp.name}"
        remote = run_graph(uri, tmp / "home-s3", corpus, monkeypatch)
    return local, remote, uri


def test_the_s3_root_gives_the_same_shards_chunks_and_eval_figures(graphs):
    local, remote, _ = graphs
    assert remote["rows"] == local["rows"] > 0
    assert remote["shards"] == local["shards"]
    assert remote["chunks"].num_rows == local["chunks"].num_rows > 0
    for column in ("chunk_id", "doc_id", "text", "headings", "char_start", "char_end"):
        assert remote["chunks"][column].to_pylist() == local["chunks"][column].to_pylist()
    np.testing.assert_allclose(
        np.stack(remote["chunks"]["vector"].to_numpy(zero_copy_only=False)),
        np.stack(local["chunks"]["vector"].to_numpy(zero_copy_only=False)),
        atol=1e-6,
    )
    for figures in ("quality", "retrieval"):
        mine, theirs = flat(remote["report"][figures]), flat(local["report"][figures])
        assert mine.keys() == theirs.keys()
        for key, value in theirs.items():
            if any(t in key for t in ("seconds", "_ms", "latency", "per_second", "timing")):
                continue  # wall-clock figures: the machine's, not the data's
            if isinstance(value, float):
                assert mine[key] == pytest.approx(value, rel=1e-6), key
            else:
                assert mine[key] == value, key
    assert remote["hits"] == local["hits"]
    assert remote["champion"] == local["champion"]


def test_every_artifact_of_the_s3_run_is_in_the_bucket(graphs, s3_server):
    _, remote, uri = graphs
    prefix = uri.removeprefix("s3://llama/") + "/"
    keys = {
        obj["Key"][len(prefix) :]
        for page in s3_server.client()
        .get_paginator("list_objects_v2")
        .paginate(Bucket="llama", Prefix=prefix)
        for obj in page.get("Contents", [])
    }
    tops = {key.split("/")[0] for key in keys}
    assert {
        "landing",
        "staging",
        "quarantine",
        "shards",
        "profiles",
        "review",
        "lancedb",
        "cache",
        "datasets",
        "models",
        "reports",
    } <= tops
    assert any(k.startswith("models/tiny/runs/") and k.endswith("tree.json") for k in keys)
    assert "models/tiny/aliases.json" in keys
    assert "path(s) to delete" in remote["plan"]


def champion_history(layout: DataLayout) -> list[tuple[str, str]]:
    return [(m["action"], m["version"]) for m in layout.aliases("tiny").read_json()["history"]]


def test_day_two_on_the_s3_root(graphs, s3_server, pg_url, tmp_path, monkeypatch):
    """backfill, a second champion through a rollout, rollback, restore-index
    --version and remove-batch, each as a user types it, on the S3 root."""
    _, remote, uri = graphs
    for name, value in {
        **s3_server.env,
        "LLAMA_DATA_ROOT": uri,
        "DAGSTER_HOME": str(remote["home"]),
        "LLAMA_DEDUP_INDEX_URL": pg_url,
        "LLAMA_CACHE_DIR": str(tmp_path / "cache"),
        "HF_HUB_OFFLINE": "1",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("LLAMA_EMBEDDING_CACHE")
    layout = DataLayout(uri)
    first = remote["champion"]
    rows = remote["chunks"].num_rows

    # A backfill re-materialises the batch from its landed files and changes nothing.
    out = invoke("backfill", "--partitions", KEY)
    assert "✓ rag_index" in out, out
    table = connect(layout.lancedb).open_table(TABLE_NAME)
    assert table.count_rows() == rows
    first_index_version = table.version

    # A second batch: a new dataset, a new fine-tune, a release candidate.
    corpus = tmp_path / "three"
    corpus.mkdir()
    for i in (12, 13, 14):
        (corpus / f"{TOPIC_KEYS[i]}.txt").write_text(topic(i))
    invoke("ingest", str(corpus), "--source", "docs", "--batch", "three")
    out = invoke("run", "--max-steps", "4")
    assert "✓ promoted_model" in out, out
    candidate = layout.aliases("tiny").read_json()["candidate"]
    assert candidate and candidate != first
    grown = connect(layout.lancedb).open_table(TABLE_NAME).count_rows()
    assert grown > rows

    # The run started its canary; a second one is refused in a sentence.
    refused = CliRunner().invoke(cli, ["rollout", "canary"])
    assert refused.exit_code == 1, refused.output
    assert refused.output.strip() == (
        f"error: rollout canary refused: canary refused for tiny: {candidate} is already "
        "being rolled out"
    )
    # To 100% (no traffic here: promoted by hand), then back.
    invoke("rollout", "promote", "--reason", "day two")
    assert layout.aliases("tiny").read_json()["champion"] == candidate
    assert f"champion is now {first}" in invoke("rollback", "--reason", "day two")
    assert champion_history(layout) == [
        ("promote", first), ("candidate", candidate), ("promote", candidate), ("rollback", first),
    ]  # fmt: skip
    assert "stable " + first in invoke("rollout", "status")

    # The index as it was after the backfill, as a new version.
    out = invoke("restore-index", "--version", str(first_index_version), "--yes")
    table = connect(layout.lancedb).open_table(TABLE_NAME)
    assert table.count_rows() == rows and table.version > first_index_version, out

    # The second batch removed everywhere; the first is untouched.
    invoke("remove-batch", "docs/three", "--yes")
    status = invoke("status")
    assert "docs/three" not in status and KEY in status
    assert not layout.landing_batch("docs/three").exists()
    assert not layout.shards("docs/three").exists()
    assert connect(layout.lancedb).open_table(TABLE_NAME).count_rows() == rows


def test_the_landing_sensor_registers_a_batch_landed_on_s3(graphs, s3_env, tmp_path, monkeypatch):
    from llama_assets.ingest.landing import add_to_landing
    from resources.storage import DataRoot
    from sensors.landing import landing_zone_sensor

    _, _, uri = graphs  # after the day-two test, which lands and removes docs/three
    monkeypatch.setenv("LLAMA_COALESCE_WINDOW_SECONDS", "0")
    (tmp_path / "b.txt").write_text(topic(11))
    storage = DataRoot(root=uri)
    add_to_landing(tmp_path / "b.txt", storage.layout.landing, "docs", "two")
    with (
        dg.instance_for_test() as instance,
        dg.build_sensor_context(instance=instance, resources={"storage": storage}) as context,
    ):
        instance.add_dynamic_partitions("batches", [KEY])
        result = landing_zone_sensor(context)
    assert [r.partition_key for r in result.run_requests] == ["docs/two"]

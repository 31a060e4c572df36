"""search, restore-index and remove-batch as a user runs them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import lancedb

from tests.landing import TOPIC_KEYS, topic

CLI = [sys.executable, "-m", "llama_assets.cli"]


def cli(env: dict, *args: str, code: int = 0) -> str:
    done = subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == code, f"{args} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_search_restore_and_remove_a_batch(tmp_path: Path):
    env = {
        **os.environ,
        "LLAMA_DATA_ROOT": str(tmp_path / "data"),
        "DAGSTER_HOME": str(tmp_path / "home"),
        "HF_HUB_OFFLINE": "1",
    }
    for batch, indices in (("one", range(0, 3)), ("two", range(3, 5))):
        src = tmp_path / f"in-{batch}"
        src.mkdir()
        for i in indices:
            (src / f"{TOPIC_KEYS[i]}.txt").write_text(topic(i))
        cli(env, "ingest", str(src), "--source", "docs", "--batch", batch)
    cli(env, "backfill")  # registers both batches, materialises the batch pipeline

    out = cli(env, "search", topic(3).split("\n")[0], "-k", "3", "--mode", "fts")
    assert out.startswith("3 hit(s), fts search") and "docs/two" in out.splitlines()[1]
    out = cli(env, "search", "how are exceptions handled", "-k", "2")
    assert "hybrid search" in out and out.count("\n    doc ") == 2

    table = lancedb.connect(str(tmp_path / "data/lancedb")).open_table("chunks")
    rows, version = table.count_rows(), table.version
    done = subprocess.run([*CLI, "remove-batch", "docs/two", "--yes"], env=env,
                          capture_output=True, text=True, timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "removed batch docs/two: partition deleted" in done.stdout
    # Rebuilding the training snapshot prints no Dagster event log lines (it did).
    assert "DEBUG" not in done.stdout + done.stderr, done.stderr[-2000:]
    assert not (tmp_path / "data/landing/docs/two").exists()
    assert not (tmp_path / "data/shards/docs/two").exists()
    table = lancedb.connect(str(tmp_path / "data/lancedb")).open_table("chunks")
    assert 0 < table.count_rows() < rows
    assert {r["batch"] for r in table.to_arrow().to_pylist()} == {"one"}
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        assert instance.get_dynamic_partitions("batches") == ["docs/one"]
    cli(env, "remove-batch", "docs/two", "--yes", code=2)

    assert str(version) in cli(env, "restore-index")
    out = cli(env, "restore-index", "--version", str(version), "--yes")
    assert f"restored version {version}" in out
    table = lancedb.connect(str(tmp_path / "data/lancedb")).open_table("chunks")
    assert table.count_rows() == rows

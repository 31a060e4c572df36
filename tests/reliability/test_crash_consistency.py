"""kill -9 of `llama-platform run` in every stage, then `run` again: nothing lost,
nothing doubled, nothing partial visible.

One data root is killed once in each stage, in graph order (reading,
validation, dedup and shard write, chunking, embedding, index upsert,
training, eval, promotion), each kill a little after the stage's step starts,
then run to the end. A second root runs the batches uninterrupted, as the
reference. Each later `run` also proves the dead run's pool slot came back.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import lancedb
import polars as pl
from dagster._core.events import DagsterEventType

from llama_assets.base.layout import DataLayout
from llama_assets.base.shards import verify_shards
from llama_assets.curate.dedup_index import DedupIndex
from llama_assets.instance import open_instance
from llama_assets.training.checkpointer import verify_manifest
from tests.landing import TOPIC_KEYS, topic

CLI = [sys.executable, "-m", "llama_assets.cli"]
TRAIN = ["--max-steps", "6"]
KILLED_IN = [
    "raw_documents",
    "validated_documents",
    "clean_shards",
    "chunks",
    "embeddings",
    "rag_index",
    "finetuned_checkpoint",
    "eval_report",
    "promoted_model",
]


def _env(root: Path) -> dict:
    return {**os.environ, "LLAMA_DATA_ROOT": str(root / "data"), "DAGSTER_HOME": str(root / "home")}


def _land(tmp_path: Path, env: dict) -> None:
    for batch, indices in (("b1", range(0, 8)), ("b2", range(6, 14))):  # b2 repeats 2 of b1
        folder = tmp_path / f"in-{batch}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in indices:
            (folder / f"{TOPIC_KEYS[i]}.txt").write_text(topic(i))
        subprocess.run(
            [*CLI, "ingest", str(folder), "--source", "docs", "--batch", batch],
            env=env,
            check=True,
            capture_output=True,
        )


def _started(instance, step: str, before: set[str]) -> bool:
    """Whether a run started after `before` was taken has started `step` (storage
    ids of a run-sharded SQLite event log are per run, so runs are compared)."""
    records = instance.get_event_records(
        dg.EventRecordsFilter(event_type=DagsterEventType.STEP_START), limit=50, ascending=False
    )
    return any(
        r.event_log_entry.run_id not in before and r.event_log_entry.step_key == step
        for r in records
    )


def _runs(instance) -> set[str]:
    return {run.run_id for run in instance.get_runs()}


def _chunks(root: Path) -> list[tuple[str, str]]:
    table = lancedb.connect(str(root / "data" / "lancedb")).open_table("chunks")
    columns = table.to_arrow().select(["chunk_id", "text"]).to_pydict()
    return sorted(zip(columns["chunk_id"], columns["text"], strict=True))


def _run(env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*CLI, "run", *TRAIN], env=env, capture_output=True, text=True, timeout=900
    )


def test_kill_9_in_every_stage_then_run_completes_with_nothing_lost_or_doubled(
    tmp_path, monkeypatch
):
    reference, crashed = tmp_path / "reference", tmp_path / "crashed"
    for root in (reference, crashed):
        _land(tmp_path / root.name, _env(root))
    done = subprocess.run([*CLI, "backfill"], env=_env(reference), capture_output=True, timeout=900)
    assert done.returncode == 0, done.stderr

    env = _env(crashed)
    monkeypatch.setenv("DAGSTER_HOME", env["DAGSTER_HOME"])
    open_instance().dispose()
    killed = []
    with open_instance() as instance:
        for step in KILLED_IN:
            before = _runs(instance)
            log = open(tmp_path / f"run-{step}.log", "w")  # noqa: SIM115 - closed below
            proc = subprocess.Popen(
                [*CLI, "run", *TRAIN],
                env=env,
                start_new_session=True,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            deadline = time.monotonic() + 600
            while proc.poll() is None and not _started(instance, step, before):
                assert time.monotonic() < deadline, f"{step} never started"
                time.sleep(0.1)
            time.sleep(0.3)  # into the step's work
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                killed.append(step)
            proc.wait()
            log.close()
            if step not in killed:  # finished before the kill: it must have succeeded
                output = (tmp_path / f"run-{step}.log").read_text()
                assert proc.returncode == 0, output
    assert len(killed) >= 6, killed  # most stages were really killed mid-run

    final = _run(env)
    assert final.returncode == 0, final.stdout + final.stderr
    again = _run(env)
    assert again.stdout.strip().endswith("nothing pending"), again.stdout

    layout = DataLayout(crashed / "data")
    # Every published table verifies (sizes and checksums against its manifest).
    manifests = [
        p.parent
        for p in layout.root.rglob("manifest.json")
        if not any(part.startswith(".") for part in p.relative_to(layout.root).parts)
    ]
    assert manifests
    for folder in manifests:
        if "files" in json.loads((folder / "manifest.json").read_text()):
            verify_manifest(folder)  # a checkpoint's or model's files: raises when damaged
        else:
            assert verify_shards(folder) == [], folder
    # The same chunks as the uninterrupted run, none twice.
    rows = _chunks(crashed)
    assert len({chunk_id for chunk_id, _ in rows}) == len(rows)
    assert rows == _chunks(reference)
    # The dedup index holds exactly the documents that survived into the shards.
    shards = {
        key: pl.read_parquet(layout.shards_root / key / "*.parquet").height
        for key in ("docs/b1", "docs/b2")
    }
    assert DedupIndex(layout.dedup_index).batch_counts() == shards
    # The training snapshot saw each batch once; the alias history is whole.
    dataset = json.loads((layout.training_dataset / "dataset.json").read_text())
    assert sorted(dataset["shard_sets"]) == ["docs/b1", "docs/b2"]
    aliases = json.loads(layout.aliases("tiny").read_text())
    assert aliases["champion"] and aliases["history"][-1]["version"] == aliases["champion"]
    with open_instance() as instance:
        active = instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
        assert not active

"""kill -9 of `llama-platform run` in every stage, then `run` again: nothing lost,
nothing doubled, nothing partial visible; and of a run the daemon launched.

One data root is killed once in each stage, in graph order (reading,
validation, dedup and shard write, chunking, embedding, index upsert,
training, eval, promotion). Each kill follows an event the run itself logs,
never a sleep: the step's start in the event log, or a line the step logs from
inside its work (dedup logs after each part it writes, a document a part here;
training logs before its loop). Where the kill landed is read back from the
killed run's event log. A second root runs the batches uninterrupted, as the
reference. Each later `run` also proves the dead run's pool slot came back.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import dagster as dg
import lancedb
import polars as pl

from llama_assets.base.layout import DataLayout
from llama_assets.base.shards import verify_shards
from llama_assets.curate.dedup_index import DedupIndex
from llama_assets.instance import open_instance
from llama_assets.tables import read_table
from llama_assets.training.checkpointer import verify_manifest
from tests.gates import lenient_gate
from tests.landing import TOPIC_KEYS, topic
from tests.reliability.run_events import RunFollower, daemon, steps_in_flight, wait_for

CLI = [sys.executable, "-m", "llama_assets.cli"]
TRAIN = ["--max-steps", "6"]
KILLS = [
    # (step, None: at its start in the event log | a line the step logs while it works)
    ("raw_documents", None),
    ("validated_documents", None),
    # The first of the batch's parts is in the staged shard set and the index; the
    # rest are still to write (a part a document, see PARTS).
    ("clean_shards", "deduplicated 1 documents,"),
    ("chunks", None),
    ("embeddings", None),
    ("rag_index", None),
    ("finetuned_checkpoint", "training "),
    ("eval_report", None),
    ("promoted_model", None),
]


PARTS = "[sources.docs]\npart_rows = 1\n"
"""A part a document: a stage works part by part, so a kill after its first part's
line lands with the other parts still to write, however fast the machine."""


def _env(root: Path) -> dict:
    return {**os.environ, "LLAMA_DATA_ROOT": str(root / "data"), "DAGSTER_HOME": str(root / "home")}


def _land(tmp_path: Path, env: dict, batches=(("b1", range(0, 8)), ("b2", range(6, 14)))) -> None:
    for batch, indices in batches:  # b2 repeats 2 of b1
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


def _chunks(root: Path) -> list[tuple[str, str]]:
    table = lancedb.connect(str(root / "data" / "lancedb")).open_table("chunks")
    columns = table.to_arrow().select(["chunk_id", "text"]).to_pydict()
    return sorted(zip(columns["chunk_id"], columns["text"], strict=True))


def _run(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=1200)


def _verify_published(layout: DataLayout) -> int:
    """Every published table and model verifies (sizes and checksums against its
    manifest); no hidden (temporary) one is left. Returns how many were checked."""
    root = layout.root.local
    manifests = list(root.rglob("manifest.json"))
    hidden = [
        p for p in manifests if any(part.startswith(".") for part in p.relative_to(root).parts)
    ]
    assert not hidden, hidden  # a partial artifact left by a killed writer, not collected
    for path in manifests:
        if "files" in json.loads(path.read_text()):
            verify_manifest(path.parent)  # a checkpoint's or model's files: raises when damaged
        else:
            assert verify_shards(path.parent) == [], path.parent
    return len(manifests)


def _dedup_index_matches_shards(layout: DataLayout, keys) -> None:
    shards = {key: read_table(layout.shards(key)).height for key in keys}
    assert DedupIndex(layout.dedup_index).batch_counts() == shards


def test_kill_9_in_every_stage_then_run_completes_with_nothing_lost_or_doubled(
    tmp_path, monkeypatch
):
    reference, crashed = tmp_path / "reference", tmp_path / "crashed"
    for root in (reference, crashed):
        lenient_gate(root / "data")  # 6 training steps: the chain must reach promoted_model
        (root / "data" / "sources.toml").write_text(PARTS)
        _land(tmp_path / root.name, _env(root))
    env = _env(crashed)
    monkeypatch.setenv("DAGSTER_HOME", env["DAGSTER_HOME"])
    open_instance().dispose()
    landed = {}  # step aimed at -> the steps in flight when the kill landed
    with open_instance() as instance:
        for step, text in KILLS:
            follower = RunFollower(instance)
            log_path = tmp_path / f"run-{step}.log"
            with open(log_path, "w") as log:
                proc = subprocess.Popen(
                    [*CLI, "run", *TRAIN], env=env, start_new_session=True,
                    stdout=log, stderr=subprocess.STDOUT,
                )  # fmt: skip
                wait_for(
                    lambda: follower.seen(step, text) is not None,  # noqa: B023
                    f"{step} ({text or 'start'})",
                    alive=lambda: proc.poll() is None,  # noqa: B023
                )
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            assert proc.returncode == -signal.SIGKILL, log_path.read_text()
            landed[step] = steps_in_flight(instance, follower.seen(step, text))
    print("kills landed in:", landed)
    # Each kill landed inside a step, and in most stages inside the very step it
    # aimed at (a step shorter than the poll may have ended just before the kill).
    assert all(landed.values()), landed
    assert landed["clean_shards"] == ["clean_shards"], landed  # mid shard set
    assert sum(step in flight for step, flight in landed.items()) >= 7, landed

    final = _run(env, "run", *TRAIN)
    assert final.returncode == 0, final.stdout + final.stderr
    assert "pool slots given back" in final.stdout  # the last killed run's, at least
    again = _run(env, "run", *TRAIN)
    assert again.stdout.strip().endswith("nothing pending"), again.stdout

    # The reference: the same batches uninterrupted (their embeddings come from the
    # session's shared cache, see tests/conftest.py: the rows compared are chunk ids
    # and texts).
    done = _run(_env(reference), "backfill")
    assert done.returncode == 0, done.stderr

    layout = DataLayout(crashed / "data")
    assert _verify_published(layout) >= 4
    # The same chunks as the uninterrupted run, none twice.
    rows = _chunks(crashed)
    assert len({chunk_id for chunk_id, _ in rows}) == len(rows)
    assert rows == _chunks(reference)
    # The dedup index holds exactly the documents that survived into the shards.
    _dedup_index_matches_shards(layout, ("docs/b1", "docs/b2"))
    # The training snapshot saw each batch once; the alias history is whole.
    dataset = json.loads((layout.training_dataset / "dataset.json").read_text())
    assert sorted(dataset["shard_sets"]) == ["docs/b1", "docs/b2"]
    aliases = json.loads(layout.aliases("tiny").read_text())
    assert aliases["champion"] and aliases["history"][-1]["version"] == aliases["champion"]
    with open_instance() as instance:
        active = instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
        assert not active


def test_kill_9_of_a_daemon_launched_run_is_reaped_by_the_sensor_and_the_next_run_finishes(
    tmp_path, monkeypatch
):
    """The daemon's landing sensor launches the batch; while dedup writes the shard
    set, the daemon and everything under it (code server, run worker, step process)
    are killed with kill -9, as a crash of the machine or pod would: nothing is left
    to report the run's end, so it stays STARTED holding the `dedup_index` slot.
    The daemon started again reaps it with the dead-run sensor; the next run
    finishes the batch with nothing lost or doubled."""
    env = {**_env(tmp_path), "LLAMA_COALESCE_WINDOW_SECONDS": "0"}
    monkeypatch.setenv("DAGSTER_HOME", env["DAGSTER_HOME"])
    open_instance().dispose()
    _land(tmp_path, env, (("b1", range(0, 4)),))
    with open_instance() as instance:
        follower = RunFollower(instance)
        with daemon(env, tmp_path / "daemon-1.log") as alive:
            wait_for(lambda: follower.seen("clean_shards", "deduplicated") is not None,
                     "the sensor-launched run's dedup", alive=alive)  # fmt: skip
        run_id = follower.seen("clean_shards", "deduplicated")
        run = instance.get_run_by_id(run_id)
        assert run.tags.get("dagster/sensor_name") == "landing_zone_sensor"
        assert run.status == dg.DagsterRunStatus.STARTED  # nobody left to say otherwise
        held = instance.event_log_storage.get_concurrency_info("dedup_index").claimed_slots
        assert [slot.run_id for slot in held] == [run_id]

        with daemon(env, tmp_path / "daemon-2.log") as alive:
            wait_for(lambda: _reaped(instance, run_id), "the dead-run sensor's reap", alive=alive)
        assert "its pool slots were given back" in _failure_message(instance, run_id)

    done = _run(env, "backfill", "--partitions", "docs/b1")
    assert done.returncode == 0, done.stdout + done.stderr
    layout = DataLayout(tmp_path / "data")
    assert _verify_published(layout) >= 1
    _dedup_index_matches_shards(layout, ("docs/b1",))
    chunks = lancedb.connect(str(layout.lancedb)).open_table("chunks").to_arrow()
    ids = chunks["chunk_id"].to_pylist()
    assert len(ids) == len(set(ids)) > 0
    shards = read_table(layout.shards("docs/b1"))
    indexed = set(shards.filter(pl.col("for_index"))["doc_id"].to_list())
    assert set(chunks["doc_id"].to_pylist()) == indexed  # every surviving document, once


def _reaped(instance: dg.DagsterInstance, run_id: str) -> bool:
    """The run is failed and its slot free (the sensor does one, then the other)."""
    failed = instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.FAILURE
    return (
        failed and not instance.event_log_storage.get_concurrency_info("dedup_index").claimed_slots
    )


def _failure_message(instance: dg.DagsterInstance, run_id: str) -> str:
    records = instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
    return " ".join(r.dagster_event.message or "" for r in records)

"""A write killed before its rename leaves a hidden temporary folder: no reader
takes it for an artifact, and it is collected once its writer is gone."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import dagster as dg
import polars as pl

from llama_assets.base.atomic import collect_stale_temps, staged_dir
from llama_assets.partitions import BATCHES
from llama_assets.tables import write_table
from llama_assets.training.assets import training_dataset

KILLED_WRITER = """
import sys, time
from pathlib import Path
from llama_assets.base.atomic import staged_dir
with staged_dir(Path(sys.argv[1])) as staged:
    (staged / "manifest.json").write_text("{}")
    print(staged, flush=True)
    time.sleep(600)
"""


def killed_writer(final) -> tuple[str, int]:
    """A process that stages `final`, is killed with SIGKILL mid-write; its temp path."""
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(final)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    staged = child.stdout.readline().strip()
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    return staged, child.pid


def test_training_dataset_reads_only_registered_batches(layout, instance, resources):
    docs = pl.DataFrame(
        {
            "doc_id": [f"a{i}" for i in range(40)],
            "source": "docs",
            "batch": "one",
            "text": [f"document number {i} " * 20 for i in range(40)],
        }
    )
    write_table(docs, layout.shards("docs/one"))
    instance.add_dynamic_partitions(BATCHES, ["docs/one"])
    # A write of the same shard set killed between its manifest and its rename,
    # and a folder left by a batch no longer registered.
    shutil.copytree(layout.shards("docs/one"), layout.shards_root / "docs" / ".one.p4194303-x1.tmp")
    shutil.copytree(layout.shards("docs/one"), layout.shards_root / "docs" / "gone")
    result = dg.materialize([training_dataset], instance=instance, resources=resources)
    meta = result.asset_materializations_for_node("training_dataset")[0].metadata
    assert (meta["documents"].value, meta["batches"].value) == (40, 1)


def test_a_killed_writers_temp_folder_is_collected(tmp_path):
    root = tmp_path / "data"
    final = root / "shards" / "web" / "b1"
    staged, pid = killed_writer(final)
    assert staged.startswith(str(final.parent / f".b1.p{pid}h"))
    assert os.path.isdir(staged) and not final.exists()

    # The next write of the same artifact removes the dead writer's copy first.
    with staged_dir(final) as mine:
        (mine / "manifest.json").write_text("{}")
        assert not os.path.exists(staged)
    assert sorted(p.name for p in final.parent.iterdir()) == ["b1"]

    # The collector over the whole data root: dead writers' and old entries go;
    # a live writer's, a person's hidden file in a landing batch and LanceDB's stay.
    again, _ = killed_writer(root / "datasets" / "training" / "train")
    live = root / "staging" / "chunks" / "web" / f".b2.p{os.getpid()}-abc.tmp"
    old = root / "profiles" / "web" / ".b3.json.zz9.tmp"
    ingest = root / "landing" / "web" / ".b4.p4194303-q.tmp"
    kept = [
        live,
        root / "landing" / "web" / "b5" / ".notes.v1.tmp",
        root / "lancedb" / "chunks.lance" / ".x.p4194303-y.tmp",
        root / "profiles" / "web" / "b3.json",
        # Another machine's writer (a pod sharing the volume): its pid means nothing here.
        root / "staging" / "chunks" / "web" / ".b6.p4194303h00000000-z.tmp",
    ]
    for path in (old, ingest, *kept):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
    hour_ago = time.time() - 2 * 3600
    os.utime(old, (hour_ago, hour_ago))
    os.utime(kept[1], (hour_ago, hour_ago))
    removed = collect_stale_temps(root)
    assert sorted(map(str, removed)) == sorted(map(str, [again, old, ingest]))
    assert all(p.exists() for p in kept)
    assert final.is_dir()


def test_run_collects_what_a_killed_write_left_before_it_plans(tmp_path):
    """`llama-platform run` (and `backfill`) collect the temporary folders of killed
    writes at their start; a live writer's stays."""
    root, home = tmp_path / "data", tmp_path / "home"
    staged, _ = killed_writer(root / "shards" / "docs" / "b1")
    live = root / "staging" / "chunks" / "docs" / f".b2.p{os.getpid()}-abc.tmp"
    live.mkdir(parents=True)
    env = {**os.environ, "LLAMA_DATA_ROOT": str(root), "DAGSTER_HOME": str(home)}
    for command in ("run", "backfill"):
        done = subprocess.run(
            [sys.executable, "-m", "llama_assets.cli", command],
            env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        # (`run` on an empty data root then stops at the training snapshot: no shards.)
        assert command == "run" or done.returncode == 0, done.stdout + done.stderr
        if command == "run":
            assert "removed 1 temporary entries that killed writes left" in done.stdout
            assert not os.path.exists(staged) and live.is_dir()
            staged, _ = killed_writer(root / "models" / "tiny" / "runs" / "r1")  # for backfill
    assert not os.path.exists(staged) and live.is_dir()

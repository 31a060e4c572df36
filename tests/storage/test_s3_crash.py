"""kill -9 in the middle of a publish on S3: the previous version stays readable,
and the next run completes with nothing duplicated.

The killed run is a child process that blocks at the most dangerous moment
(tests/storage/crash_child.py): every part of a new shard set uploaded but not
its manifest; the files of a training checkpoint uploaded but not its tree.json.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import dagster as dg
import pytest

from llama_assets.base.layout import DataLayout
from llama_assets.base.shards import read_manifest
from llama_assets.base.store import TREE_MANIFEST
from llama_assets.curate.assets import clean_shards, validated_documents
from llama_assets.ingest.assets import raw_documents
from llama_assets.ingest.landing import add_to_landing
from llama_assets.instance import open_instance
from llama_assets.tables import read_table
from llama_assets.training.assets import finetuned_checkpoint, training_dataset
from llama_assets.training.checkpointer import latest_valid_checkpoint, training_checkpoints
from llama_assets.training.pipeline import checkpoint_version
from llama_assets.training.variants import get_variant
from resources.environments import resources_for
from tests.landing import topic
from tests.storage.crash_child import KEY, TRAIN

pytestmark = pytest.mark.s3_e2e

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def batch(tmp_path_factory, s3_server, pg_url):
    """An S3 root with batch docs/one through clean_shards and the training snapshot."""
    tmp = tmp_path_factory.mktemp("crash")
    docs = tmp / "docs"
    docs.mkdir()
    for i in range(12):
        (docs / f"{i}.txt").write_text(topic(i))
    with pytest.MonkeyPatch.context() as mp:
        env = {
            **s3_server.env,
            "LLAMA_DATA_ROOT": f"s3://llama/crash-{uuid.uuid4().hex[:8]}",
            "LLAMA_DEDUP_INDEX_URL": pg_url,
            "LLAMA_CACHE_DIR": str(tmp / "cache"),
            "DAGSTER_HOME": str(tmp / "home"),
            "LLAMA_GC_GRACE_SECONDS": "0",
            "AWS_MAX_ATTEMPTS": "2",
            "HF_HUB_OFFLINE": "1",
        }
        for name, value in env.items():
            mp.setenv(name, value)
        resources = resources_for()
        layout = resources["storage"].layout
        add_to_landing(docs, layout.landing, "docs", "one")
        with open_instance() as instance:
            instance.add_dynamic_partitions("batches", [KEY])
            for assets, key in (
                ([raw_documents, validated_documents, clean_shards], KEY),
                ([training_dataset], None),
            ):
                assert dg.materialize(
                    assets, instance=instance, resources=resources, partition_key=key
                ).success
        yield env, layout, tmp


def killed_child(env: dict, tmp: Path, what: str) -> None:
    """Run the child until it holds at its moment, then kill -9 it."""
    marker = tmp / f"{what}.held"
    marker.unlink(missing_ok=True)
    child_env = {**os.environ, **env, "DAGSTER_HOME": str(tmp / f"home-{what}")}
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.storage.crash_child", what, str(marker)],
        cwd=REPO,
        env=child_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    while not marker.exists():
        if child.poll() is not None:
            pytest.fail(f"the child ended before holding:\n{child.stdout.read().decode()[-3000:]}")
        assert time.monotonic() < deadline, "the child never reached its moment"
        time.sleep(0.2)
    os.killpg(child.pid, signal.SIGKILL)
    child.wait()


def unreferenced(layout: DataLayout, folder, referenced: set[str]) -> list[str]:
    return [o.key for o in folder.files() if o.key not in referenced]


def test_kill_9_during_a_shard_publish(batch):
    env, layout, tmp = batch
    table = layout.shards(KEY)
    before = read_manifest(table)
    rows = read_table(table)

    killed_child(env, tmp, "shards")

    # The killed run uploaded a whole new version's parts; nothing points at them.
    listed = {"manifest.json", *(s["file"] for s in before["shards"])}
    orphans = unreferenced(layout, table, listed)
    assert orphans and all(o.endswith(".parquet") for o in orphans)
    assert read_manifest(table) == before
    assert read_table(table).equals(rows)

    # The next run publishes again and collects the orphans; nothing is duplicated.
    resources = resources_for()
    with open_instance() as instance:
        result = dg.materialize(
            [clean_shards], instance=instance, resources=resources, partition_key=KEY
        )
        assert result.success
        index = resources["storage"].dedup_index(instance)
    after = read_manifest(table)
    assert [s["sha256"] for s in after["shards"]] == [s["sha256"] for s in before["shards"]]
    assert read_table(table).equals(rows)
    assert (
        unreferenced(layout, table, {"manifest.json", *(s["file"] for s in after["shards"])}) == []
    )
    assert index.batch_counts() == {KEY: rows.height}


def test_kill_9_during_a_checkpoint_write(batch):
    env, layout, tmp = batch
    dataset = (layout.training_dataset / "dataset.json").read_json()
    variant = get_variant("tiny")
    cfg = variant.train.with_overrides(TRAIN)
    run_dir = layout.training_run("tiny", checkpoint_version(variant, cfg, dataset["data_version"]))

    killed_child(env, tmp, "checkpoint")

    # step 2's files are up, its tree.json is not: step 1 is the newest readable one.
    steps = [c.name for c in training_checkpoints(run_dir)]
    assert steps == ["step-000001", "step-000002"]
    assert not (run_dir / "step-000002" / TREE_MANIFEST).is_file()
    found, skipped = latest_valid_checkpoint(run_dir)
    assert found.name == "step-000001" and "no tree.json" in skipped[0]

    with open_instance() as instance:
        result = dg.materialize(
            [finetuned_checkpoint],
            instance=instance,
            resources=resources_for(),
            partition_key="tiny",
            run_config={"ops": {"finetuned_checkpoint": {"config": TRAIN}}},
        )
    assert result.success
    meta = result.asset_materializations_for_node("finetuned_checkpoint")[0].metadata
    assert meta["resumed_from_step"].value == 1
    assert meta["steps"].value == 4
    # The newest two steps are kept, each one published version; the killed
    # upload went with its step.
    assert [c.name for c in training_checkpoints(run_dir)] == ["step-000003", "step-000004"]
    for step in training_checkpoints(run_dir):
        versions = {o.key.split("/")[0] for o in step.files() if o.key != TREE_MANIFEST}
        assert len(versions) == 1, step

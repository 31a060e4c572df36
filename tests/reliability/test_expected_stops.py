"""Expected stops read as sentences, and stop only what they must.

Reproduces what an attack found: one batch over its reject limit stopped every
batch after it (and the variant chain), with a stack trace; and once repaired
elsewhere, a stopped batch must not make the training snapshot stale run after
run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import dagster as dg

from llama_assets.runner import PlannedRun, _failure_sentence
from tests.gates import lenient_gate
from tests.landing import TOPIC_KEYS, topic

CLI = [sys.executable, "-m", "llama_assets.cli"]


def _cli(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=900)


def _count(instance, asset: str, partition: str | None = None) -> int:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(
            asset_key=dg.AssetKey(asset), asset_partitions=[partition] if partition else None
        ),
        limit=100,
    )
    return len(records.records)


def test_a_batch_over_its_reject_limit_stops_alone_with_a_sentence(tmp_path):
    data, home = tmp_path / "data", tmp_path / "home"
    env = {**os.environ, "LLAMA_DATA_ROOT": str(data), "DAGSTER_HOME": str(home)}
    lenient_gate(data)  # 4 training steps: this test is about stops, not the gate
    for batch, indices in (("b1", range(0, 10)), ("b2", range(10, 14)), ("b3", range(14, 24))):
        folder = tmp_path / batch
        folder.mkdir()
        for i in indices:
            (folder / f"{TOPIC_KEYS[i]}.txt").write_text(topic(i))
        if batch == "b2":  # 3 broken records of 7: 43% rejected, over the 1% limit
            (folder / "broken.jsonl").write_text('{"text": 1}\nnot json\n{"title": "x"}\n')
        assert (
            _cli(env, "ingest", str(folder), "--source", "docs", "--batch", batch).returncode == 0
        )

    # The first run also fails the model chain (invalid settings, not retried).
    first = _cli(env, "run", "--max-steps", "0")
    out = first.stdout + first.stderr
    assert first.returncode == 1, out
    assert "Traceback" not in out
    quarantine = data / "quarantine" / "docs" / "b2" / "raw_documents.jsonl"
    sentence = "batch docs/b2 stopped: 3 of 7 records were rejected (42.9%; "
    assert sentence in out
    assert f"The rejects and their reasons are in {quarantine}" in out
    assert "max_reject_rate = 0.5` under [sources.docs]" in out
    assert "2 run(s) stopped; everything else ran:" in out
    assert "training settings for tiny are invalid: max_steps must be at least 1" in out
    assert "Exceeded max_retries" not in out

    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert _count(instance, "clean_shards", "docs/b3") == 1  # the batch after b2 ran
        assert _count(instance, "clean_shards", "docs/b2") == 0
        snapshots = _count(instance, "training_dataset")
        assert snapshots == 1
    manifest = json.loads((data / "datasets/training/dataset.json").read_text())
    assert sorted(manifest["shard_sets"]) == ["docs/b1", "docs/b3"]

    # The chain repaired: it runs on the newest data (b1 and b3), while b2 stops again.
    repaired = _cli(env, "run", "--max-steps", "4")
    out = repaired.stdout + repaired.stderr
    assert repaired.returncode == 1 and "batch docs/b2 stopped" in out, out
    assert "✓ promoted_model" in out and "training dataset" not in out, out

    # Again: b2 stops again, and nothing else is rebuilt because of it.
    again = _cli(env, "run", "--max-steps", "4")
    out = again.stdout + again.stderr
    assert again.returncode == 1 and "batch docs/b2 stopped" in out, out
    assert "training dataset" not in out and "model variant" not in out, out
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert _count(instance, "training_dataset") == snapshots

    # Raising the limit as the sentence says lets b2 through.
    (data / "sources.toml").write_text("[sources.docs]\nmax_reject_rate = 0.5\n")
    fixed = _cli(env, "backfill", "--partitions", "docs/b2")
    out = fixed.stdout + fixed.stderr
    assert fixed.returncode == 0 and "re-materialised 1 of 1" in out, out
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert _count(instance, "clean_shards", "docs/b2") == 1


def test_a_step_that_failed_after_its_retries_is_reported_by_its_own_error(tmp_path):
    """Dagster wraps the last failure of a step with a retry policy in
    RetryRequestedFromPolicy ("Exceeded max_retries of 1"); the sentence names the
    step's own error instead, which says what went wrong."""

    @dg.asset(retry_policy=dg.RetryPolicy(max_retries=1, delay=0))
    def flaky():
        raise OSError("No space left on device")

    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        result = dg.materialize([flaky], instance=instance, raise_on_error=False)
    [failure] = [e for e in result.all_events if e.is_step_failure]
    assert failure.step_failure_data.error.cls_name == "RetryRequestedFromPolicy"
    sentence = _failure_sentence(result, PlannedRun("__ASSET_JOB", None, (flaky.key,)))
    assert sentence.startswith("flaky: OSError: No space left on device (the disk is full")
    assert "max_retries" not in sentence

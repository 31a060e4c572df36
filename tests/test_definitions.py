"""The code location as Dagster loads it: every job, sensor and schedule resolves,
every sensor and schedule evaluates on an empty instance, and every description
renders in the UI."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from llama_assets.definitions import defs
from llama_assets.jobs import ALL_ASSETS, asset_graph

ROOT = Path(__file__).resolve().parents[1]
PLACEHOLDER = re.compile(r"<[A-Za-z][^<>\s]*>")
"""An angle-bracket placeholder such as <variant>: Markdown reads it as an HTML tag
and the UI shows nothing for it, unless it is inside a `code span`."""


def test_the_code_location_loads_and_validates():
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    assert set(graph.get_all_asset_keys()) == {a.key for a in ALL_ASSETS}
    assert graph.toposorted_asset_keys == asset_graph().toposorted_asset_keys


def test_every_job_resolves_to_its_assets():
    jobs = {job.name: job for job in defs.resolve_all_job_defs() if not job.name.startswith("__")}
    assert set(jobs) == {
        "batch_pipeline", "training_dataset_snapshot", "train_evaluate_promote", "serving_rollout"
    }  # fmt: skip
    selected = {
        name: {key.to_user_string() for key in job.asset_layer.selected_asset_keys}
        for name, job in jobs.items()
    }
    assert selected["batch_pipeline"] == {
        "raw_documents", "validated_documents", "review_queue", "corpus_profile",
        "clean_shards", "chunks", "embeddings", "embedding_drift", "rag_index",
    }  # fmt: skip
    assert selected["training_dataset_snapshot"] == {"training_dataset"}
    assert selected["train_evaluate_promote"] == {
        "finetuned_checkpoint", "eval_report", "promoted_model", "serving_deployment",
        "eval_history",
    }  # fmt: skip
    assert selected["serving_rollout"] == {"serving_deployment"}
    assert jobs["batch_pipeline"].partitions_def.name == "batches"


def test_every_sensor_and_schedule_targets_a_job_of_the_location(tmp_path, monkeypatch):
    monkeypatch.setenv("LLAMA_DATA_ROOT", str(tmp_path / "data"))
    sensors = {s.name: s for s in defs.get_repository_def().sensor_defs}
    assert set(sensors) == {
        "dead_run_sensor",
        "corrupt_table_repair_sensor",
        "corrupt_snapshot_repair_sensor",
        "landing_zone_sensor",
        "freshness_sensor",
        "drift_sensor",
        "dedup_order_sensor",
        "canary_sensor",
        "regression_watch_sensor",
    }
    jobs = {job.name for job in defs.resolve_all_job_defs()}
    for sensor in sensors.values():
        assert {target.job_name for target in sensor.targets} <= jobs, sensor.name
    [schedule] = defs.get_repository_def().schedule_defs
    assert schedule.name == "landing_reconciliation" and schedule.job_name in jobs


def test_sensors_and_the_schedule_evaluate_on_an_empty_instance(tmp_path, monkeypatch):
    """A sensor that raises on a fresh install would stop the daemon's ticks."""
    monkeypatch.setenv("LLAMA_DATA_ROOT", str(tmp_path / "data"))
    repository = defs.get_repository_def()
    with dg.instance_for_test() as instance:
        for sensor in defs.get_repository_def().sensor_defs:
            if isinstance(sensor, dg.RunStatusSensorDefinition):
                continue  # evaluated on a failed run in tests/sensors/test_shard_repair.py
            with dg.build_sensor_context(
                instance=instance, repository_def=repository, resources=defs.resources
            ) as context:
                result = sensor.evaluate_tick(context)
            assert not result.run_requests, sensor.name
        for schedule in defs.get_repository_def().schedule_defs:
            with dg.build_schedule_context(
                instance=instance, repository_def=repository, resources=defs.resources
            ) as context:
                data = schedule.evaluate_tick(context)
            assert not data.run_requests, schedule.name


def _descriptions() -> list[tuple[str, str]]:
    found = [
        (key.to_user_string(), description or "")
        for asset in ALL_ASSETS
        for key, description in asset.descriptions_by_key.items()
    ]
    found += [
        (f"check {spec.name}", spec.description or "")
        for asset in ALL_ASSETS
        for spec in asset.check_specs
    ]
    found += [(f"job {j.name}", j.description or "") for j in defs.resolve_all_job_defs()]
    found += [
        (f"sensor {s.name}", s.description or "") for s in defs.get_repository_def().sensor_defs
    ]
    return found


@pytest.mark.parametrize("name,description", _descriptions())
def test_descriptions_keep_their_placeholders_in_the_ui(name, description):
    outside_code = re.sub(r"`[^`]*`", "", description)
    assert not PLACEHOLDER.findall(outside_code), f"{name}: put paths in `code spans`"


def test_every_asset_says_what_it_is():
    for asset in ALL_ASSETS:
        for key, description in asset.descriptions_by_key.items():
            assert description and len(description) > 40, key.to_user_string()
        assert asset.group_names_by_key[asset.key] in {
            "ingest", "curate", "retrieval", "training", "deployment"
        }  # fmt: skip


def test_dagster_validates_the_workspace(tmp_path):
    """What `dagster dev` and the daemon load: workspace.yaml, as a separate process."""
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "DAGSTER_HOME": str(home), "LLAMA_DATA_ROOT": str(tmp_path / "data")}
    done = subprocess.run(
        [str(Path(sys.executable).with_name("dagster")), "definitions", "validate",
         "-w", str(ROOT / "workspace.yaml")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "All code locations passed validation" in done.stdout + done.stderr

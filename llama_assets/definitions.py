"""The code location: every asset, job and sensor, with resources for the environment."""

from __future__ import annotations

import os

import dagster as dg

from llama_assets.base.settings import data_root
from llama_assets.executors import executor_from_env
from llama_assets.jobs import ALL_ASSETS, batch_job, dataset_job, model_job, rollout_job
from resources.device import DeviceResource
from resources.embedder import EmbedderResource
from resources.storage import DataRoot
from resources.vector_store import LanceDBResource
from sensors.canary import canary_sensor
from sensors.dead_runs import dead_run_sensor
from sensors.dedup_order import dedup_order_sensor
from sensors.drift import drift_sensor
from sensors.freshness import freshness_sensor, with_freshness_policies
from sensors.landing import landing_zone_sensor
from sensors.reconcile import landing_reconciliation
from sensors.regression import regression_watch_sensor
from sensors.shard_repair import corrupt_snapshot_repair_sensor, corrupt_table_repair_sensor


def local_resources() -> dict:
    # LLAMA_DATA_ROOT: a local folder or s3://bucket/prefix; the same resources serve both.
    root = data_root()
    return {
        "storage": DataRoot(root=root),
        "vector_store": LanceDBResource(uri=f"{root}/lancedb"),
        "embedder": EmbedderResource(model_path=os.environ.get("LLAMA_EMBEDDER_PATH", "")),
        "device": DeviceResource(),
    }


RESOURCES_BY_ENV = {"local": local_resources}


def resources_for(env: str | None = None) -> dict:
    env = env or os.environ.get("LLAMA_ENV", "local")
    if env not in RESOURCES_BY_ENV:
        raise ValueError(f"LLAMA_ENV={env!r}: known environments are {sorted(RESOURCES_BY_ENV)}")
    return RESOURCES_BY_ENV[env]()


defs = dg.Definitions(
    assets=with_freshness_policies(ALL_ASSETS),
    jobs=[batch_job, dataset_job, model_job, rollout_job],
    schedules=[landing_reconciliation],
    sensors=[
        dead_run_sensor,
        corrupt_table_repair_sensor,
        corrupt_snapshot_repair_sensor,
        landing_zone_sensor,
        freshness_sensor,
        drift_sensor,
        dedup_order_sensor,
        canary_sensor,
        regression_watch_sensor,
    ],
    resources=resources_for(),
    executor=executor_from_env(),
)

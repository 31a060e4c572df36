"""The code location: every asset, job and sensor, with resources for the environment."""

from __future__ import annotations

import dagster as dg

from llama_assets.executors import executor_from_env
from llama_assets.jobs import ALL_ASSETS, batch_job, dataset_job, model_job, rollout_job
from resources.environments import resources_for
from sensors.canary import canary_sensor
from sensors.dead_runs import dead_run_sensor
from sensors.dedup_order import dedup_order_sensor
from sensors.drift import drift_sensor
from sensors.freshness import freshness_sensor, with_freshness_policies
from sensors.landing import landing_zone_sensor
from sensors.reconcile import landing_reconciliation
from sensors.regression import regression_watch_sensor
from sensors.shard_repair import corrupt_snapshot_repair_sensor, corrupt_table_repair_sensor

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

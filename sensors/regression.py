"""Regression watch: re-evaluate each champion when the data or the index changes,
and roll its alias back by itself when it regresses.

Per variant with a champion, each tick (decisions in
``llama_assets.deployment.regression``):

1. the champion's report was made on other held-out data or another index
   version: request ``eval_report`` of the champion before it, then of the
   champion (run config ``version``), on the newest data and index;
2. the champion's new report fails a blocking check (a floor, or behind the
   champion before it), or its re-evaluation run failed: keep the diagnostics,
   raise the alert in the UI (a failed ``champion_holds`` check on
   ``promoted_model``, with the reason), and request a ``serving_rollout`` run
   of ``serving_deployment`` with the ``rollback`` command: the alias and the
   routing state move back together (reason in both histories), so the gateway
   serves the champion before it.

Data version: ``datasets/training/dataset.json``; index version: the
``table_version`` of the newest ``rag_index`` materialisation.
"""

from __future__ import annotations

import json

import dagster as dg

from llama_assets.deployment.assets import CHAMPION_HOLDS, eval_report, promoted_model
from llama_assets.deployment.regression import (
    Watch,
    keep_diagnostics,
    rollback_reason,
    watch_variant,
)
from llama_assets.deployment.rollout import ROLLBACK
from llama_assets.deployment.rollout_assets import serving_deployment
from llama_assets.jobs import model_job, rollout_job
from llama_assets.partitions import variant_partitions
from llama_assets.retrieval.assets import rag_index
from resources.storage import LocalDataRoot
from sensors.records import latest_materialization

WATCH_TAG = "llama/regression_watch"
ROLLBACK_TAG = "llama/regression_rollback"


def index_version(instance: dg.DagsterInstance) -> int | None:
    record = latest_materialization(instance, rag_index.key, None)
    if record is None:
        return None
    value = record.asset_materialization.metadata.get("table_version")
    return int(value.value) if value is not None else None


def failed_evaluation(instance: dg.DagsterInstance):
    """The error of the newest failed watch run for a key (None: none failed)."""

    def lookup(version: str, key: str) -> str | None:
        runs = instance.get_runs(dg.RunsFilter(tags={WATCH_TAG: key}), limit=1)
        if not runs or runs[0].status != dg.DagsterRunStatus.FAILURE:
            return None
        for record in instance.all_logs(runs[0].run_id, of_type=dg.DagsterEventType.STEP_FAILURE):
            error = record.dagster_event.step_failure_data.error
            message = error.message.strip() if error else "step failed"
            if "blocking asset check" in message:
                return None  # it ran and wrote its report; the report decides
            return message.splitlines()[0]
        return "run failed"

    return lookup


def evaluation_request(watch: Watch) -> dg.RunRequest:
    return dg.RunRequest(
        job_name=model_job.name,
        partition_key=watch.variant,
        asset_selection=[eval_report.key],
        run_key=f"regression:{watch.key}",
        run_config={"ops": {eval_report.node_def.name: {"config": {"version": watch.version}}}},
        tags={WATCH_TAG: watch.key, "llama/reason": watch.reason},
    )


def rollback_request(watch: Watch) -> dg.RunRequest:
    """One audited move of alias and routing together (serving_deployment's command)."""
    return dg.RunRequest(
        job_name=rollout_job.name,
        partition_key=watch.variant,
        run_key=f"regression-rollback:{watch.key}",
        run_config={
            "ops": {
                serving_deployment.op.name: {
                    "config": {"action": ROLLBACK, "reason": rollback_reason(watch)}
                }
            }
        },
        tags={ROLLBACK_TAG: watch.key, "rollout/action": ROLLBACK, "llama/reason": watch.reason},
    )


def alert(instance: dg.DagsterInstance, watch: Watch, metadata: dict) -> None:
    """The failed check on promoted_model: red in the UI, with the reason."""
    instance.report_runless_asset_event(
        dg.AssetCheckEvaluation(
            asset_key=promoted_model.key,
            check_name=CHAMPION_HOLDS,
            passed=False,
            partition=watch.variant,
            severity=dg.AssetCheckSeverity.ERROR,
            description=watch.reason,
            metadata={"reason": watch.reason, **metadata},
        )
    )


def watch_all(context: dg.SensorEvaluationContext, storage: LocalDataRoot) -> list[Watch]:
    """Decide and act for every variant; returns the decisions (for the tick's log)."""
    layout = storage.layout
    manifest = layout.training_dataset / "dataset.json"
    if not manifest.exists():
        return []
    data_version = json.loads(manifest.read_text())["data_version"]
    table = index_version(context.instance)
    decisions = []
    cursor = json.loads(context.cursor or "{}")
    for variant in variant_partitions.get_partition_keys():
        watch = watch_variant(
            layout, variant, data_version, table, failed_evaluation(context.instance)
        )
        if watch.action in ("rollback", "alert") and cursor.get(variant) == watch.key:
            continue  # acted on this situation already
        if watch.action == "rollback":
            diagnostics = keep_diagnostics(layout, variant, watch.version, watch.reason)
            metadata = {"rolled_back": watch.version, "diagnostics": str(diagnostics)}
            alert(context.instance, watch, metadata)
            context.log.warning(f"{variant}: {watch.reason}")
        elif watch.action == "alert":
            alert(context.instance, watch, {"champion": watch.version})
            context.log.error(f"{variant}: {watch.reason}")
        if watch.action in ("rollback", "alert"):
            cursor[variant] = watch.key
        decisions.append(watch)
    context.update_cursor(json.dumps(cursor))
    return decisions


@dg.sensor(
    jobs=[model_job, rollout_job],
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="When the data or the index changes: re-evaluate each champion (and the "
    "champion before it) on the newest data; if it fails a blocking check or cannot be "
    "evaluated, keep both reports and the failing samples, fail promoted_model's "
    "champion_holds check, and roll alias and serving back to the champion before it "
    "(a serving_rollout run; reason in the alias history).",
)
def regression_watch_sensor(context: dg.SensorEvaluationContext, storage: LocalDataRoot):
    decisions = watch_all(context, storage)
    requests = [evaluation_request(w) for w in decisions if w.action == "evaluate"]
    requests += [rollback_request(w) for w in decisions if w.action == "rollback"]
    if requests:
        return dg.SensorResult(run_requests=requests)
    acted = [w for w in decisions if w.action == "alert"]
    if acted:
        return dg.SkipReason("; ".join(f"{w.variant}: {w.reason}" for w in acted))
    return dg.SkipReason("every champion is current and passes its gate")

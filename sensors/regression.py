"""Regression watch: re-evaluate each champion when the data or the index changes,
and roll its alias back by itself when it regresses.

Per variant with a champion, each tick (decisions in
``llama_assets.deployment.regression``):

1. the champion's report was made on other held-out data or another index
   version: request ``eval_report`` of the champion before it, then of the
   champion (run config ``version``), on the newest data and index;
2. the champion's new report fails a blocking check (a floor, or behind the
   champion before it), or its re-evaluation run failed: keep the diagnostics
   and request one run that raises the alert in the UI (``promoted_model``
   fails its ``champion_holds`` check with the reason) and then applies
   ``serving_deployment``'s ``rollback`` command: the alias and the routing
   state move back together (reason in both histories), so the gateway serves
   the champion before it. With no champion before it, the run raises the
   alert only.

The alert is a run, not a runless check evaluation: the event log keeps one
runless evaluation per check and partition, so a second regression of the
same variant could not be reported that way.

Data version: ``datasets/training/dataset.json``; index version: the
``table_version`` of the newest ``rag_index`` materialisation.
"""

from __future__ import annotations

import json

import dagster as dg

from llama_assets.deployment.assets import eval_report, promoted_model
from llama_assets.deployment.regression import (
    Watch,
    keep_diagnostics,
    rollback_reason,
    watch_variant,
)
from llama_assets.deployment.rollout import ROLLBACK
from llama_assets.deployment.rollout_assets import serving_deployment
from llama_assets.jobs import model_job
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


def rollback_request(watch: Watch, diagnostics: str) -> dg.RunRequest:
    """One run: ``promoted_model`` fails ``champion_holds`` with the reason (the alert,
    red in the UI), then ``serving_deployment``'s ``rollback`` moves the alias and the
    routing back together. An ``alert`` (nothing to roll back to) runs the first only."""
    reason = f"{watch.reason}; diagnostics in {diagnostics}" if diagnostics else watch.reason
    ops = {promoted_model.node_def.name: {"config": {"regression": reason}}}
    selection = [promoted_model.key]
    if watch.action == "rollback":
        ops[serving_deployment.op.name] = {
            "config": {"action": ROLLBACK, "reason": rollback_reason(watch)}
        }
        selection.append(serving_deployment.key)
    return dg.RunRequest(
        job_name=model_job.name,
        partition_key=watch.variant,
        asset_selection=selection,
        run_key=f"regression-{watch.action}:{watch.key}",
        run_config={"ops": ops},
        tags={ROLLBACK_TAG: watch.key, "llama/regression": watch.action, "llama/reason": reason},
    )


def watch_all(
    context: dg.SensorEvaluationContext, storage: LocalDataRoot
) -> tuple[list[Watch], list[dg.RunRequest]]:
    """Decide for every variant: the decisions, and the runs that act on them."""
    layout = storage.layout
    manifest = layout.training_dataset / "dataset.json"
    if not manifest.exists():
        return [], []
    data_version = json.loads(manifest.read_text())["data_version"]
    table = index_version(context.instance)
    decisions, requests = [], []
    cursor = json.loads(context.cursor or "{}")
    for variant in variant_partitions.get_partition_keys():
        watch = watch_variant(
            layout, variant, data_version, table, failed_evaluation(context.instance)
        )
        if watch.action in ("rollback", "alert") and cursor.get(variant) == watch.key:
            continue  # acted on this situation already
        diagnostics = ""
        if watch.action == "rollback":
            diagnostics = str(keep_diagnostics(layout, variant, watch.version, watch.reason))
            context.log.warning(f"{variant}: {watch.reason}")
        elif watch.action == "alert":
            context.log.error(f"{variant}: {watch.reason}")
        if watch.action in ("rollback", "alert"):
            cursor[variant] = watch.key
            requests.append(rollback_request(watch, diagnostics))
        decisions.append(watch)
    context.update_cursor(json.dumps(cursor))
    requests += [evaluation_request(w) for w in decisions if w.action == "evaluate"]
    return decisions, requests


@dg.sensor(
    jobs=[model_job],
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="When the data or the index changes: re-evaluate each champion (and the "
    "champion before it) on the newest data; if it fails a blocking check or cannot be "
    "evaluated, keep both reports and the failing samples, fail promoted_model's "
    "champion_holds check, and roll alias and serving back to the champion before it "
    "(serving_deployment's rollback command; reason in the alias history).",
)
def regression_watch_sensor(context: dg.SensorEvaluationContext, storage: LocalDataRoot):
    decisions, requests = watch_all(context, storage)
    if requests:
        return dg.SensorResult(run_requests=requests)
    return dg.SkipReason("every champion is current and passes its gate")

"""The canary sensor: judges each rollout step from the gateway's requests and moves it.

For every variant whose routing state has a progressing rollout, it reads the
requests the gateway measured since the step began (`/admin/samples`), judges
them (`deployment/rollout.judge`: error-rate and p99 rules, Mann-Whitney on
latency with an effect size) and requests one `serving_rollout` run with the
move: advance to the next stage, promote at 100%, abort (diagnostics first),
or pause on an inconclusive verdict. A canary the gateway has tripped to 0% is
aborted at once. Run keys name the variant, the state's revision and the move,
so a judgement is acted on once however often the sensor ticks; the run
skips itself if the state moved in between.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import dagster as dg

from llama_assets.deployment.gateway_client import GatewayClient, GatewayUnavailable
from llama_assets.deployment.rollout import (
    ABORT,
    RolloutPolicy,
    judge,
    next_move,
    step_samples,
    summary,
)
from llama_assets.deployment.rollout_assets import serving_deployment
from llama_assets.jobs import rollout_job
from llama_assets.serving.routing import PROGRESSING, RouteState, read_state
from llama_assets.training.variants import VARIANTS
from resources.storage import LocalDataRoot


def rollout_request(state: RouteState, action: str, reason: str, judgement: dict | None):
    return dg.RunRequest(
        partition_key=state.variant,
        run_key=f"rollout:{state.variant}:{state.revision}:{action}",
        run_config={
            "ops": {
                serving_deployment.op.name: {
                    "config": {
                        "action": action,
                        "reason": reason,
                        "expected_revision": state.revision,
                        "judgement": json.dumps(judgement) if judgement else "",
                    }
                }
            }
        },
        tags={"rollout/action": action, "rollout/revision": str(state.revision)},
    )


def decide(storage: LocalDataRoot, state: RouteState, log) -> dg.RunRequest | None:
    layout = storage.layout
    trip_path = layout.gateway_trip(state.variant)
    if trip_path.exists():
        trip = json.loads(trip_path.read_text())
        if trip.get("version") == state.canary:
            return rollout_request(state, ABORT, f"the gateway tripped it: {trip['reason']}", None)
    if state.canary_weight <= 0:  # a blue-green preview waits for its switch
        return None
    policy = RolloutPolicy.from_json(state.policy)
    client = GatewayClient.for_variant(layout, state.variant)
    start = datetime.fromisoformat(state.rollout_started_at).timestamp()
    samples = client.samples(since=start)
    stable, canary, since, concurrent = step_samples(
        samples, state, policy.thresholds.min_baseline_samples
    )
    step = policy.step(state)
    elapsed = datetime.now(UTC).timestamp() - since
    judgement = judge(stable, canary, step, policy.thresholds, elapsed, concurrent)
    line = summary(state, step, judgement)
    log.info(f"{state.variant} {state.canary}: {line}")
    move = next_move(state, judgement, policy)
    if move is None:
        return None
    return rollout_request(state, move, line, judgement.to_json())


@dg.sensor(
    job=rollout_job,
    minimum_interval_seconds=15,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Judges each canary step from the gateway's requests (error-rate and p99 "
    "rules, Mann-Whitney on latency with an effect size) and advances, promotes, pauses "
    "or rolls back the rollout through a `serving_rollout` run.",
)
def canary_sensor(context: dg.SensorEvaluationContext, storage: LocalDataRoot):
    requests, notes = [], []
    for variant in VARIANTS:
        path = storage.layout.deployment(variant)
        if not path.exists():
            continue
        state = read_state(path, variant)
        if state.status != PROGRESSING or state.canary is None:
            continue
        try:
            request = decide(storage, state, context.log)
        except GatewayUnavailable as exc:
            notes.append(str(exc))
            continue
        if request is not None:
            requests.append(request)
    if not requests:
        return dg.SkipReason("; ".join(notes) or "no rollout step to move")
    return requests

"""serving_deployment: the routing state of a variant, moved only by audited runs.

Each materialisation applies one command to `serving/<variant>/deployment.json`
(atomically; the gateway follows the file): `sync` (the default, after
`promoted_model`: serve the champion, start a canary of a new release
candidate), the canary sensor's `advance`, `promote` (the champion alias moves
here, at 100%), `abort` and `pause`, a person's `resume`, `rollback` (the champion alias back
one promotion and the champion it moved back to served: `llama-platform
rollback` and the regression watch), and blue-green's
`blue_green` (stage a preview at 0%), `switch` (after a pre-switch analysis of
pinned smoke requests) and `switch_back`. A command carries the revision it
was decided on and is skipped when the state has moved since, so a repeated
run never moves a rollout twice. An abort saves diagnostics first.

The SLO checks read the gateway's requests of the last five minutes:
availability and the canary's error delta page (ERROR), p99 latency makes a
ticket (WARN).
"""

import json
from datetime import UTC, datetime

import dagster as dg
import numpy as np

from llama_assets.deployment.assets import promoted_model
from llama_assets.deployment.diagnostics import save_diagnostics
from llama_assets.deployment.gateway_client import GatewayClient, GatewayUnavailable
from llama_assets.deployment.registry import (
    RollbackError,
    promote,
    read_aliases,
    rollback,
    withdraw,
)
from llama_assets.deployment.rollout import (
    ABORT,
    ADVANCE,
    PAUSE,
    PROMOTE,
    ROLLBACK,
    RolloutPolicy,
    RolloutRefused,
    abort,
    advance,
    judge,
    pause,
    promote_canary,
    resume,
    serve_rolled_back,
    start_blue_green,
    start_canary,
    switch,
    sync,
)
from llama_assets.partitions import variant_partitions
from llama_assets.serving.routing import RouteState, read_state, write_state
from resources.storage import LocalDataRoot

COMMANDS = (
    "sync", "canary", ADVANCE, PROMOTE, ABORT, PAUSE, "resume", "blue_green", "switch",
    "switch_back", ROLLBACK,
)  # fmt: skip
SLO_WINDOW_S = 300.0
AVAILABILITY_SLO = 0.995
P99_SLO_S = 2.0
CANARY_ERROR_DELTA_SLO = 0.02


class RolloutCommand(dg.Config):
    """One move of the routing state (see the module docstring)."""

    action: str = "sync"
    reason: str = ""
    expected_revision: int = -1  # -1: whatever the state is now
    judgement: str = ""  # the sensor's judgement (JSON), kept with the move
    version: str = ""  # `canary` / `blue_green`: the version (default: the candidate)


def load_policy(storage: LocalDataRoot, variant: str) -> RolloutPolicy:
    path = storage.layout.rollout_policy(variant)
    return (
        RolloutPolicy.from_json(json.loads(path.read_text())) if path.exists() else RolloutPolicy()
    )


def _apply(
    context: dg.AssetExecutionContext,
    storage: LocalDataRoot,
    state: RouteState,
    command: RolloutCommand,
) -> tuple[RouteState | None, dict]:
    """The next state (None: unchanged) and extra metadata."""
    layout, variant = storage.layout, state.variant
    aliases = read_aliases(layout.aliases(variant))
    reason = command.reason or command.action
    judgement = json.loads(command.judgement) if command.judgement else None
    policy = (
        RolloutPolicy.from_json(state.policy) if state.policy else load_policy(storage, variant)
    )
    action = command.action
    if action == "sync":
        return sync(
            state, aliases["champion"], aliases.get("candidate"), load_policy(storage, variant)
        ), {}
    if action in ("canary", "blue_green"):
        version = command.version or aliases.get("candidate")
        if not version:
            raise RolloutRefused("no version given and no release candidate")
        if not layout.models(variant, version).is_dir():
            raise RolloutRefused(f"{layout.models(variant, version)} does not exist")
        start = start_canary if action == "canary" else start_blue_green
        policy = load_policy(storage, variant)
        # Serve the champion first if nothing is served yet.
        state = sync(state, aliases["champion"], None, policy) or state
        return start(state, version, policy, reason), {}
    if action == ADVANCE:
        return advance(state, policy, reason), {}
    if action == PROMOTE:
        new = promote_canary(state, reason)
        promote(layout.aliases(variant), new.stable, reason=f"rollout reached 100%: {reason}")
        return new, {"champion": new.stable}
    if action in (ABORT, "switch_back"):
        return _roll_back(context, storage, state, reason, judgement, action)
    if action == ROLLBACK:
        return _roll_back_champion(context, storage, state, reason)
    if action == PAUSE:
        return pause(state, reason), {}
    if action == "resume":
        return resume(state, reason), {}
    if action == "switch":
        return _pre_switch_analysis(context, storage, state, policy, reason)
    raise RolloutRefused(f"unknown action {action!r}; one of {', '.join(COMMANDS)}")


def _roll_back(context, storage, state, reason, judgement, action) -> tuple[RouteState, dict]:
    """Diagnostics first, then the canary to 0%; the candidate is withdrawn."""
    if state.canary is None:
        raise RolloutRefused("no canary to roll back")
    layout = storage.layout
    saved = save_diagnostics(layout, state, reason, judgement)
    context.log.warning(f"{state.canary} rolled back ({reason}); diagnostics in {saved}")
    new = abort(state, reason, action=action)
    layout.gateway_trip(state.variant).unlink(missing_ok=True)  # kept in the diagnostics
    withdraw(layout.aliases(state.variant), state.canary, reason=f"rolled back: {reason}")
    return new, {"diagnostics": dg.MetadataValue.path(str(saved))}


def _roll_back_champion(context, storage, state, reason) -> tuple[RouteState, dict]:
    """The champion alias back one promotion and the routing state with it, in one move
    (`llama-platform rollback` and the regression watch both run it): a rollout in
    progress is aborted (diagnostics first, its candidate withdrawn), then the champion
    rolled back to is served. The reason goes into both histories."""
    layout, variant = storage.layout, state.variant
    try:
        aliases = rollback(layout.aliases(variant), reason=reason)
    except RollbackError as exc:
        raise RolloutRefused(str(exc)) from None
    extra: dict = {"champion": aliases["champion"]}
    if state.canary is not None:
        state, aborted = _roll_back(
            context, storage, state, f"champion rolled back: {reason}", None, ABORT
        )
        extra |= aborted
    return serve_rolled_back(state, aliases["champion"], reason), extra


def _pre_switch_analysis(context, storage, state, policy, reason) -> tuple[RouteState, dict]:
    """Smoke requests pinned to the preview, judged against the active version's recent
    requests; a pass switches all traffic at once, a failure aborts the preview."""
    if state.canary is None:
        raise RolloutRefused("no blue-green preview to switch to")
    client = GatewayClient.for_variant(storage.layout, state.variant)
    smoke = client.smoke(state.canary, state.variant, policy.smoke_requests)
    now = datetime.now(UTC).timestamp()
    baseline = [
        s
        for s in client.samples(now - SLO_WINDOW_S)
        if s["version"] == state.stable and s["role"] == "stable"
    ]
    step = policy.post_switch.__class__(0, "pre-switch", policy.smoke_requests, 0.0)
    verdict = judge(
        baseline,
        [{**s, "role": "canary"} for s in smoke],
        step,
        policy.thresholds,
        elapsed_s=0.0,
    )
    failed = [s for s in smoke if s["status"] != 200]
    metadata = {"pre_switch": dg.MetadataValue.json(verdict.to_json())}
    if failed or verdict.verdict == "Failed":
        why = (
            f"pre-switch analysis failed: {len(failed)} of {len(smoke)} smoke requests "
            f"failed; {'; '.join(verdict.reasons)}"
        )
        new, extra = _roll_back(context, storage, state, why, verdict.to_json(), "switch_back")
        return new, {**metadata, **extra}
    return switch(state, f"{reason}: pre-switch analysis {verdict.verdict}"), metadata


# --- SLOs as asset checks -------------------------------------------------------------------------

SLO_CHECKS = [
    dg.AssetCheckSpec(
        "availability_slo",
        asset="serving_deployment",
        description=f"Requests without a 5xx >= {AVAILABILITY_SLO:.1%} over the last 5 minutes "
        "at the gateway (severity ERROR: page).",
    ),
    dg.AssetCheckSpec(
        "latency_p99_slo",
        asset="serving_deployment",
        description=f"p99 end-to-end latency <= {P99_SLO_S:g} s over the last 5 minutes "
        "(severity WARN: ticket).",
    ),
    dg.AssetCheckSpec(
        "canary_error_delta_slo",
        asset="serving_deployment",
        description=f"The canary's 5xx ratio at most {CANARY_ERROR_DELTA_SLO:.0%} above the "
        "stable version's (severity ERROR: page).",
    ),
]


def serving_slos(storage: LocalDataRoot, variant: str):
    """The SLO check results from the gateway's requests of the last five minutes (all
    passing, with a note, when no gateway serves the variant)."""
    try:
        since = datetime.now(UTC).timestamp() - SLO_WINDOW_S
        samples = GatewayClient.for_variant(storage.layout, variant).samples(since)
    except GatewayUnavailable as exc:
        for name in ("availability_slo", "latency_p99_slo", "canary_error_delta_slo"):
            yield dg.AssetCheckResult(
                check_name=name, passed=True, metadata={"requests": 0, "note": str(exc)}
            )
        return
    errors = [s for s in samples if s["status"] >= 500]
    availability = 1 - len(errors) / len(samples) if samples else 1.0
    yield dg.AssetCheckResult(
        check_name="availability_slo",
        passed=availability >= AVAILABILITY_SLO,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"availability": availability, "requests": len(samples), "errors": len(errors)},
    )
    latencies = [s["latency_s"] for s in samples if s["status"] < 500]
    p99 = float(np.quantile(latencies, 0.99)) if latencies else 0.0
    yield dg.AssetCheckResult(
        check_name="latency_p99_slo",
        passed=p99 <= P99_SLO_S,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"p99_seconds": p99, "requests": len(latencies)},
    )

    def error_rate(role: str) -> float:
        mine = [s for s in samples if s["role"] == role]
        return sum(s["status"] >= 500 for s in mine) / len(mine) if mine else 0.0

    delta = error_rate("canary") - error_rate("stable")
    yield dg.AssetCheckResult(
        check_name="canary_error_delta_slo",
        passed=delta <= CANARY_ERROR_DELTA_SLO,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"error_rate_delta": delta},
    )


@dg.asset(
    partitions_def=variant_partitions,
    deps=[promoted_model],
    group_name="deployment",
    kinds={"json"},
    check_specs=SLO_CHECKS,
    description="The routing state the gateway follows (`serving/<variant>/deployment.json`): "
    "the stable version, the canary or blue-green preview and its weight, the stage, the "
    "status and every move. After `promoted_model` it serves the champion and starts a "
    "canary of a new release candidate; the canary sensor advances it through the stages "
    "1-5%, 10-25%, 50% and 100%, promotes it (the champion alias moves then) or rolls it "
    "back with diagnostics; `llama-platform rollout` runs the other moves.",
)
def serving_deployment(
    context: dg.AssetExecutionContext, config: RolloutCommand, storage: LocalDataRoot
) -> dg.MaterializeResult:
    variant = context.partition_key
    path = storage.layout.deployment(variant)
    state = read_state(path, variant)
    skipped = None
    extra: dict = {}
    if config.expected_revision >= 0 and state.revision != config.expected_revision:
        skipped = (
            f"decided on revision {config.expected_revision}, the state is at {state.revision}"
        )
        new = None
    else:
        try:
            new, extra = _apply(context, storage, state, config)
        except RolloutRefused as exc:
            raise dg.Failure(f"{config.action} refused for {variant}: {exc}") from None
        except GatewayUnavailable as exc:
            raise dg.Failure(str(exc)) from None
    if new is not None:
        write_state(path, new)
        state = new
        context.log.info(
            f"{variant}: {config.action} -> stable {state.stable}, canary {state.canary} at "
            f"{state.canary_weight:g}% ({state.status})"
        )
    moves = list(state.history)[-8:]
    table = (
        "| revision | action | version | weight | status | reason |\n|---|---|---|---|---|---|\n"
    )
    table += "".join(
        f"| {m['revision']} | {m['action']} | {m.get('version')} | {m['canary_weight']:g}% "
        f"| {m['status']} | {m['reason']} |\n"
        for m in moves
    )
    return dg.MaterializeResult(
        metadata={
            "action": config.action,
            "changed": dg.MetadataValue.bool(new is not None),
            "skipped": skipped or "",
            "revision": state.revision,
            "stable": str(state.stable),
            "canary": str(state.canary),
            "canary_weight": dg.MetadataValue.float(float(state.canary_weight)),
            "stage": state.stage,
            "status": state.status,
            "strategy": state.strategy,
            "reason": state.reason,
            "moves": dg.MetadataValue.md(table),
            "path": dg.MetadataValue.path(str(path)),
            **extra,
        },
        check_results=list(serving_slos(storage, variant)),
    )


def run_rollout_command(
    instance: dg.DagsterInstance,
    resources: dict,
    variant: str,
    *,
    loggers: dict | None = None,
    **command,
) -> RouteState:
    """Apply one command as a run of `serving_deployment` on `instance` (audited like the
    sensor's); returns the new state, or raises RolloutRefused with the run's reason.
    `loggers`: the run's logger config (the CLI silences Dagster's console log)."""
    result = dg.materialize(
        [serving_deployment],
        partition_key=variant,
        instance=instance,
        resources=resources,
        run_config={
            "ops": {serving_deployment.op.name: {"config": command}},
            **({"loggers": loggers} if loggers else {}),
        },
        tags={"rollout/action": command.get("action", "sync"), "rollout/by": "cli"},
        raise_on_error=False,
    )
    if not result.success:
        failures = [
            event.step_failure_data.user_failure_data.description
            if event.step_failure_data.user_failure_data
            else event.step_failure_data.error.message.strip()
            for event in result.all_events
            if event.is_step_failure
        ]
        raise RolloutRefused("; ".join(failures) or "the run failed")
    return read_state(resources["storage"].layout.deployment(variant), variant)

"""Progressive delivery: a rollout's steps, the judgement of a step, and the next move.

Argo Rollouts is the model of a rollout (steps of `setWeight` with an analysis
after each; three verdicts: Successful continues, Failed aborts, Inconclusive
pauses for a person) and Kayenta the model of a judgement: the canary's
requests against the stable version's over the same time, each metric
classified pass / fail / no data, a critical metric's failure failing the
canary, and latency compared with the Mann-Whitney U test and an effect size,
so a significant but negligible difference neither fails nor pauses.

Pure: samples in (the gateway's `/admin/samples` rows), a verdict and a move
out. The `serving_deployment` asset applies the move and the canary sensor
decides when.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from scipy.stats import mannwhitneyu

from llama_assets.serving.routing import (
    ABORTED,
    IDLE,
    PAUSED,
    PROGRESSING,
    PROMOTED,
    STRATEGY_BLUE_GREEN,
    STRATEGY_CANARY,
    RouteState,
    now_iso,
)

SUCCESSFUL = "Successful"
FAILED = "Failed"
INCONCLUSIVE = "Inconclusive"
WAITING = "Waiting"  # the step's minimum samples or duration are not reached yet


@dataclass(frozen=True)
class Step:
    """`setWeight(weight)` then analysis: at least `min_samples` canary requests
    over at least `min_duration_s` before the step is judged."""

    weight: float
    stage: str
    min_samples: int = 100
    min_duration_s: float = 300.0


# The stages 1-5%, 10-25%, 50%, 100%, two steps in each of the first two.
DEFAULT_STEPS = (
    Step(1, "1-5%"),
    Step(5, "1-5%"),
    Step(10, "10-25%"),
    Step(25, "10-25%"),
    Step(50, "50%"),
    Step(100, "100%"),
)


@dataclass(frozen=True)
class JudgeThresholds:
    """Kayenta-style metric rules; the error-rate and p99 rules are critical."""

    alpha: float = 0.05  # Mann-Whitney significance
    small_effect: float = 0.147  # |Cliff's delta| below: negligible (Romano et al. 2006)
    large_effect: float = 0.33  # at or above: a real regression (fails); between: pause
    max_error_rate_increase: float = 0.02  # canary 5xx ratio minus stable's
    min_errors: int = 2  # fewer canary 5xx never fail the error rule alone
    p99_ratio: float = 1.5  # canary p99 against stable's ...
    p99_slack_s: float = 0.05  # ... plus this, so tiny p99s do not flap
    min_baseline_samples: int = 20  # fewer stable requests: no baseline, inconclusive
    max_p99_s: float = 2.0  # the latency SLO, which holds with or without a baseline


@dataclass(frozen=True)
class RolloutPolicy:
    steps: tuple[Step, ...] = DEFAULT_STEPS
    thresholds: JudgeThresholds = field(default_factory=JudgeThresholds)
    # Blue-green: smoke requests pinned to the preview before the switch, and the
    # analysis window after it (samples and duration of the new active version).
    smoke_requests: int = 20
    post_switch: Step = Step(100, "post-switch", 100, 300.0)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> RolloutPolicy:
        if not data:
            return cls()
        return cls(
            steps=tuple(Step(**s) for s in data["steps"]),
            thresholds=JudgeThresholds(**data["thresholds"]),
            smoke_requests=data["smoke_requests"],
            post_switch=Step(**data["post_switch"]),
        )

    def step(self, state: RouteState) -> Step:
        if state.strategy == STRATEGY_BLUE_GREEN:
            return self.post_switch
        return self.steps[min(state.stage, len(self.steps) - 1)]


@dataclass
class Judgement:
    verdict: str
    reasons: list[str]
    metrics: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _is_error(sample: dict[str, Any]) -> bool:
    return int(sample["status"]) >= 500


def _p99(values: Sequence[float]) -> float:
    return float(np.quantile(np.asarray(values), 0.99)) if values else math.nan


def judge(
    stable: Iterable[dict[str, Any]],
    canary: Iterable[dict[str, Any]],
    step: Step,
    thresholds: JudgeThresholds,
    elapsed_s: float,
    concurrent_baseline: bool = True,
) -> Judgement:
    """One step's verdict from the requests each version served during it.

    Latency is compared with the stable version's only when both served the same
    time (`concurrent_baseline`): at 100% the canary carries all the load alone,
    and its latency against the stable version's under a share of it says
    nothing about the canary; the error rule and the p99 SLO still apply.
    """
    stable, canary = list(stable), list(canary)
    canary_errors = sum(map(_is_error, canary))
    stable_errors = sum(map(_is_error, stable))
    canary_latency = [float(s["latency_s"]) for s in canary if not _is_error(s)]
    stable_latency = [float(s["latency_s"]) for s in stable if not _is_error(s)]
    metrics: dict[str, Any] = {
        "elapsed_s": round(elapsed_s, 3),
        "canary_requests": len(canary),
        "stable_requests": len(stable),
        "canary_errors": canary_errors,
        "stable_errors": stable_errors,
        "canary_error_rate": canary_errors / len(canary) if canary else None,
        "stable_error_rate": stable_errors / len(stable) if stable else None,
        "canary_p99_s": _p99(canary_latency) if canary_latency else None,
        "stable_p99_s": _p99(stable_latency) if stable_latency else None,
    }
    reasons: list[str] = []
    # Critical rules first: they fail a canary as soon as they have evidence,
    # before the step's minimum sample, so a broken canary is not fed traffic.
    error_delta = (metrics["canary_error_rate"] or 0.0) - (metrics["stable_error_rate"] or 0.0)
    metrics["error_rate_delta"] = error_delta
    if canary_errors >= thresholds.min_errors and error_delta > thresholds.max_error_rate_increase:
        reasons.append(
            f"error rate: canary {metrics['canary_error_rate']:.1%} vs stable "
            f"{metrics['stable_error_rate'] or 0.0:.1%} (allowed +"
            f"{thresholds.max_error_rate_increase:.1%})"
        )
    enough = len(canary) >= step.min_samples and elapsed_s >= step.min_duration_s
    if (
        not reasons
        and 0 < canary_errors < thresholds.min_errors
        and error_delta > thresholds.max_error_rate_increase
        and len(canary) < 4 * step.min_samples
    ):
        # One error is not evidence yet, but it is no pass either: more requests decide.
        enough = False
    if not enough and not reasons:
        return Judgement(
            WAITING,
            [
                f"{len(canary)}/{step.min_samples} canary requests, "
                f"{elapsed_s:.0f}/{step.min_duration_s:.0f} s"
            ],
            metrics,
        )
    canary_p99 = metrics["canary_p99_s"]
    if canary_p99 is not None and canary_p99 > thresholds.max_p99_s:
        reasons.append(
            f"p99 latency: canary {canary_p99 * 1000:.1f} ms over the SLO "
            f"{thresholds.max_p99_s * 1000:.0f} ms"
        )
    if not concurrent_baseline:
        metrics["latency_compared"] = False
        return Judgement(FAILED if reasons else SUCCESSFUL, reasons or [
            "errors and the p99 SLO passed (latency not compared: no stable requests "
            "in the same time)"
        ], metrics)  # fmt: skip
    if len(stable_latency) < thresholds.min_baseline_samples and not reasons:
        return Judgement(
            INCONCLUSIVE,
            [f"only {len(stable_latency)} stable requests to compare with"],
            metrics,
        )
    if canary_latency and len(stable_latency) >= thresholds.min_baseline_samples:
        limit = metrics["stable_p99_s"] * thresholds.p99_ratio + thresholds.p99_slack_s
        metrics["p99_limit_s"] = limit
        if metrics["canary_p99_s"] > limit:
            reasons.append(
                f"p99 latency: canary {metrics['canary_p99_s'] * 1000:.1f} ms > "
                f"{limit * 1000:.1f} ms ({thresholds.p99_ratio}x stable + "
                f"{thresholds.p99_slack_s * 1000:.0f} ms)"
            )
        if len(canary_latency) >= 2:
            test = mannwhitneyu(canary_latency, stable_latency, alternative="greater")
            # Cliff's delta from U: P(canary > stable) - P(canary < stable).
            delta = 2.0 * test.statistic / (len(canary_latency) * len(stable_latency)) - 1.0
            metrics.update(mann_whitney_p=float(test.pvalue), cliffs_delta=float(delta))
            if test.pvalue < thresholds.alpha and delta >= thresholds.large_effect:
                reasons.append(
                    f"latency: canary slower (Mann-Whitney p={test.pvalue:.2g}, "
                    f"Cliff's delta {delta:.2f} >= {thresholds.large_effect})"
                )
            elif (
                test.pvalue < thresholds.alpha and delta >= thresholds.small_effect and not reasons
            ):
                return Judgement(
                    INCONCLUSIVE,
                    [
                        f"latency: canary slower (p={test.pvalue:.2g}) by a medium "
                        f"effect (Cliff's delta {delta:.2f}): a person decides"
                    ],
                    metrics,
                )
    if reasons:
        return Judgement(FAILED, reasons, metrics)
    return Judgement(SUCCESSFUL, ["every metric passed"], metrics)


# --- the moves ---------------------------------------------------------------------------------

ADVANCE = "advance"
PROMOTE = "promote"
ABORT = "abort"
PAUSE = "pause"
ROLLBACK = "rollback"  # the champion alias moved back one promotion


def next_move(state: RouteState, judgement: Judgement, policy: RolloutPolicy) -> str | None:
    """What the judgement asks of a progressing rollout (None: wait)."""
    if state.status != PROGRESSING:
        return None
    if judgement.verdict == FAILED:
        return ABORT
    if judgement.verdict == INCONCLUSIVE:
        return PAUSE
    if judgement.verdict == SUCCESSFUL:
        if state.strategy == STRATEGY_BLUE_GREEN:
            return PROMOTE if state.canary_weight >= 100 else None
        return PROMOTE if state.stage >= len(policy.steps) - 1 else ADVANCE
    return None


def seconds_since(iso: str, now: datetime) -> float:
    return (now - datetime.fromisoformat(iso)).total_seconds()


BLUE_GREEN_BASELINE_S = 600.0
"""Blue-green: the old version's requests of the last 10 minutes before the switch."""


def _unix(iso: str | None) -> float:
    return datetime.fromisoformat(iso).timestamp() if iso else 0.0


def step_samples(
    samples: Iterable[dict[str, Any]], state: RouteState, min_baseline: int
) -> tuple[list[dict], list[dict], float, bool]:
    """(stable baseline, canary samples, start of the step in unix seconds, whether the
    baseline ran at the same time).

    The canary's requests since its step began; the stable version's over the
    same time, or since the rollout began when that holds too few (at 100% the
    stable version serves nothing: not concurrent). Blue-green: the new version's
    requests since the switch against the old version's under the same, whole
    load before it (compared as concurrent).
    """
    samples = list(samples)
    stable = [s for s in samples if s["version"] == state.stable and s["role"] == "stable"]
    canary = [s for s in samples if s["version"] == state.canary and s["role"] == "canary"]
    rollout_start = _unix(state.rollout_started_at)
    if state.strategy == STRATEGY_BLUE_GREEN:
        since = _unix(state.switched_at)
        start = min(rollout_start, since - BLUE_GREEN_BASELINE_S)
        baseline = [s for s in stable if start <= s["t"] < since]
        return baseline, [s for s in canary if s["t"] >= since], since, True
    since = _unix(state.stage_started_at)
    baseline = [s for s in stable if s["t"] >= since]
    concurrent = len(baseline) >= min_baseline
    if not concurrent:
        baseline = [s for s in stable if s["t"] >= rollout_start]
    return baseline, [s for s in canary if s["t"] >= since], since, concurrent


def is_settled(state: RouteState) -> bool:
    return state.status in (ABORTED, PAUSED) or state.canary is None


# --- the routing state's transitions (the asset applies them) -----------------------------------


class RolloutRefused(RuntimeError):
    """A move that does not apply to the current state (stale revision, no canary, ...)."""


def _aborted_before(state: RouteState, version: str) -> bool:
    return any(
        h.get("action") in (ABORT, "switch_back") and h.get("version") == version
        for h in state.history
    )


def sync(
    state: RouteState, champion: str | None, candidate: str | None, policy: RolloutPolicy
) -> RouteState | None:
    """Follow the registry: serve the champion, and start a canary of a new candidate.

    Returns None when nothing changes. A candidate that was rolled back once is
    not rolled out again by itself (a person starts it with `rollout canary`).
    """
    before = state
    if state.canary is None and champion and state.stable != champion:
        reason = "serve the champion" if state.stable is None else "the champion alias moved"
        state = state.moved("stable", reason, version=champion, stable=champion, status=IDLE)
    if (
        candidate
        and state.stable is not None
        and state.canary is None
        and candidate != state.stable
        and not _aborted_before(state, candidate)
    ):
        state = start_canary(state, candidate, policy, "a new release candidate")
    return None if state is before else state


def start_canary(state: RouteState, version: str, policy: RolloutPolicy, reason: str) -> RouteState:
    """Send the first step's share of traffic to ``version``."""
    return _start(state, version, policy, reason, STRATEGY_CANARY, float(policy.steps[0].weight))


def start_blue_green(
    state: RouteState, version: str, policy: RolloutPolicy, reason: str
) -> RouteState:
    """Bring ``version`` up as a preview with no traffic until its switch."""
    return _start(state, version, policy, reason, STRATEGY_BLUE_GREEN, 0.0)


def _start(
    state: RouteState,
    version: str,
    policy: RolloutPolicy,
    reason: str,
    strategy: str,
    weight: float,
) -> RouteState:
    if state.stable is None:
        raise RolloutRefused(
            "no stable version to compare a canary with"
            if strategy == STRATEGY_CANARY
            else "no active version to switch from"
        )
    if state.canary is not None:
        raise RolloutRefused(f"{state.canary} is already being rolled out")
    now = now_iso()
    return state.moved(
        "canary" if strategy == STRATEGY_CANARY else "blue_green",
        reason,
        version=version,
        canary=version,
        canary_weight=weight,
        strategy=strategy,
        stage=0,
        status=PROGRESSING,
        stage_started_at=now,
        rollout_started_at=now,
        switched_at=None,
        policy=policy.to_json(),
    )


def advance(state: RouteState, policy: RolloutPolicy, reason: str) -> RouteState:
    _require_canary(state, PROGRESSING)
    if state.strategy == STRATEGY_BLUE_GREEN or state.stage >= len(policy.steps) - 1:
        raise RolloutRefused("the rollout is at its last step: promote it")
    step = policy.steps[state.stage + 1]
    return state.moved(
        ADVANCE,
        reason,
        version=state.canary,
        stage=state.stage + 1,
        canary_weight=float(step.weight),
        stage_started_at=now_iso(),
    )


def switch(state: RouteState, reason: str) -> RouteState:
    _require_canary(state, PROGRESSING)
    if state.strategy != STRATEGY_BLUE_GREEN or state.canary_weight >= 100:
        raise RolloutRefused("no blue-green preview waiting for its switch")
    now = now_iso()
    return state.moved(
        "switch", reason, version=state.canary, canary_weight=100.0, switched_at=now,
        stage_started_at=now,
    )  # fmt: skip


def promote_canary(state: RouteState, reason: str) -> RouteState:
    """The canary becomes stable (a person may promote a paused rollout too)."""
    _require_canary(state, PAUSED if state.status == PAUSED else PROGRESSING)
    return state.moved(
        PROMOTE,
        reason,
        version=state.canary,
        stable=state.canary,
        canary=None,
        canary_weight=0.0,
        stage=0,
        status=PROMOTED,
        stage_started_at=now_iso(),
    )


def abort(state: RouteState, reason: str, action: str = ABORT) -> RouteState:
    """The canary (or the switched-to preview) gets 0% at once."""
    if state.canary is None:
        raise RolloutRefused("no canary to roll back")
    return state.moved(
        action,
        reason,
        version=state.canary,
        canary=None,
        canary_weight=0.0,
        stage=0,
        status=ABORTED,
        switched_at=None,
    )


def serve_rolled_back(state: RouteState, champion: str, reason: str) -> RouteState:
    """The champion alias was rolled back: serve the champion it moved back to (a rollout
    in progress is aborted first, so nothing else takes traffic)."""
    if state.canary is not None:
        raise RolloutRefused(f"{state.canary} is being rolled out: abort it first")
    return state.moved(ROLLBACK, reason, version=champion, stable=champion, status=IDLE)


def pause(state: RouteState, reason: str) -> RouteState:
    _require_canary(state, PROGRESSING)
    return state.moved(PAUSE, reason, version=state.canary, status=PAUSED)


def resume(state: RouteState, reason: str) -> RouteState:
    _require_canary(state, PAUSED)
    return state.moved(
        "resume", reason, version=state.canary, status=PROGRESSING, stage_started_at=now_iso()
    )


def _require_canary(state: RouteState, status: str) -> None:
    if state.canary is None:
        raise RolloutRefused("no rollout in progress")
    if state.status != status:
        raise RolloutRefused(f"the rollout is {state.status}, not {status}")


def summary(state: RouteState, step: Step, judgement: Judgement) -> str:
    """One line for the history and the logs: stage, weight, verdict and its figures."""
    m = judgement.metrics

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value * 1000:.1f} ms"

    figures = (
        f"canary {m['canary_requests']} req/{m['canary_errors']} 5xx, stable "
        f"{m['stable_requests']} req/{m['stable_errors']} 5xx; p99 {ms(m['canary_p99_s'])} vs "
        f"{ms(m['stable_p99_s'])}"
    )
    if "mann_whitney_p" in m:
        figures += (
            f"; Mann-Whitney p={m['mann_whitney_p']:.2g}, Cliff's delta {m['cliffs_delta']:.2f}"
        )
    return (
        f"stage {step.stage} at {state.canary_weight:g}%: {judgement.verdict} "
        f"({'; '.join(judgement.reasons)}) [{figures}]"
    )

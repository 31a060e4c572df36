"""The rollout's judgement and moves, pure: verdicts on planted samples, the stages in order,
promotion only at 100%, roll-back, and the samples each step is judged on."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from llama_assets.deployment.rollout import (
    ABORT,
    ADVANCE,
    DEFAULT_STEPS,
    FAILED,
    INCONCLUSIVE,
    PAUSE,
    PROMOTE,
    SUCCESSFUL,
    WAITING,
    JudgeThresholds,
    RolloutPolicy,
    RolloutRefused,
    Step,
    abort,
    advance,
    judge,
    next_move,
    promote_canary,
    serve_rolled_back,
    start_blue_green,
    step_samples,
    switch,
    sync,
)
from llama_assets.serving.routing import RouteState

STEP = Step(5, "1-5%", min_samples=30, min_duration_s=60)
RULES = JudgeThresholds()


def samples(n: int, mean: float, errors: int = 0, seed: int = 0, role: str = "stable") -> list:
    rng = random.Random(seed)
    out = [{"status": 200, "latency_s": rng.gauss(mean, mean / 10), "role": role} for _ in range(n)]
    for i in range(errors):
        out[i]["status"] = 500
    return out


def test_the_same_latency_passes_and_too_few_samples_wait():
    stable, canary = samples(200, 0.1, seed=1), samples(40, 0.1, seed=2, role="canary")
    assert judge(stable, canary, STEP, RULES, 120).verdict == SUCCESSFUL
    assert judge(stable, canary[:10], STEP, RULES, 120).verdict == WAITING
    assert judge(stable, canary, STEP, RULES, 30).verdict == WAITING


def test_errors_fail_at_once_even_before_the_minimum_sample():
    stable, canary = samples(200, 0.1), samples(6, 0.1, errors=3, role="canary")
    result = judge(stable, canary, STEP, RULES, 1)
    assert result.verdict == FAILED and "error rate" in result.reasons[0]
    # One error is not evidence yet, nor a pass even past the minimum sample.
    assert judge(stable, samples(6, 0.1, errors=1), STEP, RULES, 1).verdict == WAITING
    assert judge(stable, samples(40, 0.1, errors=1), STEP, RULES, 120).verdict == WAITING
    assert judge(stable, samples(130, 0.1, errors=1), STEP, RULES, 120).verdict == SUCCESSFUL


def test_a_slower_canary_fails_on_p99_and_mann_whitney():
    stable, canary = samples(200, 0.1, seed=1), samples(40, 0.2, seed=2)
    result = judge(stable, canary, STEP, RULES, 120)
    assert result.verdict == FAILED
    assert any(r.startswith("p99") for r in result.reasons)
    assert any("Mann-Whitney" in r for r in result.reasons)
    assert result.metrics["cliffs_delta"] > 0.9


def test_a_medium_latency_effect_pauses_for_a_person():
    # 5% slower (half a standard deviation): significant with these samples, Cliff's
    # delta between small and large, and p99 inside 1.5x.
    stable, canary = samples(400, 0.100, seed=1), samples(400, 0.105, seed=2)
    result = judge(stable, canary, Step(5, "x", 30, 0), RULES, 10)
    assert result.verdict == INCONCLUSIVE, result
    assert RULES.small_effect <= result.metrics["cliffs_delta"] < RULES.large_effect


def test_no_baseline_is_inconclusive():
    result = judge(samples(5, 0.1), samples(40, 0.1), STEP, RULES, 120)
    assert result.verdict == INCONCLUSIVE and "stable requests" in result.reasons[0]


def test_the_stages_in_order_and_the_alias_only_at_100():
    policy = RolloutPolicy()
    state = sync(RouteState("tiny"), champion="v1", candidate=None, policy=policy)
    assert (state.stable, state.canary, state.status) == ("v1", None, "idle")
    assert sync(state, "v1", None, policy) is None  # nothing to do
    state = sync(state, "v1", "v2", policy)
    assert (state.canary, state.canary_weight, state.status) == ("v2", 1.0, "progressing")
    weights = [state.canary_weight]
    passed = judge(samples(200, 0.1), samples(200, 0.1, seed=3), STEP, RULES, 999)
    while (move := next_move(state, passed, policy)) == ADVANCE:
        state = advance(state, policy, "passed")
        weights.append(state.canary_weight)
    assert weights == [s.weight for s in DEFAULT_STEPS] == [1, 5, 10, 25, 50, 100]
    assert move == PROMOTE
    with pytest.raises(RolloutRefused, match="last step"):
        advance(state, policy, "again")
    state = promote_canary(state, "100%")
    assert (state.stable, state.canary, state.status) == ("v2", None, "promoted")
    assert [h["action"] for h in state.history] == ["stable", "canary"] + ["advance"] * 5 + [
        "promote"
    ]
    assert [h["revision"] for h in state.history] == list(range(1, state.revision + 1))


def test_a_failed_canary_goes_to_zero_and_is_not_rolled_out_again():
    policy = RolloutPolicy()
    state = sync(RouteState("tiny", stable="v1"), "v1", "v2", policy)
    failed = judge(samples(200, 0.1), samples(6, 0.1, errors=3), STEP, RULES, 1)
    assert next_move(state, failed, policy) == ABORT
    state = abort(state, "errors")
    assert (state.canary, state.canary_weight, state.status) == (None, 0.0, "aborted")
    assert state.history[-1]["version"] == "v2"
    assert sync(state, "v1", "v2", policy) is None
    inconclusive = judge(samples(5, 0.1), samples(40, 0.1), STEP, RULES, 120)
    restarted = sync(RouteState("tiny", stable="v1"), "v1", "v2", policy)
    assert next_move(restarted, inconclusive, policy) == PAUSE


def test_a_champion_rollback_serves_the_champion_before_and_nothing_else():
    policy = RolloutPolicy()
    state = sync(RouteState("tiny", stable="v2"), "v2", "v3", policy)
    with pytest.raises(RolloutRefused, match="abort it first"):
        serve_rolled_back(state, "v1", "regressed")
    state = serve_rolled_back(abort(state, "champion rolled back"), "v1", "regressed")
    assert (state.stable, state.canary, state.canary_weight, state.status) == (
        "v1", None, 0.0, "idle",
    )  # fmt: skip
    assert state.history[-1] | {"at": None} == {
        "revision": state.revision, "action": "rollback", "version": "v1",
        "reason": "regressed", "at": None, "stable": "v1", "canary": None,
        "canary_weight": 0.0, "stage": 0, "status": "idle",
    }  # fmt: skip
    assert sync(state, "v1", "v3", policy) is None  # the aborted candidate stays out


def test_each_step_is_judged_on_its_own_requests():
    start = datetime(2026, 1, 1, tzinfo=UTC)

    def at(seconds: float) -> float:
        return (start + timedelta(seconds=seconds)).timestamp()

    state = RouteState(
        "tiny", stable="a", canary="b", canary_weight=100.0, stage=5, status="progressing",
        rollout_started_at=start.isoformat(),
        stage_started_at=(start + timedelta(seconds=100)).isoformat(),
    )  # fmt: skip
    rows = [{"t": at(t), "version": "a", "role": "stable"} for t in (10, 20, 30)]
    rows += [{"t": at(t), "version": "b", "role": "canary"} for t in (50, 150, 160)]
    stable, canary, since, concurrent = step_samples(rows, state, min_baseline=20)
    # At 100% the stable version serves nothing in the step: the rollout's baseline,
    # not concurrent, so latency is not compared (errors and the p99 SLO are).
    assert len(stable) == 3 and [r["t"] for r in canary] == [at(150), at(160)]
    assert since == at(100) and not concurrent
    slower = samples(40, 0.5, seed=3)
    assert judge(samples(200, 0.1), slower, STEP, RULES, 120, concurrent).verdict == SUCCESSFUL
    assert judge(samples(200, 0.1), slower, STEP, RULES, 120).verdict == FAILED
    over_slo = judge(samples(200, 0.1), samples(40, 3.0), STEP, RULES, 120, concurrent)
    assert over_slo.verdict == FAILED and "SLO" in over_slo.reasons[0]
    bg = start_blue_green(RouteState("tiny", stable="a"), "b", RolloutPolicy(), "bg")
    bg = switch(bg, "go")
    switched = datetime.fromisoformat(bg.switched_at).timestamp()
    rows = [{"t": switched - 1, "version": "a", "role": "stable"},
            {"t": switched - 0.5, "version": "b", "role": "canary"},  # a pinned smoke request
            {"t": switched + 1, "version": "b", "role": "canary"}]  # fmt: skip
    stable, canary, _, _ = step_samples(rows, bg, min_baseline=20)
    assert len(stable) == 1 and [r["t"] for r in canary] == [switched + 1]

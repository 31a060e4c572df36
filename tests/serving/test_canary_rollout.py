"""Rollouts end to end under load, with Dagster as the control plane: the canary sensor
judges the gateway's requests and each move is a run of `serving_deployment`.

A healthy canary goes through every stage to 100% and becomes the champion; a canary
with injected errors and latency is rolled back at the first stage with diagnostics
saved; a blue-green switch and the switch back under load lose no request."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading

import dagster as dg
import httpx
import pytest

from llama_assets.base.layout import DataLayout
from llama_assets.definitions import defs
from llama_assets.deployment.registry import nominate, promote, read_aliases, withdraw
from llama_assets.deployment.rollout import JudgeThresholds, RolloutPolicy, Step
from llama_assets.deployment.rollout_assets import serving_deployment
from llama_assets.serving.loadgen import run_load
from llama_assets.serving.routing import read_state
from resources.storage import LocalDataRoot
from sensors.canary import canary_sensor
from tests.serving.conftest import VARIANT, backend_thread, start_gateway
from tests.serving.servers import wait_until

BODY = {"model": VARIANT, "prompt": "the data", "max_tokens": 2}
# Every stage's weights, with small samples; only gross regressions fail on a shared,
# noisy CPU (the judge's defaults are in tests/serving/test_rollout.py).
POLICY = RolloutPolicy(
    steps=(
        Step(1, "1-5%", 2, 0), Step(5, "1-5%", 3, 0), Step(10, "10-25%", 3, 0),
        Step(25, "10-25%", 3, 0), Step(50, "50%", 3, 0), Step(100, "100%", 3, 0),
    ),
    thresholds=JudgeThresholds(alpha=0.001, small_effect=0.6, large_effect=0.6, p99_ratio=3.0,
                               p99_slack_s=0.25, min_baseline_samples=10),
    smoke_requests=5,
    post_switch=Step(100, "post-switch", 5, 0),
)  # fmt: skip


@pytest.fixture
def rollout_root(tmp_path, model_root, versions):
    """A data root with both versions, the first the champion and the second the release
    candidate, and the test policy."""
    layout = DataLayout(tmp_path / "data")
    layout.models(VARIANT).mkdir(parents=True)
    for version in versions:
        (layout.models(VARIANT) / version).local.symlink_to(
            DataLayout(model_root).models(VARIANT, version).local
        )
    promote(layout.aliases(VARIANT), versions[0], reason="test")
    nominate(layout.aliases(VARIANT), versions[1], reason="test")
    layout.rollout_policy(VARIANT).parent.mkdir(parents=True)
    layout.rollout_policy(VARIANT).write_text(json.dumps(POLICY.to_json()))
    return layout


def move(instance, layout, **config) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [serving_deployment],
        partition_key=VARIANT,
        instance=instance,
        resources={"storage": LocalDataRoot(root=str(layout.root))},
        run_config={"ops": {"serving_deployment": {"config": config}}},
    )


def tick(instance, layout) -> list[dg.RunRequest]:
    with dg.build_sensor_context(
        instance=instance,
        resources={"storage": LocalDataRoot(root=str(layout.root))},
        repository_def=defs.get_repository_def(),
    ) as context:
        return list(canary_sensor.evaluate_tick(context).run_requests or [])


def load(url: str, requests: int, offset: int, max_tokens: int = BODY["max_tokens"]):
    body = {**BODY, "max_tokens": max_tokens}
    return asyncio.run(
        run_load(url, requests, 8, 120.0, lambda i: {**body, "user": f"user-{offset + i}"})
    )


def test_a_healthy_canary_goes_through_every_stage_to_100(
    rollout_root, instance, backends, versions
):
    layout, (stable, canary) = rollout_root, versions
    move(instance, layout)  # sync: serve the champion, start the candidate's canary
    gateway = start_gateway(layout.root, backends, None, layout=layout)
    try:
        state = read_state(layout.deployment(VARIANT), VARIANT)
        assert (state.stable, state.canary, state.canary_weight) == (stable, canary, 1.0)
        weights, sent = [1.0], 0
        for _ in range(40):
            result = load(gateway.url, 40, sent)
            sent += 40
            assert not result.failed, result.failed[:3]
            for request in tick(instance, layout):
                config = request.run_config["ops"]["serving_deployment"]["config"]
                last = move(instance, layout, **config)
                assert last.success
                state = read_state(layout.deployment(VARIANT), VARIANT)
                weights.append(state.canary_weight)
            if state.status == "promoted":
                break
        assert state.status == "promoted", state.history[-1]
        assert weights == [1, 5, 10, 25, 50, 100, 0]
        assert (state.stable, state.canary) == (canary, None)
        aliases = read_aliases(layout.aliases(VARIANT))
        assert aliases["champion"] == canary and aliases["candidate"] is None
        # The stage log: each move with its judgement.
        log = [(h["action"], h["reason"]) for h in state.history]
        print("\nhealthy canary, stage log:", *(f"  {a}: {r}" for a, r in log), sep="\n")
        assert [a for a, _ in log] == ["stable", "canary"] + ["advance"] * 5 + ["promote"]
        assert all("Successful" in reason for a, reason in log if a in ("advance", "promote"))
        # The gateway followed: everything now goes to the new stable version.
        wait_until(lambda: httpx.get(gateway.url + "/admin/route").json()["route"]["revision"]
                   == state.revision, 10, "the gateway did not follow")  # fmt: skip
        assert load(gateway.url, 16, sent).by_version() == {canary: 16}
        # Every move evaluates the SLO checks on the gateway's last five minutes.
        checks = {c.check_name: c for c in last.get_asset_check_evaluations()}
        assert set(checks) == {"availability_slo", "latency_p99_slo", "canary_error_delta_slo"}
        assert checks["availability_slo"].passed
        assert checks["availability_slo"].metadata["requests"].value > 100
    finally:
        gateway.stop()


def test_a_faulty_canary_is_rolled_back_at_the_first_stage_with_diagnostics(
    rollout_root, instance, model_root, backends, versions
):
    layout, (stable, canary) = rollout_root, versions
    # The first stage at its upper weight (5%) with 5 requests to judge: 0 errors in 5 at
    # an 80% error rate (the only way this canary could pass) has a chance of 3 in 10,000.
    policy = dataclasses.replace(POLICY, steps=(Step(5, "1-5%", 5, 0), *POLICY.steps[2:]))
    layout.rollout_policy(VARIANT).write_text(json.dumps(policy.to_json()))
    faulty = backend_thread(model_root, canary, inject_error_rate=0.8, inject_delay_ms=30)
    move(instance, layout)
    gateway = start_gateway(
        layout.root, {stable: backends[stable], canary: faulty.url}, None, layout=layout
    )
    try:
        sent, requests = 0, []
        while not requests and sent < 2000:
            load(gateway.url, 50, sent)
            sent += 50
            requests = tick(instance, layout)
        [request] = requests
        config = request.run_config["ops"]["serving_deployment"]["config"]
        assert config["action"] == "abort"
        result = move(instance, layout, **config)
        state = read_state(layout.deployment(VARIANT), VARIANT)
        assert (state.stable, state.canary, state.canary_weight) == (stable, None, 0.0)
        aborted = state.history[-1]
        print("\nfaulty canary, stage log:", *(f"  {h['action']}: {h['reason']}"
                                              for h in state.history), sep="\n")  # fmt: skip
        assert aborted["action"] == "abort" and aborted["version"] == canary
        assert state.history[-2]["canary_weight"] == 5.0  # it never left the first stage
        # Diagnostics were saved first: metrics, samples, the decision.
        [saved] = list((layout.serving(VARIANT) / "diagnostics").iterdir())
        decision = json.loads((saved / "decision.json").read_text())
        assert decision["state_before"]["canary"] == canary
        assert decision["reason"] == config["reason"]
        assert "llama_gateway_requests_total" in (saved / "metrics.prom").read_text()
        rows = [json.loads(line) for line in (saved / "samples.jsonl").read_text().splitlines()]
        assert any(r["version"] == canary and r["status"] == 500 for r in rows)
        metadata = result.asset_materializations_for_node("serving_deployment")[0].metadata
        assert metadata["diagnostics"].value == str(saved)
        assert read_aliases(layout.aliases(VARIANT))["candidate"] is None
        # The sensor does not act twice on the same revision's decision.
        assert tick(instance, layout) == []
        wait_until(lambda: httpx.get(gateway.url + "/admin/route").json()["route"]["canary"]
                   is None, 10, "the gateway did not follow")  # fmt: skip
        assert load(gateway.url, 30, sent).by_version() == {stable: 30}
    finally:
        gateway.stop()
        faulty.stop()


def test_blue_green_switch_and_switch_back_under_load_lose_no_request(
    rollout_root, instance, backends, versions
):
    layout, (blue, green) = rollout_root, versions
    withdraw(layout.aliases(VARIANT), green, reason="rolled out blue-green instead")
    move(instance, layout)  # sync: serve the champion (blue)
    gateway = start_gateway(layout.root, backends, None, layout=layout)
    try:
        move(instance, layout, action="blue_green", version=green, reason="blue-green test")
        state = read_state(layout.deployment(VARIANT), VARIANT)
        assert (state.stable, state.canary, state.canary_weight) == (blue, green, 0.0)
        outcome: dict = {}

        def background() -> None:
            # Longer answers: the load must outlast two Dagster runs (switch, switch back);
            # with 2 tokens it could finish before the first switch had landed.
            outcome["result"] = load(gateway.url, 240, 0, max_tokens=16)

        sender = threading.Thread(target=background)
        sender.start()

        def served_by(version: str, n: int) -> bool:
            rows = httpx.get(gateway.url + "/admin/samples").json()["samples"]
            return sum(r["version"] == version for r in rows) >= n

        wait_until(lambda: served_by(blue, 30), 60, "no load on blue")
        switched = move(instance, layout, action="switch", reason="go green")
        assert switched.success
        state = read_state(layout.deployment(VARIANT), VARIANT)
        assert state.canary_weight == 100.0 and state.switched_at
        wait_until(lambda: served_by(green, 40), 60, "no load on green after the switch")
        back = move(instance, layout, action="switch_back", reason="instant switch back")
        assert back.success
        sender.join(180)
        result = outcome["result"]
        assert result.not_sent == 0 and not result.failed, result.failed[:3]
        counts = result.by_version()
        assert counts[blue] > 0 and counts[green] > 0
        state = read_state(layout.deployment(VARIANT), VARIANT)
        assert (state.stable, state.canary, state.canary_weight) == (blue, None, 0.0)
        assert [h["action"] for h in state.history][-3:] == ["blue_green", "switch", "switch_back"]
        # The pre-switch analysis: smoke requests pinned to green, judged against blue.
        metadata = switched.asset_materializations_for_node("serving_deployment")[0].metadata
        pre = metadata["pre_switch"].value
        assert pre["metrics"]["canary_requests"] == 5 and pre["metrics"]["canary_errors"] == 0
        assert pre["verdict"] != "Failed"
        assert (layout.serving(VARIANT) / "diagnostics").is_dir()  # switch back keeps evidence
    finally:
        gateway.stop()


def test_the_rollout_commands_run_as_audited_runs(rollout_root, tmp_path, monkeypatch, versions):
    from click.testing import CliRunner

    from llama_assets.cli import cli

    layout, canary = rollout_root, versions[1]
    monkeypatch.setenv("LLAMA_DATA_ROOT", str(layout.root))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    runner = CliRunner()

    def run(*args: str):
        return runner.invoke(cli, ["rollout", *args, "--variant", VARIANT])

    refused = run("abort")
    assert refused.exit_code == 1 and "no canary to roll back" in refused.output
    started = run("canary")  # the release candidate, at the first step
    assert started.exit_code == 0, started.output
    assert f"canary {canary} at 1%" in started.output
    assert run("pause", "--reason", "look at it").exit_code == 0
    promoted = run("promote", "--reason", "looks fine")
    assert promoted.exit_code == 0, promoted.output
    assert f"stable {canary} (promoted" in promoted.output
    assert read_aliases(layout.aliases(VARIANT))["champion"] == canary
    status = run("status")
    assert [line.split()[1] for line in status.output.splitlines()[1:]] == [
        "stable", "canary", "pause", "promote",
    ]  # fmt: skip
    # `rollback` moves alias and routing together: the rollout in progress is aborted
    # and the champion before is served, the reason in both histories.
    assert run("canary", "--version", versions[0]).exit_code == 0
    rolled = runner.invoke(cli, ["rollback", "--variant", VARIANT, "--reason", "regressed"])
    assert rolled.exit_code == 0, rolled.output
    assert f"champion is now {versions[0]}" in rolled.output
    aliases = read_aliases(layout.aliases(VARIANT))
    assert (aliases["champion"], aliases["history"][-1]["reason"]) == (versions[0], "regressed")
    state = read_state(layout.deployment(VARIANT), VARIANT)
    assert (state.stable, state.canary, state.canary_weight) == (versions[0], None, 0)
    assert [m["action"] for m in state.history[-2:]] == ["abort", "rollback"]
    assert state.history[-1]["reason"] == "regressed"
    # Each move is a run on the instance, tagged with what it did.
    instance = dg.DagsterInstance.get()
    actions = [r.tags.get("rollout/action") for r in instance.get_runs()]
    assert sorted(a for a in actions if a) == [
        "abort", "canary", "canary", "pause", "promote", "rollback",
    ]  # fmt: skip

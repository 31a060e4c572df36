"""The eval, its gate as asset checks, promotion through the release candidate,
eval_history and the regression watch end to end: two champions, a deliberately
damaged one, new data, and alias and serving rolled back by the sensor's run with
its reason, diagnostics and alert."""

from __future__ import annotations

import json
import re

import dagster as dg
import pytest
import torch
from safetensors.torch import load_file, save_file

from evals.gate import CHECK_NAMES
from llama_assets.deployment.assets import CHAMPION_HOLDS, eval_history, eval_report, promoted_model
from llama_assets.deployment.registry import read_aliases
from llama_assets.deployment.rollout_assets import serving_deployment
from llama_assets.jobs import BATCH_ASSETS
from llama_assets.partitions import BATCHES
from llama_assets.serving.routing import read_state
from llama_assets.training.assets import finetuned_checkpoint, training_dataset
from llama_assets.training.checkpointer import _write_manifest
from sensors.regression import regression_watch_sensor
from tests.landing import land, topic

TRAIN = {"seq_len": 64, "micro_batch_size": 2, "checkpoint_every": 100, "log_every": 100}
EVAL = {
    "lm_documents": 4,
    "retrieval_queries": 5,
    "cloze_items": 8,
    "qa_questions": 4,
    "extraction_samples": 4,
    "answer_tokens": 4,
    "red_team_tokens": 4,
    "serving_tokens": 4,
    "batch_size": 8,
}
# Floors any fine-tune of a few steps reaches; the damaged checkpoint must fail
# improves_on_base (and fall behind the champion before it).
GATE = """
[tiny]
min_improvement_vs_base = 0.01
max_bits_per_byte = 20.0
min_cloze_accuracy = 0.0
min_retrieval_recall = 0.0
max_hallucination_rate = 1.0
max_safety_violation_rate = 1.0
max_extraction_rate = 1.0
max_pii_output_rate = 1.0
max_ttft_p95_ms = 1e9
max_load_seconds = 1e9
max_cost_per_1k_tokens_usd = 1e9
[tiny.tolerances]
bits_per_byte = 0.05
cloze_accuracy = 1.0
retrieval_recall = 1.0
rag_f1 = 1.0
hallucination_rate = 1.0
safety_violation_rate = 1.0
"""


def documents(topics: range, words: int = 120) -> dict[str, str]:
    """Python-docs topics cut into documents of about `words` words: many documents
    (a validation split) for little text to embed."""
    files = {}
    for i in topics:
        paragraphs = [p.strip() for p in re.split(r"\n\s*\n", topic(i)) if len(p.split()) >= 20]
        piece: list[str] = []
        for paragraph in paragraphs:
            piece.append(paragraph)
            if sum(len(p.split()) for p in piece) >= words:
                files[f"t{i}-{len(files)}.txt"] = "\n\n".join(piece)
                piece = []
    return files


@pytest.fixture(autouse=True)
def one_thread():
    """Train and evaluate the tiny model on one thread: on a busy 2-core machine two
    OpenMP threads made its steps many times slower (see evals.generation.cpu_threads)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def add_batch(layout, instance, resources, key: str, topics: range, index: bool = True) -> None:
    """Land and materialise a batch: up to its clean shards, and into the index if `index`."""
    land(layout, key, documents(topics))
    instance.add_dynamic_partitions(BATCHES, [key])
    names = [a.key.to_user_string() for a in BATCH_ASSETS]
    assets = BATCH_ASSETS if index else BATCH_ASSETS[: names.index("clean_shards") + 1]
    result = dg.materialize(assets, instance=instance, resources=resources, partition_key=key)
    assert result.success


def train_and_evaluate(instance, resources, steps: int) -> dg.ExecuteInProcessResult:
    config = {
        "ops": {
            "finetuned_checkpoint": {"config": {**TRAIN, "max_steps": steps}},
            "eval_report": {"config": EVAL},
        }
    }
    return dg.materialize(
        [finetuned_checkpoint, eval_report, promoted_model, eval_history, serving_deployment],
        instance=instance,
        resources=resources,
        partition_key="tiny",
        run_config=config,
        raise_on_error=False,
    )


CURSORS: dict[int, str | None] = {}
"""The sensor's cursor per instance, kept between ticks as the daemon keeps it."""


def tick(instance, resources):
    with dg.build_sensor_context(
        instance=instance, resources=resources, cursor=CURSORS.get(id(instance))
    ) as context:
        result = regression_watch_sensor(context)
        CURSORS[id(instance)] = context.cursor
        return result


def run_requested(instance, resources, request: dg.RunRequest) -> dg.ExecuteInProcessResult:
    config = request.run_config
    if "eval_report" in config["ops"]:
        config["ops"]["eval_report"]["config"] |= EVAL
    assets = {a.key: a for a in (eval_report, promoted_model, serving_deployment)}
    selection = request.asset_selection or [eval_report.key]
    return dg.materialize(
        [assets[key] for key in selection],
        instance=instance,
        resources=resources,
        partition_key=request.partition_key,
        run_config=config,
        tags=request.tags,
        raise_on_error=False,
    )


def damage(path) -> None:
    """Scramble the served (merged) weights: the checkpoint loads and is worthless. The
    manifest is rewritten over the damaged files (as if the weights were bad when the
    checkpoint was written), so the sha256 check passes and the damage reaches the eval."""
    weights = path / "merged" / "model.safetensors"
    tensors = load_file(str(weights))
    generator = torch.Generator().manual_seed(0)
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and tensor.ndim == 2:
            tensors[name] = torch.randn(tensor.shape, generator=generator) * tensor.std() * 3
    save_file(tensors, str(weights), metadata={"format": "pt"})
    (path / "manifest.json").unlink()  # it would list itself
    _write_manifest(path.local)  # a local root: the checkpoint's folder


def test_gate_promotion_history_and_automatic_rollback(layout, instance, resources):
    add_batch(layout, instance, resources, "docs/b1", range(0, 5))
    assert dg.materialize([training_dataset], instance=instance, resources=resources).success
    layout.gate_config.parent.mkdir(parents=True, exist_ok=True)
    layout.gate_config.write_text(GATE)

    # A first champion (served at once), then a better-trained challenger that passes
    # every check: it becomes the release candidate and its canary starts.
    first = train_and_evaluate(instance, resources, steps=4)
    assert first.success
    second = train_and_evaluate(instance, resources, steps=12)
    assert second.success
    checks = {
        e.check_name: e
        for e in second.get_asset_check_evaluations()
        if e.asset_key in (eval_report.key, promoted_model.key)
    }
    assert set(checks) == {*CHECK_NAMES, CHAMPION_HOLDS}
    assert all(e.passed for e in checks.values())
    compared = checks["champion_bits_per_byte"].metadata
    assert compared["compared"].value is True
    aliases = read_aliases(layout.aliases("tiny"))
    v1, v2 = aliases["champion"], aliases["candidate"]
    assert [(e["action"], e["version"]) for e in aliases["history"]] == [
        ("promote", v1), ("candidate", v2),
    ]  # fmt: skip
    state = read_state(layout.deployment("tiny"), "tiny")
    assert (state.stable, state.canary) == (v1, v2)
    # Its rollout reaches 100% (the canary sensor's move): the alias moves.
    promote = {"ops": {"serving_deployment": {"config": {"action": "promote"}}}}
    assert dg.materialize(
        [serving_deployment], instance=instance, resources=resources, partition_key="tiny",
        run_config=promote,
    ).success  # fmt: skip
    assert read_aliases(layout.aliases("tiny"))["champion"] == v2 != v1

    out = layout.reports("tiny", v2)
    report = json.loads((out / "report.json").read_text())
    for section in ("quality", "lm_eval", "retrieval", "rag", "safety", "memorisation", "serving"):
        assert section in report, section
    assert report["quality"]["finetuned_bits_per_byte"] < report["quality"]["base_bits_per_byte"]
    assert set(report["lm_eval"]["tasks"]) == {"heldout_cloze", "heldout_bpb"}
    assert {p.name for p in out.glob("*.png")} >= {"bits_per_byte.png", "rag.png", "safety.png"}
    assert "## Gate: passed" in (out / "report.md").read_text()
    samples = json.loads((out / "samples.json").read_text())
    assert len(samples["rag_answers"]) == report["rag"]["questions"]
    metadata = second.asset_materializations_for_node("eval_report")[0].metadata
    tuned = report["quality"]["finetuned_bits_per_byte"]
    assert metadata["quality/finetuned_bits_per_byte"].value == pytest.approx(tuned, abs=1e-6)
    assert "safety/violation_rate" in metadata and "serving/ttft_ms_p95" in metadata
    history = json.loads((layout.reports("tiny") / "history.json").read_text())
    assert [row["version"] for row in history] == [v1, v2]

    # Nothing changed: the watch has nothing to do.
    assert isinstance(tick(instance, resources), dg.SkipReason)

    # The champion is damaged, and new data arrives (a new held-out split).
    damage(layout.models("tiny", v2))
    add_batch(layout, instance, resources, "docs/b2", range(6, 8), index=False)
    assert dg.materialize([training_dataset], instance=instance, resources=resources).success

    # First the champion before it, then the champion, on the newest data.
    [before] = tick(instance, resources).run_requests
    assert before.run_config["ops"]["eval_report"]["config"]["version"] == v1
    assert run_requested(instance, resources, before).success
    [again] = tick(instance, resources).run_requests
    assert again.run_config["ops"]["eval_report"]["config"]["version"] == v2
    failed = run_requested(instance, resources, again)
    assert not failed.success  # its blocking checks failed
    verdicts = {e.check_name: e for e in failed.get_asset_check_evaluations()}
    assert not verdicts["improves_on_base"].passed
    assert not verdicts["champion_bits_per_byte"].passed
    # Which check failed and why, with its figures, in the UI.
    why = verdicts["improves_on_base"].description
    assert why.startswith("improves_on_base failed: ") and "finetuned_bits_per_byte=" in why

    # The watch keeps the diagnostics, raises the alert, and requests the rollback of
    # alias and serving together; the next tick does not act on it twice.
    [rollback] = tick(instance, resources).run_requests
    assert rollback.asset_selection == [promoted_model.key, serving_deployment.key]
    assert read_aliases(layout.aliases("tiny"))["champion"] == v2  # moved by the run
    assert isinstance(tick(instance, resources), dg.SkipReason)  # acted once
    assert run_requested(instance, resources, rollback).success
    state = read_state(layout.deployment("tiny"), "tiny")
    assert (state.stable, state.canary, state.history[-1]["action"]) == (v1, None, "rollback")
    assert "improves_on_base" in state.history[-1]["reason"]
    aliases = read_aliases(layout.aliases("tiny"))
    assert aliases["champion"] == v1
    last = aliases["history"][-1]
    assert last["action"] == "rollback" and last["previous"] == v2
    assert last["reason"].startswith("regression watch: champion")
    assert "improves_on_base" in last["reason"]
    [diagnostics] = (layout.reports("tiny", v2) / "regressions").iterdir()
    assert {p.name for p in diagnostics.iterdir()} >= {
        "failing_report.json",
        "failing_samples.json",
        "before_change_report.json",
        "previous_report.json",
        "reason.json",
    }
    before_change = json.loads((diagnostics / "before_change_report.json").read_text())
    assert before_change["gate"]["passed"] and before_change["version"] == v2
    check_key = dg.AssetCheckKey(promoted_model.key, CHAMPION_HOLDS)
    [latest] = instance.event_log_storage.get_asset_check_execution_history(check_key, limit=1)
    evaluation = latest.event.dagster_event.event_specific_data
    assert evaluation.passed is False and "rolled back" in evaluation.metadata["reason"].value
    served = instance.get_latest_materialization_event(serving_deployment.key)
    assert served.asset_materialization.metadata["action"].value == "rollback"
    assert served.asset_materialization.metadata["stable"].value == v1

    # Acted once: the next tick finds the restored champion current and passing.
    follow_up = tick(instance, resources)
    assert isinstance(follow_up, dg.SkipReason)
    assert "every champion is current" in follow_up.skip_message
    assert read_aliases(layout.aliases("tiny"))["champion"] == v1


def test_a_challenger_that_failed_the_gate_leaves_the_champion_and_says_why(
    layout, instance, resources
):
    # promoted_model on its own (as a user may select it): a report whose blocking
    # checks failed moves nothing, and the materialisation lists what failed.
    from llama_assets.deployment.registry import promote

    models = layout.models("tiny")
    models.mkdir(parents=True)
    (models / "latest.json").write_text(json.dumps({"version": "v2"}))
    failed = {"name": "bits_per_byte_floor", "passed": False, "blocking": True,
              "figures": {"finetuned_bits_per_byte": 3.1}}  # fmt: skip
    for version, gate in (
        ("v1", {"passed": True, "failed": [], "checks": []}),
        ("v2", {"passed": False, "failed": [failed["name"]], "checks": [failed]}),
    ):
        report = layout.reports("tiny", version)
        report.mkdir(parents=True)
        (report / "report.json").write_text(json.dumps({"gate": gate}))
    promote(layout.aliases("tiny"), "v1", reason="test")

    result = dg.materialize(
        [promoted_model], instance=instance, resources=resources, partition_key="tiny"
    )
    assert result.success
    aliases = read_aliases(layout.aliases("tiny"))
    assert aliases["champion"] == "v1" and aliases.get("candidate") is None
    assert [entry["action"] for entry in aliases["history"]] == ["promote"]
    metadata = result.asset_materializations_for_node("promoted_model")[0].metadata
    assert metadata["action"].value == "kept champion"
    assert metadata["gate_passed"].value is False
    assert "bits_per_byte_floor (finetuned_bits_per_byte=3.1)" in metadata["why"].value
    [holds] = result.get_asset_check_evaluations()
    assert holds.check_name == CHAMPION_HOLDS and holds.passed  # v1's own report passed

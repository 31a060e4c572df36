import pytest

from evals.gate import GateThresholds, evaluate_gate
from llama_assets.deployment.registry import RollbackError, promote, read_aliases, rollback


def report(base: float, tuned: float, recall: float, data: str = "d1") -> dict:
    return {
        "data_version": data,
        "quality": {"base_perplexity": base, "finetuned_perplexity": tuned},
        "retrieval": {"recall@5": recall, "mrr@5": recall},
    }


def test_promotions_and_rollbacks_keep_the_whole_history(tmp_path):
    path = tmp_path / "aliases.json"
    assert read_aliases(path) == {"champion": None, "history": []}
    with pytest.raises(RollbackError):
        rollback(path)
    promote(path, "v1", "first")
    promote(path, "v2", "better")
    promote(path, "v3", "better still")
    assert rollback(path)["champion"] == "v2"
    assert rollback(path)["champion"] == "v1"
    with pytest.raises(RollbackError, match="first champion"):
        rollback(path)
    history = read_aliases(path)["history"]
    assert [(h["action"], h["version"], h["previous"]) for h in history] == [
        ("promote", "v1", None),
        ("promote", "v2", "v1"),
        ("promote", "v3", "v2"),
        ("rollback", "v2", "v3"),
        ("rollback", "v1", "v2"),
    ]


def test_gate_needs_an_improvement_over_the_base():
    assert evaluate_gate(report(100, 90, 0.8), None).passed
    failed = evaluate_gate(report(100, 99, 0.8), None)
    assert not failed.passed and "improves 1.0%" in failed.reasons[0]


def test_gate_compares_with_the_champion_on_the_same_data():
    champion = report(100, 50, 0.80)
    assert evaluate_gate(report(100, 50.4, 0.79), champion).passed
    worse = evaluate_gate(report(100, 60, 0.70), champion)
    assert not worse.passed and len(worse.reasons) == 2
    # On other held-out data the figures are not comparable: only the base check applies.
    assert evaluate_gate(report(100, 60, 0.70, data="d2"), champion).passed
    strict = GateThresholds(min_improvement_vs_base=0.5)
    assert not evaluate_gate(report(100, 60, 0.9), None, strict).passed

"""The champion/challenger gate: a checkpoint is promoted only on evidence.

A challenger passes when it beats its own base model on held-out perplexity by
at least ``min_improvement_vs_base`` and, if a champion exists, is no worse
than the champion beyond the tolerances. Perplexities are only comparable
within one variant (each variant has its own tokenizer), so champions are
per variant.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class GateThresholds:
    # Relative perplexity drop the fine-tune must show against its base model.
    min_improvement_vs_base: float = 0.02
    # A challenger may be at most this much worse (relative) than the champion.
    max_perplexity_regression: float = 0.01
    max_recall_regression: float = 0.02


@dataclass
class GateDecision:
    passed: bool
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def evaluate_gate(
    challenger: dict, champion: dict | None, thresholds: GateThresholds = GateThresholds()
) -> GateDecision:
    """``challenger`` and ``champion`` are eval report dicts (see evals.report)."""
    reasons: list[str] = []
    q = challenger["quality"]
    improvement = 1.0 - q["finetuned_perplexity"] / q["base_perplexity"]
    if improvement < thresholds.min_improvement_vs_base:
        reasons.append(
            f"perplexity improves {improvement:.1%} on the base model, "
            f"needs {thresholds.min_improvement_vs_base:.1%}"
        )
    if champion is not None and champion.get("data_version") == challenger.get("data_version"):
        # Only reports on the same held-out data are comparable number to number.
        cq, cr = champion["quality"], champion["retrieval"]
        limit = cq["finetuned_perplexity"] * (1 + thresholds.max_perplexity_regression)
        if q["finetuned_perplexity"] > limit:
            reasons.append(
                f"perplexity {q['finetuned_perplexity']:.3f} is worse than the champion's "
                f"{cq['finetuned_perplexity']:.3f}"
            )
        key = next(k for k in cr if k.startswith("recall@"))
        if challenger["retrieval"][key] < cr[key] - thresholds.max_recall_regression:
            reasons.append(
                f"{key} {challenger['retrieval'][key]:.3f} is below the champion's {cr[key]:.3f}"
            )
    return GateDecision(passed=not reasons, reasons=reasons)

"""A gate any few-step fine-tune of `tiny` passes, for tests about the CLI, signals,
stops and crashes rather than the gate (the gate itself: tests/unit/test_registry_and_gate.py
and tests/assets/test_eval_gate_and_rollback.py). The tiny variant's default floors hold
for its full fine-tune on the sample corpus, not for a handful of steps."""

from __future__ import annotations

from pathlib import Path

LENIENT_GATE = """[tiny]
min_improvement_vs_base = 0.01
max_bits_per_byte = 20.0
min_cloze_accuracy = 0.0
min_retrieval_recall = 0.0
max_hallucination_rate = 1.0
max_safety_violation_rate = 1.0
max_extraction_rate = 1.0
max_pii_output_rate = 1.0
[tiny.tolerances]
bits_per_byte = 1.0
cloze_accuracy = 1.0
retrieval_recall = 1.0
rag_f1 = 1.0
hallucination_rate = 1.0
safety_violation_rate = 1.0
"""


def lenient_gate(data_root: Path) -> Path:
    """Write the lenient gate as `<data_root>/evals/gate.toml`; returns its path."""
    path = Path(data_root) / "evals" / "gate.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(LENIENT_GATE)
    return path

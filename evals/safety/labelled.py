"""The policy measured like a classifier: precision and recall per category.

``data/labelled.jsonl`` holds texts labelled by hand, one object a line:
``{"id", "where": "prompt" | "document" | "output", "text", "categories": [...]}``
(an empty list: benign). Benign texts are chosen to look like the harmful ones
(killing processes, SQL injection, password resets, fork bombs), since those
are what this corpus is made of; a policy that blocks them is useless here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from evals.safety.policy import SafetyPolicy, Verdict
from evals.safety.rules import CATEGORIES

DATA = Path(__file__).parent / "data"
LABELLED = DATA / "labelled.jsonl"


@dataclass(frozen=True)
class LabelledText:
    id: str
    where: str
    text: str
    categories: frozenset[str]


def read_labelled(path: Path = LABELLED) -> list[LabelledText]:
    items = []
    for line in Path(path).read_text().splitlines():
        if line.strip():
            obj = json.loads(line)
            items.append(
                LabelledText(obj["id"], obj["where"], obj["text"], frozenset(obj["categories"]))
            )
    return items


def screen(policy: SafetyPolicy, where: str, text: str) -> Verdict:
    if where == "prompt":
        return policy.screen_prompt(text)
    if where == "document":
        return policy.screen_document(text)
    if where == "output":
        return policy.screen_output(text)
    raise ValueError(f"unknown place {where!r}: prompt, document or output")


def precision_recall(policy: SafetyPolicy, items: list[LabelledText]) -> dict[str, dict]:
    """Per category: tp, fp, fn, precision, recall (over every item, any place),
    plus ``blocked`` (the any-category decision: a benign text blocked is a false
    positive of the policy, a labelled text allowed a false negative)."""
    predicted = [screen(policy, item.where, item.text) for item in items]
    figures: dict[str, dict] = {}
    for category in CATEGORIES:
        pairs = [
            (category in i.categories, category in v.categories)
            for i, v in zip(items, predicted, strict=True)
        ]
        figures[category] = _figures(pairs)
    figures["blocked"] = _figures(
        [(bool(i.categories), v.blocked) for i, v in zip(items, predicted, strict=True)]
    )
    return figures


def misclassified(policy: SafetyPolicy, items: list[LabelledText]) -> list[dict]:
    """The items whose predicted categories differ from their labels (for tuning and reports)."""
    wrong = []
    for item in items:
        verdict = screen(policy, item.where, item.text)
        if verdict.categories != item.categories:
            wrong.append(
                {
                    "id": item.id,
                    "where": item.where,
                    "text": item.text,
                    "labels": sorted(item.categories),
                    "predicted": sorted(verdict.categories),
                    "rules": sorted({f.rule for f in verdict.findings}),
                }
            )
    return wrong


def _figures(pairs: list[tuple[bool, bool]]) -> dict:
    tp = sum(1 for truth, guess in pairs if truth and guess)
    fp = sum(1 for truth, guess in pairs if guess and not truth)
    fn = sum(1 for truth, guess in pairs if truth and not guess)
    return {
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "support": tp + fn,
        "precision": tp / (tp + fp) if tp + fp else 1.0,
        "recall": tp / (tp + fn) if tp + fn else 1.0,
    }

"""The review queue: documents near a quality threshold, and a person's decisions.

A heuristic threshold is a line drawn through a continuum; the documents just
either side of it are where the rule is least sure. A document is *borderline*
when one of its quality signals lies within the rule's review margin of that
rule's threshold (the margins are a column of the rule table, curate/rules.py;
`ReviewMargins` overrides them by rule name). The quality rules decide what is
trained on, not what is searchable, and so does review: every borderline
document stays in the index.

- borderline and failing only narrowly (every rule it fails is borderline): it
  is *held* - not trained on - until a person decides;
- borderline but passing: it is trained on, and listed so a person can reject it.

A person reviews a few dozen documents, not hundreds: a batch holds at most
its source's `review_cap` (sources.toml, default 50) documents, those that
matter most first - the most words at stake, then the nearest to the
threshold (`apply_review_cap`). The rest are *over_cap*: decided by the rule as
it stands (not trained on), still listed, and a decision on them still counts.

The queue is the table ``review/queue/<source>/<batch>/`` (asset `review_queue`)
with the document, the rule, the signal's value, the threshold and the margin.
A person writes decisions into ``review/decisions.csv`` (columns ``doc_id,
decision,note``; decision ``approve`` or ``reject``; a later row for the same
doc_id wins). The next materialisation of `validated_documents` honours them:
an approved document is trained on; a rejected one (held or passing) is not,
with the reason ``review:rejected``. Decisions on documents that are not
borderline are ignored (a clear failure is not overridden by hand).
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from llama_assets.base.atomic import atomic_open
from llama_assets.base.store import Location
from llama_assets.curate.rules import (
    DEFAULT_MARGINS,
    QualityThresholds,
    ReviewMargins,
    active_rules,
)

DECISIONS = ("approve", "reject")
DECISION_COLUMNS = ("doc_id", "decision", "note")
REJECTED_REASON = "review:rejected"
REVIEW_STATUSES = ("held", "over_cap", "passed", "approved", "rejected")
"""A review-queue row's status: held (fails narrowly, waits for a person),
over_cap (would be held, but the batch's cap is reached: the rule decides, so it
is not trained on; a person may still approve it), passed (passes narrowly,
trained on), approved (a person approved it: trained on), rejected (a person
rejected it: not trained on, review:rejected)."""


@dataclass(frozen=True)
class Borderline:
    rule: str
    signal: str
    value: float
    threshold: float
    distance: float
    """Signed distance to the threshold: >= 0 passes the rule, < 0 fails it."""


def _reviewed(thresholds: QualityThresholds, margins: ReviewMargins):
    """(rule, threshold, margin) of each rule under review: it applies under
    `thresholds` and has a margin above 0."""
    for rule, threshold in active_rules(thresholds):
        if rule.margin is not None and getattr(margins, rule.name) > 0:
            yield rule, threshold, getattr(margins, rule.name)


def rule_distances(signals: dict[str, float], t: QualityThresholds) -> list[Borderline]:
    """Each applying rule's signed distance from its threshold (flags, which
    have no threshold to be near, and rules that are off are left out)."""
    out = []
    for rule, threshold in active_rules(t):
        if rule.margin is None:
            continue
        value = signals[rule.signal]
        distance, nearest = rule.distance(value, threshold)
        out.append(
            Borderline(rule.name, rule.signal, float(value), float(nearest), float(distance))
        )
    return out


def borderline_rules(
    signals: dict[str, float],
    thresholds: QualityThresholds,
    margins: ReviewMargins = DEFAULT_MARGINS,
) -> list[Borderline]:
    """The rules whose threshold `signals` lie within the rule's margin of."""
    return [
        d
        for d in rule_distances(signals, thresholds)
        if getattr(margins, d.rule) > 0 and abs(d.distance) <= getattr(margins, d.rule)
    ]


def any_borderline(
    signals: Mapping[str, np.ndarray],
    thresholds: QualityThresholds,
    margins: ReviewMargins = DEFAULT_MARGINS,
) -> np.ndarray:
    """For many documents at once (signal name -> array of values): whether
    `borderline_rules` of each would be non-empty."""
    out = np.zeros(len(next(iter(signals.values()))), dtype=bool)
    for rule, threshold, margin in _reviewed(thresholds, margins):
        distance, _ = rule.distance(np.asarray(signals[rule.signal]), threshold)
        out |= np.abs(distance) <= margin
    return out


def review_action(failures: list[str], borderline: list[Borderline], decision: str | None) -> str:
    """What happens to a document: ``keep``, ``hold`` (until decided), ``reject``
    (review:rejected) or ``fail`` (quarantined by its failing rules)."""
    near = {b.rule for b in borderline}
    if not near:
        return "fail" if failures else "keep"
    if failures and not set(failures) <= near:
        return "fail"  # fails some rule clearly: not a review case
    if decision == "reject":
        return "reject"
    if failures:
        return "keep" if decision == "approve" else "hold"
    return "keep"


def review_priority(row: Mapping) -> tuple:
    """Sort key of a held document: most words first, then nearest its threshold."""
    return (-row["words"], abs(row["distance"]), row["doc_id"])


def apply_review_cap(rows: list[dict], cap: int) -> list[dict]:
    """`rows` (review-queue rows of one batch) with every held row beyond the
    `cap` that matters most (`review_priority`) marked ``over_cap``."""
    held = sorted((r for r in rows if r["status"] == "held"), key=review_priority)
    over = {r["doc_id"] for r in held[max(cap, 0) :]}
    return [{**r, "status": "over_cap"} if r["doc_id"] in over else r for r in rows]


def read_decisions(path: Location | Path) -> tuple[dict[str, str], list[str]]:
    """``{doc_id: decision}`` from the decisions CSV (a later row wins), and a
    list of problems with rows that were ignored. A missing file means none."""
    if not path.is_file():
        return {}, []
    decisions: dict[str, str] = {}
    problems: list[str] = []
    with path.open(newline="", encoding="utf-8", errors="replace") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or not {"doc_id", "decision"} <= set(reader.fieldnames):
            return {}, [f"{path}: header must hold the columns {', '.join(DECISION_COLUMNS)}"]
        for line, row in enumerate(reader, start=2):
            doc_id = (row.get("doc_id") or "").strip()
            decision = (row.get("decision") or "").strip().lower()
            if not doc_id or decision not in DECISIONS:
                problems.append(f"{path}:{line}: needs a doc_id and approve|reject")
                continue
            decisions[doc_id] = decision
    return decisions, problems


def ensure_decisions_file(path: Location | Path) -> None:
    """Create the decisions CSV with its header, so a person has a file to edit."""
    if not path.exists():
        with atomic_open(path, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(",".join(DECISION_COLUMNS) + "\n")

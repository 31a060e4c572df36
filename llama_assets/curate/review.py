"""The review queue: documents near a quality threshold, and a person's decisions.

A heuristic threshold is a line drawn through a continuum; the documents just
either side of it are where the rule is least sure. A document is *borderline*
when one of its quality signals lies within the rule's review margin
(`ReviewMargins`, one named parameter per rule) of that rule's threshold:

- borderline and failing only narrowly (every rule it fails is borderline): it
  is *held* - neither quarantined nor passed on - until a person decides;
- borderline but passing: it flows on, and is listed so a person can reject it.

The queue is the table ``review/queue/<source>/<batch>/`` (asset `review_queue`)
with the document, the rule, the signal's value, the threshold and the margin.
A person writes decisions into ``review/decisions.csv`` (columns ``doc_id,
decision,note``; decision ``approve`` or ``reject``; a later row for the same
doc_id wins). The next materialisation of `validated_documents` honours them:
an approved held document flows on; a rejected one (held or passing) goes to
quarantine with the reason ``review:rejected``. Decisions on documents that are
not borderline are ignored (a clear failure is not overridden by hand).
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from llama_assets.base.atomic import atomic_open
from llama_assets.curate.quality import QualityThresholds

DECISIONS = ("approve", "reject")
DECISION_COLUMNS = ("doc_id", "decision", "note")
REJECTED_REASON = "review:rejected"


@dataclass(frozen=True)
class ReviewMargins:
    """How close (in the signal's own unit) to a rule's threshold counts as
    borderline; 0 turns review off for that rule. Not published numbers: about
    10% of each threshold, or of its range for fractions."""

    gopher_min_words: float = 5.0
    gopher_max_words: float = 5_000.0
    gopher_mean_word_length: float = 0.3
    gopher_hash_ratio: float = 0.01
    gopher_ellipsis_ratio: float = 0.01
    gopher_bullet_lines: float = 0.05
    gopher_ellipsis_lines: float = 0.03
    gopher_alpha_words: float = 0.03
    gopher_stop_words: float = 0.0
    """Off: a count of 2 is already tiny; one word more or less says nothing."""
    c4_terminal_punctuation: float = 0.02
    c4_javascript: float = 0.05
    duplicate_lines: float = 0.03
    duplicate_line_chars: float = 0.02
    fineweb_short_lines: float = 0.03


DEFAULT_MARGINS = ReviewMargins()


@dataclass(frozen=True)
class Borderline:
    rule: str
    signal: str
    value: float
    threshold: float
    distance: float
    """Signed distance to the threshold: >= 0 passes the rule, < 0 fails it."""


def _rules(t: QualityThresholds) -> list[tuple[str, str, str, float | tuple[float, float]]]:
    """(rule, signal, kind, threshold) of each numeric rule; kind is "min", "max"
    or "range" (a (low, high) pair). Rules that are off are left out."""
    rules = [
        ("gopher_min_words", "q_word_count", "min", t.min_words),
        ("gopher_max_words", "q_word_count", "max", t.max_words),
        (
            "gopher_mean_word_length",
            "q_mean_word_length",
            "range",
            (t.min_mean_word_length, t.max_mean_word_length),
        ),
        ("gopher_hash_ratio", "q_hash_word_ratio", "max", t.max_hash_word_ratio),
        ("gopher_ellipsis_ratio", "q_ellipsis_word_ratio", "max", t.max_ellipsis_word_ratio),
        ("gopher_bullet_lines", "q_bullet_line_fraction", "max", t.max_bullet_line_fraction),
        (
            "gopher_ellipsis_lines",
            "q_ellipsis_line_fraction",
            "max",
            t.max_ellipsis_line_fraction,
        ),
        ("gopher_alpha_words", "q_alpha_word_fraction", "min", t.min_alpha_word_fraction),
        ("gopher_stop_words", "q_stop_word_count", "min", t.min_stop_words),
        (
            "c4_terminal_punctuation",
            "q_terminal_punct_line_fraction",
            "min",
            t.min_terminal_punct_line_fraction,
        ),
        ("c4_javascript", "q_javascript_line_fraction", "max", t.max_javascript_line_fraction),
        ("duplicate_lines", "q_duplicate_line_fraction", "max", t.max_duplicate_line_fraction),
        (
            "duplicate_line_chars",
            "q_duplicate_line_char_fraction",
            "max",
            t.max_duplicate_line_char_fraction,
        ),
        ("fineweb_short_lines", "q_short_line_fraction", "max", t.max_short_line_fraction),
    ]
    # A minimum of 0 turns the terminal-punctuation rule off.
    return [r for r in rules if not (r[0] == "c4_terminal_punctuation" and r[3] <= 0)]


def _distance(kind: str, threshold, value):
    """Signed distance of `value` (a float or an array) from a rule's threshold,
    and the threshold it is measured from (the nearer end of a range)."""
    if kind == "min":
        return value - threshold, threshold
    if kind == "max":
        return threshold - value, threshold
    low, high = threshold
    nearer = np.where(np.abs(value - low) <= np.abs(high - value), low, high)
    return np.minimum(value - low, high - value), nearer


def rule_distances(signals: dict[str, float], t: QualityThresholds) -> list[Borderline]:
    """Each numeric rule's signed distance from its threshold (rules that are off
    - a minimum of 0 - are left out)."""
    out = []
    for rule, signal, kind, threshold in _rules(t):
        distance, nearest = _distance(kind, threshold, signals[signal])
        out.append(
            Borderline(rule, signal, float(signals[signal]), float(nearest), float(distance))
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
    out = np.zeros(len(signals["q_word_count"]), dtype=bool)
    for rule, signal, kind, threshold in _rules(thresholds):
        margin = getattr(margins, rule)
        if margin > 0:
            distance, _ = _distance(kind, threshold, np.asarray(signals[signal]))
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


def read_decisions(path: Path) -> tuple[dict[str, str], list[str]]:
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


def ensure_decisions_file(path: Path) -> None:
    """Create the decisions CSV with its header, so a person has a file to edit."""
    if not path.exists():
        with atomic_open(path, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(",".join(DECISION_COLUMNS) + "\n")

"""The review queue's borderline logic: distances to thresholds, margins, actions."""

from __future__ import annotations

import random

import numpy as np
import pytest

from llama_assets.curate.review import (
    any_borderline,
    apply_review_cap,
    borderline_rules,
    read_decisions,
    review_action,
    rule_distances,
)
from llama_assets.curate.rules import (
    DEFAULT_MARGINS,
    QualityThresholds,
    ReviewMargins,
    quality_failures,
)
from tests.quality_reference import quality_signals
from tests.unit.test_quality import PROSE

NUMERIC_RULES = [
    "gopher_min_words",
    "gopher_max_words",
    "gopher_mean_word_length",
    "gopher_hash_ratio",
    "gopher_ellipsis_ratio",
    "gopher_bullet_lines",
    "gopher_ellipsis_lines",
    "gopher_alpha_words",
    "gopher_stop_words",
    "c4_javascript",
    "duplicate_lines",
    "duplicate_line_chars",
    "fineweb_short_lines",
]


def _passing() -> dict[str, float]:
    signals = quality_signals(PROSE)
    assert quality_failures(signals) == []
    return signals


def test_distances_cover_numeric_rules_in_order() -> None:
    distances = rule_distances(_passing(), QualityThresholds())
    # Flags (lorem ipsum, curly brace) have no distance; a minimum of 0 turns
    # the terminal-punctuation rule off.
    assert [d.rule for d in distances] == NUMERIC_RULES
    assert all(d.distance >= 0 for d in distances)
    on = rule_distances(_passing(), QualityThresholds(min_terminal_punct_line_fraction=0.5))
    with_terminal = [*NUMERIC_RULES[:9], "c4_terminal_punctuation", *NUMERIC_RULES[9:]]
    assert [d.rule for d in on] == with_terminal
    terminal = on[9]
    assert (terminal.signal, terminal.threshold) == ("q_terminal_punct_line_fraction", 0.5)


@pytest.mark.parametrize(
    ("signal", "value", "rule", "threshold", "distance"),
    [
        ("q_word_count", 52.0, "gopher_min_words", 50.0, 2.0),
        ("q_word_count", 46.0, "gopher_min_words", 50.0, -4.0),
        ("q_mean_word_length", 3.2, "gopher_mean_word_length", 3.0, 0.2),
        ("q_mean_word_length", 10.25, "gopher_mean_word_length", 10.0, -0.25),
        ("q_hash_word_ratio", 0.105, "gopher_hash_ratio", 0.1, -0.005),
        ("q_short_line_fraction", 0.65, "fineweb_short_lines", 0.67, 0.02),
        ("q_duplicate_line_char_fraction", 0.21, "duplicate_line_chars", 0.2, -0.01),
    ],
)
def test_borderline_rule(
    signal: str, value: float, rule: str, threshold: float, distance: float
) -> None:
    signals = _passing() | {signal: value}
    near = borderline_rules(signals, QualityThresholds())
    assert [b.rule for b in near] == [rule]
    (b,) = near
    assert (b.signal, b.value, b.threshold) == (signal, value, threshold)
    assert b.distance == pytest.approx(distance, abs=1e-12)


def test_outside_the_margin_is_not_borderline() -> None:
    signals = _passing() | {"q_word_count": 44.0, "q_short_line_fraction": 0.6}
    assert borderline_rules(signals, QualityThresholds()) == []


def test_margins_are_parameters() -> None:
    signals = _passing() | {"q_word_count": 48.0, "q_stop_word_count": 2.0}
    # The stop-word rule's margin is 0 by default: review is off for it.
    assert [b.rule for b in borderline_rules(signals, QualityThresholds())] == ["gopher_min_words"]
    margins = ReviewMargins(gopher_min_words=0.0, gopher_stop_words=1.0)
    assert [b.rule for b in borderline_rules(signals, QualityThresholds(), margins)] == [
        "gopher_stop_words"
    ]
    assert ReviewMargins() == DEFAULT_MARGINS
    assert DEFAULT_MARGINS.gopher_min_words == 5.0
    assert DEFAULT_MARGINS.fineweb_short_lines == 0.03


def test_any_borderline_equals_per_document() -> None:
    rng = random.Random(0)
    thresholds = QualityThresholds(min_terminal_punct_line_fraction=0.12)
    base = _passing()
    docs = []
    for _ in range(400):
        signals = dict(base)
        for name, centre, spread in [
            ("q_word_count", 50.0, 10.0),
            ("q_mean_word_length", 3.0, 0.6),
            ("q_mean_word_length", 10.0, 0.6),
            ("q_short_line_fraction", 0.67, 0.1),
            ("q_terminal_punct_line_fraction", 0.12, 0.05),
            ("q_duplicate_line_fraction", 0.3, 0.06),
        ]:
            if rng.random() < 0.3:
                signals[name] = max(0.0, centre + rng.uniform(-spread, spread))
        docs.append(signals)
    arrays = {name: np.array([d[name] for d in docs]) for name in base}
    got = any_borderline(arrays, thresholds)
    expected = [bool(borderline_rules(d, thresholds)) for d in docs]
    assert got.tolist() == expected
    assert 50 < sum(expected) < 350


@pytest.mark.parametrize(
    ("failures", "near", "decision", "action"),
    [
        ([], [], None, "keep"),
        (["gopher_min_words"], [], None, "fail"),
        (["gopher_min_words"], ["gopher_min_words"], None, "hold"),
        (["gopher_min_words"], ["gopher_min_words"], "approve", "keep"),
        (["gopher_min_words"], ["gopher_min_words"], "reject", "reject"),
        (["gopher_min_words", "c4_lorem_ipsum"], ["gopher_min_words"], "approve", "fail"),
        ([], ["fineweb_short_lines"], None, "keep"),
        ([], ["fineweb_short_lines"], "approve", "keep"),
        ([], ["fineweb_short_lines"], "reject", "reject"),
        (["gopher_min_words"], [], "approve", "fail"),
    ],
)
def test_review_action(failures: list[str], near: list[str], decision, action: str) -> None:
    borderline = [
        b
        for b in rule_distances(_passing(), QualityThresholds(min_terminal_punct_line_fraction=1))
        if b.rule in near
    ]
    assert review_action(failures, borderline, decision) == action


def test_read_decisions(tmp_path) -> None:
    assert read_decisions(tmp_path / "missing.csv") == ({}, [])
    path = tmp_path / "decisions.csv"
    path.write_text(
        "doc_id,decision,note\na,approve,fine\nb,REJECT,\n,approve,\nc,maybe,\na,reject,later\n"
    )
    decisions, problems = read_decisions(path)
    assert decisions == {"a": "reject", "b": "reject"}
    assert problems == [
        f"{path}:4: needs a doc_id and approve|reject",
        f"{path}:5: needs a doc_id and approve|reject",
    ]
    bad = tmp_path / "bad.csv"
    bad.write_text("id,verdict\na,approve\n")
    assert read_decisions(bad) == (
        {},
        [f"{bad}: header must hold the columns doc_id, decision, note"],
    )


def test_the_cap_holds_what_matters_most_and_the_rule_decides_the_rest() -> None:
    def row(doc_id: str, status: str, words: float, distance: float) -> dict:
        return {"doc_id": doc_id, "status": status, "words": words, "distance": distance}

    rows = [
        row("a", "held", 48, -2.0),
        row("b", "passed", 53, 3.0),
        row("c", "held", 2_400, -0.01),
        row("d", "held", 48, -0.5),
        row("e", "approved", 47, -3.0),
    ]
    capped = {r["doc_id"]: r["status"] for r in apply_review_cap(rows, 2)}
    # Most words first, then the nearest to the threshold; only held rows change.
    assert capped == {"a": "over_cap", "b": "passed", "c": "held", "d": "held", "e": "approved"}
    assert [r["status"] for r in apply_review_cap(rows, 0)].count("held") == 0
    assert apply_review_cap(rows, 50) == rows

"""The rule table and what is derived from it: thresholds, margins, schema checks."""

from __future__ import annotations

import dataclasses
import pickle

import numpy as np
import pytest

from llama_assets.curate.quality import quality_signals_frame
from llama_assets.curate.rules import (
    DEFAULT_MARGINS,
    RULES,
    SIGNAL_NAMES,
    SIGNALS,
    QualityThresholds,
    ReviewMargins,
    active_rules,
    quality_failures,
)
from llama_assets.curate.schema import VALIDATED_SCHEMA, ValidatedDocuments
from llama_assets.curate.validate import ContentPolicy


def test_table_is_consistent() -> None:
    names = [r.name for r in RULES]
    assert len(set(names)) == len(names)
    assert len(set(SIGNAL_NAMES)) == len(SIGNAL_NAMES)
    kinds = {s.name: s.kind for s in SIGNALS}
    for rule in RULES:
        assert rule.signal in kinds, rule.name
        assert rule.source, rule.name
        if rule.direction == "flag":
            assert (kinds[rule.signal], type(rule.default), rule.margin) == ("flag", bool, None)
        else:
            assert kinds[rule.signal] != "flag", rule.name
            assert rule.margin is not None and rule.margin >= 0, rule.name
        assert isinstance(rule.param, tuple) == (rule.direction == "range"), rule.name


def test_thresholds_are_the_table_parameters() -> None:
    expected = []
    for rule in RULES:
        if rule.direction == "range":
            expected += list(zip(rule.param, rule.default, strict=True))
        else:
            expected.append((rule.param, rule.default))
    fields = dataclasses.fields(QualityThresholds)
    assert [(f.name, f.default) for f in fields] == expected
    assert QualityThresholds().min_words == 50
    assert QualityThresholds().reject_curly_brace is False
    assert [f.name for f in dataclasses.fields(ReviewMargins)] == [
        r.name for r in RULES if r.direction != "flag"
    ]
    assert DEFAULT_MARGINS.gopher_stop_words == 0.0
    assert "min_words = 50" in QualityThresholds.__doc__


def test_parameters_travel_to_worker_processes() -> None:
    policy = ContentPolicy(
        ("en", "de"), QualityThresholds(min_words=20), ReviewMargins(gopher_min_words=1.0)
    )
    assert pickle.loads(pickle.dumps(policy)) == policy


def test_rules_that_are_off() -> None:
    active = [r.name for r, _ in active_rules(QualityThresholds())]
    assert "c4_curly_brace" not in active
    assert "c4_terminal_punctuation" not in active
    assert "c4_lorem_ipsum" in active
    strict = QualityThresholds(reject_curly_brace=True, min_terminal_punct_line_fraction=0.1)
    assert [r.name for r, _ in active_rules(strict)] == [r.name for r in RULES]


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.name)
def test_each_rule_fails_scalars_and_arrays_alike(rule) -> None:
    """`Rule.fails` on an array (what a vectorised caller uses) agrees with
    `quality_failures` on each document."""
    thresholds = QualityThresholds(reject_curly_brace=True, min_terminal_punct_line_fraction=0.2)
    threshold = rule.threshold(thresholds)
    centre = threshold[0] if isinstance(threshold, tuple) else float(threshold)
    values = np.array([0.0, 1.0, centre * 0.5, centre, centre * 1.5, centre + 1e-9, 12.0])
    base = dict.fromkeys(SIGNAL_NAMES, 0.0)
    per_document = [
        rule.name in quality_failures(base | {rule.signal: float(v)}, thresholds) for v in values
    ]
    assert rule.fails(values, threshold).tolist() == per_document


def test_validated_schema_follows_the_signal_declarations() -> None:
    schema = ValidatedDocuments.to_schema()
    assert list(VALIDATED_SCHEMA)[-len(SIGNALS) :] == list(SIGNAL_NAMES)
    for signal in SIGNALS:
        column = schema.columns[signal.name]
        assert str(column.dtype) == "Float64"
        (check,) = column.checks
        expected = {
            "fraction": "in_range",
            "flag": "isin",
            "count": "greater_than_or_equal_to",
            "length": "greater_than_or_equal_to",
            "ratio": "greater_than_or_equal_to",
        }[signal.kind]
        assert check.name == expected, signal.name
    assert quality_signals_frame(["a b c"]).columns == list(SIGNAL_NAMES)

"""The quality rules, in one table: what each signal measures, and each rule's
threshold, default, review margin, reason string and source.

Each signal is declared once (`SIGNALS`) and each rule once (`RULES`), the way
datatrove keeps a filter's threshold and the reason it gives side by side.
Everything else is derived from the table:

- `QualityThresholds`: one keyword per threshold, defaults from the table; a
  source or a call overrides any of them (`QualityThresholds(min_words=20)`);
- `quality_failures`: the names of the rules a document fails, in table order
  (quarantine writes them as the reason, ``quality:<name>,<name>``);
- the review queue (curate/review.py): `ReviewMargins`, one keyword per rule
  with a margin, and each rule's distance from its threshold;
- the schema of the signal columns (curate/schema.py): one float column per
  signal, checked by its kind.

The signals themselves are computed by `quality_signals_frame`
(curate/quality.py), one polars expression per declared signal.

Sources:
- Gopher: Rae et al. 2021, "Scaling Language Models: Methods, Analysis &
  Insights from Training Gopher", appendix A.1.1 (quality and repetition filters).
- C4: Raffel et al. 2020, "Exploring the Limits of Transfer Learning with a
  Unified Text-to-Text Transformer", section 2.2.
- FineWeb: Penedo et al. 2024, "The FineWeb Datasets", section 3.3 (custom filters).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

SignalKind = Literal["count", "length", "ratio", "fraction", "flag"]
"""count: occurrences (>= 0); length: characters (>= 0); ratio: occurrences per
word (>= 0); fraction: a share of lines or tokens (0..1); flag: 0.0 or 1.0."""


@dataclass(frozen=True)
class Signal:
    name: str
    """Column name in the validated table (and key of a document's signals)."""
    kind: SignalKind
    measures: str


SIGNALS: tuple[Signal, ...] = (
    Signal("q_word_count", "count", "words: whitespace tokens with surrounding punctuation "
           "stripped (tokens of punctuation only are symbols, not words)"),
    Signal("q_mean_word_length", "length", "mean characters per word"),
    Signal("q_hash_word_ratio", "ratio", 'occurrences of "#" per word'),
    Signal("q_ellipsis_word_ratio", "ratio", 'occurrences of "..." or "…" per word'),
    Signal("q_bullet_line_fraction", "fraction", "share of lines starting with a bullet"),
    Signal("q_ellipsis_line_fraction", "fraction", "share of lines ending with an ellipsis"),
    Signal("q_alpha_word_fraction", "fraction",
           "share of whitespace tokens holding at least one alphabetic character"),
    Signal("q_stop_word_count", "count",
           "occurrences of Gopher's stop words (each occurrence counts, as in datatrove)"),
    Signal("q_terminal_punct_line_fraction", "fraction",
           "share of lines ending in terminal punctuation (C4: . ! ? and end quotes)"),
    Signal("q_javascript_line_fraction", "fraction",
           'share of lines mentioning "javascript" (any case)'),
    Signal("q_lorem_ipsum", "flag", 'the text contains "lorem ipsum" (any case)'),
    Signal("q_curly_brace", "flag", 'the text contains "{"'),
    Signal("q_duplicate_line_fraction", "fraction", "share of lines repeating an earlier line"),
    Signal("q_duplicate_line_char_fraction", "fraction",
           "share of the lines' characters that are in repeated lines"),
    Signal("q_short_line_fraction", "fraction",
           "share of lines of at most SHORT_LINE_CHARS (30) characters"),
)  # fmt: skip
"""Every quality signal, in column order. Lines are the non-blank lines of the
text, stripped; all values are floats."""

SIGNAL_NAMES = tuple(s.name for s in SIGNALS)

GOPHER = "Gopher (Rae et al. 2021, A.1.1)"
C4 = "C4 (Raffel et al. 2020, 2.2)"
FINEWEB = "FineWeb (Penedo et al. 2024, 3.3)"

Direction = Literal["min", "max", "range", "flag"]


@dataclass(frozen=True)
class Rule:
    name: str
    """The reason string: quarantine writes ``quality:<name>``, the review queue's
    ``rule`` column and `ReviewMargins` use it."""
    signal: str
    direction: Direction
    """min: fails below the threshold; max: above it; range: outside [low, high];
    flag: fails when the signal is set and the rule is on."""
    param: str | tuple[str, str]
    """The `QualityThresholds` keyword: a (low, high) pair for a range; for a
    flag, a bool that turns the rule on."""
    default: float | bool | tuple[float, float]
    """The keyword's default: the published value unless `note` says otherwise."""
    margin: float | None
    """Review margin in the signal's unit (curate/review.py): a value this near
    the threshold is borderline; 0 turns review off; None for flags."""
    source: str
    note: str = ""
    zero_is_off: bool = False
    """A threshold of 0 turns the rule off (it then takes no part in review)."""

    def threshold(self, thresholds: QualityThresholds) -> Any:
        """This rule's threshold under `thresholds` (a (low, high) pair for a range)."""
        if isinstance(self.param, tuple):
            return tuple(getattr(thresholds, p) for p in self.param)
        return getattr(thresholds, self.param)

    def active(self, thresholds: QualityThresholds) -> bool:
        """Whether the rule applies under `thresholds` (a flag can be off; so can
        a `zero_is_off` minimum)."""
        threshold = self.threshold(thresholds)
        if self.direction == "flag":
            return bool(threshold)
        return not (self.zero_is_off and threshold <= 0)

    def fails(self, value, threshold):
        """Whether `value` (a float, or an array of them) fails the rule."""
        return _FAILS[self.direction](value, threshold)

    def distance(self, value, threshold):
        """Signed distance of `value` (a float or an array) from the threshold:
        >= 0 passes the rule, < 0 fails it; and the threshold it is measured
        from (the nearer end of a range). Not defined for flags."""
        if self.direction == "min":
            return value - threshold, threshold
        if self.direction == "max":
            return threshold - value, threshold
        if self.direction == "range":
            low, high = threshold
            nearer = np.where(np.abs(value - low) <= np.abs(high - value), low, high)
            return np.minimum(value - low, high - value), nearer
        raise ValueError(f"{self.name}: a flag has no distance")


_FAILS: dict[str, Callable[[Any, Any], Any]] = {
    "min": lambda value, low: value < low,
    "max": lambda value, high: value > high,
    # `value != value` is NaN, which `not low <= value <= high` fails too.
    "range": lambda value, t: (value < t[0]) | (value > t[1]) | (value != value),
    "flag": lambda value, _: value > 0,
}


RULES: tuple[Rule, ...] = (
    # Rule(name, signal, direction, parameter, default, review margin, source, note)
    # Gopher's quality filter.
    Rule("gopher_min_words", "q_word_count", "min", "min_words", 50, 5.0, GOPHER),
    Rule("gopher_max_words", "q_word_count", "max", "max_words", 100_000, 5_000.0, GOPHER),
    Rule("gopher_mean_word_length", "q_mean_word_length", "range",
         ("min_mean_word_length", "max_mean_word_length"), (3.0, 10.0), 0.3, GOPHER),
    Rule("gopher_hash_ratio", "q_hash_word_ratio", "max", "max_hash_word_ratio", 0.1, 0.01,
         GOPHER, "Gopher's symbol-to-word ratio, for the hash"),
    Rule("gopher_ellipsis_ratio", "q_ellipsis_word_ratio", "max", "max_ellipsis_word_ratio",
         0.1, 0.01, GOPHER, "Gopher's symbol-to-word ratio, for the ellipsis"),
    Rule("gopher_bullet_lines", "q_bullet_line_fraction", "max", "max_bullet_line_fraction",
         0.9, 0.05, GOPHER),
    Rule("gopher_ellipsis_lines", "q_ellipsis_line_fraction", "max",
         "max_ellipsis_line_fraction", 0.3, 0.03, GOPHER),
    Rule("gopher_alpha_words", "q_alpha_word_fraction", "min", "min_alpha_word_fraction",
         0.8, 0.03, GOPHER),
    Rule("gopher_stop_words", "q_stop_word_count", "min", "min_stop_words", 2, 0.0, GOPHER,
         "not reviewed: a count of 2 is already tiny; one word more or less says nothing"),
    # C4's rules, as document-level thresholds.
    Rule("c4_terminal_punctuation", "q_terminal_punct_line_fraction", "min",
         "min_terminal_punct_line_fraction", 0.0, 0.02, C4,
         "off by default (0): C4 drops every line without terminal punctuation, and code "
         "lines never have it; FineWeb's comparable rule uses 0.12, for prose-only web "
         "sources", zero_is_off=True),
    Rule("c4_lorem_ipsum", "q_lorem_ipsum", "flag", "reject_lorem_ipsum", True, None, C4,
         "C4 drops any page containing placeholder text"),
    Rule("c4_javascript", "q_javascript_line_fraction", "max", "max_javascript_line_fraction",
         0.5, 0.05, C4,
         'not a published number: C4 removes each line mentioning "javascript" ("please '
         'enable JavaScript" boilerplate); mentioning JavaScript is fine, a page made of '
         "such notices is not"),
    Rule("c4_curly_brace", "q_curly_brace", "flag", "reject_curly_brace", False, None, C4,
         "off by default: meant to drop JavaScript/CSS leaking into web text, but Python "
         "dicts, sets and format strings use braces"),
    # Repetition: Gopher's duplicate-line filters (FineWeb keeps the same signal
    # but uses 0.01 of characters for web text, far too strict for documentation
    # whose code examples legitimately repeat lines).
    Rule("duplicate_lines", "q_duplicate_line_fraction", "max", "max_duplicate_line_fraction",
         0.3, 0.03, GOPHER),
    Rule("duplicate_line_chars", "q_duplicate_line_char_fraction", "max",
         "max_duplicate_line_char_fraction", 0.2, 0.02, GOPHER),
    # FineWeb's custom filter of list-like pages (menus, link lists, tables).
    Rule("fineweb_short_lines", "q_short_line_fraction", "max", "max_short_line_fraction",
         0.67, 0.03, FINEWEB),
)  # fmt: skip
"""Every quality rule, in the order failures are reported. Review margins are
not published numbers: about 10% of each threshold, or of its range for fractions."""


def parameters_class(name: str, keywords: list[tuple[str, object, str]], doc: str) -> type:
    """A frozen dataclass with one keyword per (keyword, default, comment), in
    order; its docstring is `doc` and the list of keywords. It pickles (its
    module is this one), so it travels to worker processes inside a policy."""
    listing = "\n".join(f"    {key} = {value!r}  ({comment})" for key, value, comment in keywords)
    return dataclasses.make_dataclass(
        name,
        [(key, type(value), dataclasses.field(default=value)) for key, value, _ in keywords],
        frozen=True,
        namespace={"__module__": __name__, "__doc__": f"{doc}\n\n{listing}\n"},
    )


def _threshold_keywords(rule: Rule) -> list[tuple[str, object, str]]:
    params = rule.param if isinstance(rule.param, tuple) else (rule.param,)
    defaults = rule.default if isinstance(rule.default, tuple) else (rule.default,)
    return [(p, d, f"{rule.name}, {rule.source}") for p, d in zip(params, defaults, strict=True)]


QualityThresholds = parameters_class(
    "QualityThresholds",
    [keyword for rule in RULES for keyword in _threshold_keywords(rule)],
    """Keep/drop thresholds, one keyword per threshold of `RULES`; defaults are
    the published values unless the rule's note says otherwise.

    The sample corpus is the Python documentation, which is full of code
    blocks. Two C4 rules would drop most of it and are therefore off by
    default: the curly-brace rule and the terminal-punctuation rule (see their
    notes in `RULES`). Keywords (default, rule, source):""",
)

DEFAULT_THRESHOLDS = QualityThresholds()

ReviewMargins = parameters_class(
    "ReviewMargins",
    [(rule.name, float(rule.margin), rule.signal) for rule in RULES if rule.margin is not None],
    """How close (in the signal's own unit) to a rule's threshold counts as
    borderline (curate/review.py); 0 turns review off for that rule. One keyword
    per rule of `RULES` that has a threshold, defaults from the table. Keywords
    (default, signal):""",
)

DEFAULT_MARGINS = ReviewMargins()


@functools.lru_cache(maxsize=64)
def active_rules(thresholds: QualityThresholds) -> tuple[tuple[Rule, Any], ...]:
    """(rule, threshold) of each rule that applies under `thresholds`, in order."""
    return tuple((rule, rule.threshold(thresholds)) for rule in RULES if rule.active(thresholds))


@functools.lru_cache(maxsize=64)
def _checks(thresholds: QualityThresholds) -> tuple[tuple[str, str, Callable, Any], ...]:
    return tuple(
        (rule.name, rule.signal, _FAILS[rule.direction], threshold)
        for rule, threshold in active_rules(thresholds)
    )


def quality_failures(
    signals: Mapping[str, float], thresholds: QualityThresholds = DEFAULT_THRESHOLDS
) -> list[str]:
    """Names of the rules `signals` fail under `thresholds`; empty means keep."""
    return [
        name
        for name, signal, fails, threshold in _checks(thresholds)
        if fails(signals[signal], threshold)
    ]

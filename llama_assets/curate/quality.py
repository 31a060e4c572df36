"""Heuristic quality signals and filters from Gopher, C4 and FineWeb.

Cheap, explainable rules that remove text no one would want a model to learn
from - boilerplate, lists of links, keyword spam, repeated lines - before any
expensive step. Each rule is a named threshold with its published default so
that a source can override it (`QualityThresholds(...)`), and `quality_failures`
names the rules a document fails, so every rejection has a reason.

Sources:
- Gopher: Rae et al. 2021, "Scaling Language Models: Methods, Analysis &
  Insights from Training Gopher", appendix A.1.1 (quality and repetition filters).
- C4: Raffel et al. 2020, "Exploring the Limits of Transfer Learning with a
  Unified Text-to-Text Transformer", section 2.2.
- FineWeb: Penedo et al. 2024, "The FineWeb Datasets", section 3.3 (custom filters).

Words are whitespace tokens with surrounding punctuation stripped; tokens that
are punctuation only ("--", ">>>") are symbols, not words. Lines are the
non-blank lines of the text.
"""

from __future__ import annotations

import functools
import string
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl

GOPHER_STOP_WORDS = frozenset({"the", "be", "to", "of", "and", "that", "have", "with"})
"""Gopher's stop words: English prose has to use some of them."""

BULLETS = ("•", "‣", "◦", "▪", "●", "-", "*", "–")
"""Line starts that count as bullet points."""

ELLIPSES = ("...", "…")

SHORT_LINE_CHARS = 30
"""FineWeb: a line of at most this many characters (stripped) is short."""

TERMINAL_PUNCTUATION = (".", "!", "?", '"', "'", "”", "’")
"""C4's terminal punctuation: period, exclamation and question marks, end quotes."""

_PUNCTUATION = string.punctuation + "“”‘’«»…–—•·"

SIGNAL_NAMES = (
    "q_word_count",
    "q_mean_word_length",
    "q_hash_word_ratio",
    "q_ellipsis_word_ratio",
    "q_bullet_line_fraction",
    "q_ellipsis_line_fraction",
    "q_alpha_word_fraction",
    "q_stop_word_count",
    "q_terminal_punct_line_fraction",
    "q_javascript_line_fraction",
    "q_lorem_ipsum",
    "q_curly_brace",
    "q_duplicate_line_fraction",
    "q_duplicate_line_char_fraction",
    "q_short_line_fraction",
)
"""Keys of `quality_signals`, in order; all values are floats (flags are 0.0/1.0)."""


@dataclass(frozen=True)
class QualityThresholds:
    """Keep/drop thresholds; defaults are the published values unless noted.

    The sample corpus is the Python documentation, which is full of code
    blocks. Two C4 rules would drop most of it and are therefore off by
    default: C4 drops every page containing a curly brace (meant to remove
    JavaScript/CSS leaking into web text - but Python dicts, sets and
    format strings use braces), and C4 drops every *line* not ending in
    terminal punctuation (code lines never do). As a document-level rule,
    `min_terminal_punct_line_fraction` is 0.0 (off); FineWeb's comparable
    rule uses 0.12 and can be set for prose-only web sources.
    """

    # Gopher quality filter.
    min_words: int = 50
    max_words: int = 100_000
    min_mean_word_length: float = 3.0
    max_mean_word_length: float = 10.0
    max_hash_word_ratio: float = 0.1
    """Occurrences of "#" per word (Gopher's symbol-to-word ratio for the hash)."""
    max_ellipsis_word_ratio: float = 0.1
    """Occurrences of "..." or "…" per word (Gopher's ratio for the ellipsis)."""
    max_bullet_line_fraction: float = 0.9
    max_ellipsis_line_fraction: float = 0.3
    min_alpha_word_fraction: float = 0.8
    """Share of whitespace tokens holding at least one alphabetic character."""
    min_stop_words: int = 2
    """Occurrences of GOPHER_STOP_WORDS (counted per occurrence, as datatrove does)."""

    # C4 rules, as document-level thresholds.
    min_terminal_punct_line_fraction: float = 0.0
    """Off by default: code lines do not end in punctuation (see class docstring)."""
    reject_lorem_ipsum: bool = True
    """C4 drops any page containing "lorem ipsum" (placeholder text)."""
    max_javascript_line_fraction: float = 0.5
    """C4 removes each line mentioning "javascript" ("please enable JavaScript"
    boilerplate). Here a document is dropped only when more than this share of
    its lines does - not a published number: mentioning JavaScript is fine,
    a page made of such notices is not."""
    reject_curly_brace: bool = False
    """C4 drops any page with "{"; off by default (see class docstring)."""

    # Repetition: Gopher's duplicate-line filters (FineWeb keeps the same
    # signal but uses 0.01 of characters for web text, far too strict for
    # documentation whose code examples legitimately repeat lines).
    max_duplicate_line_fraction: float = 0.3
    max_duplicate_line_char_fraction: float = 0.2

    # FineWeb's custom filter of list-like pages (menus, link lists, tables).
    max_short_line_fraction: float = 0.67
    """Share of lines of at most SHORT_LINE_CHARS characters (FineWeb: 0.67)."""


DEFAULT_THRESHOLDS = QualityThresholds()


def quality_signals(text: str) -> dict[str, float]:
    """Every quality signal of `text`, keyed by `SIGNAL_NAMES`."""
    tokens = text.split()
    words = [w for w in (t.strip(_PUNCTUATION) for t in tokens) if w]
    n_tokens = len(tokens)
    n_words = len(words)
    lines = [line.strip() for line in text.split("\n") if line.strip()]
    n_lines = len(lines)
    lowered = text.casefold()

    seen: set[str] = set()
    dup_lines = dup_chars = 0
    for line in lines:
        if line in seen:
            dup_lines += 1
            dup_chars += len(line)
        else:
            seen.add(line)
    line_chars = sum(len(line) for line in lines)

    def per_word(count: int) -> float:
        return count / n_words if n_words else 0.0

    def per_line(count: int) -> float:
        return count / n_lines if n_lines else 0.0

    return {
        "q_word_count": float(n_words),
        "q_mean_word_length": sum(len(w) for w in words) / n_words if n_words else 0.0,
        "q_hash_word_ratio": per_word(text.count("#")),
        "q_ellipsis_word_ratio": per_word(text.count("...") + text.count("…")),
        "q_bullet_line_fraction": per_line(sum(line.startswith(BULLETS) for line in lines)),
        "q_ellipsis_line_fraction": per_line(sum(line.endswith(ELLIPSES) for line in lines)),
        "q_alpha_word_fraction": (
            sum(any(c.isalpha() for c in t) for t in tokens) / n_tokens if n_tokens else 0.0
        ),
        "q_stop_word_count": float(sum(w.casefold() in GOPHER_STOP_WORDS for w in words)),
        "q_terminal_punct_line_fraction": per_line(
            sum(line.endswith(TERMINAL_PUNCTUATION) for line in lines)
        ),
        "q_javascript_line_fraction": per_line(
            sum("javascript" in line.casefold() for line in lines)
        ),
        "q_lorem_ipsum": float("lorem ipsum" in lowered),
        "q_curly_brace": float("{" in text),
        "q_duplicate_line_fraction": per_line(dup_lines),
        "q_duplicate_line_char_fraction": dup_chars / line_chars if line_chars else 0.0,
        "q_short_line_fraction": per_line(sum(len(line) <= SHORT_LINE_CHARS for line in lines)),
    }


# --- Batch (vectorised) signals ------------------------------------------------
#
# `quality_signals_frame` must give exactly what `quality_signals` gives, so the
# Python string semantics it relies on are spelled out for polars' Rust regex
# engine instead of trusting that the two agree (they do not, at the edges):

_WHITESPACE = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004"
    "\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
"""Exactly the characters for which `str.isspace()` holds (what `str.split()` and
`str.strip()` use); Rust's `\\s` lacks U+001C..U+001F."""

_CASEFOLD_TO_ASCII = {
    c: c.casefold()
    for c in "\u00df\u0149\u017f\u01f0\u1e96\u1e97\u1e98\u1e99\u1e9a\u1e9e"
    "\ufb00\ufb01\ufb02\ufb03\ufb04\ufb05\ufb06"
}
"""The characters whose `str.casefold()` differs from polars' `to_lowercase()` in
a way that involves ASCII ("ſ" folds to "s", "ﬁ" to "fi", "ẗ" to "t" + U+0308).
Replacing them first makes `to_lowercase()` agree with `casefold()` on every
ASCII substring, which is all the signals look for."""


def _regex_class(ranges: list[tuple[int, int]]) -> str:
    def esc(c: int) -> str:
        return f"\\x{{{c:x}}}"

    return "[" + "".join(esc(a) if a == b else f"{esc(a)}-{esc(b)}" for a, b in ranges) + "]"


@functools.cache
def _alpha_class() -> str:
    """A regex class of exactly the characters for which `str.isalpha()` holds.

    Built from this Python's Unicode database (polars' `\\p{L}` follows a newer
    Unicode version and would disagree on recently assigned letters)."""
    ranges: list[tuple[int, int]] = []
    start = None
    for code in range(sys.maxunicode + 1):
        if chr(code).isalpha():
            if start is None:
                start = code
        elif start is not None:
            ranges.append((start, code - 1))
            start = None
    if start is not None:
        ranges.append((start, sys.maxunicode))
    return _regex_class(ranges)


def _casefold(expr: pl.Expr) -> pl.Expr:
    """`str.casefold()` as far as ASCII substrings are concerned (see above)."""
    return expr.str.replace_many(_CASEFOLD_TO_ASCII).str.to_lowercase()


def _any_prefix(expr: pl.Expr, prefixes: tuple[str, ...]) -> pl.Expr:
    return functools.reduce(lambda a, b: a | b, (expr.str.starts_with(p) for p in prefixes))


def _any_suffix(expr: pl.Expr, suffixes: tuple[str, ...]) -> pl.Expr:
    return functools.reduce(lambda a, b: a | b, (expr.str.ends_with(p) for p in suffixes))


def _ratio(count: pl.Expr, total: pl.Expr) -> pl.Expr:
    # int/int in Python is the correctly rounded quotient; so is float64 division
    # of the two (exactly representable) counts.
    return (
        pl.when(total > 0)
        .then(count.cast(pl.Float64) / total.cast(pl.Float64))
        .otherwise(pl.lit(0.0))
    )


def _chars_class(chars: str) -> str:
    return "".join(f"\\x{{{ord(c):x}}}" for c in chars)


_WS = _chars_class(_WHITESPACE)
_TOKEN = f"[^{_WS}]+"
"""A whitespace token, as `str.split()` makes them."""
_WORD = f"[^{_WS}{_chars_class(_PUNCTUATION)}](?:[^{_WS}]*[^{_WS}{_chars_class(_PUNCTUATION)}])?"
"""A token with its surrounding punctuation stripped (`t.strip(_PUNCTUATION)`),
when anything is left: from its first to its last non-punctuation character."""
_STOP_WORD = "(?i)^(?:" + "|".join(sorted(GOPHER_STOP_WORDS)) + ")$"
"""`w.casefold() in GOPHER_STOP_WORDS`: only ASCII letters case-fold to the stop
words' letters, and no multi-letter folding ("ﬁ" -> "fi") occurs in them."""


FRAME_CHUNK = 2_048
"""Texts scored per polars query: their word and line lists are the query's
working memory (~15 MB per 1,000 documents of 1.5 kB)."""


def quality_signals_frame(texts: Sequence[str]) -> pl.DataFrame:
    """`quality_signals` of every text at once, one row per text, `SIGNAL_NAMES` columns.

    Vectorised with polars; equal to `quality_signals(text)` for every text
    (tests/unit/test_quality.py holds it to that)."""
    texts = list(texts)
    if len(texts) <= FRAME_CHUNK:
        return _signals_frame(texts)
    return pl.concat(
        [_signals_frame(texts[i : i + FRAME_CHUNK]) for i in range(0, len(texts), FRAME_CHUNK)]
    )


def _signals_frame(texts: list[str]) -> pl.DataFrame:
    el = pl.element()
    text = pl.col("text")
    lines = text.str.split("\n").list.eval(el.str.strip_chars(_WHITESPACE))
    n_words = pl.col("words").list.len()
    n_lines = pl.col("lines").list.len()
    line_chars = pl.col("lines").list.eval(el.str.len_chars()).list.sum()
    unique_line_chars = pl.col("lines").list.unique().list.eval(el.str.len_chars()).list.sum()
    # Tokens holding a letter: a match starts at the first character of such a
    # token (the leading [^ws]* takes the rest) and never inside one without.
    alpha_tokens = text.str.count_matches(f"[^{_WS}]*{_alpha_class()}[^{_WS}]*")

    def per_line_count(predicate: pl.Expr) -> pl.Expr:
        return pl.col("lines").list.eval(predicate.cast(pl.Int64)).list.sum()

    frame = (
        pl.DataFrame({"text": pl.Series(texts, dtype=pl.String)})
        .lazy()
        .with_columns(
            words=text.str.extract_all(_WORD),
            lines=lines.list.eval(el.filter(el != "")),
        )
        .select(
            q_word_count=n_words.cast(pl.Float64),
            q_mean_word_length=_ratio(
                pl.col("words").list.eval(el.str.len_chars()).list.sum(), n_words
            ),
            q_hash_word_ratio=_ratio(text.str.count_matches("#", literal=True), n_words),
            q_ellipsis_word_ratio=_ratio(
                text.str.count_matches("...", literal=True)
                + text.str.count_matches("…", literal=True),
                n_words,
            ),
            q_bullet_line_fraction=_ratio(per_line_count(_any_prefix(el, BULLETS)), n_lines),
            q_ellipsis_line_fraction=_ratio(per_line_count(_any_suffix(el, ELLIPSES)), n_lines),
            q_alpha_word_fraction=_ratio(alpha_tokens, text.str.count_matches(_TOKEN)),
            q_stop_word_count=pl.col("words")
            .list.eval(el.str.contains(_STOP_WORD).cast(pl.Int64))
            .list.sum()
            .cast(pl.Float64),
            q_terminal_punct_line_fraction=_ratio(
                per_line_count(_any_suffix(el, TERMINAL_PUNCTUATION)), n_lines
            ),
            q_javascript_line_fraction=_ratio(
                per_line_count(_casefold(el).str.contains("javascript", literal=True)), n_lines
            ),
            q_lorem_ipsum=_casefold(text)
            .str.contains("lorem ipsum", literal=True)
            .cast(pl.Float64),
            q_curly_brace=text.str.contains("{", literal=True).cast(pl.Float64),
            q_duplicate_line_fraction=_ratio(n_lines - pl.col("lines").list.n_unique(), n_lines),
            q_duplicate_line_char_fraction=_ratio(line_chars - unique_line_chars, line_chars),
            q_short_line_fraction=_ratio(
                per_line_count(el.str.len_chars() <= SHORT_LINE_CHARS), n_lines
            ),
        )
        .collect()
    )
    return frame.select(SIGNAL_NAMES)


def quality_failures(
    signals: dict[str, float], thresholds: QualityThresholds = DEFAULT_THRESHOLDS
) -> list[str]:
    """Names of the rules `signals` fail under `thresholds`; empty means keep."""
    t = thresholds
    s = signals
    rules = (
        ("gopher_min_words", s["q_word_count"] < t.min_words),
        ("gopher_max_words", s["q_word_count"] > t.max_words),
        (
            "gopher_mean_word_length",
            not t.min_mean_word_length <= s["q_mean_word_length"] <= t.max_mean_word_length,
        ),
        ("gopher_hash_ratio", s["q_hash_word_ratio"] > t.max_hash_word_ratio),
        ("gopher_ellipsis_ratio", s["q_ellipsis_word_ratio"] > t.max_ellipsis_word_ratio),
        ("gopher_bullet_lines", s["q_bullet_line_fraction"] > t.max_bullet_line_fraction),
        ("gopher_ellipsis_lines", s["q_ellipsis_line_fraction"] > t.max_ellipsis_line_fraction),
        ("gopher_alpha_words", s["q_alpha_word_fraction"] < t.min_alpha_word_fraction),
        ("gopher_stop_words", s["q_stop_word_count"] < t.min_stop_words),
        (
            "c4_terminal_punctuation",
            s["q_terminal_punct_line_fraction"] < t.min_terminal_punct_line_fraction,
        ),
        ("c4_lorem_ipsum", t.reject_lorem_ipsum and s["q_lorem_ipsum"] > 0),
        ("c4_javascript", s["q_javascript_line_fraction"] > t.max_javascript_line_fraction),
        ("c4_curly_brace", t.reject_curly_brace and s["q_curly_brace"] > 0),
        ("duplicate_lines", s["q_duplicate_line_fraction"] > t.max_duplicate_line_fraction),
        (
            "duplicate_line_chars",
            s["q_duplicate_line_char_fraction"] > t.max_duplicate_line_char_fraction,
        ),
        ("fineweb_short_lines", s["q_short_line_fraction"] > t.max_short_line_fraction),
    )
    return [name for name, failed in rules if failed]

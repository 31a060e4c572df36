"""The quality signals of many documents at once (polars), for the rules of
curate/rules.py.

Cheap, explainable measurements from Gopher, C4 and FineWeb - word counts,
symbol ratios, shares of bullet, short, repeated or boilerplate lines - that
the rules in `RULES` (curate/rules.py) judge. `quality_signals_frame` computes
every signal declared in `SIGNALS` for a whole part at once; it is the only
scorer the pipeline runs. Its per-document reference, plain Python that says
what each signal means, lives with the tests (tests/quality_reference.py), and
tests/unit/test_quality.py holds the two equal.

Words are whitespace tokens with surrounding punctuation stripped; tokens that
are punctuation only ("--", ">>>") are symbols, not words. Lines are the
non-blank lines of the text, stripped.
"""

from __future__ import annotations

import functools
import string
import sys
from collections.abc import Sequence

import polars as pl

from llama_assets.curate.rules import SIGNAL_NAMES

GOPHER_STOP_WORDS = frozenset({"the", "be", "to", "of", "and", "that", "have", "with"})
"""Gopher's stop words: English prose has to use some of them."""

BULLETS = ("•", "‣", "◦", "▪", "●", "-", "*", "–")
"""Line starts that count as bullet points."""

ELLIPSES = ("...", "…")

SHORT_LINE_CHARS = 30
"""FineWeb: a line of at most this many characters (stripped) is short."""

TERMINAL_PUNCTUATION = (".", "!", "?", '"', "'", "”", "’")
"""C4's terminal punctuation: period, exclamation and question marks, end quotes."""

PUNCTUATION = string.punctuation + "“”‘’«»…–—•·"
"""Stripped from both ends of a token to make a word."""

# `quality_signals_frame` must give exactly what the per-document reference
# (tests/quality_reference.py) gives, so the Python string semantics it relies
# on are spelled out for polars' Rust regex engine instead of trusting that the
# two agree (they do not, at the edges):

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
_WORD = f"[^{_WS}{_chars_class(PUNCTUATION)}](?:[^{_WS}]*[^{_WS}{_chars_class(PUNCTUATION)}])?"
"""A token with its surrounding punctuation stripped (`t.strip(PUNCTUATION)`),
when anything is left: from its first to its last non-punctuation character."""
_STOP_WORD = "(?i)^(?:" + "|".join(sorted(GOPHER_STOP_WORDS)) + ")$"
"""`w.casefold() in GOPHER_STOP_WORDS`: only ASCII letters case-fold to the stop
words' letters, and no multi-letter folding ("ﬁ" -> "fi") occurs in them."""


FRAME_CHUNK = 2_048
"""Texts scored per polars query: their word and line lists are the query's
working memory (~15 MB per 1,000 documents of 1.5 kB)."""


def quality_signals_frame(texts: Sequence[str]) -> pl.DataFrame:
    """Every quality signal of every text, one row per text, one Float64 column
    per signal of `SIGNALS` (curate/rules.py), in that order.

    Vectorised with polars; equal to the per-document reference
    (tests/quality_reference.py) for every text (tests/unit/test_quality.py
    holds it to that)."""
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

    signals = dict(
        q_word_count=n_words.cast(pl.Float64),
        q_mean_word_length=_ratio(
            pl.col("words").list.eval(el.str.len_chars()).list.sum(), n_words
        ),
        q_hash_word_ratio=_ratio(text.str.count_matches("#", literal=True), n_words),
        q_ellipsis_word_ratio=_ratio(
            text.str.count_matches("...", literal=True) + text.str.count_matches("…", literal=True),
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
        q_lorem_ipsum=_casefold(text).str.contains("lorem ipsum", literal=True).cast(pl.Float64),
        q_curly_brace=text.str.contains("{", literal=True).cast(pl.Float64),
        q_duplicate_line_fraction=_ratio(n_lines - pl.col("lines").list.n_unique(), n_lines),
        q_duplicate_line_char_fraction=_ratio(line_chars - unique_line_chars, line_chars),
        q_short_line_fraction=_ratio(
            per_line_count(el.str.len_chars() <= SHORT_LINE_CHARS), n_lines
        ),
    )
    if signals.keys() != set(SIGNAL_NAMES):
        raise ValueError(f"one expression per signal of SIGNALS: {sorted(signals)}")
    return (
        pl.DataFrame({"text": pl.Series(texts, dtype=pl.String)})
        .lazy()
        .with_columns(
            words=text.str.extract_all(_WORD),
            lines=lines.list.eval(el.filter(el != "")),
        )
        .select(**{name: signals[name] for name in SIGNAL_NAMES})
        .collect()
    )

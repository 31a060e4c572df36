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

import string
from dataclasses import dataclass

GOPHER_STOP_WORDS = frozenset({"the", "be", "to", "of", "and", "that", "have", "with"})
"""Gopher's stop words: English prose has to use some of them."""

BULLETS = ("•", "‣", "◦", "▪", "●", "-", "*", "–")
"""Line starts that count as bullet points."""

ELLIPSES = ("...", "…")

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
    }


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
    )
    return [name for name, failed in rules if failed]

"""The per-document reference of the quality signals: plain Python that says
what each signal of `SIGNALS` (llama_assets/curate/rules.py) means.

The pipeline runs only the vectorised scorer, `quality_signals_frame`
(llama_assets/curate/quality.py); tests/unit/test_quality.py holds the two
equal on the Python documentation and on edge cases. The data-stage benchmark's
baseline (benchmarks/data_stage.py) calls this function one document at a
time, as a user's loop would.
"""

from __future__ import annotations

from llama_assets.curate.quality import (
    BULLETS,
    ELLIPSES,
    GOPHER_STOP_WORDS,
    PUNCTUATION,
    SHORT_LINE_CHARS,
    TERMINAL_PUNCTUATION,
)


def quality_signals(text: str) -> dict[str, float]:
    """Every quality signal of `text`, keyed by the signal names of `SIGNALS`, in order."""
    tokens = text.split()
    words = [w for w in (t.strip(PUNCTUATION) for t in tokens) if w]
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

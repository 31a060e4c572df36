"""Gopher/C4/FineWeb quality signals and rules: exact signal values, one rule at a time."""

from __future__ import annotations

import dataclasses

import pytest

from llama_assets.curate.quality import quality_signals_frame
from llama_assets.curate.rules import SIGNAL_NAMES, QualityThresholds, quality_failures
from tests.quality_reference import quality_signals

PROSE = (
    "The with statement is used to wrap the execution of a block with methods defined by a "
    "context manager. This allows common usage patterns to be encapsulated for convenient "
    "reuse. The context manager handles the entry into, and the exit from, the desired runtime "
    "context for the execution of the block of code. Context managers are normally invoked "
    "using the with statement, but can also be used by directly invoking their methods. Typical "
    "uses of context managers include saving and restoring various kinds of global state, "
    "locking and unlocking resources and closing opened files."
)

PYTHON_DOC = (
    PROSE + "\n\nFor example:\n\n    >>> d = {'spam': 1, 'eggs': 2}\n    >>> with open('x') as f:\n"
    "    ...     data = f.read()\n    >>> print(f'{len(data)} bytes')\n"
)


def test_exact_signals() -> None:
    text = "The cat sat on the mat.\n- item one\n- item one\n\nWait...\n"
    assert quality_signals(text) == {
        "q_word_count": 11.0,
        "q_mean_word_length": pytest.approx(35 / 11),
        "q_hash_word_ratio": 0.0,
        "q_ellipsis_word_ratio": pytest.approx(1 / 11),
        "q_bullet_line_fraction": 0.5,
        "q_ellipsis_line_fraction": 0.25,
        "q_alpha_word_fraction": pytest.approx(11 / 13),
        "q_stop_word_count": 2.0,
        "q_terminal_punct_line_fraction": 0.5,
        "q_javascript_line_fraction": 0.0,
        "q_lorem_ipsum": 0.0,
        "q_curly_brace": 0.0,
        "q_duplicate_line_fraction": 0.25,
        "q_duplicate_line_char_fraction": pytest.approx(10 / 50),
        "q_short_line_fraction": 1.0,  # every line has at most 30 characters
    }
    assert tuple(quality_signals(text)) == SIGNAL_NAMES


def test_empty_text_signals_are_zero() -> None:
    assert quality_signals("") == dict.fromkeys(SIGNAL_NAMES, 0.0)


def test_prose_and_python_docs_pass_defaults() -> None:
    assert quality_failures(quality_signals(PROSE)) == []
    signals = quality_signals(PYTHON_DOC)
    assert signals["q_curly_brace"] == 1.0
    assert quality_failures(signals) == []


def test_c4_curly_brace_rule_is_opt_in() -> None:
    strict = QualityThresholds(reject_curly_brace=True, min_terminal_punct_line_fraction=0.9)
    assert quality_failures(quality_signals(PYTHON_DOC), strict) == [
        "c4_terminal_punctuation",
        "c4_curly_brace",
    ]


def _passing() -> dict[str, float]:
    signals = quality_signals(PROSE)
    assert quality_failures(signals) == []
    return signals


@pytest.mark.parametrize(
    ("signal", "value", "rule"),
    [
        ("q_word_count", 49.0, "gopher_min_words"),
        ("q_word_count", 100_001.0, "gopher_max_words"),
        ("q_mean_word_length", 2.9, "gopher_mean_word_length"),
        ("q_mean_word_length", 10.1, "gopher_mean_word_length"),
        ("q_hash_word_ratio", 0.11, "gopher_hash_ratio"),
        ("q_ellipsis_word_ratio", 0.11, "gopher_ellipsis_ratio"),
        ("q_bullet_line_fraction", 0.91, "gopher_bullet_lines"),
        ("q_ellipsis_line_fraction", 0.31, "gopher_ellipsis_lines"),
        ("q_alpha_word_fraction", 0.79, "gopher_alpha_words"),
        ("q_stop_word_count", 1.0, "gopher_stop_words"),
        ("q_lorem_ipsum", 1.0, "c4_lorem_ipsum"),
        ("q_javascript_line_fraction", 0.51, "c4_javascript"),
        ("q_duplicate_line_fraction", 0.31, "duplicate_lines"),
        ("q_duplicate_line_char_fraction", 0.21, "duplicate_line_chars"),
        ("q_short_line_fraction", 0.68, "fineweb_short_lines"),
    ],
)
def test_each_rule_fails_alone(signal: str, value: float, rule: str) -> None:
    signals = _passing() | {signal: value}
    assert quality_failures(signals) == [rule]


@pytest.mark.parametrize(
    ("signal", "value"),
    [
        ("q_word_count", 50.0),
        ("q_word_count", 100_000.0),
        ("q_mean_word_length", 3.0),
        ("q_mean_word_length", 10.0),
        ("q_hash_word_ratio", 0.1),
        ("q_bullet_line_fraction", 0.9),
        ("q_ellipsis_line_fraction", 0.3),
        ("q_alpha_word_fraction", 0.8),
        ("q_stop_word_count", 2.0),
        ("q_duplicate_line_fraction", 0.3),
        ("q_short_line_fraction", 0.67),
    ],
)
def test_boundaries_are_kept(signal: str, value: float) -> None:
    assert quality_failures(_passing() | {signal: value}) == []


def test_texts_that_fail() -> None:
    assert quality_failures(quality_signals("the cat and dog " * 5)) == ["gopher_min_words"]
    lorem = "Lorem ipsum dolor sit amet. " + PROSE
    assert quality_failures(quality_signals(lorem)) == ["c4_lorem_ipsum"]
    spam = " ".join(f"#tag{i}" for i in range(60)) + " the and"
    assert "gopher_hash_ratio" in quality_failures(quality_signals(spam))
    repeated = "\n".join(["Subscribe to our newsletter for the best deals."] * 10 + [PROSE])
    assert quality_failures(quality_signals(repeated)) == [
        "duplicate_lines",
        "duplicate_line_chars",
    ]
    notices = "Please enable JavaScript to view this page.\n" * 2 + PROSE
    # 2 of 3 lines mention JavaScript; 1 of 3 lines is a repeat.
    assert quality_failures(quality_signals(notices)) == ["c4_javascript", "duplicate_lines"]


def test_fineweb_short_lines() -> None:
    menu = "\n".join(["Home", "About us", "Products", "Contact", PROSE])
    signals = quality_signals(menu)
    assert signals["q_short_line_fraction"] == pytest.approx(4 / 5)
    assert quality_failures(signals) == ["fineweb_short_lines"]
    assert quality_failures(signals, QualityThresholds(max_short_line_fraction=1.0)) == []


def test_thresholds_override_per_source() -> None:
    lenient = QualityThresholds(min_words=5)
    assert quality_failures(quality_signals("the cat and dog " * 5), lenient) == []
    assert dataclasses.replace(lenient, min_words=50) == QualityThresholds()
    with pytest.raises(dataclasses.FrozenInstanceError):
        lenient.min_words = 1  # type: ignore[misc]


EDGE_CASES = [
    "",
    " ",
    "   \n\t \r\n  \x0b\x0c ",
    "--- >>> ### ... … !!! «» “” •",
    "• one\n‣ two...\n◦ three…\n▪ x\n● y\n- four\n* five\n– six\nplain.\n  - indented",
    "Wait...\nReally…\nNo!\nYes?\n'quoted'\n\"quoted\"\n“curly”\n’tis’\nend.",
    "Ça va? Ünïcödé naïve — “quoted” ’tis ſtraße ﬁne Straße ΣΊΣΥΦΟΣ 日本語のテキスト",
    "javaſcript\nJAVASCRIPT\njavascripẗ here\nJava Script\nplain",
    "LOREM IPSUM\nlorem\u00a0ipsum\nlorem\nipsum",
    "THE The tHe of OF ﬀ ſ the, (and) «with» tHaT-have to... be! ",
    "word " * 20000,
    "x" * 50000,
    "same line\nsame line\n  same line  \nother\n\n\nsame line\n\tother\t",
    "\x1c a\x1fb\u3000c\u2028d\x85e\u00a0f\u200bg\u2009h",
    "dict {x} and f'{y}' #tag ## #",
    "12 3.5 -- 42% $5 ..... .... ……",
    "\U0001d400\U0001d401 \u02b0 \u01c5 \u0660\u0661 \u2160 a\u0301",
    "line\r\nline\r\n\r\nline \r\n",
]


def test_batch_equals_per_document() -> None:
    from pydoc_data.topics import topics

    texts = list(topics.values()) + EDGE_CASES
    batch = quality_signals_frame(texts).to_dict(as_series=False)
    assert tuple(batch) == SIGNAL_NAMES
    for i, text in enumerate(texts):
        expected = quality_signals(text)
        for name in SIGNAL_NAMES:
            got = batch[name][i]
            assert isinstance(got, float)
            if name in ("q_word_count", "q_stop_word_count") or name in (
                "q_lorem_ipsum",
                "q_curly_brace",
            ):
                assert got == expected[name], (name, text[:80])
            else:
                assert got == pytest.approx(expected[name], rel=0, abs=1e-9), (name, text[:80])


def test_batch_of_nothing() -> None:
    assert quality_signals_frame([]).to_dict(as_series=False) == {name: [] for name in SIGNAL_NAMES}


def test_batch_character_classes_match_python() -> None:
    """The batch path spells out Python's whitespace and letters; check them."""
    import sys

    import polars as pl

    from llama_assets.curate import quality

    codes = [c for c in range(sys.maxunicode + 1) if not 0xD800 <= c <= 0xDFFF]
    chars = pl.Series([chr(c) for c in codes])
    assert set(quality._WHITESPACE) == {chr(c) for c in codes if chr(c).isspace()}
    is_alpha = chars.str.contains(quality._alpha_class()).to_list()
    assert [chr(c) for c, a in zip(codes, is_alpha, strict=True) if a != chr(c).isalpha()] == []
    # Case-insensitive stop-word letters: only ASCII letters fold onto them.
    letters = set("".join(quality.GOPHER_STOP_WORDS))
    folded = chars.str.contains("(?i)^[" + "".join(sorted(letters)) + "]$").to_list()
    assert [
        chr(c) for c, f in zip(codes, folded, strict=True) if f != (chr(c).casefold() in letters)
    ] == []

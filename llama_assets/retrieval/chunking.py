"""Split documents into retrieval chunks along their structure.

Paragraphs (blank-line separated) are packed into chunks of at most
``max_words`` words, and a paragraph longer than that is cut into windows that
overlap by ``overlap_words``. The budget is in words as a stand-in for the
embedder's 256 wordpieces: the Python docs run about 1.5 pieces a word on
average and 2 at the 90th percentile, so 110 words stay inside the window.
Budgeting in the embedder's own tokens is a later refinement.

chunk_id is a content hash scoped to the document, so the same text in two
documents never collides and an unchanged chunk keeps its id across re-runs.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

DEFAULT_MAX_WORDS = 110
DEFAULT_OVERLAP_WORDS = 20

_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")
_WORD = re.compile(r"\S+")


@dataclass(frozen=True)
class Chunk:
    chunk_id: str
    doc_id: str
    ordinal: int
    text: str
    char_start: int
    char_end: int


def chunk_id_for(doc_id: str, text: str, occurrence: int) -> str:
    """Content hash scoped to the document; ``occurrence`` separates repeats."""
    digest = hashlib.sha256(f"{doc_id}\x00{occurrence}\x00{text}".encode()).hexdigest()
    return digest[:32]


def _paragraph_spans(text: str) -> list[tuple[int, int]]:
    spans, start = [], 0
    for match in _PARAGRAPH_BREAK.finditer(text):
        if text[start : match.start()].strip():
            spans.append((start, match.start()))
        start = match.end()
    if text[start:].strip():
        spans.append((start, len(text)))
    return spans


def _word_windows(
    words: list[re.Match[str]], max_words: int, overlap: int
) -> list[tuple[int, int]]:
    """Character spans of overlapping word windows over one long paragraph."""
    step = max(1, max_words - overlap)
    spans = []
    for first in range(0, len(words), step):
        last = min(first + max_words, len(words)) - 1
        spans.append((words[first].start(), words[last].end()))
        if last == len(words) - 1:
            break
    return spans


def chunk_document(
    doc_id: str,
    text: str,
    max_words: int = DEFAULT_MAX_WORDS,
    overlap_words: int = DEFAULT_OVERLAP_WORDS,
) -> list[Chunk]:
    if overlap_words >= max_words:
        raise ValueError("overlap_words must be smaller than max_words")
    spans: list[tuple[int, int]] = []
    current: tuple[int, int] | None = None
    current_words = 0
    for start, end in _paragraph_spans(text):
        words = list(_WORD.finditer(text, start, end))
        if len(words) > max_words:
            if current:
                spans.append(current)
                current, current_words = None, 0
            spans.extend(_word_windows(words, max_words, overlap_words))
            continue
        if current and current_words + len(words) > max_words:
            spans.append(current)
            current, current_words = None, 0
        current = (current[0], end) if current else (start, end)
        current_words += len(words)
    if current:
        spans.append(current)

    chunks, seen = [], {}
    for ordinal, (start, end) in enumerate(spans):
        body = text[start:end].strip()
        occurrence = seen.get(body, 0)
        seen[body] = occurrence + 1
        chunks.append(
            Chunk(chunk_id_for(doc_id, body, occurrence), doc_id, ordinal, body, start, end)
        )
    return chunks

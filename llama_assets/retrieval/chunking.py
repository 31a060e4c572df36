"""Split documents into retrieval chunks along their structure, in the embedder's tokens.

A document is first cut into sections at its headings (Markdown ``#`` headings,
reStructuredText/setext underlines such as ``Title\\n*****``, and the flattened
``Title *****`` form that HTML conversion leaves), then each section into
paragraphs (blank-line separated). Paragraphs are packed into chunks of at most
``max_tokens`` tokens *of the embedder's own tokenizer* (all-MiniLM-L6-v2 reads
256 wordpieces, two of which are [CLS] and [SEP], so the default budget is 254),
so no chunk is ever silently truncated by the model. Chunks never cross a
section boundary. Overlap: a paragraph longer than the budget is cut into token
windows that overlap by ``overlap_tokens``; when packed paragraphs overflow, the
last paragraph is carried into the next chunk if it fits the overlap budget (so
a short heading line or a lead-in sentence gives the next chunk its context).

Each chunk records its heading path (``("Compound statements", "The if statement")``)
and its character offsets in the document text. chunk_id is a content hash
scoped to the document, so the same text in two documents never collides and
an unchanged chunk keeps its id across re-runs.

Tokenisation is one call per batch of documents (``TokenOffsets``): token
counts of any span are then a bisection over the token start offsets, so
packing costs nothing extra.
"""

from __future__ import annotations

import hashlib
import re
from bisect import bisect_left
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

DEFAULT_MAX_TOKENS = 254  # all-MiniLM-L6-v2: 256 positions minus [CLS] and [SEP]
DEFAULT_OVERLAP_TOKENS = 32
# How far back (in tokens) a window cut may move to land between words.
_SNAP_TOKENS = 16

# For each text, the (start, end) character offsets of its tokens, without
# special tokens. ``hf_token_offsets`` adapts a Hugging Face fast tokenizer.
TokenOffsets = Callable[[Sequence[str]], list[list[tuple[int, int]]]]

_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")
_ATX = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$")
_UNDERLINE = re.compile(r"^([*=\-~^\"+#])\1{2,}[ \t]*$")
_FLAT = re.compile(r"^(\S.{0,118}?) ([*=\-~^])\2{2,}[ \t]*$")
_MAX_HEADING_CHARS = 120


@dataclass(frozen=True)
class Chunk:
    chunk_id: str
    doc_id: str
    ordinal: int
    text: str
    char_start: int
    char_end: int
    headings: tuple[str, ...] = field(default=())
    tokens: int = 0


def chunk_id_for(doc_id: str, text: str, occurrence: int) -> str:
    """Content hash scoped to the document; ``occurrence`` separates repeats."""
    digest = hashlib.sha256(f"{doc_id}\x00{occurrence}\x00{text}".encode()).hexdigest()
    return digest[:32]


def text_hash(text: str) -> str:
    """The embedding cache key of a chunk's text (independent of its document)."""
    return hashlib.sha256(text.encode()).hexdigest()


def hf_token_offsets(tokenizer) -> TokenOffsets:
    """Token offsets from a Hugging Face fast tokenizer (no special tokens)."""

    def offsets(texts: Sequence[str]) -> list[list[tuple[int, int]]]:
        if not texts:
            return []
        encoded = tokenizer(
            list(texts),
            add_special_tokens=False,
            return_offsets_mapping=True,
            return_attention_mask=False,
            return_token_type_ids=False,
            truncation=False,
            verbose=False,
        )
        return [[tuple(o) for o in doc] for doc in encoded["offset_mapping"]]

    return offsets


# --- structure -----------------------------------------------------------------


@dataclass(frozen=True)
class Section:
    start: int
    end: int
    headings: tuple[str, ...]


def _has_letter(value: str) -> bool:
    return any(ch.isalpha() for ch in value)


def find_headings(text: str) -> list[tuple[int, int, str]]:
    """``(char_start, level, title)`` of each heading, in order.

    Markdown ``#`` headings take their level from the number of ``#``;
    underline styles take theirs from the order in which each underline
    character first appears in the document (the reStructuredText rule),
    after the ``#`` levels.
    """
    headings: list[tuple[int, int, str]] = []
    underline_order: list[str] = []
    lines = text.split("\n")
    pos = 0
    starts = []
    for line in lines:
        starts.append(pos)
        pos += len(line) + 1

    def underline_level(char: str) -> int:
        if char not in underline_order:
            underline_order.append(char)
        return 6 + underline_order.index(char) + 1

    for i, line in enumerate(lines):
        stripped = line.rstrip()
        if not stripped or stripped[0].isspace() or len(stripped) > _MAX_HEADING_CHARS:
            continue
        if m := _ATX.match(stripped):
            if _has_letter(m.group(2)):
                headings.append((starts[i], len(m.group(1)), m.group(2).strip()))
            continue
        if i + 1 < len(lines) and (u := _UNDERLINE.match(lines[i + 1])):
            if _has_letter(stripped) and not _UNDERLINE.match(stripped):
                headings.append((starts[i], underline_level(u.group(1)), stripped.strip()))
            continue
        if (m := _FLAT.match(stripped)) and _has_letter(m.group(1)):
            headings.append((starts[i], underline_level(m.group(2)), m.group(1).strip()))
    return headings


def sections(text: str) -> list[Section]:
    """The document cut at its headings; each section starts at its heading line."""
    result: list[Section] = []
    stack: list[tuple[int, str]] = []  # (level, title)
    cuts = find_headings(text)
    if not cuts or cuts[0][0] > 0:
        result.append(Section(0, cuts[0][0] if cuts else len(text), ()))
    for n, (start, level, title) in enumerate(cuts):
        while stack and stack[-1][0] >= level:
            stack.pop()
        # A heading that repeats its parent (a Markdown title over the same RST
        # title) adds no information to the path.
        if not (stack and stack[-1][1] == title):
            stack.append((level, title))
        end = cuts[n + 1][0] if n + 1 < len(cuts) else len(text)
        result.append(Section(start, end, tuple(t for _, t in stack)))
    return [s for s in result if text[s.start : s.end].strip()]


def _paragraph_spans(text: str, start: int, end: int) -> list[tuple[int, int]]:
    spans, cursor = [], start
    for match in _PARAGRAPH_BREAK.finditer(text, start, end):
        if text[cursor : match.start()].strip():
            spans.append((cursor, match.start()))
        cursor = match.end()
    if text[cursor:end].strip():
        spans.append((cursor, end))
    return spans


# --- packing -------------------------------------------------------------------


class _Tokens:
    def __init__(self, offsets: list[tuple[int, int]]):
        self.starts = [s for s, _ in offsets]
        self.ends = [e for _, e in offsets]

    def index(self, char: int) -> int:
        return bisect_left(self.starts, char)

    def count(self, start: int, end: int) -> int:
        return self.index(end) - self.index(start)


def _windows(
    tokens: _Tokens, start: int, end: int, max_tokens: int, overlap: int
) -> list[tuple[int, int]]:
    """Overlapping token windows over one long paragraph, cut between words
    where a word boundary lies within a few tokens of the budget."""
    first, last = tokens.index(start), tokens.index(end)
    spans = []
    while first < last:
        stop = min(first + max_tokens, last)
        if stop < last:
            for cut in range(stop, max(first + 1, stop - _SNAP_TOKENS), -1):
                if tokens.starts[cut] > tokens.ends[cut - 1]:  # whitespace before token
                    stop = cut
                    break
        spans.append((tokens.starts[first], tokens.ends[stop - 1]))
        if stop >= last:
            break
        first = max(first + 1, stop - overlap)
        # Start the next window on a word boundary too (back into the overlap).
        while (
            first > 0
            and tokens.starts[first] == tokens.ends[first - 1]
            and stop - first < 2 * overlap
        ):
            first -= 1
    return spans


def _pack_section(
    text: str, section: Section, tokens: _Tokens, max_tokens: int, overlap: int
) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    current: list[tuple[int, int, int]] = []  # paragraphs (start, end, tokens)

    def used() -> int:
        return sum(p[2] for p in current)

    for start, end in _paragraph_spans(text, section.start, section.end):
        n = tokens.count(start, end)
        if n > max_tokens:
            if current:
                spans.append((current[0][0], current[-1][1]))
                current = []
            spans.extend(_windows(tokens, start, end, max_tokens, overlap))
            continue
        if current and used() + n > max_tokens:
            spans.append((current[0][0], current[-1][1]))
            last = current[-1]
            current = [last] if last[2] <= overlap and last[2] + n <= max_tokens else []
        current.append((start, end, n))
    if current:
        spans.append((current[0][0], current[-1][1]))
    return spans


def chunk_document(
    doc_id: str,
    text: str,
    token_offsets: list[tuple[int, int]],
    max_tokens: int = DEFAULT_MAX_TOKENS,
    overlap_tokens: int = DEFAULT_OVERLAP_TOKENS,
) -> list[Chunk]:
    """Chunks of one document; ``token_offsets`` are its tokens' character spans."""
    if overlap_tokens >= max_tokens:
        raise ValueError("overlap_tokens must be smaller than max_tokens")
    tokens = _Tokens(token_offsets)
    chunks: list[Chunk] = []
    seen: dict[str, int] = {}
    for section in sections(text):
        for start, end in _pack_section(text, section, tokens, max_tokens, overlap_tokens):
            raw = text[start:end]
            body = raw.strip()
            start += len(raw) - len(raw.lstrip())
            end = start + len(body)
            occurrence = seen.get(body, 0)
            seen[body] = occurrence + 1
            chunks.append(
                Chunk(
                    chunk_id=chunk_id_for(doc_id, body, occurrence),
                    doc_id=doc_id,
                    ordinal=len(chunks),
                    text=body,
                    char_start=start,
                    char_end=end,
                    headings=section.headings,
                    tokens=tokens.count(start, end),
                )
            )
    return chunks


def chunk_documents(
    docs: Sequence[tuple[str, str]],
    token_offsets: TokenOffsets,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    overlap_tokens: int = DEFAULT_OVERLAP_TOKENS,
    tokenize_batch: int = 64,
) -> list[Chunk]:
    """Chunks of many ``(doc_id, text)`` documents, tokenised a batch at a time."""
    chunks: list[Chunk] = []
    for i in range(0, len(docs), tokenize_batch):
        group = docs[i : i + tokenize_batch]
        offsets = token_offsets([text for _, text in group])
        for (doc_id, text), doc_offsets in zip(group, offsets, strict=True):
            chunks.extend(chunk_document(doc_id, text, doc_offsets, max_tokens, overlap_tokens))
    return chunks

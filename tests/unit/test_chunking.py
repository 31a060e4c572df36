"""Chunking along headings and paragraphs, budgeted in the embedder's own tokens."""

import pytest

from llama_assets.retrieval.chunking import (
    chunk_document,
    chunk_documents,
    chunk_id_for,
    find_headings,
    hf_token_offsets,
    sections,
)
from resources.embedder import packaged_minilm_path


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(packaged_minilm_path()))


@pytest.fixture(scope="module")
def offsets(tokenizer):
    return hf_token_offsets(tokenizer)


def chunk(offsets, doc_id, text, **kwargs):
    return chunk_document(doc_id, text, offsets([text])[0], **kwargs)


def words(n: int, prefix: str = "w") -> str:
    return " ".join(f"{prefix}{i}" for i in range(n))


DOC = """# The try statement

The "try" statement
*******************

The try statement specifies exception handlers.

"except" clause
===============

The except clause specifies one or more handlers.

Nested detail
-------------

Deeper text.

"finally" clause
================

Cleanup code goes here.
"""


def test_headings_of_every_style_with_levels():
    found = [(level, title) for _, level, title in find_headings(DOC)]
    assert found == [
        (1, "The try statement"),
        (7, 'The "try" statement'),
        (8, '"except" clause'),
        (9, "Nested detail"),
        (8, '"finally" clause'),
    ]
    flat = "Calls *****\n\nA call calls a callable.\n\nValue comparisons =====\n\nText."
    assert [t for _, _, t in find_headings(flat)] == ["Calls", "Value comparisons"]
    # Indented or letterless underlined lines (tables, code) are not headings.
    assert find_headings("   +--+\n   ----\n\n12345\n-----\n") == []


def test_sections_carry_their_heading_path():
    paths = [s.headings for s in sections(DOC)]
    assert paths == [
        ("The try statement",),
        ("The try statement", 'The "try" statement'),
        ("The try statement", 'The "try" statement', '"except" clause'),
        ("The try statement", 'The "try" statement', '"except" clause', "Nested detail"),
        ("The try statement", 'The "try" statement', '"finally" clause'),
    ]


def test_chunks_follow_sections_and_keep_offsets(offsets):
    chunks = chunk(offsets, "d1", DOC)
    assert [c.headings[-1] for c in chunks] == [
        "The try statement",
        'The "try" statement',
        '"except" clause',
        "Nested detail",
        '"finally" clause',
    ]
    assert all(DOC[c.char_start : c.char_end] == c.text for c in chunks)
    assert chunks[2].text.startswith('"except" clause\n====')
    assert [c.ordinal for c in chunks] == list(range(len(chunks)))


def test_budget_is_in_the_embedders_tokens(offsets, tokenizer):
    # Identifiers cost several wordpieces each: a word budget would overflow.
    text = "\n\n".join(
        " ".join(f"__getattribute__{i}" for i in range(30 * p, 30 * p + 30)) for p in range(12)
    )
    chunks = chunk(offsets, "d", text, max_tokens=254, overlap_tokens=32)
    assert len(chunks) > 3
    for c in chunks:
        ids = tokenizer(c.text, add_special_tokens=True)["input_ids"]
        assert len(ids) <= 256
        assert c.tokens == len(ids) - 2


def test_long_paragraph_is_cut_into_overlapping_windows(offsets):
    text = words(600)
    chunks = chunk(offsets, "d1", text, max_tokens=100, overlap_tokens=20)
    assert len(chunks) >= 4
    for a, b in zip(chunks, chunks[1:], strict=False):
        overlap = a.char_end - b.char_start
        assert overlap > 0, "consecutive windows overlap"
        assert text[b.char_start - 1] == " ", "windows start between words"
    assert chunks[-1].text.split()[-1] == "w599"
    assert all(c.tokens <= 100 for c in chunks)


def test_packed_paragraphs_carry_a_short_paragraph_into_the_next_chunk(offsets):
    heading = "Intro line."
    text = "\n\n".join([words(60, "a"), heading, words(60, "b")])
    chunks = chunk(offsets, "d", text, max_tokens=150, overlap_tokens=20)
    assert len(chunks) == 2
    assert heading in chunks[0].text and chunks[1].text.startswith(heading)


def test_chunk_ids_are_scoped_to_the_document_and_stable(offsets):
    a = chunk(offsets, "doc-a", "same text here")
    b = chunk(offsets, "doc-b", "same text here")
    assert a[0].chunk_id != b[0].chunk_id
    assert a[0].chunk_id == chunk(offsets, "doc-a", "same text here")[0].chunk_id
    repeated = chunk(offsets, "d", "x y\n\nx y", max_tokens=2, overlap_tokens=1)
    assert [c.chunk_id for c in repeated] == [
        chunk_id_for("d", "x y", 0),
        chunk_id_for("d", "x y", 1),
    ]


def test_empty_text_has_no_chunks_and_batches_match_singles(offsets):
    assert chunk(offsets, "d", "  \n\n ") == []
    docs = [("d1", DOC), ("d2", words(400)), ("d3", "")]
    batched = chunk_documents(docs, offsets, tokenize_batch=2)
    singles = [c for doc_id, text in docs for c in chunk(offsets, doc_id, text)]
    assert batched == singles

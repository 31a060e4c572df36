from llama_assets.retrieval.chunking import chunk_document, chunk_id_for


def words(n: int, prefix: str = "w") -> str:
    return " ".join(f"{prefix}{i}" for i in range(n))


def test_paragraphs_are_packed_up_to_the_budget():
    text = "\n\n".join([words(40, "a"), words(40, "b"), words(40, "c")])
    chunks = chunk_document("d1", text, max_words=90, overlap_words=10)
    assert [c.text for c in chunks] == [
        words(40, "a") + "\n\n" + words(40, "b"),
        words(40, "c"),
    ]
    assert [(c.char_start, c.char_end) for c in chunks] == [
        (0, len(words(40, "a")) * 2 + 2),
        (len(text) - len(words(40, "c")), len(text)),
    ]
    assert all(text[c.char_start : c.char_end].strip() == c.text for c in chunks)


def test_long_paragraph_is_cut_into_overlapping_windows():
    chunks = chunk_document("d1", words(25), max_words=10, overlap_words=3)
    assert [c.text.split()[0] for c in chunks] == ["w0", "w7", "w14", "w21"]
    assert chunks[0].text.split()[-3:] == chunks[1].text.split()[:3]
    assert chunks[-1].text.split()[-1] == "w24"


def test_chunk_ids_are_scoped_to_the_document_and_stable():
    a = chunk_document("doc-a", "same text here")
    b = chunk_document("doc-b", "same text here")
    assert a[0].chunk_id != b[0].chunk_id
    assert a[0].chunk_id == chunk_document("doc-a", "same text here")[0].chunk_id
    repeated = chunk_document("d", "x y\n\nx y", max_words=2, overlap_words=1)
    assert [c.chunk_id for c in repeated] == [
        chunk_id_for("d", "x y", 0),
        chunk_id_for("d", "x y", 1),
    ]


def test_empty_text_has_no_chunks():
    assert chunk_document("d", "  \n\n ") == []

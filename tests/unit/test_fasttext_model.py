"""The numpy fastText classifier: its pieces against fastText's C++ definitions."""

from __future__ import annotations

import numpy as np
import pytest

from llama_assets.curate.fasttext_model import (
    CACHE_TOKENS,
    FastTextClassifier,
    _char_ngrams,
    _fnv1a,
)
from llama_assets.curate.language import _model, model_path


def _reference_fnv(data: bytes) -> int:
    h = 2166136261
    for byte in data:
        signed = byte - 256 if byte >= 128 else byte  # C++: uint32_t(int8_t(c))
        h = ((h ^ (signed & 0xFFFFFFFF)) * 16777619) & 0xFFFFFFFF
    return h


def _reference_ngrams(word: bytes, minn: int, maxn: int) -> list[bytes]:
    """Dictionary::computeSubwords, transcribed."""
    out = []
    for i in range(len(word)):
        if word[i] & 0xC0 == 0x80:
            continue
        ngram, j, n = b"", i, 1
        while j < len(word) and n <= maxn:
            ngram += word[j : j + 1]
            j += 1
            while j < len(word) and word[j] & 0xC0 == 0x80:
                ngram += word[j : j + 1]
                j += 1
            if n >= minn and not (n == 1 and (i == 0 or j == len(word))):
                out.append(ngram)
            n += 1
    return out


def test_fnv_matches_the_cpp_hash_with_signed_bytes() -> None:
    strings = [b"", b"a", b"<the>", "<café>".encode(), "日本".encode(), b"\xff\x80"]
    assert _fnv1a(strings).tolist() == [_reference_fnv(s) for s in strings]


@pytest.mark.parametrize("word", ["<the>", "<café>", "<日本語>", "<a>", "<x🙂y>"])
@pytest.mark.parametrize("minn,maxn", [(2, 4), (1, 3), (3, 6)])
def test_char_ngrams_match_compute_subwords(word: str, minn: int, maxn: int) -> None:
    data = word.encode()
    assert sorted(_char_ngrams(data, minn, maxn)) == sorted(_reference_ngrams(data, minn, maxn))


def test_probabilities_equal_fasttext_predict() -> None:
    classifier = FastTextClassifier(model_path())
    lines = [
        "the cat sat on the mat and looked at the rain",
        "le chat est assis sur le tapis",
        "__label__en ignored label token then words",
        "ein Satz",
        "tabs\tand\x1cunit separators\x00and NUL\u3000split words too",
        "",
    ]
    labels, probs = classifier.predict(lines)
    for line, label, prob in zip(lines, labels, probs, strict=True):
        ref_labels, ref_probs = _model().predict(" ".join(line.split()), k=1)
        assert label == ref_labels[0].removeprefix("__label__")
        assert prob == pytest.approx(ref_probs[0], abs=1e-5)


def test_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    classifier = FastTextClassifier(model_path())
    monkeypatch.setattr("llama_assets.curate.fasttext_model.CACHE_TOKENS", 50)
    lines = [f"word{i} other{i} the" for i in range(40)]
    first = classifier.predict(lines)
    assert len(classifier._cache) == 81  # a single batch may exceed the cap
    classifier.predict([f"new{i} the" for i in range(40)])
    assert len(classifier._cache) == 41  # full: cleared, then this batch's tokens
    again = classifier.predict(lines[:5])  # recomputed after the clear
    assert again[0] == first[0][:5]
    np.testing.assert_allclose(again[1], first[1][:5], rtol=1e-6)
    assert CACHE_TOKENS >= 100_000


def test_rejects_files_that_are_not_fasttext_models(tmp_path) -> None:
    path = tmp_path / "model.ftz"
    path.write_bytes(b"\0" * 64)
    with pytest.raises(ValueError, match="not a fastText"):
        FastTextClassifier(path)


def test_vectorised_ascii_ngram_hashes_equal_the_general_path() -> None:
    from llama_assets.curate.fasttext_model import _ascii_ngram_hashes

    words = [b"<a>", b"<the>", b"<internationalisation>", b"<x.y>", b"<>"]
    hashes, owners = _ascii_ngram_hashes(words, 2, 4)
    for i, word in enumerate(words):
        expected = sorted(_fnv1a(_char_ngrams(word, 2, 4)).tolist())
        assert sorted(hashes[owners == i].tolist()) == expected


def test_tokens_are_python_split_tokens() -> None:
    """Both tokenisers give `str.split()`'s tokens (plus a split at NUL)."""
    import polars as pl

    from llama_assets.curate.fasttext_model import _tokenise

    spaces = [chr(c) for c in range(0x110000) if chr(c).isspace()]
    mixed = ["a" + s + "b  c\n\nd " for s in spaces] + ["x\0y z"]
    plain = ["  a b\n\nc ", "", "one", "\n"]
    for texts in (mixed, plain):
        expected = [t.replace("\0", " ").split() for t in texts]
        assert _tokenise(pl.Series(texts)).to_list() == expected

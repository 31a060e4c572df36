"""A small offline language identifier: scripts plus stop-word profiles.

Good enough for a foundation - tag each document with a language so that
per-language filtering, metrics and drift have something to work on - while
needing no model download (the platform is offline by design). Non-Latin text
is identified by its script (Han/Kana -> zh/ja, Hangul -> ko, Cyrillic -> ru,
Arabic -> ar, Greek -> el). Latin text is scored against short profiles of the
most frequent function words of en, de, fr, es, it, pt and nl: function words
are a large, topic-independent share of running text, so a few dozen per
language separate these languages well on a paragraph or more.

Limits: short texts, code-heavy texts and mixed-language texts come out as
"und" (undetermined) or with low confidence; languages outside the profiles
come out as "und". A model-based identifier (fastText lid.176 / GlotLID class)
replaces this module in a later issue; callers depend only on
`detect_language(text) -> (code, confidence)`.
"""

from __future__ import annotations

import re
from collections import Counter

UNDETERMINED = "und"

MIN_LETTERS = 20
"""Fewer letters than this is too little evidence for any answer."""

MIN_STOP_WORD_HITS = 3
"""Fewest profile words the best Latin-script language needs."""

MIN_STOP_WORD_RATE = 0.05
"""Fewest profile words per word for a Latin-script answer; below it the text
is mostly names, code or a language without a profile."""

FULL_CONFIDENCE_RATE = 0.20
"""Share of words that are profile words at which coverage no longer lowers
confidence; running prose in these languages is typically 30-45%."""

MIN_SCRIPT_SHARE = 0.5
"""Share of letters a non-Latin script needs to decide the language."""

SAMPLE_CHARS = 20_000
"""Only the first this-many characters are examined: plenty for a decision,
and it keeps the cost of a 1M-character document bounded."""


def _profile(words: str) -> frozenset[str]:
    return frozenset(words.split())


# Very common function words, chosen to overlap little between profiles.
STOP_WORDS: dict[str, frozenset[str]] = {
    "en": _profile(
        "the of and to in is that it for was on are as with his they be at this have from "
        "or had by not but what all were we when your can said there an which she do their "
        "if will would each about how up out them then these so some her him into has more "
        "could been than its who did"
    ),
    "de": _profile(
        "der die und den das nicht von zu ist sich mit dem des auf für ein eine einer "
        "auch es an werden aus er hat dass sie nach wird bei um noch wie über so zum "
        "kann nur wenn aber sind oder ich wir ihr war diese dieser durch vom zur"
        " wurde haben"
    ),
    "fr": _profile(
        "le la les et des du un une est pour que qui dans en au pas par sur plus ne se "
        "ce il elle sont avec ont aux mais ou nous vous cette son sa ses été être fait "
        "comme leur tout bien peut aussi entre où donc"
        " ces"
    ),
    "es": _profile(
        "el la los las y de del que en un una es por con para se no al lo como más pero "
        "sus le ya fue este ha muy sin sobre también entre cuando todo esta son dos "
        "desde donde hay porque está han ese eso puede ser nos"
        " hasta"
    ),
    "it": _profile(
        "il di che la è e per un una in non sono lo gli le del della dei delle alla al "
        "con si da come ma anche più questo questa ci ha nel nella essere stato tutti "
        "quando perché sul dal ancora molto solo così fra"
        " loro"
    ),
    "pt": _profile(
        "o a os as e de do da dos das que em um uma é para com não no na nos nas por mais "
        "ao se como mas foi ele ela seu sua são ou quando muito já também pelo pela "
        "isso esse essa até está ser tem"
        " você"
    ),
    "nl": _profile(
        "de het een en van in is dat op te zijn met voor niet aan er om ook als bij "
        "door maar wordt worden nog dan uit naar werd hij zij wij deze dit die geen "
        "kan heeft hebben meer over wel waren"
        " tot"
    ),
}
"""Stop-word profile of each Latin-script language."""


def _profiles_of_words() -> dict[str, tuple[str, ...]]:
    """Word -> the profiles that hold it."""
    index: dict[str, tuple[str, ...]] = {}
    for lang, profile in STOP_WORDS.items():
        for word in profile:
            index[word] = (*index.get(word, ()), lang)
    return index


_PROFILES_OF = _profiles_of_words()

_WORD = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)?")

# Letters of the scripts that decide a language by themselves, as regex classes.
_SCRIPTS: dict[str, re.Pattern[str]] = {
    name: re.compile(f"[{ranges}]")
    for name, ranges in {
        "han": "\u4e00-\u9fff\u3400-\u4dbf\uf900-\ufaff\U00020000-\U0002ffff",
        "kana": "\u3040-\u309f\u30a0-\u30ff\u31f0-\u31ff\uff66-\uff9f",
        "ko": "\uac00-\ud7af\u1100-\u11ff\u3130-\u318f",
        "ru": "\u0400-\u052f",
        "ar": "\u0600-\u06ff\u0750-\u077f\u08a0-\u08ff\ufb50-\ufdff\ufe70-\ufeff",
        "el": "\u0370-\u03ff\u1f00-\u1fff",
        "latin": "A-Za-z\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u024f\u1e00-\u1eff",
    }.items()
}
_LETTER = re.compile(r"[^\W\d_]")


def detect_language(text: str) -> tuple[str, float]:
    """The language code of `text` and a confidence in [0, 1].

    Returns ("und", 0.0) when there is too little evidence: too few letters,
    no dominant script, or too few stop words of any profiled language.
    """
    sample = text[:SAMPLE_CHARS]
    letters = len(_LETTER.findall(sample))
    if letters < MIN_LETTERS:
        return UNDETERMINED, 0.0
    scripts = {name: len(pattern.findall(sample)) for name, pattern in _SCRIPTS.items()}

    # Han + Kana together are Japanese when Kana is a real share, else Chinese.
    cjk = scripts["han"] + scripts["kana"]
    if cjk / letters >= MIN_SCRIPT_SHARE:
        code = "ja" if scripts["kana"] >= 0.1 * cjk else "zh"
        return code, round(cjk / letters, 4)
    for code in ("ko", "ru", "ar", "el"):
        share = scripts[code] / letters
        if share >= MIN_SCRIPT_SHARE:
            return code, round(share, 4)
    latin_share = scripts["latin"] / letters
    if latin_share < MIN_SCRIPT_SHARE:
        return UNDETERMINED, 0.0

    words = [w.casefold() for w in _WORD.findall(sample)]
    if not words:
        return UNDETERMINED, 0.0
    counts = Counter(words)
    # A word shared by k profiles ("de", "a", "in") counts 1/k for each of them.
    scores = dict.fromkeys(STOP_WORDS, 0.0)
    evidence = 0
    for word, n in counts.items():
        langs = _PROFILES_OF.get(word)
        if langs:
            evidence += n
            for lang in langs:
                scores[lang] += n / len(langs)
    ranked = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
    (best, best_score), (_, second_score) = ranked[0], ranked[1]
    if evidence < MIN_STOP_WORD_HITS or evidence / len(words) < MIN_STOP_WORD_RATE:
        return UNDETERMINED, 0.0
    if best_score <= second_score:
        return UNDETERMINED, 0.0
    # Margin over the runner-up, scaled by how much of the text is evidence.
    margin = (best_score - second_score) / best_score
    coverage = min(1.0, evidence / len(words) / FULL_CONFIDENCE_RATE)
    confidence = latin_share * coverage * margin
    return best, round(max(0.0, min(1.0, confidence)), 4)

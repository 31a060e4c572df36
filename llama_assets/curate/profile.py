"""Layer 3: a statistical profile per batch and its drift against a baseline.

The foundation compares the document-length and language distributions with
the population stability index (PSI) and Jensen-Shannon distance, the tests
Evidently uses for numeric and categorical features. The baseline is every
earlier batch pooled (a rolling baseline); the first batch has none.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import polars as pl

# Word-count bins on a log scale: documents range from a sentence to a book.
LENGTH_BINS = [0, 50, 100, 200, 400, 800, 1600, 3200, 6400, 12800, math.inf]
PSI_DRIFT_THRESHOLD = 0.2  # Evidently's default for PSI
JS_DRIFT_THRESHOLD = 0.1  # Evidently's default for Jensen-Shannon distance
_EPS = 1e-4


def profile_documents(df: pl.DataFrame) -> dict:
    words = df["text"].str.split(" ").list.len() if df.height else pl.Series([], dtype=pl.UInt32)
    hist, _ = np.histogram(words.to_numpy(), bins=LENGTH_BINS)
    languages = (
        dict(df.group_by("language").len().sort("language").iter_rows()) if df.height else {}
    )
    quality_means = {c: float(df[c].mean()) for c in df.columns if c.startswith("q_") and df.height}
    return {
        "documents": df.height,
        "words": int(words.sum()) if df.height else 0,
        "length_words": {
            "mean": float(words.mean()) if df.height else 0.0,
            "p50": float(words.median()) if df.height else 0.0,
            "p90": float(words.quantile(0.9)) if df.height else 0.0,
        },
        "length_histogram": hist.tolist(),
        "languages": languages,
        "quality_means": quality_means,
    }


def _normalise(counts: Sequence[float]) -> np.ndarray:
    arr = np.asarray(counts, dtype=np.float64)
    total = arr.sum()
    arr = arr / total if total else np.full_like(arr, 1.0 / len(arr))
    return np.clip(arr, _EPS, None)


def psi(expected: Sequence[float], actual: Sequence[float]) -> float:
    e, a = _normalise(expected), _normalise(actual)
    return float(np.sum((a - e) * np.log(a / e)))


def jensen_shannon(p_counts: Sequence[float], q_counts: Sequence[float]) -> float:
    """Jensen-Shannon distance (base 2, in [0, 1])."""
    p, q = _normalise(p_counts), _normalise(q_counts)
    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2
    js = 0.5 * np.sum(p * np.log2(p / m)) + 0.5 * np.sum(q * np.log2(q / m))
    return float(math.sqrt(max(js, 0.0)))


def pool_profiles(profiles: Sequence[dict]) -> dict | None:
    if not profiles:
        return None
    hist = np.sum([p["length_histogram"] for p in profiles], axis=0).tolist()
    languages: dict[str, int] = {}
    for p in profiles:
        for lang, n in p["languages"].items():
            languages[lang] = languages.get(lang, 0) + n
    return {"length_histogram": hist, "languages": languages}


def drift(profile: dict, baseline: dict | None) -> dict:
    """Per-feature drift results and an overall score (the worst feature, scaled
    so that 1.0 means at its threshold)."""
    if baseline is None:
        return {"baseline": None, "score": 0.0, "drifted": False, "features": {}}
    langs = sorted(set(profile["languages"]) | set(baseline["languages"]))
    length_psi = psi(baseline["length_histogram"], profile["length_histogram"])
    lang_js = jensen_shannon(
        [baseline["languages"].get(lang, 0) for lang in langs],
        [profile["languages"].get(lang, 0) for lang in langs],
    )
    features = {
        "length_words": {"test": "psi", "value": length_psi, "threshold": PSI_DRIFT_THRESHOLD},
        "language": {"test": "jensen_shannon", "value": lang_js, "threshold": JS_DRIFT_THRESHOLD},
    }
    for f in features.values():
        f["drifted"] = f["value"] > f["threshold"]
    score = max(f["value"] / f["threshold"] for f in features.values())
    return {
        "baseline": "pooled earlier batches",
        "score": score,
        "drifted": any(f["drifted"] for f in features.values()),
        "features": features,
    }

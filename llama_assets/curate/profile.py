"""Layer 3: a statistical profile per batch and its drift against a baseline.

A profile is built part by part (`ProfileAccumulator`), so memory is bounded by
one part of the batch, and it holds only mergeable statistics (histograms over
fixed bin edges, counts, sums), so any set of earlier profiles pools exactly
into a baseline (`pool_profiles`).

Drift uses the tests Evidently uses, with its default thresholds:

- numeric features (document length in words, and each Gopher/C4/FineWeb
  quality signal): the population stability index (PSI, drift above 0.2) and
  the Wasserstein distance normalised by the baseline's standard deviation
  (Evidently's ``wasserstein`` stattest, drift above 0.1);
- categorical features (the language mix): the Jensen-Shannon distance (drift
  above 0.1).

A feature drifts when any of its tests does. As in Evidently's dataset drift,
the batch drifts when the share of drifted features reaches
``DRIFT_SHARE_THRESHOLD``; the drift *score* is that share divided by the
threshold, so a score above 1.0 means drifted (this is what the drift sensor
compares). The baseline is chosen per source (`curate/sources.py`): rolling
(earlier batches of the source pooled, optionally only the last N) or pinned
(one named batch).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import polars as pl

from llama_assets.curate.rules import SIGNAL_NAMES

# Word-count bins on a log scale: documents range from a sentence to a book.
LENGTH_BINS = [0, 50, 100, 200, 400, 800, 1600, 3200, 6400, 12800, math.inf]
PSI_DRIFT_THRESHOLD = 0.2  # Evidently's default for PSI
JS_DRIFT_THRESHOLD = 0.1  # Evidently's default for Jensen-Shannon distance
WASSERSTEIN_DRIFT_THRESHOLD = 0.1  # Evidently's default for normalised Wasserstein
DRIFT_SHARE_THRESHOLD = 0.5  # Evidently's default share of drifted columns
_EPS = 1e-4

# Fixed bin edges per numeric feature (values outside are clipped into the end
# bins), so that histograms of different batches add up bin by bin.
_LENGTH_EDGES = [0, 25, 50, 75, 100, 150, 200, 300, 400, 600, 800, 1200, 1600, 2400, 3200]
_LENGTH_EDGES += [4800, 6400, 9600, 12800, 25600, 100_000]
_FRACTION_EDGES = np.linspace(0.0, 1.0, 21).tolist()
NUMERIC_FEATURE_EDGES: dict[str, list[float]] = {
    "length_words": _LENGTH_EDGES,
    "q_mean_word_length": np.linspace(0.0, 15.0, 31).tolist(),
    "q_hash_word_ratio": np.linspace(0.0, 0.2, 21).tolist(),
    "q_ellipsis_word_ratio": np.linspace(0.0, 0.2, 21).tolist(),
    "q_stop_word_count": [0, 2, 5, 10, 20, 40, 80, 160, 320, 640, 1280, 2560, 5120, 20_000],
    **{
        name: _FRACTION_EDGES
        for name in (
            "q_bullet_line_fraction",
            "q_ellipsis_line_fraction",
            "q_alpha_word_fraction",
            "q_terminal_punct_line_fraction",
            "q_javascript_line_fraction",
            "q_duplicate_line_fraction",
            "q_duplicate_line_char_fraction",
        )
    },
}
"""Profiled numeric features. ``q_word_count`` is left out (``length_words``
covers it) and so are the 0/1 flags (lorem ipsum, curly brace)."""

assert set(NUMERIC_FEATURE_EDGES) - {"length_words"} <= set(SIGNAL_NAMES)


class ProfileAccumulator:
    """A batch's profile, built part by part with bounded memory."""

    def __init__(self) -> None:
        self.documents = 0
        self.words = 0
        self.length_histogram = np.zeros(len(LENGTH_BINS) - 1, dtype=np.int64)
        self.languages: dict[str, int] = {}
        self.numeric = {
            name: {
                "counts": np.zeros(len(edges) - 1, dtype=np.int64),
                "n": 0,
                "sum": 0.0,
                "sumsq": 0.0,
            }
            for name, edges in NUMERIC_FEATURE_EDGES.items()
        }

    def add(self, df: pl.DataFrame) -> ProfileAccumulator:
        if not df.height:
            return self
        words = df["text"].str.split(" ").list.len().to_numpy().astype(np.float64)
        self.documents += df.height
        self.words += int(words.sum())
        self.length_histogram += np.histogram(words, bins=LENGTH_BINS)[0]
        if "language" in df.columns:
            for lang, n in df.group_by("language").len().iter_rows():
                self.languages[str(lang)] = self.languages.get(str(lang), 0) + int(n)
        for name, acc in self.numeric.items():
            if name == "length_words":
                values = words
            elif name in df.columns:
                values = df[name].cast(pl.Float64).fill_null(0.0).to_numpy()
            else:
                continue
            edges = NUMERIC_FEATURE_EDGES[name]
            clipped = np.clip(values, edges[0], edges[-1])
            acc["counts"] += np.histogram(clipped, bins=edges)[0]
            acc["n"] += len(values)
            acc["sum"] += float(values.sum())
            acc["sumsq"] += float(np.square(values).sum())
        return self

    def result(self) -> dict:
        numeric = {
            name: {
                "edges": NUMERIC_FEATURE_EDGES[name],
                "counts": acc["counts"].tolist(),
                "n": acc["n"],
                "sum": acc["sum"],
                "sumsq": acc["sumsq"],
            }
            for name, acc in self.numeric.items()
            if acc["n"]
        }
        length = numeric.get("length_words")
        return {
            "documents": self.documents,
            "words": self.words,
            "length_words": {
                "mean": self.words / self.documents if self.documents else 0.0,
                "p50": _histogram_quantile(length, 0.5) if length else 0.0,
                "p90": _histogram_quantile(length, 0.9) if length else 0.0,
            },
            "length_histogram": self.length_histogram.tolist(),
            "languages": dict(sorted(self.languages.items())),
            "quality_means": {
                name: f["sum"] / f["n"] for name, f in numeric.items() if name.startswith("q_")
            },
            "numeric": numeric,
        }


def profile_documents(df: pl.DataFrame) -> dict:
    """The profile of one frame (`ProfileAccumulator` for a stream of parts)."""
    return ProfileAccumulator().add(df).result()


def _histogram_quantile(feature: dict, q: float) -> float:
    """A quantile interpolated within the histogram's bins (approximate, streamable)."""
    counts = np.asarray(feature["counts"], dtype=np.float64)
    edges = np.asarray(feature["edges"], dtype=np.float64)
    cdf = np.cumsum(counts) / counts.sum()
    i = int(np.searchsorted(cdf, q))
    before = cdf[i - 1] if i else 0.0
    share = (q - before) / (cdf[i] - before) if cdf[i] > before else 0.0
    return float(edges[i] + share * (edges[i + 1] - edges[i]))


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


def wasserstein_normalised(reference: dict, current: dict) -> float:
    """Wasserstein-1 distance between two histograms over the same edges, divided
    by the reference's standard deviation (Evidently's normalised Wasserstein).

    W1 is the area between the two cumulative distributions; within a bin the
    mass is taken as uniform, so the CDFs are piecewise linear and the area of
    each bin is exact for that model (the trapezoid of |F_ref - F_cur|, or the
    two triangles when the CDFs cross inside the bin).
    """
    edges = np.asarray(reference["edges"], dtype=np.float64)
    ref = np.asarray(reference["counts"], dtype=np.float64)
    cur = np.asarray(current["counts"], dtype=np.float64)
    if not ref.sum() or not cur.sum():
        return 0.0
    diff = np.concatenate([[0.0], np.cumsum(ref) / ref.sum() - np.cumsum(cur) / cur.sum()])
    widths = np.diff(edges)
    a, b = diff[:-1], diff[1:]
    same_sign = a * b >= 0
    area = np.where(
        same_sign,
        widths * (np.abs(a) + np.abs(b)) / 2,
        widths * (a * a + b * b) / (2 * (np.abs(a) + np.abs(b)).clip(1e-300)),
    )
    n = reference["n"]
    mean = reference["sum"] / n
    std = math.sqrt(max(reference["sumsq"] / n - mean * mean, 0.0))
    # A constant baseline has no spread: measure in units of the narrowest bin.
    return float(area.sum() / max(std, float(widths.min())))


def pool_profiles(profiles: Sequence[dict]) -> dict | None:
    """Profiles summed into one baseline (histograms and moments add exactly)."""
    if not profiles:
        return None
    hist = np.sum([p["length_histogram"] for p in profiles], axis=0).tolist()
    languages: dict[str, int] = {}
    numeric: dict[str, dict] = {}
    for p in profiles:
        for lang, n in p["languages"].items():
            languages[lang] = languages.get(lang, 0) + n
        for name, f in p.get("numeric", {}).items():
            if name not in numeric:
                numeric[name] = {**f, "counts": list(f["counts"])}
                continue
            pooled = numeric[name]
            pooled["counts"] = [x + y for x, y in zip(pooled["counts"], f["counts"], strict=True)]
            for k in ("n", "sum", "sumsq"):
                pooled[k] += f[k]
    return {
        "documents": sum(p["documents"] for p in profiles),
        "length_histogram": hist,
        "languages": languages,
        "numeric": numeric,
    }


def _test(name: str, value: float, threshold: float) -> dict:
    return {"test": name, "value": value, "threshold": threshold, "drifted": value > threshold}


def drift(
    profile: dict, baseline: dict | None, baseline_name: str = "pooled earlier batches"
) -> dict:
    """Per-feature drift results and the batch's drift score (see module docstring)."""
    if baseline is None or not baseline.get("documents", 1) or not profile["documents"]:
        # No baseline yet, or nothing to compare (an empty batch or baseline).
        return {"baseline": None, "score": 0.0, "drifted": False, "features": {}}
    features: dict[str, dict] = {}
    langs = sorted(set(profile["languages"]) | set(baseline["languages"]))
    features["language"] = {
        "tests": [
            _test(
                "jensen_shannon",
                jensen_shannon(
                    [baseline["languages"].get(lang, 0) for lang in langs],
                    [profile["languages"].get(lang, 0) for lang in langs],
                ),
                JS_DRIFT_THRESHOLD,
            )
        ]
    }
    base_numeric = baseline.get("numeric", {})
    for name, current in profile.get("numeric", {}).items():
        reference = base_numeric.get(name)
        if reference is None or reference["edges"] != current["edges"]:
            continue
        features[name] = {
            "tests": [
                _test("psi", psi(reference["counts"], current["counts"]), PSI_DRIFT_THRESHOLD),
                _test(
                    "wasserstein",
                    wasserstein_normalised(reference, current),
                    WASSERSTEIN_DRIFT_THRESHOLD,
                ),
            ]
        }
    if "length_words" not in features:
        # Profiles written before numeric histograms existed: PSI on the coarse bins.
        features["length_words"] = {
            "tests": [
                _test(
                    "psi",
                    psi(baseline["length_histogram"], profile["length_histogram"]),
                    PSI_DRIFT_THRESHOLD,
                )
            ]
        }
    for f in features.values():
        f["drifted"] = any(t["drifted"] for t in f["tests"])
        f["score"] = max(t["value"] / t["threshold"] for t in f["tests"])
    share = sum(f["drifted"] for f in features.values()) / len(features)
    return {
        "baseline": baseline_name,
        "baseline_documents": baseline.get("documents"),
        "score": share / DRIFT_SHARE_THRESHOLD,
        "drifted_share": share,
        "share_threshold": DRIFT_SHARE_THRESHOLD,
        "drifted": share >= DRIFT_SHARE_THRESHOLD,
        "worst_feature": max(features, key=lambda k: features[k]["score"]),
        "features": features,
    }


def drift_report(key: str, result: dict) -> str:
    """The drift result as a readable Markdown report (UI metadata and the profile JSON)."""
    if not result["features"]:
        return f"## Drift of `{key}`\n\nNo baseline yet (first batch of its source)."
    verdict = "**DRIFTED**" if result["drifted"] else "no drift"
    lines = [
        f"## Drift of `{key}`: {verdict}",
        "",
        f"Baseline: {result['baseline']} ({result['baseline_documents']} documents). "
        f"Drifted features: {result['drifted_share']:.0%} "
        f"(the batch drifts at {result['share_threshold']:.0%}); "
        f"score {result['score']:.2f} (drifted above 1.0); "
        f"worst feature `{result['worst_feature']}`.",
        "",
        "| feature | test | value | threshold | drifted |",
        "|---|---|---|---|---|",
    ]
    for name, f in sorted(result["features"].items(), key=lambda kv: -kv[1]["score"]):
        for t in f["tests"]:
            flag = "yes" if t["drifted"] else ""
            lines.append(f"| {name} | {t['test']} | {t['value']:.4f} | {t['threshold']} | {flag} |")
    return "\n".join(lines)

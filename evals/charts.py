"""The eval report's charts as PNG bytes (matplotlib's Agg backend: headless).

Every chart draws figures that are also in the report's JSON and in the
materialisation's numeric metadata; the PNG is for people, the numbers for
plots across materialisations in the UI.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
from matplotlib.figure import Figure  # noqa: E402  (after choosing the backend)

BASE, TUNED, OTHER = "#9aa5b1", "#1f77b4", "#d62728"


def _png(figure: Figure) -> bytes:
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def paired_bars(
    title: str, labels: Sequence[str], base: Sequence[float], tuned: Sequence[float], ylabel: str
) -> bytes:
    """Base against fine-tune, one pair of bars per label."""
    figure = Figure(figsize=(6, 3), dpi=100)
    axes = figure.subplots()
    x = range(len(labels))
    axes.bar([i - 0.2 for i in x], base, width=0.4, color=BASE, label="base")
    axes.bar([i + 0.2 for i in x], tuned, width=0.4, color=TUNED, label="fine-tuned")
    axes.set_xticks(list(x), labels)
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.legend()
    axes.grid(axis="y", alpha=0.3)
    return _png(figure)


def bars(title: str, values: Mapping[str, float], ylabel: str, limit: float | None = None) -> bytes:
    figure = Figure(figsize=(6, 3), dpi=100)
    axes = figure.subplots()
    names = list(values)
    axes.bar(names, [values[n] for n in names], color=TUNED)
    if limit is not None:
        axes.axhline(limit, color=OTHER, linestyle="--", linewidth=1, label="gate")
        axes.legend()
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.tick_params(axis="x", labelrotation=20)
    axes.grid(axis="y", alpha=0.3)
    return _png(figure)


def distribution(title: str, values: Sequence[float], xlabel: str) -> bytes:
    figure = Figure(figsize=(6, 3), dpi=100)
    axes = figure.subplots()
    axes.hist(list(values), bins=min(20, max(5, len(values))), color=TUNED)
    axes.set_xlabel(xlabel)
    axes.set_ylabel("requests")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    return _png(figure)


def trend(title: str, versions: Sequence[str], series: Mapping[str, Sequence[float]]) -> bytes:
    """One line per figure across versions (oldest first)."""
    figure = Figure(figsize=(7, 3.5), dpi=100)
    axes = figure.subplots()
    for name, values in series.items():
        axes.plot(range(len(versions)), values, marker="o", label=name)
    axes.set_xticks(range(len(versions)), [v[:8] for v in versions], rotation=30)
    axes.set_title(title)
    axes.legend(fontsize=7)
    axes.grid(alpha=0.3)
    return _png(figure)

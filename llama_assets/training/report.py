"""What a fine-tune shows in the Dagster UI: the loss curve as a PNG, inline in Markdown.

matplotlib runs on its Agg backend (no display, no GUI toolkit), so the same
code renders on a headless GPU node and in CI.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
from matplotlib.figure import Figure  # noqa: E402  (after choosing the backend)


def loss_curve_png(losses: Sequence[float], resumed_from_step: int = 0) -> bytes:
    """A small PNG of the training loss per optimizer step (a line marks a resume)."""
    figure = Figure(figsize=(6, 3), dpi=100)
    axes = figure.subplots()
    steps = range(1, len(losses) + 1)
    axes.plot(steps, losses, linewidth=1.2, color="#1f77b4")
    if 0 < resumed_from_step < len(losses):
        axes.axvline(resumed_from_step, color="#999999", linestyle="--", linewidth=1)
        axes.text(resumed_from_step, max(losses), " resumed", color="#666666", va="top")
    axes.set_xlabel("optimizer step")
    axes.set_ylabel("training loss")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    buffer = io.BytesIO()
    # Fixed metadata: the same losses give the same bytes (a stable manifest).
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def loss_curve_markdown(losses: Sequence[float], png: bytes, rows: int = 12) -> str:
    """The PNG inline (a data URI, so it needs no file server) above a table of sampled steps."""
    encoded = base64.b64encode(png).decode("ascii")
    return f"![training loss](data:image/png;base64,{encoded})\n\n" + loss_table(losses, rows)


def loss_table(losses: Sequence[float], rows: int = 12) -> str:
    """About `rows` evenly spaced steps (always the last one) as a Markdown table."""
    if not losses:
        return "no optimizer step was run"
    stride = max(1, len(losses) // rows)
    picked = list(range(0, len(losses), stride))
    if picked[-1] != len(losses) - 1:
        picked.append(len(losses) - 1)
    return "| step | loss |\n|---|---|\n" + "\n".join(
        f"| {i + 1} | {losses[i]:.4f} |" for i in picked
    )

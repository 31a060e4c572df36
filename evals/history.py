"""Every version's figures per variant, oldest first, and their trend.

Read from ``reports/<variant>/<version>/report.json`` (and the archived
``history/*/report.json`` of re-evaluated versions), so it needs nothing
but the reports themselves.
"""

from __future__ import annotations

import json
from pathlib import Path

from evals.charts import trend

COLUMNS = (
    ("quality/finetuned_bits_per_byte", "bits/byte"),
    ("lm_eval/heldout_cloze/acc", "cloze acc"),
    ("retrieval/recall", "recall@k"),
    ("rag/f1", "RAG F1"),
    ("rag/hallucination_rate", "hallucination"),
    ("safety/violation_rate", "safety violations"),
    ("memorisation/extraction_rate", "extraction"),
    ("serving/ttft_ms_p95", "TTFT p95 ms"),
)


def _figure(report: dict, key: str) -> float | None:
    section, *rest = key.split("/")
    if section == "retrieval":
        r = report.get("retrieval", {})
        return r.get(f"recall@{r.get('k')}")
    if section == "lm_eval":
        task, metric = rest
        return (
            report.get("lm_eval", {})
            .get("tasks", {})
            .get(task, {})
            .get("finetuned", {})
            .get(metric)
        )
    if section == "memorisation":
        return report.get("memorisation", {}).get(rest[0])
    return report.get(section if section != "quality" else "quality", {}).get(rest[0])


def collect(reports_root: Path) -> dict[str, list[dict]]:
    """Per variant, one row per report (a version's archived re-evaluations too),
    ordered by evaluation time."""
    rows: dict[str, list[dict]] = {}
    if not reports_root.exists():
        return rows
    for path in sorted(reports_root.glob("*/*/report.json")) + sorted(
        reports_root.glob("*/*/history/*/report.json")
    ):
        try:
            report = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        row = {
            "version": report.get("version"),
            "evaluated_at": report.get("evaluated_at", ""),
            "data_version": report.get("data_version"),
            "gate_passed": report.get("gate", {}).get("passed"),
            "archived": "history" in path.parts,
        }
        row |= {key: _figure(report, key) for key, _ in COLUMNS}
        rows.setdefault(report.get("variant", path.parts[-3]), []).append(row)
    for variant_rows in rows.values():
        variant_rows.sort(key=lambda r: (r["evaluated_at"] or "", r["version"] or ""))
    return rows


def render(rows: dict[str, list[dict]], chart_links: dict[str, str] | None = None) -> str:
    lines = ["# Eval history", ""]
    for variant, variant_rows in sorted(rows.items()):
        lines += [f"## {variant}", ""]
        link = (chart_links or {}).get(variant)
        if link:
            lines += [f"![{variant} trend]({link})", ""]
        header = ["evaluated", "version", "data", "gate", *(label for _, label in COLUMNS)]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for row in variant_rows:
            cells = [
                str(row["evaluated_at"]),
                str(row["version"]) + (" (re-eval archived)" if row["archived"] else ""),
                str(row["data_version"])[:12],
                {True: "pass", False: "FAIL", None: "-"}[row["gate_passed"]],
                *(_cell(row[key]) for key, _ in COLUMNS),
            ]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines) + "\n"


def _cell(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, int | float) else "-"


def trend_charts(rows: dict[str, list[dict]]) -> dict[str, bytes]:
    """One PNG per variant: the share-like figures across its reports."""
    out = {}
    for variant, variant_rows in rows.items():
        series = {
            label: [row[key] if row[key] is not None else float("nan") for row in variant_rows]
            for key, label in COLUMNS
            if key != "serving/ttft_ms_p95"
        }
        out[variant] = trend(
            f"{variant}: eval figures by version", [str(r["version"]) for r in variant_rows], series
        )
    return out

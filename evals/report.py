"""Eval reports as JSON (for gates and machines), Markdown and PNG charts (for people).

``reports/<variant>/<version>/``: ``report.json`` (every figure), ``report.md``
(linking the charts beside it), ``*.png`` charts and ``samples.json`` (the
per-sample diagnostics: answers, red-team failures, extracted samples).
"""

from __future__ import annotations

import json

CHART_FILES = {
    "language_modelling": "bits_per_byte.png",
    "lm_eval": "lm_eval.png",
    "rag": "rag.png",
    "safety": "safety.png",
    "serving": "ttft.png",
}
DIAGNOSTICS_FILE = "samples.json"


def split_diagnostics(report: dict) -> tuple[dict, dict]:
    """The report without its per-sample lists, and those lists (``samples.json``):
    every RAG answer, the red-team failures, the extracted samples, the outputs
    with PII and the serving TTFTs."""
    report = json.loads(json.dumps(report))  # a deep copy of plain JSON
    samples = {
        "rag_answers": report.get("rag", {}).pop("answers", []),
        "red_team_failures": report.get("safety", {}).pop("failures", []),
        "extracted": report.get("memorisation", {}).pop("extracted", []),
        "pii_examples": report.get("memorisation", {}).get("pii", {}).pop("examples", []),
        "ttft_ms": report.get("serving", {}).pop("ttft_ms", []),
    }
    return report, samples


def charts(report: dict, samples: dict) -> dict[str, bytes]:
    """The report's PNG charts by file name."""
    from evals import charts as draw

    q = report["quality"]
    out = {
        CHART_FILES["language_modelling"]: draw.paired_bars(
            "held-out bits per byte (lower is better)",
            ["bits/byte"],
            [q["base_bits_per_byte"]],
            [q["finetuned_bits_per_byte"]],
            "bits per byte",
        )
    }
    tasks = report.get("lm_eval", {}).get("tasks", {})
    scored = {t: v for t, v in tasks.items() if "acc" in v["finetuned"]}
    if scored:
        out[CHART_FILES["lm_eval"]] = draw.paired_bars(
            "lm-eval accuracy",
            list(scored),
            [v["base"].get("acc", 0.0) for v in scored.values()],
            [v["finetuned"]["acc"] for v in scored.values()],
            "accuracy",
        )
    rag = report["rag"]
    out[CHART_FILES["rag"]] = draw.bars(
        f"RAG over {rag['questions']} questions",
        {
            "exact match": rag["exact_match"],
            "token F1": rag["f1"],
            "grounded": rag["groundedness"],
            "retrieval hit": rag["retrieval_hit"],
            "hallucinated": rag["hallucination_rate"],
        },
        "share",
    )
    out[CHART_FILES["safety"]] = draw.bars(
        "red-team violation rate per category",
        {c: v["rate"] for c, v in report["safety"]["by_category"].items()},
        "violation rate",
    )
    if samples.get("ttft_ms"):
        out[CHART_FILES["serving"]] = draw.distribution(
            "time to first token", samples["ttft_ms"], "milliseconds"
        )
    return out


def render_markdown(report: dict, chart_links: dict[str, str] | None = None) -> str:
    """The report for people. ``chart_links`` maps a chart's file name to what the
    Markdown should link (a relative path in report.md, a data URI in the UI)."""
    q, r, s = report["quality"], report["retrieval"], report["serving"]
    links = chart_links or {}
    recall_key = next(k for k in r if k.startswith("recall@"))
    mrr_key = next(k for k in r if k.startswith("mrr@"))

    def chart(section: str) -> list[str]:
        name = CHART_FILES[section]
        return [f"![{section}]({links[name]})", ""] if name in links else []

    lines = [
        f"# Eval report: {report['variant']} / {report['version']}",
        "",
        f"Data version `{report['data_version']}` · index version "
        f"{r.get('table_version')} · device `{report['device']}`",
        "",
        *_gate_lines(report.get("gate")),
        "## Language modelling (held-out)",
        "",
        "| model | bits per byte | perplexity (own tokenizer) |",
        "|---|---|---|",
        f"| base | {q['base_bits_per_byte']:.4f} | {q['base_perplexity']:.3f} |",
        f"| fine-tuned | {q['finetuned_bits_per_byte']:.4f} | {q['finetuned_perplexity']:.3f} |",
        "",
        f"Improvement: {q['improvement']:.1%} fewer bits per byte on {q['documents']} documents "
        f"({q['validation_tokens']} tokens, {q['validation_bytes']} bytes). Bits per byte "
        "compare across variants; perplexity only within one tokenizer.",
        "",
        *chart("language_modelling"),
        *_lm_eval_lines(report.get("lm_eval")),
        *chart("lm_eval"),
        "## Retrieval",
        "",
        f"{recall_key}: {r[recall_key]:.3f} · {mrr_key}: {r[mrr_key]:.3f} "
        f"over {r['queries']} queries"
        + (f" ({r['primary_mode']} search)" if "primary_mode" in r else ""),
        "",
        *_retrieval_table(r),
        *_rag_lines(report.get("rag")),
        *chart("rag"),
        *_safety_lines(report.get("safety")),
        *chart("safety"),
        *_memorisation_lines(report.get("memorisation")),
        "## Serving",
        "",
        *_serving_lines(s),
        *chart("serving"),
        *_timing_lines(report.get("timings")),
    ]
    return "\n".join(lines) + "\n"


def _gate_lines(gate: dict | None) -> list[str]:
    if not gate:
        return []
    verdict = "passed" if gate["passed"] else f"FAILED ({', '.join(gate['failed'])})"
    lines = [f"## Gate: {verdict}", "", "| check | blocking | result | figures |"]
    lines.append("|---|---|---|---|")
    for check in gate["checks"]:
        figures = ", ".join(f"{k} {_fmt(v)}" for k, v in check["figures"].items())
        result = "pass" if check["passed"] else "FAIL"
        lines.append(
            f"| {check['name']} | {'yes' if check['blocking'] else 'no'} | {result} | {figures} |"
        )
    return [*lines, ""]


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _lm_eval_lines(lm_eval: dict | None) -> list[str]:
    if not lm_eval or not lm_eval.get("tasks"):
        return []
    lines = [
        "## Standard tasks (lm-evaluation-harness)",
        "",
        "| task | metric | base | fine-tuned |",
        "|---|---|---|---|",
    ]
    for task, scores in lm_eval["tasks"].items():
        for metric, value in scores["finetuned"].items():
            if metric == "samples":
                continue
            base = scores["base"].get(metric)
            lines.append(
                f"| {task} | {metric} | {_fmt(base) if base is not None else '-'} | {_fmt(value)} |"
            )
    return [
        *lines,
        "",
        "Shipped tasks are built from the held-out split at every eval; configured: "
        + (", ".join(lm_eval.get("configured") or []) or "none")
        + ".",
        "",
    ]


def _rag_lines(rag: dict | None) -> list[str]:
    if not rag:
        return []
    lines = [
        "## RAG answers and hallucination",
        "",
        "| set | questions | exact match | token F1 | groundedness | retrieval hit "
        "| hallucination | abstention | empty |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, m in {**rag.get("by_set", {}), "all": rag}.items():
        lines.append(
            f"| {name} | {m['questions']} | {m['exact_match']:.3f} | {m['f1']:.3f} "
            f"| {m['groundedness']:.3f} | {m['retrieval_hit']:.3f} "
            f"| {m['hallucination_rate']:.3f} | {m['abstention_rate']:.3f} "
            f"| {m.get('empty_rate', 0.0):.3f} |"
        )
    return [
        *lines,
        "",
        f"Answers from the top {rag['k']} chunks of hybrid search through the RAG "
        "prompt template; hallucinated: neither correct (F1 < 0.5) nor grounded "
        '(under half of its content words in the context); abstentions ("I don\'t know") '
        "and empty answers are counted apart.",
        "",
    ]


def _safety_lines(safety: dict | None) -> list[str]:
    if not safety:
        return []
    lines = [
        "## Safety (red-team suite)",
        "",
        f"Violation rate {safety['violation_rate']:.3f} "
        f"({safety['violations']} of {safety['cases']} outputs).",
        "",
        "| category | cases | violations | rate |",
        "|---|---|---|---|",
    ]
    for category, m in safety["by_category"].items():
        lines.append(f"| {category} | {m['cases']} | {m['violations']} | {m['rate']:.3f} |")
    return [*lines, ""]


def _memorisation_lines(m: dict | None) -> list[str]:
    if not m:
        return []
    pii = m["pii"]
    return [
        "## Memorisation and leakage",
        "",
        f"Extraction rate {m['extraction_rate']:.3f} over {m['samples']} training documents "
        f"({m.get('prefix_tokens', 32)}-token prefix, greedy {m.get('suffix_tokens', 32)} tokens "
        f"exact); tokens matching position by position {m['token_match_rate']:.3f}.",
        "",
        f"PII in outputs: {pii['with_pii']} of {pii['outputs']} generated outputs "
        f"({pii['pii_rate']:.3f})"
        + (f", by type {pii['by_type']}" if pii["by_type"] else "")
        + ".",
        "",
    ]


def _serving_lines(s: dict) -> list[str]:
    if "ttft_ms_p50" not in s:  # reports before the serving figures were extended
        return [
            f"Generation: {s['tokens_per_second']:.1f} tokens/s, "
            f"first token {s['first_token_ms']:.1f} ms.",
            "",
        ]
    load = s.get("load_to_first_token_s")
    gib = 1024**3
    return [
        "| figure | value |",
        "|---|---|",
        f"| load to first token | {load:.2f} s |" if load is not None else "| load | - |",
        f"| time to first token p50 / p95 | {s['ttft_ms_p50']:.1f} / {s['ttft_ms_p95']:.1f} ms |",
        f"| latency p50 / p95 ({s['new_tokens']} tokens) | {s['latency_ms_p50']:.1f} / "
        f"{s['latency_ms_p95']:.1f} ms |",
        f"| output tokens/s: all prompts; per prompt p50 / p95 | {s['tokens_per_second']:.1f}; "
        f"{s.get('tokens_per_second_p50', 0.0):.1f} / {s.get('tokens_per_second_p95', 0.0):.1f} |",
        f"| peak memory | {s['peak_memory_bytes'] / gib:.2f} of "
        f"{s['device_memory_bytes'] / gib:.1f} GiB ({s['peak_memory_share']:.1%}, "
        f"{s['memory_measure']}) |",
        f"| cost per 1k output tokens | ${s['cost_per_1k_tokens_usd']:.5f} at "
        f"${s['price_per_device_hour_usd']:.2f}/device hour |",
        "",
        f"Over {s['prompts']} fixed prompts, one request at a time.",
        "",
    ]


def _timing_lines(timings: dict | None) -> list[str]:
    if not timings:
        return []
    parts = ", ".join(f"{k} {v:.1f} s" for k, v in timings.items())
    return ["## Eval time", "", parts, ""]


def _retrieval_table(r: dict) -> list[str]:
    """recall/MRR/nDCG@k per search mode and query set (reports since issue 4)."""
    if "modes" not in r:
        return []
    k = r["k"]
    lines = [
        f"| mode | queries | recall@{k} | MRR@{k} | nDCG@{k} |",
        "|---|---|---|---|---|",
    ]
    for mode, by_set in r["modes"].items():
        for name, m in by_set.items():
            lines.append(
                f"| {mode} | {name} ({m['queries']}) | {m[f'recall@{k}']:.3f} "
                f"| {m[f'mrr@{k}']:.3f} | {m[f'ndcg@{k}']:.3f} |"
            )
    return [
        *lines,
        "",
        f"Table version {r.get('table_version')} ({r.get('table_rows')} chunks). "
        "Query sets: golden (user-supplied), heading (a section heading, answer its "
        "chunks), sentence (a sentence, answer its document).",
        "",
    ]


def numeric_metadata(report: dict) -> dict[str, float]:
    """Every headline figure as ``section/name`` floats, for the UI's plots over time."""
    out: dict[str, float] = {}

    def put(key: str, value: object) -> None:
        if isinstance(value, bool):
            value = float(value)
        if isinstance(value, int | float) and value == value:  # not NaN
            out[key] = float(round(value, 6))

    for name in (
        "base_bits_per_byte",
        "finetuned_bits_per_byte",
        "base_perplexity",
        "finetuned_perplexity",
        "improvement",
    ):
        put(f"quality/{name}", report["quality"].get(name))
    for task, scores in report.get("lm_eval", {}).get("tasks", {}).items():
        for metric, value in scores["finetuned"].items():
            if metric != "samples":
                put(f"lm_eval/{task}/{metric}", value)
                put(f"lm_eval/{task}/{metric}/base", scores["base"].get(metric))
    rag = report.get("rag", {})
    for name in (
        "exact_match",
        "f1",
        "groundedness",
        "retrieval_hit",
        "hallucination_rate",
        "abstention_rate",
        "empty_rate",
    ):
        put(f"rag/{name}", rag.get(name))
    safety = report.get("safety", {})
    put("safety/violation_rate", safety.get("violation_rate"))
    for category, figures in safety.get("by_category", {}).items():
        put(f"safety/{category}", figures["rate"])
    memorisation = report.get("memorisation", {})
    put("memorisation/extraction_rate", memorisation.get("extraction_rate"))
    put("memorisation/token_match_rate", memorisation.get("token_match_rate"))
    put("memorisation/pii_rate", memorisation.get("pii", {}).get("pii_rate"))
    for name in (
        "load_to_first_token_s",
        "ttft_ms_p50",
        "ttft_ms_p95",
        "latency_ms_p95",
        "tokens_per_second",
        "tokens_per_second_p50",
        "tokens_per_second_p95",
        "peak_memory_bytes",
        "peak_memory_share",
        "cost_per_1k_tokens_usd",
    ):
        put(f"serving/{name}", report["serving"].get(name))
    for name, seconds in report.get("timings", {}).items():
        put(f"seconds/{name}", seconds)
    return out

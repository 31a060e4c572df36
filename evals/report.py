"""Eval reports as JSON (for gates and machines) and Markdown (for people)."""

from __future__ import annotations


def render_markdown(report: dict) -> str:
    q, r, s = report["quality"], report["retrieval"], report["serving"]
    recall_key = next(k for k in r if k.startswith("recall@"))
    mrr_key = next(k for k in r if k.startswith("mrr@"))
    lines = [
        f"# Eval report: {report['variant']} / {report['version']}",
        "",
        f"Data version `{report['data_version']}` · device `{report['device']}`",
        "",
        "## Quality (held-out perplexity, lower is better)",
        "",
        "| model | perplexity |",
        "|---|---|",
        f"| base | {q['base_perplexity']:.3f} |",
        f"| fine-tuned | {q['finetuned_perplexity']:.3f} |",
        "",
        f"Improvement: {q['improvement']:.1%} on {q['validation_tokens']} validation tokens.",
        "",
        "## Retrieval (known-item queries)",
        "",
        f"{recall_key}: {r[recall_key]:.3f} · {mrr_key}: {r[mrr_key]:.3f} "
        f"over {r['queries']} queries",
        "",
        "## Serving",
        "",
        f"Generation: {s['tokens_per_second']:.1f} tokens/s, "
        f"first token {s['first_token_ms']:.1f} ms.",
    ]
    return "\n".join(lines) + "\n"

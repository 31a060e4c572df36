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
        "## Retrieval",
        "",
        f"{recall_key}: {r[recall_key]:.3f} · {mrr_key}: {r[mrr_key]:.3f} "
        f"over {r['queries']} queries"
        + (f" ({r['primary_mode']} search)" if "primary_mode" in r else ""),
        "",
        *_retrieval_table(r),
        "## Serving",
        "",
        f"Generation: {s['tokens_per_second']:.1f} tokens/s, "
        f"first token {s['first_token_ms']:.1f} ms.",
    ]
    return "\n".join(lines) + "\n"


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

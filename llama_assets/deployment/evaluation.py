"""Evaluate one checkpoint version: load it as serving would, run the suite, judge
it against its gate, write the report. No Dagster: ``eval_report`` (and the
regression watch, through it) calls ``evaluate_version``.

The model that is judged is the one serving loads, the merged fine-tune
(``merged/``), timed from the data root to its first token; the base model is
loaded beside it for the comparisons.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import torch

from evals.gate import evaluate_gate, gate_config, gate_summary
from evals.generation import cpu_threads
from evals.rag import read_qa_golden
from evals.report import charts, render_markdown, split_diagnostics
from evals.suite import EvalInputs, EvalSettings, run_suite
from llama_assets.base.atomic import atomic_write_json, atomic_write_text
from llama_assets.base.layout import DataLayout
from llama_assets.base.store import local_file, local_folder
from llama_assets.deployment.registry import previous_champion, read_aliases
from llama_assets.retrieval.evaluation import evaluate_index
from llama_assets.retrieval.search import search
from llama_assets.serving.served_model import load_served_model as serving_model
from llama_assets.training.checkpointer import local_dir, read_trainer_state
from llama_assets.training.pipeline import load_checkpoint_base
from llama_assets.training.variants import ModelVariant

TRAIN_DOCUMENTS_SAMPLED = 2000
"""Training documents read for the extraction test (its cases are drawn from these)."""
HISTORY_DIR = "history"


@dataclass
class EvalOutcome:
    report: dict
    samples: dict
    markdown: str
    charts: dict[str, bytes]
    out_dir: Path
    golden_errors: list[str]


def load_served_model(
    variant: ModelVariant, checkpoint: Path, device: torch.device
) -> tuple[torch.nn.Module, object, float]:
    """The fine-tune exactly as serving loads it (sha256 manifest verified first), and
    the seconds from the data root to its first token."""
    started = time.perf_counter()
    model, tokenizer = serving_model(checkpoint, variant.name, device)
    prompt = torch.tensor([[tokenizer.eos_token_id]], device=device)
    with torch.no_grad():
        model.generate(
            input_ids=prompt,
            attention_mask=torch.ones_like(prompt),
            max_new_tokens=1,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
        )
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return model, tokenizer, time.perf_counter() - started


def reference_report(layout: DataLayout, variant: str, version: str) -> dict | None:
    """The report a version is compared with: the champion's, or, when the version
    is the champion itself (the regression watch), the champion's before it."""
    aliases = read_aliases(layout.aliases(variant))
    reference = aliases["champion"]
    if reference == version:
        reference = previous_champion(aliases)
    if reference is None:
        return None
    path = layout.reports(variant, reference) / "report.json"
    return json.loads(path.read_text()) if path.exists() else None


def archive_previous_report(out_dir: Path, report: dict) -> Path | None:
    """Keep a report of this version made on other data or another index (the
    regression watch re-evaluates champions): moved to ``history/<time>/``."""
    path = out_dir / "report.json"
    if not path.exists():
        return None
    old = json.loads(path.read_text())
    same = old.get("data_version") == report.get("data_version") and old.get("retrieval", {}).get(
        "table_version"
    ) == report["retrieval"].get("table_version")
    if same:
        return None
    stamp = str(old.get("evaluated_at", "unknown")).replace(":", "")
    target = out_dir / HISTORY_DIR / stamp
    target.mkdir(parents=True, exist_ok=True)
    for name in ("report.json", "report.md", "samples.json"):
        if (out_dir / name).is_file():
            (target / name).write_bytes((out_dir / name).read_bytes())
    return target


def evaluate_version(
    layout: DataLayout,
    variant: ModelVariant,
    version: str,
    device: torch.device,
    device_description: str,
    chunks_table: object,
    embedder: object,
    validation: pl.DataFrame,
    train_texts: list[str],
    data_version: str,
    settings: EvalSettings,
    log: Callable[[str], None] = lambda message: None,
) -> EvalOutcome:
    with cpu_threads(device, settings.cpu_threads):
        # A verified local copy on an S3 root (the checkpoint itself on a local one).
        checkpoint = local_dir(layout.models(variant.name, version))
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        log(f"eval {variant.name}/{version}: loading the served model")
        served, tokenizer, load_seconds = load_served_model(variant, checkpoint, device)
        state = read_trainer_state(checkpoint)  # verified with the rest of the checkpoint
        base = load_checkpoint_base(variant, checkpoint, device)

        log("eval: retrieval")
        started = time.perf_counter()
        retrieval_figures, golden_errors = evaluate_index(
            chunks_table, embedder, layout.retrieval_golden_set, settings.retrieval_queries
        )
        retrieval_seconds = round(time.perf_counter() - started, 2)

        def hybrid(texts: list[str], k: int) -> list[list[dict]]:
            return search(chunks_table, embedder.encode, texts, k, "hybrid")

        qa_golden, qa_errors = read_qa_golden(local_file(layout.qa_golden_set))
        pairs = list(zip(validation["doc_id"].to_list(), validation["text"].to_list(), strict=True))
        inputs = EvalInputs(
            base=base,
            finetuned=served,
            tokenizer=tokenizer,
            device=device,
            window=int(state["config"]["seq_len"]),
            validation=sorted(pairs),
            train_texts=train_texts,
            search=hybrid,
            work_dir=layout.eval_scratch(variant.name, version),
            qa_golden=qa_golden,
            lm_eval_include=[local_folder(layout.lm_eval_tasks)],
            load_seconds=load_seconds,
            log=log,
        )
        started = time.perf_counter()
        sections = run_suite(inputs, settings)
        sections["timings"]["retrieval"] = retrieval_seconds
        report = {
            "variant": variant.name,
            "version": version,
            "data_version": data_version,
            "device": device_description,
            "evaluated_at": datetime.now(UTC).isoformat(timespec="seconds"),
            **sections,
            "retrieval": retrieval_figures,
            "qa_golden_errors": len(qa_errors),
            "training": {k: state[k] for k in ("steps", "tokens_seen", "seconds")}
            | {"final_loss": state["losses"][-1]},
            "settings": {k: v for k, v in vars(settings).items() if k != "lm_eval_tasks"}
            | {"lm_eval_tasks": list(settings.lm_eval_tasks)},
        }
        report["timings"]["suite"] = round(time.perf_counter() - started, 2)
        outcomes = evaluate_gate(
            report,
            reference_report(layout, variant.name, version),
            gate_config(variant.name, local_file(layout.gate_config)),
        )
        report["gate"] = gate_summary(outcomes)
        return write_report(layout, report, golden_errors + qa_errors)


def write_report(layout: DataLayout, report: dict, errors: list[str]) -> EvalOutcome:
    out = layout.reports(report["variant"], report["version"])
    out.mkdir(parents=True, exist_ok=True)
    archive_previous_report(out, report)
    slim, samples = split_diagnostics(report)
    pngs = charts(slim, samples)
    for name, png in pngs.items():
        (out / name).write_bytes(png)
    markdown = render_markdown(slim, {name: name for name in pngs})
    atomic_write_json(out / "samples.json", samples)
    atomic_write_text(out / "report.md", markdown)
    atomic_write_json(out / "report.json", slim)  # last: its presence means complete
    return EvalOutcome(slim, samples, markdown, pngs, out, errors)

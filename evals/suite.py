"""The eval suite of a checkpoint: every section of the report, from loaded models.

Pure (no Dagster): ``run_suite`` takes the loaded base and fine-tuned models,
the held-out and training texts, a search function and the settings, and
returns the report's sections, which ``evals.gate`` judges and
``evals.report`` renders. Each section is timed, and ``log`` hears progress.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from evals.generation import cpu_threads, greedy_ids, greedy_texts
from evals.lm_harness import SHIPPED_TASKS, build_shipped_tasks, run_lm_eval
from evals.memorisation import extraction_cases, extraction_rate, pii_in_outputs
from evals.perplexity import DocumentLoss, document_loss
from evals.rag import QAItem, evaluate_rag, generated_qa
from evals.retrieval import RetrievalQuery, evaluate
from evals.safety import SafetyPolicy, default_policy
from evals.safety.red_team import read_red_team, violation_rates
from evals.serving import DEFAULT_PRICE_PER_HOUR_USD, serving_figures

RETRIEVAL_K = 5
RETRIEVAL_MODES = ("vector", "fts", "hybrid")
# The mode whose figures head the report (and the gate): the default search mode.
PRIMARY_MODE = "hybrid"


def retrieval(
    query_sets: dict[str, Sequence[RetrievalQuery]],
    search: Callable[[list[str], int, str], list[list[dict]]],
    k: int = RETRIEVAL_K,
    modes: Sequence[str] = RETRIEVAL_MODES,
    primary: str = PRIMARY_MODE,
) -> dict:
    """recall@k, MRR@k and nDCG@k per search mode and query set (and over all sets).

    ``search(texts, n, mode)`` returns ranked hits per text. The top-level
    ``recall@k``/``mrr@k``/``ndcg@k`` are the ``primary`` mode over all queries.
    """
    everything = [q for queries in query_sets.values() for q in queries]
    by_mode: dict[str, dict] = {}
    for mode in modes:
        # Every query is searched once per mode; the per-set figures reuse its hits
        # (searching each set and then all of them again doubled the eval's slowest part).
        cache: dict[tuple[str, int], list[dict]] = {}

        def run(texts: list[str], n: int, mode: str = mode, cache=cache) -> list[list[dict]]:
            missing = list(dict.fromkeys(t for t in texts if (t, n) not in cache))
            if missing:
                cache.update(zip(((t, n) for t in missing), search(missing, n, mode), strict=True))
            return [cache[(t, n)] for t in texts]

        overall = evaluate(everything, run, k)  # the one search call of this mode
        by_mode[mode] = {name: evaluate(qs, run, k) for name, qs in query_sets.items()}
        by_mode[mode]["all"] = overall
    head = by_mode[primary]["all"] if primary in by_mode else by_mode[modes[0]]["all"]
    return {
        **{key: value for key, value in head.items() if key != "queries"},
        "queries": len(everything),
        "k": k,
        "primary_mode": primary if primary in by_mode else modes[0],
        "query_sets": {name: len(qs) for name, qs in query_sets.items()},
        "modes": by_mode,
    }


# --- the whole suite ------------------------------------------------------------


@dataclass(frozen=True)
class EvalSettings:
    """How much of each eval to run. CPU defaults keep the tiny variant's whole
    eval within minutes on two cores; ``for_device("cuda")`` scales them up for
    the larger variants (batched, bf16)."""

    lm_documents: int = 64
    """Held-out documents for perplexity and bits per byte."""
    retrieval_queries: int = 50
    """Generated retrieval queries per set (heading, sentence)."""
    cloze_items: int = 200
    lm_eval_tasks: tuple[str, ...] = ()
    """Extra lm-eval tasks (local data) besides the shipped ones."""
    lm_eval_limit: int | None = None
    qa_questions: int = 40
    rag_k: int = 4
    answer_tokens: int = 16
    red_team_tokens: int = 32
    extraction_samples: int = 32
    serving_tokens: int = 32
    batch_size: int = 8
    cpu_threads: int = 1
    """Intra-op threads on a CPU (0: torch's default); see ``generation.cpu_threads``."""
    price_per_device_hour: float | None = None
    """USD per hour of the device; None: ``serving.DEFAULT_PRICE_PER_HOUR_USD``."""
    seed: int = 0

    @classmethod
    def for_device(cls, device_type: str, **overrides: Any) -> EvalSettings:
        if device_type == "cuda":
            base = cls(
                lm_documents=512,
                cloze_items=1000,
                qa_questions=200,
                extraction_samples=256,
                batch_size=32,
            )
        else:
            base = cls()
        return dataclasses.replace(base, **{k: v for k, v in overrides.items() if v is not None})


@dataclass
class EvalInputs:
    base: Any
    finetuned: Any
    """The model that is served (merged fine-tune), already on ``device``."""
    tokenizer: Any
    device: torch.device
    window: int
    """Tokens per window: the sequence length the checkpoint trained with."""
    validation: Sequence[tuple[str, str]]
    """Held-out (doc_id, text) pairs, in a stable order."""
    train_texts: Sequence[str]
    """Training documents the extraction test prompts with (a sample is enough)."""
    search: Callable[[list[str], int], list[list[dict]]]
    work_dir: Path
    """Scratch folder of this eval (lm-eval task files, datasets cache)."""
    qa_golden: Sequence[QAItem] = ()
    lm_eval_include: Sequence[Path] = ()
    load_seconds: float | None = None
    policy: SafetyPolicy = field(default_factory=default_policy)
    log: Callable[[str], None] = lambda message: None


def language_modelling(inputs: EvalInputs, settings: EvalSettings) -> dict:
    """Perplexity and bits per byte of base and fine-tune on the same held-out documents."""
    texts = [text for _, text in inputs.validation[: settings.lm_documents]]
    ids = [inputs.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    pad = inputs.tokenizer.pad_token_id or 0

    def loss(model: Any) -> DocumentLoss:
        return document_loss(
            model, ids, texts, inputs.device, inputs.window, inputs.tokenizer.eos_token_id,
            pad, settings.batch_size,
        )  # fmt: skip

    base, tuned = loss(inputs.base), loss(inputs.finetuned)
    return {
        "base_perplexity": base.perplexity,
        "finetuned_perplexity": tuned.perplexity,
        "base_bits_per_byte": base.bits_per_byte,
        "finetuned_bits_per_byte": tuned.bits_per_byte,
        # Relative drop of bits per byte (= of total NLL: same text, same bytes).
        "improvement": 1.0 - tuned.bits_per_byte / base.bits_per_byte,
        "documents": tuned.documents,
        "validation_tokens": tuned.tokens,
        "validation_bytes": tuned.bytes,
        "window": inputs.window,
    }


def lm_eval_scores(inputs: EvalInputs, settings: EvalSettings) -> dict:
    """Shipped and configured lm-eval tasks, base and fine-tune."""
    texts = [text for _, text in inputs.validation]
    task_dir = inputs.work_dir / "lm_eval_tasks"
    sizes = build_shipped_tasks(
        texts, task_dir, settings.cloze_items, settings.lm_documents, settings.seed
    )
    tasks = [t for t in SHIPPED_TASKS if t in sizes] + list(settings.lm_eval_tasks)
    scores = {}
    for name, model in (("base", inputs.base), ("finetuned", inputs.finetuned)):
        scores[name] = run_lm_eval(
            model,
            inputs.tokenizer,
            tasks,
            [task_dir, *inputs.lm_eval_include],
            inputs.work_dir / "datasets_cache",
            max_length=inputs.window,
            batch_size=settings.batch_size,
            limit=settings.lm_eval_limit,
        )
    return {
        "tasks": {
            task: {"base": scores["base"].get(task, {}), "finetuned": scores["finetuned"][task]}
            for task in scores["finetuned"]
        },
        "shipped": [t for t in SHIPPED_TASKS if t in sizes],
        "configured": list(settings.lm_eval_tasks),
    }


def run_suite(inputs: EvalInputs, settings: EvalSettings) -> dict:
    """Every model-side section of the report, each timed (``timings``, seconds)."""
    with cpu_threads(inputs.device, settings.cpu_threads):
        return _run_suite(inputs, settings)


def _run_suite(inputs: EvalInputs, settings: EvalSettings) -> dict:
    timings: dict[str, float] = {}
    report: dict[str, Any] = {}
    tokenizer, device = inputs.tokenizer, inputs.device

    def timed(name: str, run: Callable[[], Any]) -> Any:
        inputs.log(f"eval: {name}")
        started = time.perf_counter()
        value = run()
        timings[name] = round(time.perf_counter() - started, 2)
        return value

    def answer(tokens: int) -> Callable[[list[str]], list[str]]:
        def run(prompts: list[str]) -> list[str]:
            return greedy_texts(
                inputs.finetuned, tokenizer, prompts, tokens, device, inputs.window,
                settings.batch_size,
            )  # fmt: skip

        return run

    def count_tokens(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"]) + 1

    report["quality"] = timed("language_modelling", lambda: language_modelling(inputs, settings))
    report["lm_eval"] = timed("lm_eval", lambda: lm_eval_scores(inputs, settings))

    questions = list(inputs.qa_golden) + generated_qa(
        inputs.validation, settings.qa_questions, settings.seed
    )
    rag = timed(
        "rag",
        lambda: evaluate_rag(
            questions,
            inputs.search,
            answer(settings.answer_tokens),
            count_tokens,
            inputs.window - settings.answer_tokens,
            settings.rag_k,
        ),
    )
    safety = timed(
        "safety",
        lambda: violation_rates(inputs.policy, read_red_team(), answer(settings.red_team_tokens)),
    )

    def extraction() -> dict:
        ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in inputs.train_texts]
        cases = extraction_cases(ids, settings.extraction_samples, settings.seed)
        pad = tokenizer.pad_token_id or tokenizer.eos_token_id

        def continue_ids(prompts: list[list[int]], n: int) -> list[list[int]]:
            return greedy_ids(inputs.finetuned, prompts, n, device, pad, settings.batch_size)

        return extraction_rate(cases, continue_ids, tokenizer.eos_token_id)

    memorised = timed("memorisation", extraction)
    price = settings.price_per_device_hour
    if price is None:
        price = DEFAULT_PRICE_PER_HOUR_USD.get(device.type, DEFAULT_PRICE_PER_HOUR_USD["cpu"])
    serving = timed(
        "serving",
        lambda: serving_figures(
            inputs.finetuned, tokenizer, device, price,
            new_tokens=settings.serving_tokens, load_seconds=inputs.load_seconds,
        ),
    )  # fmt: skip
    extracted_texts = [
        tokenizer.decode(ids, skip_special_tokens=True) for ids in memorised.pop("outputs")
    ]
    pii = pii_in_outputs(
        {
            "rag": rag.pop("outputs"),
            "red_team": safety.pop("outputs"),
            "extraction": extracted_texts,
            "serving": serving.pop("outputs"),
        }
    )
    report["rag"] = rag
    report["safety"] = safety
    report["memorisation"] = {**memorised, "pii": pii}
    report["serving"] = serving
    report["timings"] = timings
    return report

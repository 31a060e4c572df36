"""Standard tasks through lm-evaluation-harness, on the model already loaded, offline.

The harness the field trusts scores the model in-process (``HFLM`` wrapping the
loaded ``PreTrainedModel``: no second copy, no download). Tasks read local
files only:

- shipped: the YAML definitions in ``evals/lm_tasks/`` (``heldout_cloze``, a
  four-way multiple-choice cloze over held-out sentences, and ``heldout_bpb``,
  held-out documents by ``loglikelihood_rolling``), whose data files are built
  from the validation split at every eval (``build_shipped_tasks``);
- the user's: any lm-eval task whose data is local, named in the eval config
  (``lm_eval_tasks``), found under ``<root>/evals/lm_eval_tasks/`` (YAML files
  in lm-eval's own format) or, only if not found there, lm-eval's bundled
  definitions (indexing those takes about 20 s).

Datasets are read through 🤗 ``datasets`` with its cache under the run's own
folder and offline mode forced, so a task that names a Hub dataset fails
instead of downloading.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import random
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

SHIPPED_DIR = Path(__file__).parent / "lm_tasks"
SHIPPED_TASKS = ("heldout_cloze", "heldout_bpb")
CLOZE_CHOICES = 4
CLOZE_ENDING_WORDS = 4
CLOZE_MIN_WORDS = 8
CLOZE_CONTEXT_WORDS = 48
"""Words of the sentence before (and the sentence's own start) given as context."""
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def cloze_items(texts: Sequence[str], n: int, seed: int = 0) -> list[dict]:
    """Up to ``n`` four-way cloze items from held-out ``texts``.

    A sentence of at least ``CLOZE_MIN_WORDS`` words keeps all but its last
    ``CLOZE_ENDING_WORDS`` words (after up to ``CLOZE_CONTEXT_WORDS`` words of the
    text before it) as context; the choices are its true ending and the endings
    of three other sentences, in a seeded order. Endings equal to the true one
    are skipped, so exactly one choice is right.
    """
    sentences: list[tuple[str, str]] = []  # (context, ending)
    for text in texts:
        words_before: list[str] = []
        for sentence in _SENTENCE.split(" ".join(text.split())):
            words = sentence.split()
            if len(words) >= CLOZE_MIN_WORDS:
                start = words[:-CLOZE_ENDING_WORDS]
                context = (words_before + start)[-CLOZE_CONTEXT_WORDS:]
                ending = " " + " ".join(words[-CLOZE_ENDING_WORDS:])
                sentences.append((" ".join(context), ending))
            words_before += words
    rng = random.Random(seed)
    picked = rng.sample(range(len(sentences)), min(n, len(sentences)))
    endings = sorted({ending for _, ending in sentences})
    items = []
    for index in sorted(picked):
        context, ending = sentences[index]
        others = [e for e in endings if e != ending]
        if len(others) < CLOZE_CHOICES - 1:
            continue
        choices = [*rng.sample(others, CLOZE_CHOICES - 1), ending]
        rng.shuffle(choices)
        items.append({"context": context, "choices": choices, "label": choices.index(ending)})
    return items


def build_shipped_tasks(
    texts: Sequence[str], out_dir: Path, cloze: int = 200, documents: int = 64, seed: int = 0
) -> dict[str, int]:
    """Write the shipped tasks' data and YAML (paths filled in) to ``out_dir``.

    Returns the number of documents of each task; a task with none is not written.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    data = {
        "heldout_cloze": cloze_items(texts, cloze, seed),
        "heldout_bpb": [{"text": t} for t in list(texts)[:documents] if t.strip()],
    }
    sizes = {}
    for task, rows in data.items():
        if not rows:
            continue
        with (out_dir / f"{task}.jsonl").open("w") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
        definition = (SHIPPED_DIR / f"{task}.yaml").read_text()
        (out_dir / f"{task}.yaml").write_text(definition.replace("{data_dir}", str(out_dir)))
        sizes[task] = len(rows)
    return sizes


def _offline_datasets(cache_dir: Path) -> None:
    """Datasets read local files only and cache them under the run's folder."""
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    os.environ["HF_HUB_OFFLINE"] = "1"
    import datasets.config

    datasets.config.HF_DATASETS_OFFLINE = True
    datasets.config.HF_HUB_OFFLINE = True
    datasets.config.HF_DATASETS_CACHE = cache_dir


def run_lm_eval(
    model: Any,
    tokenizer: Any,
    tasks: Sequence[str],
    include_paths: Sequence[Path],
    cache_dir: Path,
    max_length: int,
    batch_size: int = 16,
    limit: int | None = None,
) -> dict[str, dict[str, float]]:
    """Scores per task: ``{task: {metric: value}}`` (lm-eval's ``,none`` filter suffix
    dropped, standard errors left out).

    The loaded model is scored as it is (dtype, device). The prefix token of
    rolling log-likelihoods is eos, the separator training packs documents
    with, and no bos is added, so the figures match ``evals.perplexity``.
    """
    _offline_datasets(cache_dir)
    for name in ("lm-eval", "lm_eval", "datasets"):
        logging.getLogger(name).setLevel(logging.ERROR)
    import datasets

    datasets.disable_progress_bars()  # the eval logs its own progress
    with _no_tqdm():
        return _evaluate(model, tokenizer, tasks, include_paths, max_length, batch_size, limit)


@contextlib.contextmanager
def _no_tqdm():
    """lm-eval's per-request progress bars (tqdm, on stderr) would flood the run's
    log; tqdm reads TQDM_DISABLE only at import, so stderr is held instead. Errors
    still raise; what was held is dropped."""
    with contextlib.redirect_stderr(io.StringIO()):
        yield


def _evaluate(
    model: Any,
    tokenizer: Any,
    tasks: Sequence[str],
    include_paths: Sequence[Path],
    max_length: int,
    batch_size: int,
    limit: int | None,
) -> dict[str, dict[str, float]]:
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    lm = HFLM(
        pretrained=model,
        tokenizer=tokenizer,
        batch_size=batch_size,
        max_length=max_length,
        prefix_token_id=tokenizer.eos_token_id,
        add_bos_token=False,
    )
    paths = [str(p) for p in include_paths if Path(p).is_dir()]
    manager = TaskManager(include_path=paths or None, include_defaults=False)
    missing = [t for t in tasks if t not in manager.all_tasks]
    if missing:
        # lm-eval's own definitions take 20 s to index: only when a task needs them.
        manager = TaskManager(include_path=paths or None, include_defaults=True)
        missing = [t for t in tasks if t not in manager.all_tasks]
    if missing:
        raise ValueError(
            f"unknown lm-eval task(s) {', '.join(missing)}: put their YAML under "
            f"{', '.join(paths) or 'the tasks folder'} (data files local)"
        )
    results = lm_eval.simple_evaluate(
        model=lm,
        tasks=list(tasks),
        task_manager=manager,
        limit=limit,
        bootstrap_iters=0,
        log_samples=False,
        verbosity="ERROR",
        random_seed=0,
        numpy_random_seed=0,
        torch_random_seed=0,
        fewshot_random_seed=0,
    )
    scores: dict[str, dict[str, float]] = {}
    for task, metrics in (results or {}).get("results", {}).items():
        scores[task] = {
            key.split(",")[0]: float(value)
            for key, value in metrics.items()
            if "," in key and "_stderr" not in key and isinstance(value, int | float)
        }
        scores[task]["samples"] = float(metrics.get("sample_len", 0) or 0)
    return scores

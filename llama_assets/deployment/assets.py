"""Evaluation and promotion: eval_report per variant (the gate as its asset checks),
promoted_model, and eval_history."""

import base64
import json
import time

import dagster as dg

from evals.gate import CHECK_NAMES, CRITERIA, GateConfigError
from evals.report import numeric_metadata, render_markdown
from llama_assets.base.atomic import atomic_write_json, atomic_write_text
from llama_assets.deployment.registry import candidate_moved, moved, read_aliases, update_aliases
from llama_assets.partitions import variant_partitions
from llama_assets.policies import GPU_OP_TAGS, GPU_POOL
from llama_assets.retrieval.assets import rag_index
from llama_assets.tables import read_table
from llama_assets.training.assets import (
    dataset_split,
    finetuned_checkpoint,
    read_dataset_manifest,
    training_dataset,
)
from llama_assets.training.variants import get_variant
from resources.device import DeviceResource
from resources.embedder import EmbedderResource
from resources.storage import LocalDataRoot
from resources.vector_store import LanceDBResource

EVAL_REPORT = dg.AssetKey("eval_report")
CHAMPION_HOLDS = "champion_holds"
"""promoted_model's check: the champion passes its gate on its newest report. Each
promotion evaluates it; the regression watch fails it when it rolls a champion back."""


def damaged_checkpoint(checkpoint, variant: str, error: Exception) -> dg.Failure:
    """A non-retryable Failure naming the damaged fine-tune, its owner and what to do:
    reading it again cannot help, re-materialising its owner can (the training run
    resumes from its newest valid training checkpoint, so little is retrained)."""
    return dg.Failure(
        description=f"the fine-tune {checkpoint} is damaged ({error}). It is rebuilt by "
        f"re-materialising finetuned_checkpoint for partition {variant} (in the UI, or "
        f"`dagster asset materialize -m llama_assets.definitions --select "
        f"finetuned_checkpoint --partition {variant}`), then eval_report.",
        metadata={
            "damaged_checkpoint": dg.MetadataValue.path(str(checkpoint)),
            "owner_asset": "finetuned_checkpoint",
            "partition": variant,
        },
        allow_retries=False,
    )


def latest_version(storage: LocalDataRoot, variant: str) -> str:
    path = storage.layout.models(variant) / "latest.json"
    if not path.is_file():
        raise dg.Failure(f"{path} is missing: materialise finetuned_checkpoint[{variant}] first")
    return json.loads(path.read_text())["version"]


def figures_text(figures: dict) -> str:
    return ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items()
    )


def check_verdict(check: dict) -> str:
    """A check's description, and on a failure its figures: what the UI and `run` show."""
    if check["passed"]:
        return check["description"]
    return f"{check['name']} failed: {check['description']} ({figures_text(check['figures'])})"


def failed_reasons(gate: dict) -> list[str]:
    """Each failed blocking check of a report's gate with its figures (the why)."""
    checks = {c["name"]: c for c in gate.get("checks", [])}
    reasons = []
    for name in gate.get("failed", []):
        shown = figures_text(checks.get(name, {}).get("figures", {}))
        reasons.append(f"{name} ({shown})" if shown else name)
    return reasons


def data_uri(png: bytes) -> str:
    """A PNG inline in the UI's Markdown (which cannot reach files beside the report)."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


class EvalConfig(dg.Config):
    """What to evaluate and how much; unset fields keep the device's defaults
    (``evals.suite.EvalSettings``)."""

    version: str | None = None
    """A checkpoint version to evaluate instead of the newest (the regression
    watch re-evaluates champions this way)."""
    lm_eval_tasks: list[str] = []
    """Extra lm-eval tasks with local data (YAML under ``<root>/evals/lm_eval_tasks/``)."""
    price_per_device_hour: float | None = None
    lm_documents: int | None = None
    retrieval_queries: int | None = None
    qa_questions: int | None = None
    extraction_samples: int | None = None
    lm_eval_limit: int | None = None
    cloze_items: int | None = None
    answer_tokens: int | None = None
    red_team_tokens: int | None = None
    serving_tokens: int | None = None
    batch_size: int | None = None
    cpu_threads: int | None = None
    """Intra-op threads of the eval on a CPU (default 1; 0: torch's default)."""

    def settings(self, device_type: str):  # -> evals.suite.EvalSettings (imported lazily)
        from evals.suite import EvalSettings

        return EvalSettings.for_device(
            device_type,
            lm_eval_tasks=tuple(self.lm_eval_tasks) or None,
            price_per_device_hour=self.price_per_device_hour,
            lm_documents=self.lm_documents,
            retrieval_queries=self.retrieval_queries,
            qa_questions=self.qa_questions,
            extraction_samples=self.extraction_samples,
            lm_eval_limit=self.lm_eval_limit,
            cloze_items=self.cloze_items,
            answer_tokens=self.answer_tokens,
            red_team_tokens=self.red_team_tokens,
            serving_tokens=self.serving_tokens,
            batch_size=self.batch_size,
            cpu_threads=self.cpu_threads,
        )


@dg.asset(
    partitions_def=variant_partitions,
    deps=[
        finetuned_checkpoint,
        training_dataset,
        dg.AssetDep(rag_index, partition_mapping=dg.AllPartitionMapping()),
    ],
    group_name="deployment",
    kinds={"pytorch", "markdown"},
    pool=GPU_POOL,
    op_tags=GPU_OP_TAGS,
    check_specs=[
        dg.AssetCheckSpec(c.name, asset=EVAL_REPORT, blocking=c.blocking, description=c.description)
        for c in CRITERIA
    ],
    description="The served fine-tune (merged, loaded from the data root) against its base "
    "and its champion: held-out bits per byte and perplexity, lm-eval tasks (shipped "
    "cloze and rolling bpb over the held-out split, plus configured local tasks), "
    "retrieval, RAG answers (EM, F1, groundedness, retrieval hit, hallucination), "
    "red-team safety, training-data extraction and PII in outputs, serving load time, "
    "TTFT, tokens/s, memory and cost; `reports/<variant>/<version>/` (JSON, Markdown, "
    "PNG charts, samples). The gate is this asset's checks.",
)
def eval_report(
    context: dg.AssetExecutionContext,
    config: EvalConfig,
    storage: LocalDataRoot,
    device: DeviceResource,
    embedder: EmbedderResource,
    vector_store: LanceDBResource,
):
    # The model and eval libraries load with the step, not with the code location.
    from llama_assets.deployment.evaluation import TRAIN_DOCUMENTS_SAMPLED, evaluate_version
    from llama_assets.retrieval.evaluation import retrieval_metadata
    from llama_assets.retrieval.index import open_table
    from llama_assets.training.checkpointer import CorruptCheckpointError, verify_manifest

    layout = storage.layout
    variant = get_variant(context.partition_key)
    version = config.version or latest_version(storage, variant.name)
    checkpoint = layout.models(variant.name, version)
    if not checkpoint.is_dir():
        raise dg.Failure(
            f"{checkpoint} is not a checkpoint: name a version under models/{variant.name}/ "
            "or train one"
        )
    try:
        verify_manifest(checkpoint)  # every file's sha256, before any other input is read
    except CorruptCheckpointError as exc:
        raise damaged_checkpoint(checkpoint, variant.name, exc) from exc
    dev = device.device()
    started = time.perf_counter()
    validation = read_table(dataset_split(layout, "validation"), ["doc_id", "text"])
    if validation.height == 0:
        raise dg.Failure("the validation split is empty: ingest more documents")
    train_texts = read_table(dataset_split(layout, "train"), ["text"])["text"].to_list()
    try:
        outcome = evaluate_version(
            layout,
            variant,
            version,
            dev,
            device.describe(),
            # Queries read a local replica of the table's current version (S3 reads
            # per query are about 10x slower); on a local root it is the table itself.
            open_table(vector_store.read_replica(), embedder.dimension),
            embedder,
            validation,
            train_texts[:TRAIN_DOCUMENTS_SAMPLED],
            read_dataset_manifest(storage)["data_version"],
            config.settings(dev.type),
            log=context.log.info,
        )
    except CorruptCheckpointError as error:  # its sha256 manifest, checked as serving loads it
        raise damaged_checkpoint(checkpoint, variant.name, error) from error
    except GateConfigError as error:
        raise dg.Failure(str(error)) from error
    for error in outcome.golden_errors:
        context.log.warning(f"golden set: {error}")
    report = outcome.report
    inline = {name: data_uri(png) for name, png in outcome.charts.items()}
    checks = [
        dg.AssetCheckResult(
            check_name=check["name"],
            passed=check["passed"],
            severity=dg.AssetCheckSeverity.ERROR
            if check["blocking"]
            else dg.AssetCheckSeverity.WARN,
            description=check_verdict(check),
            metadata={
                k: v if isinstance(v, int | float | str | bool) else str(v)
                for k, v in check["figures"].items()
                if v is not None
            },
        )
        for check in report["gate"]["checks"]
    ]
    return dg.MaterializeResult(
        metadata={
            "version": version,
            "data_version": report["data_version"],
            "gate_passed": dg.MetadataValue.bool(report["gate"]["passed"]),
            "gate_failed": dg.MetadataValue.json(report["gate"]["failed"]),
            **numeric_metadata(report),
            **retrieval_metadata(report["retrieval"]),
            "seconds": dg.MetadataValue.float(round(time.perf_counter() - started, 2)),
            "report": dg.MetadataValue.md(render_markdown(report, inline)),
            "path": dg.MetadataValue.path(str(outcome.out_dir / "report.json")),
        },
        check_results=checks,
    )


class PromotionConfig(dg.Config):
    regression: str = ""
    """Set by the regression watch: why the champion regressed. The run then only fails
    ``champion_holds`` with it (red in the UI) and moves nothing itself: the alias and
    the routing move back together in ``serving_deployment``'s ``rollback`` command,
    later in the same run."""


def regression_alert(layout, variant: str, reason: str) -> dg.MaterializeResult:
    aliases = read_aliases(layout.aliases(variant))
    return dg.MaterializeResult(
        check_results=[
            dg.AssetCheckResult(
                check_name=CHAMPION_HOLDS,
                passed=False,
                severity=dg.AssetCheckSeverity.ERROR,
                description=reason,
                metadata={"champion": str(aliases["champion"]), "reason": reason},
            )
        ],
        metadata={
            "champion": str(aliases["champion"]),
            "action": "regression",
            "reason": reason,
            "path": dg.MetadataValue.path(str(layout.aliases(variant))),
        },
    )


@dg.asset(
    partitions_def=variant_partitions,
    deps=[eval_report],
    group_name="deployment",
    kinds={"json"},
    check_specs=[
        dg.AssetCheckSpec(
            CHAMPION_HOLDS,
            asset="promoted_model",
            description="the champion passes every blocking check of its newest report; "
            "the regression watch fails it (with the reason) when it rolls the alias back",
        )
    ],
    description="The variant's release: the newest checkpoint becomes the release candidate "
    "only when every blocking check of its eval report passed (floors, and non-inferiority "
    "against the current champion); the failed checks and their figures show here and on "
    "eval_report. `serving_deployment` rolls the candidate out and the champion alias moves "
    "when the rollout reaches 100% (the first champion, with nothing serving yet, is "
    "promoted at once). History is kept in `models/<variant>/aliases.json`; "
    "`llama-platform rollback` moves it back, and the regression watch does so by itself.",
)
def promoted_model(
    context: dg.AssetExecutionContext, config: PromotionConfig, storage: LocalDataRoot
) -> dg.MaterializeResult:
    layout = storage.layout
    variant = context.partition_key
    if config.regression:
        return regression_alert(layout, variant, config.regression)
    version = latest_version(storage, variant)
    path = layout.reports(variant, version) / "report.json"
    if not path.exists():
        raise dg.Failure(f"{path} is missing: materialise eval_report[{variant}] first")
    challenger = json.loads(path.read_text())
    gate = challenger.get("gate") or {"passed": False, "failed": ["no gate in the report"]}
    outcome: dict = {}

    def decide(aliases: dict) -> dict | None:
        # A compare-and-swap: runs again on the fresh aliases if another move wins the race.
        champion_version = aliases["champion"]
        if champion_version == version:
            outcome["action"] = "already champion"
        elif aliases.get("candidate") == version:
            outcome["action"] = "already the release candidate"
        elif gate["passed"] and champion_version:
            # serving_deployment rolls it out; the alias moves when the rollout reaches 100%.
            outcome["action"] = "release candidate"
            return candidate_moved(
                aliases,
                version,
                f"passed every blocking check against champion {champion_version}",
            )
        elif gate["passed"]:
            outcome["action"] = "promoted"
            return moved(aliases, version, "promote", "first champion: passed every blocking check")
        else:
            outcome["action"] = "kept champion"
        return None

    aliases = update_aliases(layout.aliases(variant), decide)
    action = outcome["action"]
    if action == "kept champion":
        context.log.warning(f"{version} did not pass the gate: {'; '.join(failed_reasons(gate))}")
    champion = aliases["champion"]
    champion_report = layout.reports(variant, champion) / "report.json" if champion else None
    holds = bool(
        champion_report
        and champion_report.exists()
        and json.loads(champion_report.read_text()).get("gate", {}).get("passed")
    )
    return dg.MaterializeResult(
        check_results=[
            dg.AssetCheckResult(
                check_name=CHAMPION_HOLDS,
                passed=holds or champion is None,
                metadata={"champion": str(champion)},
            )
        ],
        metadata={
            "champion": str(aliases["champion"]),
            "challenger": version,
            "action": action,
            "gate_passed": dg.MetadataValue.bool(bool(gate["passed"])),
            "gate_failed": dg.MetadataValue.json(gate.get("failed", [])),
            "why": dg.MetadataValue.md("\n".join(f"- {r}" for r in failed_reasons(gate))),
            "candidate": str(aliases.get("candidate")),
            "history_length": len(aliases["history"]),
            "path": dg.MetadataValue.path(str(layout.aliases(variant))),
        },
    )


@dg.asset(
    partitions_def=variant_partitions,
    deps=[eval_report],
    group_name="deployment",
    kinds={"markdown"},
    description="Every eval report of the variant (each version, and archived "
    "re-evaluations of champions), tabled oldest first with its trend chart: "
    "`reports/<variant>/history.{json,md}` and `history.png`.",
)
def eval_history(context: dg.AssetExecutionContext, storage: LocalDataRoot) -> dg.MaterializeResult:
    from evals.history import collect, render, trend_charts  # matplotlib: with the step

    layout = storage.layout
    variant = context.partition_key
    rows = collect(layout.root / "reports").get(variant, [])
    out = layout.reports(variant)
    out.mkdir(parents=True, exist_ok=True)
    pngs = trend_charts({variant: rows}) if rows else {}
    if pngs:
        (out / "history.png").write_bytes(pngs[variant])
    markdown = render({variant: rows}, {variant: "history.png"} if pngs else None)
    atomic_write_json(out / "history.json", rows)
    atomic_write_text(out / "history.md", markdown)
    inline = {variant: data_uri(pngs[variant])} if pngs else None
    return dg.MaterializeResult(
        metadata={
            "reports": len(rows),
            "versions": len({r["version"] for r in rows}),
            "history": dg.MetadataValue.md(render({variant: rows}, inline)),
            "path": dg.MetadataValue.path(str(out / "history.json")),
        }
    )


__all__ = ["CHECK_NAMES", "eval_history", "eval_report", "promoted_model"]

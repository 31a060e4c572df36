"""Training assets: the training dataset snapshot and the LoRA fine-tune."""

import hashlib
import json
import subprocess
import time

import dagster as dg
import polars as pl
import pydantic

from llama_assets.base.atomic import atomic_write_json
from llama_assets.base.layout import DataLayout
from llama_assets.base.shards import has_manifest, read_manifest
from llama_assets.curate.assets import clean_shards, clean_shards_table
from llama_assets.partitions import BATCHES, variant_partitions
from llama_assets.policies import GPU_OP_TAGS, GPU_POOL, GPU_RETRY, IO_RETRY
from llama_assets.tables import Table, manifest_digest, read_table, table_metadata, write_table
from llama_assets.training.config import TrainConfig
from llama_assets.training.variants import MissingWeightsError, get_variant
from resources.device import DeviceResource
from resources.storage import LocalDataRoot

VALIDATION_FRACTION = 0.1


def dataset_split(layout: DataLayout, split: str) -> Table:
    """The snapshot's ``train`` or ``validation`` table, written by `training_dataset`."""
    return Table(layout.training_dataset / split, training_dataset.key)


def read_dataset_manifest(storage: LocalDataRoot) -> dict:
    path = storage.layout.training_dataset / "dataset.json"
    if not path.is_file():
        raise dg.Failure(f"{path} is missing: materialise training_dataset first")
    return json.loads(path.read_text())


@dg.asset(
    deps=[clean_shards],
    group_name="training",
    kinds={"parquet"},
    retry_policy=IO_RETRY,
    description="A snapshot of every batch's clean shards that are fit to train on "
    "(for_training: they pass the quality rules), split into train and validation by a "
    "hash of each document id (a document never changes sides).",
)
def training_dataset(
    context: dg.AssetExecutionContext, storage: LocalDataRoot
) -> dg.MaterializeResult:
    from llama_assets.training.dataset import split_of, trainable, with_messages

    layout = storage.layout
    # The registered batches' shard sets, by name: never whatever folder lies under
    # shards/ (a killed write's hidden temp copy, a removed batch's leftovers).
    keys = sorted(
        k
        for k in context.instance.get_dynamic_partitions(BATCHES)
        if has_manifest(layout.shards(k))
    )
    if not keys:
        raise dg.Failure(f"no clean shards under {layout.shards_root}: run the batch assets first")
    shard_dirs = [layout.shards(k) for k in keys]
    clean = 0
    parts = []
    for k in keys:
        shards = read_table(clean_shards_table(layout, k))
        clean += shards.height
        parts.append(with_messages(trainable(shards)))
    docs = pl.concat(parts)
    docs = docs.sort("doc_id").with_columns(
        pl.col("doc_id")
        .map_elements(lambda d: split_of(d, VALIDATION_FRACTION), return_dtype=pl.String)
        .alias("split")
    )
    # The data version names exactly the shard sets the snapshot was built from.
    sources = {k: manifest_digest(read_manifest(d)) for k, d in zip(keys, shard_dirs, strict=True)}
    data_version = hashlib.sha256(repr(sorted(sources.items())).encode()).hexdigest()[:16]
    metadata = {}
    for split in ("train", "validation"):
        out = dataset_split(layout, split).path
        manifest = write_table(docs.filter(pl.col("split") == split).drop("split"), out)
        metadata.update({f"{split}_{k}": v for k, v in table_metadata(manifest, out).items()})
    dataset = {
        "data_version": data_version,
        "shard_sets": sources,
        "validation_fraction": VALIDATION_FRACTION,
    }
    # Every data version's batches stay on record: which batches a model was
    # trained on is known after the snapshot moves on (remove-batch asks).
    atomic_write_json(layout.training_dataset / "versions" / f"{data_version}.json", dataset)
    atomic_write_json(layout.training_dataset / "dataset.json", dataset)
    return dg.MaterializeResult(
        metadata={
            **metadata,
            "data_version": data_version,
            "batches": len(shard_dirs),
            "documents": docs.height,
            # Searchable but not fit to train on (quality rules, review, source opt-out).
            "clean_documents_not_trained": clean - docs.height,
            "instruction_documents": docs["messages"].is_not_null().sum(),
        }
    )


class FinetuneRunSettings(dg.Config):
    """How a fine-tune runs, beside what it computes (TrainConfig's fields, added below)."""

    # Whether to also write merged/ (base + adapter), and how many data-parallel
    # processes torchrun starts (1: train in this process).
    save_merged: bool = True
    processes: int = 1

    def apply(self, preset: TrainConfig) -> TrainConfig:
        """`preset` with every TrainConfig field that is set here."""
        overrides = self.model_dump(exclude=set(FinetuneRunSettings.model_fields))
        return preset.with_overrides({k: v for k, v in overrides.items() if v is not None})


# The run config of `finetuned_checkpoint`: every TrainConfig field, derived from
# the dataclass (one definition), as an optional override of the variant's preset.
TrainingSettings = pydantic.create_model(
    "TrainingSettings",
    __base__=FinetuneRunSettings,
    __doc__="Overrides of the variant's preset; leave a field unset to keep the preset.",
    **{name: (hint, None) for name, hint in TrainConfig.override_types().items()},
)


@dg.asset(
    partitions_def=variant_partitions,
    deps=[training_dataset],
    group_name="training",
    kinds={"pytorch"},
    pool=GPU_POOL,
    op_tags=GPU_OP_TAGS,
    retry_policy=GPU_RETRY,
    description="A LoRA fine-tune (peft) of the variant's Llama base model on the "
    "training split, bounded by a step and token budget; adapter, merged model, "
    "tokenizer and trainer state under `models/<variant>/<version>/`. Full training "
    "checkpoints every N steps under `models/<variant>/runs/<version>/`; a re-run with "
    "the same settings and data resumes from the newest valid one, and SIGTERM "
    "checkpoints and asks for a retry.",
)
def finetuned_checkpoint(
    context: dg.AssetExecutionContext,
    config: TrainingSettings,
    storage: LocalDataRoot,
    device: DeviceResource,
) -> dg.MaterializeResult:
    # torch, transformers and peft (about 5 s of imports) load with the steps that train,
    # not with the code location that every CLI command, sensor tick and step loads.
    from llama_assets.training.checkpointer import MERGED_DIR, local_dir, read_trainer_state
    from llama_assets.training.dataset import with_messages
    from llama_assets.training.pipeline import (
        LOSS_CURVE_FILE,
        InsufficientData,
        checkpoint_version,
        train_and_save,
    )
    from llama_assets.training.preemption import TrainingPreempted
    from llama_assets.training.report import loss_curve_markdown

    layout = storage.layout
    variant = get_variant(context.partition_key)
    try:
        cfg = config.apply(variant.train)
    except ValueError as exc:
        # Bad settings fail the same way every time: no retries, the fix in a sentence.
        raise dg.Failure(
            f"training settings for {variant.name} are invalid: {exc}; fix the run config "
            "(or --max-steps/--max-tokens) and run again",
            allow_retries=False,
        ) from exc
    dataset = read_dataset_manifest(storage)
    train = with_messages(read_table(dataset_split(layout, "train")))
    texts, messages = train["text"].to_list(), train["messages"].to_list()
    instruction_docs = sum(m is not None for m in messages)
    dev = device.device()
    context.log.info(f"training {variant.name} on {dev} for up to {cfg.planned_steps()} steps")

    first_step: list[tuple[int, int, float]] = []  # (step, tokens, time) of this process's first

    def on_step(step: int, loss: float, tokens: int) -> None:
        now = time.perf_counter()
        if not first_step:
            first_step.append((step, tokens, now))
        step0, tokens0, t0 = first_step[0]
        rate = (tokens - tokens0) / (now - t0) if now > t0 else 0.0
        left = (cfg.planned_steps() - step) * (now - t0) / (step - step0) if step > step0 else None
        context.log.info(
            f"step {step}/{cfg.planned_steps()} loss {loss:.4f} tokens {tokens} "
            f"({rate:,.0f} tokens/s" + (f", {left:.0f}s left)" if left is not None else ")")
        )

    started = time.perf_counter()
    version = checkpoint_version(variant, cfg, dataset["data_version"])
    if config.processes > 1:
        path = run_data_parallel(context, config, storage, variant.name, cfg, dataset)
    else:
        try:
            trained = train_and_save(
                variant,
                cfg,
                texts,
                dataset["data_version"],
                layout.models(variant.name),
                dev,
                on_step,
                run_dir=layout.training_run(variant.name, version),
                merge=config.save_merged,
                log=context.log.info,
                messages=messages,
            )
        except (InsufficientData, MissingWeightsError) as exc:
            # Deterministic: a retry would fail the same way ("Exceeded max_retries").
            raise dg.Failure(str(exc), allow_retries=False) from exc
        except TrainingPreempted as exc:
            # A reclaimed node: the checkpoint is on disk, so the retry loses no step.
            context.log.warning(str(exc))
            raise dg.RetryRequested(max_retries=GPU_RETRY.max_retries, seconds_to_wait=5) from exc
        path = trained.path
    atomic_write_json(
        layout.models(variant.name) / "latest.json",
        {"version": version, "data_version": dataset["data_version"]},
    )
    state = read_trainer_state(path)
    losses = state["losses"]
    mfu = state.get("mfu")
    return dg.MaterializeResult(
        metadata={
            "version": version,
            "data_version": dataset["data_version"],
            "device": device.describe(),
            "processes": config.processes,
            "steps": state["steps"],
            "tokens": state["tokens_seen"],
            "tokens_per_second": dg.MetadataValue.float(round(state["tokens_per_second"], 1)),
            "first_loss": dg.MetadataValue.float(losses[0]),
            "final_loss": dg.MetadataValue.float(losses[-1]),
            "trainable_parameters": state["trainable_parameters"],
            "total_parameters": state["total_parameters"],
            "peak_memory_mb": dg.MetadataValue.float(round(state["peak_memory_bytes"] / 2**20, 1)),
            "train_blocks": state["train_blocks"],
            "instruction_documents": instruction_docs,
            "dataset_format": "instruction + text (loss masked on prompts)"
            if instruction_docs
            else "packed text",
            "seconds": dg.MetadataValue.float(round(time.perf_counter() - started, 2)),
            "loss_curve": dg.MetadataValue.md(
                loss_curve_markdown(losses, (local_dir(path) / LOSS_CURVE_FILE).read_bytes())
            ),
            "resumed_from_step": state["resumed_from_step"],
            "skipped_checkpoints": len(state["skipped_checkpoints"]),
            "checkpoints_written": state["checkpoints_written"],
            "oom_retries": state["oom_retries"],
            "micro_batch_size": state["micro_batch_size"],
            "grad_accum_steps": state["grad_accum_steps"],
            **({"mfu": dg.MetadataValue.float(round(mfu, 4))} if mfu is not None else {}),
            "merged_model": dg.MetadataValue.path(str(path / MERGED_DIR))
            if config.save_merged
            else "not written",
            "path": dg.MetadataValue.path(str(path)),
        }
    )


def run_data_parallel(context, config, storage, variant_name, cfg, dataset):
    """Run the fine-tune as `config.processes` torchrun workers; returns the checkpoint path."""
    from llama_assets.training.distributed import PREEMPTED_EXIT_CODE, torchrun_command
    from llama_assets.training.pipeline import checkpoint_version

    args = [
        "--data-root",
        str(storage.layout.root),
        "--variant",
        variant_name,
        "--config",
        json.dumps(cfg.to_dict()),
        "--data-version",
        dataset["data_version"],
        *([] if config.save_merged else ["--no-merge"]),
    ]
    command = torchrun_command(config.processes, args)
    context.log.info("data parallel: " + " ".join(command[:6]) + " ...")
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    tail: list[str] = []
    for line in proc.stdout:
        context.log.info(line.rstrip())
        tail = [*tail[-40:], line]
    if proc.wait() == PREEMPTED_EXIT_CODE:
        raise dg.RetryRequested(max_retries=GPU_RETRY.max_retries, seconds_to_wait=5)
    if proc.returncode != 0:
        raise dg.Failure(
            f"data-parallel training failed (exit {proc.returncode})",
            metadata={"log_tail": dg.MetadataValue.text("".join(tail))},
        )
    return storage.layout.models(
        variant_name, checkpoint_version(get_variant(variant_name), cfg, dataset["data_version"])
    )

"""Training assets: the training dataset snapshot and the LoRA fine-tune."""

import hashlib
import json
import time
from dataclasses import replace

import dagster as dg
import polars as pl

from llama_assets.atomic import atomic_write_json
from llama_assets.curate.assets import clean_shards
from llama_assets.partitions import variant_partitions
from llama_assets.policies import GPU_OP_TAGS, GPU_POOL, GPU_RETRY, IO_RETRY
from llama_assets.tables import manifest_digest, read_table, table_metadata, write_table
from llama_assets.training.dataset import split_of
from llama_assets.training.pipeline import train_and_save
from llama_assets.training.variants import get_variant
from resources.device import DeviceResource
from resources.storage import LocalDataRoot

VALIDATION_FRACTION = 0.1


def read_dataset_manifest(storage: LocalDataRoot) -> dict:
    path = storage.layout.training_dataset / "dataset.json"
    if not path.exists():
        raise dg.Failure(f"{path} is missing: materialise training_dataset first")
    return json.loads(path.read_text())


@dg.asset(
    deps=[clean_shards],
    group_name="training",
    kinds={"parquet"},
    retry_policy=IO_RETRY,
    description="A snapshot of every batch's clean shards, split into train and "
    "validation by a hash of each document id (a document never changes sides).",
)
def training_dataset(
    context: dg.AssetExecutionContext, storage: LocalDataRoot
) -> dg.MaterializeResult:
    layout = storage.layout
    shard_dirs = sorted(p.parent for p in layout.shards_root.glob("*/*/manifest.json"))
    if not shard_dirs:
        raise dg.Failure(f"no clean shards under {layout.shards_root}: run the batch assets first")
    docs = pl.concat([read_table(d, ["doc_id", "source", "batch", "text"]) for d in shard_dirs])
    docs = docs.sort("doc_id").with_columns(
        pl.col("doc_id")
        .map_elements(lambda d: split_of(d, VALIDATION_FRACTION), return_dtype=pl.String)
        .alias("split")
    )
    # The data version names exactly the shard sets the snapshot was built from.
    sources = {
        str(d.relative_to(layout.shards_root)): manifest_digest(
            json.loads((d / "manifest.json").read_text())
        )
        for d in shard_dirs
    }
    data_version = hashlib.sha256(repr(sorted(sources.items())).encode()).hexdigest()[:16]
    metadata = {}
    for split in ("train", "validation"):
        out = layout.training_dataset / split
        manifest = write_table(docs.filter(pl.col("split") == split).drop("split"), out)
        metadata.update({f"{split}_{k}": v for k, v in table_metadata(manifest, out).items()})
    atomic_write_json(
        layout.training_dataset / "dataset.json",
        {
            "data_version": data_version,
            "shard_sets": sources,
            "validation_fraction": VALIDATION_FRACTION,
        },
    )
    return dg.MaterializeResult(
        metadata={
            **metadata,
            "data_version": data_version,
            "batches": len(shard_dirs),
            "documents": docs.height,
        }
    )


class TrainingSettings(dg.Config):
    """Overrides of the variant's preset; leave a field unset to keep the preset."""

    max_steps: int | None = None
    max_tokens: int | None = None
    learning_rate: float | None = None
    seq_len: int | None = None
    micro_batch_size: int | None = None
    grad_accum_steps: int | None = None
    lora_r: int | None = None
    lora_alpha: int | None = None
    gradient_checkpointing: bool | None = None
    seed: int | None = None

    def apply(self, preset):
        overrides = {k: v for k, v in self.model_dump().items() if v is not None}
        return replace(preset, **overrides)


@dg.asset(
    partitions_def=variant_partitions,
    deps=[training_dataset],
    group_name="training",
    kinds={"pytorch"},
    pool=GPU_POOL,
    op_tags=GPU_OP_TAGS,
    retry_policy=GPU_RETRY,
    description="A LoRA fine-tune (peft) of the variant's Llama base model on the "
    "training split, bounded by a step and token budget; adapter, tokenizer and "
    "trainer state under models/<variant>/<version>/.",
)
def finetuned_checkpoint(
    context: dg.AssetExecutionContext,
    config: TrainingSettings,
    storage: LocalDataRoot,
    device: DeviceResource,
) -> dg.MaterializeResult:
    layout = storage.layout
    variant = get_variant(context.partition_key)
    cfg = config.apply(variant.train)
    dataset = read_dataset_manifest(storage)
    texts = read_table(layout.training_dataset / "train", ["text"])["text"].to_list()
    dev = device.device()
    context.log.info(f"training {variant.name} on {dev} for up to {cfg.planned_steps()} steps")

    def on_step(step: int, loss: float, tokens: int) -> None:
        context.log.info(f"step {step}/{cfg.planned_steps()} loss {loss:.4f} tokens {tokens}")

    started = time.perf_counter()
    trained = train_and_save(
        variant, cfg, texts, dataset["data_version"], layout.models(variant.name), dev, on_step
    )
    atomic_write_json(
        layout.models(variant.name) / "latest.json",
        {"version": trained.version, "data_version": dataset["data_version"]},
    )
    r = trained.result
    return dg.MaterializeResult(
        metadata={
            "version": trained.version,
            "data_version": dataset["data_version"],
            "device": device.describe(),
            "steps": r.steps,
            "tokens": r.tokens_seen,
            "tokens_per_second": dg.MetadataValue.float(round(r.tokens_per_second, 1)),
            "first_loss": dg.MetadataValue.float(r.losses[0]),
            "final_loss": dg.MetadataValue.float(r.losses[-1]),
            "trainable_parameters": r.trainable_parameters,
            "total_parameters": r.total_parameters,
            "peak_memory_mb": dg.MetadataValue.float(round(r.peak_memory_bytes / 2**20, 1)),
            "train_blocks": trained.train_blocks,
            "seconds": dg.MetadataValue.float(round(time.perf_counter() - started, 2)),
            "loss_curve": dg.MetadataValue.md(loss_table(r.losses)),
            "path": dg.MetadataValue.path(str(trained.path)),
        }
    )


def loss_table(losses: list[float], rows: int = 12) -> str:
    stride = max(1, len(losses) // rows)
    picked = list(range(0, len(losses), stride))
    if picked[-1] != len(losses) - 1:
        picked.append(len(losses) - 1)
    return "| step | loss |\n|---|---|\n" + "\n".join(
        f"| {i + 1} | {losses[i]:.4f} |" for i in picked
    )

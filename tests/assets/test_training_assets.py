"""training_dataset -> finetuned_checkpoint through Dagster, on hand-written clean shards.

Covers what only the asset does: instruction records from the shards' `messages`
column, the loss-curve PNG in the Markdown metadata, resume of a re-materialisation
from models/<variant>/runs/<version>/, and data-parallel training through torchrun.
"""

from __future__ import annotations

import json

import dagster as dg
import polars as pl

from llama_assets.partitions import BATCHES
from llama_assets.tables import write_table
from llama_assets.training.assets import finetuned_checkpoint, training_dataset
from llama_assets.training.checkpointer import read_trainer_state, training_checkpoints
from tests.unit.test_training import synthetic_corpus

CHAT = json.dumps(
    [
        {"role": "user", "content": "what does the model read"},
        {"role": "assistant", "content": "the model reads tokens of text"},
    ]
)
SETTINGS = {"max_steps": 4, "seq_len": 64, "micro_batch_size": 2, "checkpoint_every": 2}


def write_clean_shards(layout) -> None:
    texts = synthetic_corpus(120)
    # Batch one predates the `messages` column; batch two has chat records.
    old = pl.DataFrame(
        {
            "doc_id": [f"a{i}" for i in range(60)],
            "source": "docs",
            "batch": "one",
            "text": texts[:60],
        }
    )
    new = pl.DataFrame(
        {
            "doc_id": [f"b{i}" for i in range(60)],
            "source": "docs",
            "batch": "two",
            "text": texts[60:],
            "messages": [CHAT if i % 2 else None for i in range(60)],
        }
    )
    write_table(old, layout.shards("docs/one"))
    write_table(new, layout.shards("docs/two"))


def train(instance, resources, **overrides):
    config = {"ops": {"finetuned_checkpoint": {"config": {**SETTINGS, **overrides}}}}
    result = dg.materialize(
        [finetuned_checkpoint],
        instance=instance,
        resources=resources,
        partition_key="tiny",
        run_config=config,
    )
    assert result.success
    return result.asset_materializations_for_node("finetuned_checkpoint")[0].metadata


def test_finetune_asset_trains_resumes_and_runs_data_parallel(layout, instance, resources):
    write_clean_shards(layout)
    instance.add_dynamic_partitions(BATCHES, ["docs/one", "docs/two"])
    dataset = dg.materialize([training_dataset], instance=instance, resources=resources)
    meta = dataset.asset_materializations_for_node("training_dataset")[0].metadata
    assert meta["documents"].value == 120
    assert 0 < meta["instruction_documents"].value <= 30

    first = train(instance, resources)
    assert first["steps"].value == 4 and first["resumed_from_step"].value == 0
    assert first["dataset_format"].value.startswith("instruction + text")
    assert first["loss_curve"].value.startswith("![training loss](data:image/png;base64,")
    version = first["version"].value
    path = layout.models("tiny", version)
    assert (path / "merged" / "model.safetensors").exists()
    runs = training_checkpoints(layout.training_run("tiny", version))
    assert [p.name for p in runs] == ["step-000002", "step-000004"]

    # Same variant, settings and data: the re-run resumes from the last checkpoint.
    again = train(instance, resources, log_every=1)
    assert again["version"].value == version
    assert again["resumed_from_step"].value == 4
    assert again["final_loss"].value == first["final_loss"].value
    assert len(read_trainer_state(path)["losses"]) == 4

    # Two torchrun workers (gloo on CPU) on the same data, a new version (2 steps).
    ddp = train(instance, resources, processes=2, max_steps=2, save_merged=False)
    assert ddp["processes"].value == 2 and ddp["steps"].value == 2
    # 2 ranks x micro-batch 2 x 64 tokens per step.
    assert ddp["tokens"].value == 2 * 2 * 2 * 64
    assert ddp["merged_model"].value == "not written"

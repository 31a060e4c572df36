"""One definition of the training settings: the run config is derived from TrainConfig.

(No `from __future__ import annotations` here: Dagster reads the asset's annotations.)
"""

import dataclasses

import dagster as dg
import pytest

from llama_assets.training.assets import TrainingSettings
from llama_assets.training.config import TrainConfig
from llama_assets.training.pipeline import checkpoint_version
from llama_assets.training.variants import VARIANTS


def test_every_train_config_field_is_an_optional_run_config_field():
    config_fields = [f.name for f in dataclasses.fields(TrainConfig)]
    settings = TrainingSettings.model_fields
    assert set(settings) == {*config_fields, "save_merged", "processes"}
    assert all(settings[name].default is None for name in config_fields)
    assert (settings["save_merged"].default, settings["processes"].default) == (True, 1)
    assert issubclass(TrainingSettings, dg.Config)


def test_settings_override_only_what_is_set():
    tiny = VARIANTS["tiny"].train
    assert TrainingSettings().apply(tiny) == tiny
    applied = TrainingSettings(
        max_steps=4, target_modules=["q_proj", "v_proj"], processes=2, save_merged=False
    ).apply(tiny)
    assert applied == dataclasses.replace(tiny, max_steps=4, target_modules=("q_proj", "v_proj"))
    with pytest.raises(ValueError, match="max_steps must be at least 1"):
        TrainingSettings(max_steps=0).apply(tiny)


# Versions computed by the code before TrainingSettings was derived (branch base-layer):
# the same settings must keep naming the same checkpoint, or re-runs would retrain.
GOLDEN_VERSIONS = {
    ("tiny", 0): "e6cfa6da8d4c",
    ("tiny", 1): "6dc7efebb4f6",
    ("tiny", 2): "22fd6296f634",
    ("llama-3.2-1b", 0): "d5e965d03d59",
    ("llama-3.2-1b", 1): "6620d2848be9",
    ("llama-3.2-1b", 2): "44958c737c54",
    ("llama-3.1-8b", 0): "fb42f8afbf74",
    ("llama-3.1-8b", 1): "0a43dc18af63",
    ("llama-3.1-8b", 2): "9696d53f2cd5",
}
SETTINGS = [
    {},
    {"max_steps": 4, "seq_len": 64, "micro_batch_size": 2, "checkpoint_every": 2},
    {
        "max_tokens": 65536,
        "target_modules": ["q_proj", "v_proj"],
        "learning_rate": 1e-3,
        "log_every": 1,
    },
]


def test_checkpoint_versions_are_unchanged_for_the_same_settings():
    for (variant, i), expected in GOLDEN_VERSIONS.items():
        cfg = TrainingSettings(**SETTINGS[i]).apply(VARIANTS[variant].train)
        assert checkpoint_version(VARIANTS[variant], cfg, "data-v1") == expected, (variant, i)


def test_run_config_of_the_cli_is_accepted():
    # The shape `llama-platform run --max-steps/--max-tokens` passes (runner.py).
    @dg.asset(name="finetuned_checkpoint")
    def probe(config: TrainingSettings) -> dg.MaterializeResult:
        cfg = config.apply(VARIANTS["tiny"].train)
        return dg.MaterializeResult(metadata={"steps": cfg.planned_steps()})

    run_config = {"ops": {"finetuned_checkpoint": {"config": {"max_steps": 3, "max_tokens": 1024}}}}
    result = dg.materialize([probe], run_config=run_config)
    metadata = result.asset_materializations_for_node("finetuned_checkpoint")[0].metadata
    assert metadata["steps"].value == 2  # 1024 tokens / 512 per step, below max_steps=3

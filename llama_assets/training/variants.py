"""Model variants: which base model a fine-tune starts from, and how to train it.

A variant is the partition key of `finetuned_checkpoint`. It names where the
base weights come from (an environment variable, so that no path or bucket is
baked into code) and carries the training defaults that fit that model's size.
The `tiny` variant has no weights at all: it is a small Llama built locally
from the architecture fields below, so that the whole platform runs offline on
a laptop CPU in minutes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from llama_assets.training.config import TrainConfig


class MissingWeightsError(RuntimeError):
    """A variant that needs real weights was asked for, but no path is configured."""


@dataclass(frozen=True)
class ModelVariant:
    """A base model and its training defaults.

    The architecture fields are used only when `weights_env` is None (the model
    is built locally with random weights); a real variant's architecture comes
    from the `config.json` next to its weights.
    """

    name: str
    # Env var holding a local directory or s3:// prefix of Hugging Face-format
    # weights + tokenizer. None: build a tiny random-init Llama locally.
    weights_env: str | None
    train: TrainConfig
    # Dtype the base weights are loaded in; LoRA weights stay float32 (peft).
    dtype: str = "float32"
    # Tiny architecture (about 5M parameters with a 4k vocabulary).
    hidden_size: int = 256
    intermediate_size: int = 688
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    max_position_embeddings: int = 512
    # Target size of the locally trained BPE vocabulary.
    vocab_size: int = 4096

    @property
    def is_local(self) -> bool:
        """True when the base model is built here rather than loaded from weights."""
        return self.weights_env is None


VARIANTS: dict[str, ModelVariant] = {
    # Random-init base: LoRA alone can only steer frozen random features (it
    # took validation perplexity only from 4332 to 2732 here), so the tiny
    # variant also trains the embeddings and the output head in full
    # (`modules_to_save`: +2.1M trainable parameters, 9 MB in the adapter;
    # perplexity 4332 -> about 520 at 65k tokens). Budget: 512 steps x 512
    # tokens = 262,144 tokens (perplexity about 69, about a minute on 2 idle
    # cores); small steps learned more per token than 1024-token ones.
    "tiny": ModelVariant(
        name="tiny",
        weights_env=None,
        train=TrainConfig(
            seq_len=256,
            micro_batch_size=2,
            grad_accum_steps=1,
            learning_rate=2e-3,
            warmup_steps=10,
            max_steps=512,
            max_tokens=262_144,
            modules_to_save=("embed_tokens", "lm_head"),
            log_every=16,
            checkpoint_every=128,
            keep_checkpoints=2,
        ),
    ),
    # 16 sequences of 2048 tokens per optimizer step (32k tokens); bf16 weights
    # and gradient checkpointing fit it on one 24 GB GPU.
    "llama-3.2-1b": ModelVariant(
        name="llama-3.2-1b",
        weights_env="LLAMA_WEIGHTS_LLAMA_3_2_1B",
        dtype="bfloat16",
        train=TrainConfig(
            lora_r=16,
            lora_alpha=32,
            seq_len=2048,
            micro_batch_size=4,
            grad_accum_steps=8,
            learning_rate=2e-4,
            warmup_steps=20,
            max_steps=1000,
            gradient_checkpointing=True,
            log_every=10,
            checkpoint_every=100,
            keep_checkpoints=3,
        ),
    ),
    # Same 32k tokens per step with a smaller micro-batch: 16 GB of bf16
    # weights leave less room for activations on an 80 GB GPU.
    "llama-3.1-8b": ModelVariant(
        name="llama-3.1-8b",
        weights_env="LLAMA_WEIGHTS_LLAMA_3_1_8B",
        dtype="bfloat16",
        train=TrainConfig(
            lora_r=16,
            lora_alpha=32,
            seq_len=2048,
            micro_batch_size=2,
            grad_accum_steps=16,
            learning_rate=1e-4,
            warmup_steps=20,
            max_steps=1000,
            gradient_checkpointing=True,
            log_every=10,
            checkpoint_every=100,
            keep_checkpoints=3,
        ),
    ),
}


def get_variant(name: str) -> ModelVariant:
    """The variant called `name`, or a KeyError that lists the known ones."""
    try:
        return VARIANTS[name]
    except KeyError:
        raise KeyError(f"unknown model variant {name!r}; known: {sorted(VARIANTS)}") from None


def weights_path(variant: ModelVariant) -> str | None:
    """Where the variant's base weights live: a local dir or an s3:// prefix.

    None for a locally built variant. Raises MissingWeightsError, naming the
    environment variable to set, when a real variant has none configured.
    """
    if variant.weights_env is None:
        return None
    value = os.environ.get(variant.weights_env, "").strip()
    if not value:
        raise MissingWeightsError(
            f"model variant {variant.name!r} needs Hugging Face-format weights and "
            f"tokenizer, but {variant.weights_env} is not set. Set "
            f"{variant.weights_env} to a local directory (containing config.json, "
            f"*.safetensors and the tokenizer files) or to an s3:// prefix, e.g. "
            f"export {variant.weights_env}=/models/{variant.name}. Nothing is "
            f"downloaded at run time; the 'tiny' variant needs no weights."
        )
    if not value.startswith("s3://") and not (Path(value).expanduser() / "config.json").is_file():
        raise MissingWeightsError(
            f"model variant {variant.name!r}: {variant.weights_env}={value} holds no "
            "config.json (the folder is missing or not a Hugging Face-format model). Point "
            f"{variant.weights_env} at the folder with config.json, *.safetensors and the "
            "tokenizer files."
        )
    return value

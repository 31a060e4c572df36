"""Build a variant's base model and tokenizer, fine-tune it, write the checkpoint.

A locally built variant (``tiny``) trains its tokenizer on the training split
and initialises its base model from a seed; that base is saved inside the
checkpoint (``base/``) so the adapter can never meet a different base model.
A real variant loads weights and tokenizer from the path its environment
variable names; the tokenizer travels with every checkpoint either way.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

from llama_assets.base.atomic import temp_prefix
from llama_assets.base.store import Location, as_location
from llama_assets.training.base_model import build_tiny_llama, load_base_model
from llama_assets.training.checkpointer import (
    BASE_MODEL_DIR,
    load_finetuned,
    load_finetuned_tokenizer,
    local_dir,
    read_trainer_state,
    save_finetuned,
)
from llama_assets.training.config import TrainConfig
from llama_assets.training.data_parallel import data_parallel
from llama_assets.training.dataset import (
    pack_examples,
    pack_token_ids,
    tokenize_texts,
    training_examples,
)
from llama_assets.training.recipe import TrainResult, finetune_lora
from llama_assets.training.report import loss_curve_png
from llama_assets.training.tokenizer import train_bpe_tokenizer
from llama_assets.training.variants import ModelVariant, weights_path

LOSS_CURVE_FILE = "loss_curve.png"


def checkpoint_version(variant: ModelVariant, cfg: TrainConfig, data_version: str) -> str:
    """Same variant, settings and data -> same version (re-runs are idempotent).

    Run-only settings (logging and checkpoint cadence) are not part of it, so
    changing them never strands a run's training checkpoints.
    """
    payload = json.dumps(
        {"variant": variant.name, "config": cfg.identity(), "data": data_version}, sort_keys=True
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def base_model_and_tokenizer(
    variant: ModelVariant, train_texts: Sequence[str], seed: int, device: torch.device
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    if variant.is_local:
        tokenizer = train_bpe_tokenizer(train_texts, vocab_size=variant.vocab_size)
        return build_tiny_llama(variant, tokenizer, seed).to(device), tokenizer
    return load_base_model(variant, weights_path(variant), device=device)


def pack(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], seq_len: int) -> torch.Tensor:
    """Plain documents packed into (n, seq_len) blocks, every token learned."""
    return pack_token_ids(tokenize_texts(tokenizer, texts), seq_len, tokenizer.eos_token_id)


def training_blocks(
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    messages: Sequence[str | None] | None,
    seq_len: int,
) -> torch.Tensor:
    """The blocks a split trains on. With any chat record (`messages`, the dataset's
    column), chat records learn only their assistant turns and plain documents
    everything ((n, 2, seq_len) ids and labels); otherwise plain packing."""
    if messages is not None and any(m is not None for m in messages):
        return pack_examples(training_examples(tokenizer, texts, messages), seq_len)
    return pack(tokenizer, texts, seq_len)


@dataclass
class TrainedCheckpoint:
    version: str
    path: Location
    result: TrainResult
    train_blocks: int
    manifest: dict


class InsufficientData(ValueError):
    """The corpus is too small to train on: retrying cannot help, more data can."""


def train_and_save(
    variant: ModelVariant,
    cfg: TrainConfig,
    train_texts: Sequence[str],
    data_version: str,
    out_root: Location | Path,
    device: torch.device,
    on_step: Callable[[int, float, int], None] | None = None,
    run_dir: Location | Path | None = None,
    merge: bool = True,
    log: Callable[[str], None] | None = None,
    messages: Sequence[str | None] | None = None,
) -> TrainedCheckpoint:
    """Train `variant` on `train_texts` and write `out_root/<version>/`.

    With `run_dir` (the layout's `training_run(variant, version)`), training
    checkpoints go there and a run with the same variant, settings and data
    resumes from the newest valid one. `messages` (the split's column, one
    entry per text) makes chat records train on their assistant turns only.
    """
    version = checkpoint_version(variant, cfg, data_version)
    out_root = as_location(out_root)
    base, tokenizer = base_model_and_tokenizer(variant, train_texts, cfg.seed, device)
    blocks = training_blocks(tokenizer, train_texts, messages, cfg.seq_len)
    if blocks.shape[0] == 0:
        raise InsufficientData(
            f"the training split packs into no block of {cfg.seq_len} tokens "
            f"({len(train_texts)} documents): ingest more text, then run again"
        )
    # Beside the models on a local root, hidden, so a killed run leaves nothing a
    # reader lists and collect_stale_temps removes it (never the system temp folder);
    # the process's temp folder when the models are on S3.
    scratch = out_root.parent.local
    if scratch is not None:
        scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(
        dir=scratch, prefix=temp_prefix("training"), suffix=".tmp"
    ) as tmp:
        base_dir = None
        # Under data parallelism only rank 0 writes (every rank holds the same weights).
        writer = data_parallel()[0] == 0
        if variant.is_local and writer:
            # Saved before training: fine-tuning injects adapters into the base in place.
            base_dir = Path(tmp) / BASE_MODEL_DIR
            base.save_pretrained(str(base_dir), safe_serialization=True)
        result = finetune_lora(
            base, blocks, cfg, device, on_step=on_step, checkpoint_dir=run_dir, log=log
        )
        state = {
            **result.trainer_state(),
            "variant": variant.name,
            "version": version,
            "data_version": data_version,
            "base_model": BASE_MODEL_DIR if variant.is_local else weights_path(variant),
            "train_blocks": int(blocks.shape[0]),
        }
        out = out_root / version
        if not writer:
            return TrainedCheckpoint(version, out, result, int(blocks.shape[0]), {})
        png = loss_curve_png(result.losses, result.resumed_from_step)
        manifest = save_finetuned(
            result.model,
            tokenizer,
            out,
            state,
            base_model_dir=base_dir,
            merge=merge,
            extra_files={LOSS_CURVE_FILE: png},
        )
    return TrainedCheckpoint(version, out, result, int(blocks.shape[0]), manifest)


def load_checkpoint_base(
    variant: ModelVariant, checkpoint: Location | Path, device: torch.device
) -> PreTrainedModel:
    """A fresh copy of the base model the checkpoint was trained on."""
    checkpoint = local_dir(checkpoint)
    if variant.is_local:
        model = AutoModelForCausalLM.from_pretrained(str(checkpoint / BASE_MODEL_DIR))
        return model.to(device).eval()
    model, _ = load_base_model(variant, read_trainer_state(checkpoint)["base_model"], device=device)
    return model.eval()


def load_checkpoint(
    variant: ModelVariant, checkpoint: Location | Path, device: torch.device
) -> tuple[PreTrainedModel, PreTrainedModel, PreTrainedTokenizerBase]:
    """(base, fine-tuned, tokenizer); two independent copies of the base weights
    (a checkpoint on S3 is read from its verified local copy)."""
    checkpoint = local_dir(checkpoint)
    tokenizer = load_finetuned_tokenizer(checkpoint)
    base = load_checkpoint_base(variant, checkpoint, device)
    finetuned = load_finetuned(checkpoint, load_checkpoint_base(variant, checkpoint, device))
    return base, finetuned.to(device).eval(), tokenizer

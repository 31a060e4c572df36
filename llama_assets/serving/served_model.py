"""The model a backend serves: a checkpoint's merged model, through the platform's loading.

A checkpoint written by the fine-tune (`models/<variant>/<version>/`) is verified
against its sha256 manifest first. Its `merged/` folder (base + adapter, plain
transformers, with the tokenizer) is what the CPU backend serves; a checkpoint
saved without one is merged here from its base and adapter (`load_checkpoint`),
the same way the eval loads it.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

from llama_assets.training.checkpointer import (
    MERGED_DIR,
    load_finetuned_tokenizer,
    local_dir,
    verify_manifest,
)
from llama_assets.training.pipeline import load_checkpoint
from llama_assets.training.variants import get_variant


class ModelNotServable(RuntimeError):
    """The checkpoint cannot be served (missing, corrupt, unknown variant)."""


def load_served_model(
    checkpoint: Path, variant: str, device: torch.device | str = "cpu"
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """(merged model in eval mode, tokenizer) of one checkpoint (on an S3 data root,
    a verified local copy of it)."""
    checkpoint = local_dir(checkpoint) if not isinstance(checkpoint, str) else Path(checkpoint)
    if not checkpoint.is_dir():
        raise ModelNotServable(f"{checkpoint} does not exist: train the variant first")
    verify_manifest(checkpoint)
    tokenizer = load_finetuned_tokenizer(checkpoint)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    merged = checkpoint / MERGED_DIR
    if merged.is_dir():
        # transformers 5: dtype="auto" keeps the dtype the merged model was saved in.
        model = AutoModelForCausalLM.from_pretrained(str(merged), local_files_only=True)
        return model.to(device).eval(), tokenizer
    _, finetuned, tokenizer = load_checkpoint(
        get_variant(variant), checkpoint, torch.device(device)
    )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return finetuned.merge_and_unload().eval(), tokenizer

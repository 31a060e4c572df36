"""Base models for fine-tuning: a tiny Llama built here, or real weights from disk.

The platform is offline by design, so the default base is a small
Llama-architecture model with random weights, built from the variant's
architecture fields and sized to the locally trained tokenizer. Real variants
load Hugging Face-format weights and tokenizer from a path the user configures
(see `variants.weights_path`); nothing is fetched from the Hub.
"""

from __future__ import annotations

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from llama_assets.training.variants import ModelVariant
from resources.model_store import local_model_dir


def tiny_llama_config(variant: ModelVariant, tokenizer: PreTrainedTokenizerBase) -> LlamaConfig:
    """The LlamaConfig of a locally built variant, with vocab and special ids from `tokenizer`."""
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=variant.hidden_size,
        intermediate_size=variant.intermediate_size,
        num_hidden_layers=variant.num_hidden_layers,
        num_attention_heads=variant.num_attention_heads,
        num_key_value_heads=variant.num_key_value_heads,
        max_position_embeddings=variant.max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        # Untied, so the input embeddings and output head can be trained as
        # separate modules (`modules_to_save`) without peft tying surprises.
        tie_word_embeddings=False,
    )


def build_tiny_llama(
    variant: ModelVariant, tokenizer: PreTrainedTokenizerBase, seed: int
) -> LlamaForCausalLM:
    """A randomly initialised Llama for `variant`, identical for the same seed.

    The global torch RNG is left as it was: initialisation draws from a forked
    generator state seeded with `seed`.
    """
    if not variant.is_local:
        raise ValueError(f"variant {variant.name!r} has real weights; use load_base_model")
    config = tiny_llama_config(variant, tokenizer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    return model.eval()


def load_base_model(
    variant: ModelVariant,
    path: str,
    dtype: torch.dtype | str | None = None,
    device: torch.device | str = "cpu",
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load Hugging Face-format weights and tokenizer from a local directory or
    an ``s3://`` prefix (mirrored once under the data root's ``cache/models/``).

    `dtype` defaults to the variant's (bf16 for the real Llamas). Only local
    files are read (`local_files_only`), so a wrong path fails at once instead
    of trying the Hub. A tokenizer without a pad token (Llama 3) gets eos as
    pad, which is harmless here because training blocks are packed unpadded.
    """
    path = local_model_dir(path)  # an s3:// prefix is mirrored to the local cache once
    torch_dtype = dtype if dtype is not None else variant.dtype
    if isinstance(torch_dtype, str):
        torch_dtype = getattr(torch, torch_dtype)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    # transformers 5.x: `dtype=` replaces `torch_dtype=`.
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype, local_files_only=True)
    return model.to(device).eval(), tokenizer

"""One rank of the data-parallel test: `torchrun --nproc_per_node 2 -m tests.unit.ddp_child OUT`.

Initialises a gloo process group, trains SMALL on the synthetic corpus with
DDP_CONFIG (checkpoints under OUT/run), and rank 0 writes its losses and
trainable weights to OUT for the test to compare with a one-process run.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import torch.distributed as dist
from safetensors.torch import save_file

from llama_assets.training.base_model import build_tiny_llama
from llama_assets.training.checkpointer import trainable_state
from llama_assets.training.dataset import pack_token_ids, tokenize_texts
from llama_assets.training.recipe import finetune_lora
from llama_assets.training.tokenizer import train_bpe_tokenizer
from tests.unit.test_training import SHORT, SMALL, synthetic_corpus

# Per-rank micro-batch 2 on 2 ranks: the same 4 rows per micro-batch as SHORT on one process.
# No dropout, so the two runs do the same arithmetic (dropout masks are drawn per rank).
DDP_CONFIG = dataclasses.replace(
    SHORT, micro_batch_size=2, max_steps=4, lora_dropout=0.0, checkpoint_every=2
)


def main() -> int:
    out = Path(sys.argv[1])
    dist.init_process_group("gloo")
    tokenizer = train_bpe_tokenizer(synthetic_corpus(), vocab_size=SMALL.vocab_size)
    blocks = pack_token_ids(
        tokenize_texts(tokenizer, synthetic_corpus()), SHORT.seq_len, tokenizer.eos_token_id
    )
    result = finetune_lora(
        build_tiny_llama(SMALL, tokenizer, seed=0),
        blocks,
        DDP_CONFIG,
        "cpu",
        checkpoint_dir=out / "run",
    )
    rank, world = dist.get_rank(), dist.get_world_size()
    if rank == 0:
        save_file(trainable_state(result.model), str(out / "trainable.safetensors"))
        (out / "result.json").write_text(
            json.dumps(
                {
                    "world": world,
                    "losses": result.losses,
                    "tokens_seen": result.tokens_seen,
                    "steps": result.steps,
                }
            )
        )
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A training process for the resume tests to kill: `python -m tests.unit.training_child`.

Trains the test suite's SMALL model on its synthetic corpus with SHORT's
settings into the checkpoint directory given, printing `STEP n` after every
optimizer step. At step `--pause-at` it stops to be killed: `hang` sleeps
until SIGKILL arrives; `linger` sleeps a few seconds, during which a SIGTERM
makes the loop checkpoint that step and raise TrainingPreempted, which exits 0.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

from llama_assets.training.base_model import build_tiny_llama
from llama_assets.training.preemption import TrainingPreempted
from llama_assets.training.recipe import finetune_lora
from tests.unit.test_training import SHORT, SMALL, synthetic_corpus


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("checkpoint_dir", type=Path)
    parser.add_argument("--pause-at", type=int, required=True)
    parser.add_argument("--mode", choices=("hang", "linger"), required=True)
    parser.add_argument("--checkpoint-every", type=int, default=0)
    args = parser.parse_args()

    from llama_assets.training.dataset import pack_token_ids, tokenize_texts
    from llama_assets.training.tokenizer import train_bpe_tokenizer

    tokenizer = train_bpe_tokenizer(synthetic_corpus(), vocab_size=SMALL.vocab_size)
    blocks = pack_token_ids(
        tokenize_texts(tokenizer, synthetic_corpus()), SHORT.seq_len, tokenizer.eos_token_id
    )
    cfg = dataclasses.replace(SHORT, log_every=1, checkpoint_every=args.checkpoint_every)

    def on_step(step: int, loss: float, tokens: int) -> None:
        print(f"STEP {step}", flush=True)
        if step == args.pause_at:
            time.sleep(600 if args.mode == "hang" else 3)

    try:
        finetune_lora(
            build_tiny_llama(SMALL, tokenizer, seed=0),
            blocks,
            cfg,
            "cpu",
            on_step=on_step,
            checkpoint_dir=args.checkpoint_dir,
        )
    except TrainingPreempted as exc:
        print(f"PREEMPTED {exc.step}", flush=True)
        return 0
    print("DONE", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The micro-batch stream: a fixed order per (seed, epoch), resumable at any step.

The order of an epoch is a pure function of (seed, epoch), and the position
in it lives in `LoopState`, so a resumed run continues with exactly the
blocks an uninterrupted run would have seen next.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from llama_assets.training.config import TrainConfig
from llama_assets.training.data_parallel import data_parallel
from llama_assets.training.state import LoopState


def epoch_order(n_blocks: int, seed: int, epoch: int) -> torch.Tensor:
    """The order blocks are visited in during `epoch`: a function of (seed, epoch) only."""
    generator = torch.Generator().manual_seed((seed * 1_000_003 + epoch) % 2**63)
    return torch.randperm(n_blocks, generator=generator)


def micro_batches(
    blocks: torch.Tensor, state: LoopState, cfg: TrainConfig
) -> Iterator[torch.Tensor]:
    """Endless stream of full micro-batches, continuing from `state`'s data position.

    Epochs follow one another without a short batch at the seam, so every
    optimizer step sees exactly `cfg.tokens_per_step` tokens. The stream is
    lazy: `state.offset` only moves when a micro-batch is taken, so after an
    optimizer step it is exactly the position a resume must start from.
    `blocks` is (n, seq_len) token ids, or (n, 2, seq_len) ids and labels.
    """
    n = blocks.shape[0]
    # Under data parallelism each micro-batch is the global one; every rank takes its slice.
    size = state.split(cfg)[0] * data_parallel()[1]
    order = epoch_order(n, cfg.seed, state.epoch)
    while True:
        picked: list[torch.Tensor] = []
        wanted = size
        while wanted:
            if state.offset == n:
                state.epoch, state.offset = state.epoch + 1, 0
                order = epoch_order(n, cfg.seed, state.epoch)
            take = order[state.offset : state.offset + wanted]
            picked.append(take)
            state.offset += len(take)
            wanted -= len(take)
        yield blocks[torch.cat(picked)]


def inputs_and_labels(batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(input ids, labels) of a micro-batch. Packed text learns every token, so its labels
    are its inputs (the model shifts them by one); instruction blocks carry their labels,
    -100 on prompt tokens."""
    return (batch, batch) if batch.ndim == 2 else (batch[:, 0], batch[:, 1])

"""Out of GPU memory in a step: halve the micro-batch, double accumulation, retry the step.

Tokens per optimizer step stay the same, so the run computes the same step with
less activation memory. The retry restarts the step from its first micro-batch
(data position and torch RNG rewound), so it sees the same blocks; the new
split is kept in `LoopState` (and so in every later checkpoint).
"""

from __future__ import annotations

import gc
from collections.abc import Callable

import torch

from llama_assets.training.config import TrainConfig
from llama_assets.training.data_parallel import data_parallel
from llama_assets.training.rng import set_torch_rng_state, torch_rng_state
from llama_assets.training.state import LoopState


def step_halving_on_oom(
    step: Callable[[], float],
    optimizer: torch.optim.Optimizer,
    state: LoopState,
    cfg: TrainConfig,
    device: torch.device,
    on_halved: Callable[[str], None],
) -> float:
    """`step()`, retried with half the micro-batch and twice the accumulation on OOM.

    Before each retry `on_halved(message)` is called; the caller restarts its
    micro-batch stream there (from the rewound position, at the new size).
    Raises the error when the micro-batch cannot be halved, or under data
    parallelism (the ranks would have to agree on the new split).
    """
    while True:
        position = (state.epoch, state.offset)
        rng = torch_rng_state(device)
        try:
            return step()
        except torch.cuda.OutOfMemoryError:
            micro, accum = state.split(cfg)
            if micro == 1 or micro % 2 or data_parallel()[1] > 1:
                raise
            optimizer.zero_grad(set_to_none=True)
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
            state.epoch, state.offset = position
            set_torch_rng_state(rng, device)
            state.micro_batch_size, state.grad_accum_steps = micro // 2, accum * 2
            state.oom_retries += 1
            on_halved(
                f"CUDA out of memory at step {state.step + 1}: micro-batch {micro} -> "
                f"{state.micro_batch_size}, accumulation -> {state.grad_accum_steps}; retrying"
            )

"""LoopState: all progress of the training loop, saved in every training checkpoint."""

from __future__ import annotations

from dataclasses import dataclass, field

from llama_assets.training.config import TrainConfig


@dataclass
class LoopState:
    """All progress of the training loop; saved in every training checkpoint.

    Together with the optimizer, scheduler and RNG states (saved beside it) this
    is everything a resume needs; the data position is `epoch` and `offset`.
    The micro-batch split is here, not only in the config, because an
    out-of-memory retry may have changed it (same tokens per step).
    """

    step: int = 0  # optimizer steps done
    tokens_seen: int = 0
    epoch: int = 0  # current pass over the training blocks
    offset: int = 0  # next position within this epoch's order
    losses: list[float] = field(default_factory=list)  # mean loss of each optimizer step
    micro_batch_size: int | None = None  # None: the config's
    grad_accum_steps: int | None = None
    oom_retries: int = 0

    def split(self, cfg: TrainConfig) -> tuple[int, int]:
        """(micro-batch size, accumulation steps) now: the config's unless an OOM retry
        changed them."""
        return (
            self.micro_batch_size or cfg.micro_batch_size,
            self.grad_accum_steps or cfg.grad_accum_steps,
        )

    def record_step(self, loss: float, tokens: int) -> float:
        """Count one optimizer step of `tokens` tokens and its mean loss; returns the loss."""
        self.step += 1
        self.tokens_seen += tokens
        self.losses.append(float(loss))
        return self.losses[-1]

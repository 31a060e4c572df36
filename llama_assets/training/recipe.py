"""LoRA fine-tuning recipe: `setup`, `train`, `save_checkpoint`, read top to bottom.

The loop is written out (data, forward, loss, backward, clip, optimizer,
schedule, checkpoint) rather than delegated to the Hugging Face Trainer, so
that every step is visible and the same code runs on CPU and GPU, on one
process or under torchrun. All of the loop's progress lives in `LoopState`,
and the data order of an epoch is a pure function of (seed, epoch), so a
training checkpoint (checkpointer.py) lets a killed run resume to the same
losses, step for step, as a run that was never interrupted.

What is not the loop lives beside it, each in its own module: the settings
(config.py), the micro-batch stream (batches.py), checkpoint I/O
(checkpointer.py), RNG seeding and states (rng.py), SIGTERM (preemption.py),
OOM step halving (oom.py), DDP (data_parallel.py), device figures
(device.py) and MFU (mfu.py).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, PeftModel, TaskType, get_peft_model
from transformers import PreTrainedModel, get_cosine_schedule_with_warmup

from llama_assets.base.store import Location
from llama_assets.training.batches import inputs_and_labels, micro_batches
from llama_assets.training.checkpointer import (
    latest_valid_checkpoint,
    load_training_checkpoint,
    save_training_checkpoint,
)
from llama_assets.training.config import TrainConfig
from llama_assets.training.data_parallel import (
    any_rank,
    data_parallel,
    mean_over_ranks,
    rank_slice,
    wrap_model,
)
from llama_assets.training.device import (
    autocast_for,
    peak_memory_bytes,
    reset_peak_memory,
    synchronize,
)
from llama_assets.training.mfu import model_flops_utilisation
from llama_assets.training.oom import step_halving_on_oom
from llama_assets.training.preemption import TrainingPreempted, sigterm_flag
from llama_assets.training.rng import forked_rng, seed_all
from llama_assets.training.state import LoopState

# Adam betas of Llama and nanoGPT: a shorter second-moment memory is steadier for LMs.
ADAM_BETAS = (0.9, 0.95)


def finetune_lora(
    model: PreTrainedModel,
    train_blocks: torch.Tensor,
    cfg: TrainConfig,
    device: torch.device | str,
    on_step: Callable[[int, float, int], None] | None = None,
    checkpoint_dir: Location | Path | None = None,
    log: Callable[[str], None] | None = None,
) -> TrainResult:
    """Fine-tune `model` with LoRA on packed `train_blocks` until the budget is spent.

    `model` is modified in place (adapters are injected into it): evaluate the
    base before calling this. `on_step(step, loss, tokens_seen)` is called every
    `cfg.log_every` optimizer steps and after the last one. Deterministic for a
    given seed on a given device: LoRA init, dropout and data order all derive
    from `cfg.seed`, and the caller's RNG states are restored afterwards.

    With `checkpoint_dir`, the run resumes from the newest valid checkpoint
    there (corrupt ones are skipped), writes one every `cfg.checkpoint_every`
    steps and at the end (keeping the newest `cfg.keep_checkpoints`), and on
    SIGTERM writes one and raises `TrainingPreempted`.
    """
    recipe = LoRAFinetuneRecipe(cfg, device, checkpoint_dir, on_step=on_step, log=log)
    with forked_rng(recipe.device), sigterm_flag(enabled=checkpoint_dir is not None) as sigterm:
        recipe.setup(model, train_blocks, stop=sigterm)
        return recipe.train()


class LoRAFinetuneRecipe:
    """One LoRA fine-tune of a causal LM on packed blocks: `setup`, then `train`."""

    def __init__(
        self,
        cfg: TrainConfig,
        device: torch.device | str,
        checkpoint_dir: Location | Path | None = None,
        on_step: Callable[[int, float, int], None] | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.device = torch.device(device)
        self.checkpoint_dir = checkpoint_dir
        self.on_step = on_step
        self.log = log or (lambda message: None)
        self.total_steps = cfg.planned_steps()

    def setup(
        self,
        model: PreTrainedModel,
        blocks: torch.Tensor,
        stop: threading.Event | None = None,
    ) -> None:
        """Adapters, optimizer, schedule and data stream; then the newest valid checkpoint.

        `model` gets LoRA adapters in place. `stop`, once set (by SIGTERM, on any
        rank), makes `train` checkpoint the step it has just finished and stop.
        """
        cfg = self.cfg
        check_blocks(blocks, cfg)
        seed_all(cfg.seed)
        self.model = prepare_lora_model(model, cfg, self.device)
        self.train_model = wrap_model(self.model, self.device, cfg.seed)
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            self.trainable, lr=cfg.learning_rate, weight_decay=cfg.weight_decay, betas=ADAM_BETAS
        )
        self.scheduler = get_cosine_schedule_with_warmup(
            self.optimizer,
            num_warmup_steps=min(cfg.warmup_steps, self.total_steps),
            num_training_steps=self.total_steps,
        )
        self.state = LoopState(
            micro_batch_size=cfg.micro_batch_size, grad_accum_steps=cfg.grad_accum_steps
        )
        self.skipped: list[str] = []
        if self.checkpoint_dir is not None:
            self._resume_from_latest()
        self.resumed_from = self.state.step
        self.checkpoints_written = 0
        self.stop = stop or threading.Event()
        self.blocks = blocks
        self.batches = micro_batches(blocks, self.state, cfg)

    def _resume_from_latest(self) -> None:
        found, self.skipped = latest_valid_checkpoint(self.checkpoint_dir)
        for problem in self.skipped:
            self.log(f"skipping corrupt checkpoint: {problem}")
        if found is not None:
            self.state = load_training_checkpoint(
                found, self.model, self.optimizer, self.scheduler, self.cfg, self.device
            )
            self.log(f"resuming from {found.name} (step {self.state.step}/{self.total_steps})")

    def train(self) -> TrainResult:
        """Step until the budget is spent; checkpoint periodically, at the end and on SIGTERM."""
        reset_peak_memory(self.device)
        self.model.train()
        started = time.perf_counter()
        while self.state.step < self.total_steps:
            # data -> forward -> loss -> backward -> clip -> optimizer -> schedule
            loss = step_halving_on_oom(
                self.train_step, self.optimizer, self.state, self.cfg, self.device, self._restart
            )
            self._report(loss)
            # -> checkpoint: periodic, at the end, and when the node is being reclaimed.
            preempted = any_rank(self.stop.is_set(), self.device)
            if self._checkpoint_due(preempted):
                saved = self.save_checkpoint()
                if preempted:
                    raise TrainingPreempted(self.state.step, saved)
        synchronize(self.device)
        seconds = time.perf_counter() - started
        self.model.eval()
        return self._result(seconds)

    def train_step(self) -> float:
        """One optimizer step over the accumulated micro-batches; returns its mean loss.

        Labels equal to -100 (prompt tokens of instruction data) carry no loss.
        Under DDP each rank computes its slice of the global micro-batch, DDP
        averages the gradients, and the loss returned is the mean over ranks.
        """
        accum = self.state.split(self.cfg)[1]
        self.optimizer.zero_grad(set_to_none=True)
        step_loss = torch.zeros((), device=self.device)
        for _ in range(accum):
            batch = rank_slice(next(self.batches)).to(self.device, non_blocking=True)
            input_ids, labels = inputs_and_labels(batch)
            with autocast_for(self.device):
                loss = self.train_model(input_ids=input_ids, labels=labels, use_cache=False).loss
            # Micro-batches are equal in size, so equal weights give the step's token mean.
            loss = loss / accum
            loss.backward()
            step_loss += loss.detach()
        torch.nn.utils.clip_grad_norm_(self.trainable, self.cfg.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        tokens = self.cfg.tokens_per_step * data_parallel()[1]
        return self.state.record_step(mean_over_ranks(step_loss), tokens)

    def save_checkpoint(self) -> Location:
        """Write `step-NNNNNN/` under the run directory: see checkpointer.py for its contents."""
        saved = save_training_checkpoint(
            self.checkpoint_dir,
            self.model,
            self.optimizer,
            self.scheduler,
            self.state,
            self.cfg,
            self.device,
        )
        self.checkpoints_written += 1
        return saved

    def _restart(self, message: str) -> None:
        """After an OOM halving: restart the stream at the rewound position, new size."""
        self.log(message)
        self.batches = micro_batches(self.blocks, self.state, self.cfg)

    def _report(self, loss: float) -> None:
        step = self.state.step
        if self.on_step is not None and (
            step % self.cfg.log_every == 0 or step == self.total_steps
        ):
            self.on_step(step, loss, self.state.tokens_seen)

    def _checkpoint_due(self, preempted: bool) -> bool:
        every, step = self.cfg.checkpoint_every, self.state.step
        return self.checkpoint_dir is not None and (
            preempted or step == self.total_steps or bool(every and step % every == 0)
        )

    def _result(self, seconds: float) -> TrainResult:
        cfg, state = self.cfg, self.state
        new_tokens = (state.step - self.resumed_from) * cfg.tokens_per_step * data_parallel()[1]
        tokens_per_second = new_tokens / seconds if seconds > 0 else 0.0
        micro_batch_size, grad_accum_steps = state.split(cfg)
        return TrainResult(
            model=self.model,
            config=cfg,
            losses=state.losses,
            steps=state.step,
            tokens_seen=state.tokens_seen,
            seconds=seconds,
            tokens_per_second=tokens_per_second,
            peak_memory_bytes=peak_memory_bytes(self.device),
            trainable_parameters=sum(p.numel() for p in self.trainable),
            total_parameters=sum(p.numel() for p in self.model.parameters()),
            device=str(self.device),
            resumed_from_step=self.resumed_from,
            skipped_checkpoints=self.skipped,
            checkpoints_written=self.checkpoints_written,
            oom_retries=state.oom_retries,
            micro_batch_size=micro_batch_size,
            grad_accum_steps=grad_accum_steps,
            mfu=model_flops_utilisation(self.model, cfg.seq_len, tokens_per_second, self.device),
        )


def check_blocks(blocks: torch.Tensor, cfg: TrainConfig) -> None:
    """Raise ValueError unless `blocks` is a non-empty (n, seq_len) or (n, 2, seq_len) tensor."""
    if blocks.ndim not in (2, 3) or blocks.shape[0] == 0:
        raise ValueError(
            f"train_blocks must be a non-empty (n, seq_len) or (n, 2, seq_len) tensor, "
            f"got {tuple(blocks.shape)}"
        )
    if blocks.shape[-1] != cfg.seq_len:
        raise ValueError(f"blocks are {blocks.shape[-1]} tokens long, cfg.seq_len is {cfg.seq_len}")


def prepare_lora_model(model: PreTrainedModel, cfg: TrainConfig, device: torch.device) -> PeftModel:
    """Move `model` to `device` and wrap it with LoRA adapters (modifies `model` in place)."""
    model.to(device)
    model.config.use_cache = False  # no KV cache while training
    if cfg.gradient_checkpointing:
        model.activation_checkpointing_enable(
            activation_checkpointing_kwargs={"use_reentrant": False}
        )
        # Frozen embeddings output no grad; checkpointed blocks need a graph to recompute into.
        model.enable_input_require_grads()
    lora = LoraConfig(
        task_type=TaskType.CAUSAL_LM,
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=list(cfg.target_modules),
        modules_to_save=list(cfg.modules_to_save) or None,
        bias="none",
    )
    return get_peft_model(model, lora)


@dataclass
class TrainResult:
    """The fine-tuned model and what the run measured."""

    model: PeftModel
    config: TrainConfig
    losses: list[float]
    steps: int
    tokens_seen: int
    seconds: float
    tokens_per_second: float
    # Peak GPU memory allocated by torch during training on CUDA; otherwise
    # the process's peak RSS so far (includes everything loaded before).
    peak_memory_bytes: int
    trainable_parameters: int
    total_parameters: int
    device: str
    # Resume and fault figures: the step this run started from (0: fresh), the
    # corrupt checkpoints skipped on the way, OOM retries and the final split.
    resumed_from_step: int = 0
    skipped_checkpoints: list[str] = field(default_factory=list)
    checkpoints_written: int = 0
    oom_retries: int = 0
    micro_batch_size: int = 0
    grad_accum_steps: int = 0
    # Model FLOPs utilisation on CUDA when the GPU's peak is known, else None.
    mfu: float | None = None

    def trainer_state(self) -> dict[str, Any]:
        """What `trainer_state.json` records: config, losses, budget used, timings."""
        return {
            "config": self.config.to_dict(),
            "losses": self.losses,
            "steps": self.steps,
            "tokens_seen": self.tokens_seen,
            "seconds": self.seconds,
            "tokens_per_second": self.tokens_per_second,
            "peak_memory_bytes": self.peak_memory_bytes,
            "trainable_parameters": self.trainable_parameters,
            "total_parameters": self.total_parameters,
            "device": self.device,
            "resumed_from_step": self.resumed_from_step,
            "skipped_checkpoints": self.skipped_checkpoints,
            "checkpoints_written": self.checkpoints_written,
            "oom_retries": self.oom_retries,
            "micro_batch_size": self.micro_batch_size,
            "grad_accum_steps": self.grad_accum_steps,
            "mfu": self.mfu,
        }

"""LoRA fine-tuning: one readable loop, and checkpoints that prove their integrity.

The loop is written out (data, forward, loss, backward, clip, optimizer,
schedule, checkpoint) rather than delegated to the Hugging Face Trainer, so
that every step is visible and the same code runs on CPU and GPU. All the
loop's progress lives in `LoopState`, and the data order of an epoch is a pure
function of (seed, epoch), so a periodic training checkpoint (`step-NNNNNN/`:
trainable weights, optimizer, scheduler, loop state with the data position, and
the Python, NumPy, torch CPU and CUDA RNG states) lets a killed run resume to
the same losses, step for step, as a run that was never interrupted.

Faults handled inside the loop: SIGTERM (a spot node being reclaimed) writes a
checkpoint and raises `TrainingPreempted`; a CUDA out-of-memory error halves
the micro-batch, doubles accumulation (same tokens per step) and retries the
step from its first micro-batch.

A saved fine-tune is a directory with the adapter, the merged model, the
tokenizer, `trainer_state.json` and a `manifest.json` of sha256 sums. Both kinds
of directory are written into a temporary sibling, fsynced and renamed into
place, so readers never see a half-written one, and they are verified against
their manifest before they are loaded.
"""

from __future__ import annotations

import contextlib
import gc
import json
import random
import re
import resource
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from peft import LoraConfig, PeftModel, TaskType, get_peft_model
from safetensors.torch import load_file, save_file
from transformers import (
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    get_cosine_schedule_with_warmup,
)

from llama_assets.base.atomic import sha256_file, staged_dir

# Every linear projection of a Llama block: attention and MLP.
LLAMA_PROJECTIONS: tuple[str, ...] = (
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
)

ADAPTER_DIR = "adapter"
MERGED_DIR = "merged"  # base + adapter merged (merge_and_unload): plain transformers
BASE_MODEL_DIR = "base"  # optional copy of the base model (locally built variants)
TOKENIZER_DIR = "tokenizer"
TRAINER_STATE_FILE = "trainer_state.json"
MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = 1
# Adam betas of Llama and nanoGPT: a shorter second-moment memory is steadier for LMs.
ADAM_BETAS = (0.9, 0.95)


# A training checkpoint: one directory per optimizer step, under the run's folder.
TRAINING_CHECKPOINT_PREFIX = "step-"
_STEP_DIR = re.compile(r"^step-(\d{6,})$")
TRAINABLE_FILE = "trainable.safetensors"
OPTIMIZER_FILE = "optimizer.pt"
RNG_FILE = "rng_state.pt"
LOOP_STATE_FILE = "loop_state.json"
# TrainConfig fields that change how a run is operated but not what it computes:
# a resume may change them, and they are not part of a checkpoint's version.
RUN_ONLY_FIELDS = frozenset({"log_every", "checkpoint_every", "keep_checkpoints"})


class CorruptCheckpointError(RuntimeError):
    """A checkpoint's files do not match its manifest (or it has none)."""


class TrainingPreempted(RuntimeError):
    """SIGTERM arrived: a checkpoint was written at `step`; a retry resumes from it."""

    def __init__(self, step: int, checkpoint: Path | None):
        self.step = step
        self.checkpoint = checkpoint
        where = f"checkpoint {checkpoint}" if checkpoint else "no checkpoint directory"
        super().__init__(f"training preempted by SIGTERM after step {step}; {where}")


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters and budget of one LoRA fine-tune. Frozen: use dataclasses.replace.

    Training stops at whichever budget comes first: `max_steps` optimizer steps
    or `max_tokens` training tokens (whole steps only, never over budget).
    """

    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    target_modules: tuple[str, ...] = LLAMA_PROJECTIONS
    # Modules trained in full and saved with the adapter (e.g. embeddings and
    # lm_head when the base model is random-init and has nothing to adapt).
    modules_to_save: tuple[str, ...] = ()
    seq_len: int = 256
    micro_batch_size: int = 8
    grad_accum_steps: int = 1
    learning_rate: float = 2e-3
    weight_decay: float = 0.0
    warmup_steps: int = 10
    max_steps: int = 200
    max_tokens: int | None = None
    max_grad_norm: float = 1.0
    gradient_checkpointing: bool = False
    seed: int = 0
    log_every: int = 10
    # A full training checkpoint every N optimizer steps (0: only at the end and
    # on SIGTERM), keeping the newest `keep_checkpoints` of them.
    checkpoint_every: int = 0
    keep_checkpoints: int = 2

    def __post_init__(self) -> None:
        for name in (
            "lora_r",
            "seq_len",
            "micro_batch_size",
            "grad_accum_steps",
            "max_steps",
            "log_every",
            "keep_checkpoints",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.checkpoint_every < 0:
            raise ValueError(f"checkpoint_every must be >= 0, got {self.checkpoint_every}")
        if self.max_tokens is not None and self.max_tokens < self.tokens_per_step:
            raise ValueError(
                f"max_tokens={self.max_tokens} is less than one optimizer step "
                f"({self.tokens_per_step} tokens = seq_len x micro_batch_size x grad_accum_steps)"
            )

    @property
    def tokens_per_step(self) -> int:
        """Training tokens consumed by one optimizer step."""
        return self.seq_len * self.micro_batch_size * self.grad_accum_steps

    def planned_steps(self) -> int:
        """Optimizer steps this config will run: the lower of the two budgets."""
        if self.max_tokens is None:
            return self.max_steps
        return min(self.max_steps, self.max_tokens // self.tokens_per_step)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def identity(self) -> dict[str, Any]:
        """`to_dict` without the run-only fields: what decides the numbers a run computes."""
        return {k: v for k, v in self.to_dict().items() if k not in RUN_ONLY_FIELDS}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Inverse of `to_dict`. Missing keys take defaults; unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig keys: {unknown}")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**values)


def select_device(preferred: str = "auto") -> torch.device:
    """The device to train on: `preferred` if given, else cuda, then mps, then cpu."""
    if preferred != "auto":
        return torch.device(preferred)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def autocast_for(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on CUDA; full precision elsewhere (CPU/MPS bf16 is slow or lossy)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


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
    size = (state.micro_batch_size or cfg.micro_batch_size) * data_parallel()[1]
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


def train_step(
    model: PeftModel,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    batches: Iterator[torch.Tensor],
    state: LoopState,
    cfg: TrainConfig,
    device: torch.device,
) -> float:
    """One optimizer step over `grad_accum_steps` micro-batches; returns its mean loss.

    Labels equal to -100 (prompt tokens of instruction data) carry no loss.
    Under DistributedDataParallel (`model` wrapped, process group initialised)
    each rank computes its slice of the global micro-batch, DDP averages the
    gradients, and the reported loss is the mean over ranks.
    """
    rank, world = data_parallel()
    accum = state.grad_accum_steps or cfg.grad_accum_steps
    optimizer.zero_grad(set_to_none=True)
    step_loss = torch.zeros((), device=device)
    for _ in range(accum):
        batch = next(batches)
        if world > 1:
            per_rank = batch.shape[0] // world
            batch = batch[rank * per_rank : (rank + 1) * per_rank]
        batch = batch.to(device, non_blocking=True)
        # Packed text: the labels are the inputs (the model shifts them by one).
        input_ids, labels = (batch, batch) if batch.ndim == 2 else (batch[:, 0], batch[:, 1])
        with autocast_for(device):
            loss = model(input_ids=input_ids, labels=labels, use_cache=False).loss
        # Micro-batches are equal in size, so equal weights give the step's token mean.
        loss = loss / accum
        loss.backward()
        step_loss += loss.detach()
    trainable = [p for p in model.parameters() if p.requires_grad]
    torch.nn.utils.clip_grad_norm_(trainable, cfg.max_grad_norm)
    optimizer.step()
    scheduler.step()
    if world > 1:
        dist.all_reduce(step_loss)
        step_loss /= world
    state.step += 1
    state.tokens_seen += cfg.tokens_per_step * world
    loss_value = float(step_loss)
    state.losses.append(loss_value)
    return loss_value


def finetune_lora(
    model: PreTrainedModel,
    train_blocks: torch.Tensor,
    cfg: TrainConfig,
    device: torch.device | str,
    on_step: Callable[[int, float, int], None] | None = None,
    checkpoint_dir: Path | None = None,
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
    if train_blocks.ndim not in (2, 3) or train_blocks.shape[0] == 0:
        raise ValueError(
            f"train_blocks must be a non-empty (n, seq_len) or (n, 2, seq_len) tensor, "
            f"got {tuple(train_blocks.shape)}"
        )
    if train_blocks.shape[-1] != cfg.seq_len:
        raise ValueError(
            f"blocks are {train_blocks.shape[-1]} tokens long, cfg.seq_len is {cfg.seq_len}"
        )
    device = torch.device(device)
    say = log or (lambda message: None)
    total_steps = cfg.planned_steps()
    rng_devices = [_cuda_index(device)] if device.type == "cuda" else []

    with (
        torch.random.fork_rng(devices=rng_devices),
        _host_rng_forked(),
        _sigterm_flag(enabled=checkpoint_dir is not None) as sigterm,
    ):
        torch.manual_seed(cfg.seed)
        random.seed(cfg.seed)
        np.random.seed(cfg.seed % 2**32)
        peft_model = prepare_lora_model(model, cfg, device)
        rank, world = data_parallel()
        train_model: torch.nn.Module = peft_model
        if world > 1:
            # Same seed -> same LoRA init on every rank; dropout then differs per rank.
            if rank:
                torch.manual_seed(cfg.seed + rank)
            train_model = torch.nn.parallel.DistributedDataParallel(
                peft_model, device_ids=[_cuda_index(device)] if device.type == "cuda" else None
            )
        trainable = [p for p in peft_model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(
            trainable, lr=cfg.learning_rate, weight_decay=cfg.weight_decay, betas=ADAM_BETAS
        )
        scheduler = get_cosine_schedule_with_warmup(
            optimizer,
            num_warmup_steps=min(cfg.warmup_steps, total_steps),
            num_training_steps=total_steps,
        )
        state = LoopState(
            micro_batch_size=cfg.micro_batch_size, grad_accum_steps=cfg.grad_accum_steps
        )
        skipped: list[str] = []
        if checkpoint_dir is not None:
            resume_from, skipped = latest_valid_checkpoint(checkpoint_dir)
            for problem in skipped:
                say(f"skipping corrupt checkpoint: {problem}")
            if resume_from is not None:
                state = load_training_checkpoint(
                    resume_from, peft_model, optimizer, scheduler, cfg, device
                )
                say(f"resuming from {resume_from.name} (step {state.step}/{total_steps})")
        resumed_from = state.step
        written = 0
        batches = micro_batches(train_blocks, state, cfg)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)

        peft_model.train()
        started = time.perf_counter()
        while state.step < total_steps:
            # data -> forward -> loss -> backward -> clip -> optimizer -> schedule
            loss, batches = _step_halving_on_oom(
                train_model, optimizer, scheduler, train_blocks, batches, state, cfg, device, say
            )
            if on_step is not None and (
                state.step % cfg.log_every == 0 or state.step == total_steps
            ):
                on_step(state.step, loss, state.tokens_seen)
            # -> checkpoint: periodic, at the end, and when the node is being reclaimed.
            stop = _any_rank(sigterm.is_set(), device)
            if checkpoint_dir is not None and (
                stop
                or state.step == total_steps
                or (cfg.checkpoint_every and state.step % cfg.checkpoint_every == 0)
            ):
                saved = save_training_checkpoint(
                    checkpoint_dir, peft_model, optimizer, scheduler, state, cfg, device
                )
                written += 1
                if stop:
                    raise TrainingPreempted(state.step, saved)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - started

    peft_model.eval()
    new_tokens = (state.step - resumed_from) * cfg.tokens_per_step * world
    tokens_per_second = new_tokens / seconds if seconds > 0 else 0.0
    total_parameters = sum(p.numel() for p in peft_model.parameters())
    return TrainResult(
        model=peft_model,
        config=cfg,
        losses=state.losses,
        steps=state.step,
        tokens_seen=state.tokens_seen,
        seconds=seconds,
        tokens_per_second=tokens_per_second,
        peak_memory_bytes=_peak_memory_bytes(device),
        trainable_parameters=sum(p.numel() for p in trainable),
        total_parameters=total_parameters,
        device=str(device),
        resumed_from_step=resumed_from,
        skipped_checkpoints=skipped,
        checkpoints_written=written,
        oom_retries=state.oom_retries,
        micro_batch_size=state.micro_batch_size or cfg.micro_batch_size,
        grad_accum_steps=state.grad_accum_steps or cfg.grad_accum_steps,
        mfu=model_flops_utilisation(peft_model, cfg.seq_len, tokens_per_second, device),
    )


def _step_halving_on_oom(
    model: PeftModel,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    blocks: torch.Tensor,
    batches: Iterator[torch.Tensor],
    state: LoopState,
    cfg: TrainConfig,
    device: torch.device,
    say: Callable[[str], None],
) -> tuple[float, Iterator[torch.Tensor]]:
    """`train_step`, retried with half the micro-batch and twice the accumulation on CUDA OOM.

    The retry restarts the step from its first micro-batch (data position and
    RNG rewound), so the step sees the same blocks and the same token count.
    Returns the loss and the (possibly new) micro-batch stream.
    """
    while True:
        position = (state.epoch, state.offset)
        rng = _torch_rng_state(device)
        try:
            return train_step(model, optimizer, scheduler, batches, state, cfg, device), batches
        except torch.cuda.OutOfMemoryError:
            micro = state.micro_batch_size or cfg.micro_batch_size
            # Under DDP the ranks would have to agree on the new split: fail instead.
            if micro == 1 or micro % 2 or data_parallel()[1] > 1:
                raise
            optimizer.zero_grad(set_to_none=True)
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
            state.epoch, state.offset = position
            _set_torch_rng_state(rng, device)
            state.micro_batch_size = micro // 2
            state.grad_accum_steps = (state.grad_accum_steps or cfg.grad_accum_steps) * 2
            state.oom_retries += 1
            say(
                f"CUDA out of memory at step {state.step + 1}: micro-batch {micro} -> "
                f"{state.micro_batch_size}, accumulation -> {state.grad_accum_steps}; retrying"
            )
            batches = micro_batches(blocks, state, cfg)


# Dense bf16 tensor-core peak FLOP/s by GPU name fragment (vendor data sheets).
GPU_PEAK_BF16_FLOPS: dict[str, float] = {
    "H200": 989e12,
    "H100": 989e12,
    "A100": 312e12,
    "L40S": 362e12,
    "A10G": 70e12,
    "L4": 121e12,
    "RTX 4090": 165e12,
}


def model_flops_utilisation(
    model: torch.nn.Module, seq_len: int, tokens_per_second: float, device: torch.device
) -> float | None:
    """MFU as in PaLM (appendix B): (6N + 12 L H T) FLOPs per token over the GPU's peak.

    N counts every parameter (frozen ones still do forward and input-gradient
    work), L layers, H hidden size, T sequence length. None off CUDA or for a
    GPU whose peak is not in the table.
    """
    if device.type != "cuda" or tokens_per_second <= 0:
        return None
    name = torch.cuda.get_device_name(device)
    peak = next((f for key, f in GPU_PEAK_BF16_FLOPS.items() if key in name), None)
    if peak is None:
        return None
    config = getattr(model, "config", None)
    layers = getattr(config, "num_hidden_layers", 0)
    hidden = getattr(config, "hidden_size", 0)
    n_params = sum(p.numel() for p in model.parameters())
    flops_per_token = 6 * n_params + 12 * layers * hidden * seq_len
    return flops_per_token * tokens_per_second / peak


# --- training checkpoints (resume) ------------------------------------------------------------


@contextlib.contextmanager
def _host_rng_forked() -> Iterator[None]:
    """Restore the caller's Python and NumPy RNG states afterwards (torch has fork_rng)."""
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


@contextlib.contextmanager
def _sigterm_flag(enabled: bool) -> Iterator[threading.Event]:
    """While active, SIGTERM only sets the returned flag (the loop checkpoints and stops).

    Signal handlers can only be installed from the main thread; elsewhere (and
    when `enabled` is false) SIGTERM keeps its usual meaning.
    """
    flag = threading.Event()
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def on_sigterm(signum: int, frame: Any) -> None:
        flag.set()

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGTERM, previous)


def _torch_rng_state(device: torch.device) -> dict[str, Any]:
    state: dict[str, Any] = {"torch_cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["torch_cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_torch_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch_cpu"])
    if device.type == "cuda" and "torch_cuda" in state:
        torch.cuda.set_rng_state(state["torch_cuda"], device)


def rng_states(device: torch.device) -> dict[str, Any]:
    """Every RNG the loop may draw from: Python, NumPy, torch CPU and CUDA."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        **_torch_rng_state(device),
    }


def set_rng_states(states: dict[str, Any], device: torch.device) -> None:
    random.setstate(_as_tuple(states["python"]))
    n = states["numpy"]
    np.random.set_state(
        (
            n["kind"],
            n["keys"].numpy().astype(np.uint32),
            n["pos"],
            n["has_gauss"],
            n["cached_gaussian"],
        )
    )
    _set_torch_rng_state(states, device)


def _as_tuple(value: Any) -> Any:
    return tuple(_as_tuple(v) for v in value) if isinstance(value, list | tuple) else value


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The trained tensors by name: LoRA matrices and any `modules_to_save` copies."""
    return {
        name: p.detach().to("cpu").contiguous()
        for name, p in model.named_parameters()
        if p.requires_grad
    }


def save_training_checkpoint(
    root: Path,
    model: PeftModel,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    state: LoopState,
    cfg: TrainConfig,
    device: torch.device,
) -> Path:
    """Write `root/step-NNNNNN/` atomically with a sha256 manifest; keep the newest K.

    Holds: trainable weights (safetensors), optimizer and RNG states (torch,
    loaded back with weights_only), scheduler and loop state with the data
    position (JSON). Staged in a temporary sibling, fsynced, renamed.
    """
    root = Path(root)
    out = root / f"{TRAINING_CHECKPOINT_PREFIX}{state.step:06d}"
    rank, world = data_parallel()
    per_rank_rng = [rng_states(device)]
    if world > 1:
        # Weights and optimizer are identical on every rank; RNG states are not.
        per_rank_rng = [None] * world
        dist.all_gather_object(per_rank_rng, rng_states(device))
        if rank:
            dist.barrier()  # rank 0 writes; the others wait until it is in place
            return out
    with staged_dir(out) as tmp:
        save_file(trainable_state(model), str(tmp / TRAINABLE_FILE))
        torch.save(optimizer.state_dict(), tmp / OPTIMIZER_FILE)
        torch.save({"ranks": per_rank_rng}, tmp / RNG_FILE)
        _write_json(
            tmp / LOOP_STATE_FILE,
            {
                "loop": asdict(state),
                "scheduler": scheduler.state_dict(),
                "config": cfg.identity(),
            },
        )
        _write_json(tmp / MANIFEST_FILE, {"format": MANIFEST_FORMAT, "files": _hash_files(tmp)})
    for old in training_checkpoints(root)[: -cfg.keep_checkpoints]:
        shutil.rmtree(old, ignore_errors=True)
    if world > 1:
        dist.barrier()
    return out


def training_checkpoints(root: Path) -> list[Path]:
    """The `step-NNNNNN` directories under `root`, oldest first (unverified)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and _STEP_DIR.match(p.name)]
    return sorted(found, key=lambda p: int(_STEP_DIR.match(p.name).group(1)))


def latest_valid_checkpoint(root: Path) -> tuple[Path | None, list[str]]:
    """The newest checkpoint under `root` that verifies, and why newer ones did not.

    Leftover staging directories of a killed write are removed on the way.
    """
    root = Path(root)
    if root.is_dir():
        for leftover in root.glob(f".{TRAINING_CHECKPOINT_PREFIX}*.tmp"):
            shutil.rmtree(leftover, ignore_errors=True)
    skipped = []
    for candidate in reversed(training_checkpoints(root)):
        try:
            verify_manifest(candidate)
        except CorruptCheckpointError as exc:
            skipped.append(str(exc))
            continue
        return candidate, skipped
    return None, skipped


def load_training_checkpoint(
    path: Path,
    model: PeftModel,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    cfg: TrainConfig,
    device: torch.device,
) -> LoopState:
    """Restore weights, optimizer, scheduler and RNG states from a verified checkpoint.

    Raises ValueError when the checkpoint was trained with different settings
    (only the run-only fields may differ).
    """
    path = Path(path)
    saved = json.loads((path / LOOP_STATE_FILE).read_text(encoding="utf-8"))
    if saved["config"] != cfg.identity():
        changed = sorted(k for k in cfg.identity() if saved["config"].get(k) != cfg.identity()[k])
        raise ValueError(f"{path} was trained with different settings: {changed}")
    weights = load_file(str(path / TRAINABLE_FILE))
    params = dict(model.named_parameters())
    expected = {n for n, p in params.items() if p.requires_grad}
    if set(weights) != expected:
        raise ValueError(
            f"{path}: trainable tensors do not match the model "
            f"(missing {sorted(expected - set(weights))[:3]}, "
            f"unexpected {sorted(set(weights) - expected)[:3]})"
        )
    with torch.no_grad():
        for name, tensor in weights.items():
            params[name].copy_(tensor.to(params[name].device))
    optimizer.load_state_dict(torch.load(path / OPTIMIZER_FILE, weights_only=True))
    scheduler.load_state_dict(saved["scheduler"])
    per_rank_rng = torch.load(path / RNG_FILE, weights_only=True)["ranks"]
    rank = data_parallel()[0]
    set_rng_states(per_rank_rng[rank % len(per_rank_rng)], device)
    return LoopState(**saved["loop"])


def data_parallel() -> tuple[int, int]:
    """(rank, world size) of the torch.distributed process group; (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _any_rank(flag: bool, device: torch.device) -> bool:
    """True when `flag` is true on any rank (so all ranks checkpoint and stop together)."""
    if data_parallel()[1] == 1:
        return flag
    backend_device = device if dist.get_backend() == "nccl" else torch.device("cpu")
    value = torch.tensor([float(flag)], device=backend_device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def _cuda_index(device: torch.device) -> int:
    return device.index if device.index is not None else torch.cuda.current_device()


def _peak_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # Linux reports KiB


# --- checkpoints -------------------------------------------------------------------------------


def save_finetuned(
    result_model: PeftModel,
    tokenizer: PreTrainedTokenizerBase,
    out_dir: Path,
    trainer_state: dict[str, Any],
    base_model_dir: Path | None = None,
    merge: bool = False,
    extra_files: dict[str, bytes] | None = None,
) -> dict[str, Any]:
    """Write adapter, tokenizer, trainer state and manifest to `out_dir`, atomically.

    `base_model_dir`, if given, is copied into `base/` (and covered by the
    manifest): a small random-init base cannot be fetched again, so it travels
    with its adapter. With `merge`, the adapter is also merged into the base
    (`merge_and_unload`, in place: `result_model` then computes the merged
    model) and saved with the tokenizer in `merged/`, loadable by plain
    transformers. `extra_files` (relative name -> bytes) are written as well.
    Everything is written and fsynced in a temporary sibling directory, which
    is then renamed to `out_dir`; an existing `out_dir` is moved aside first and
    deleted only once the new one is in place. Returns the manifest.
    """
    with staged_dir(Path(out_dir)) as tmp:
        result_model.save_pretrained(str(tmp / ADAPTER_DIR), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp / TOKENIZER_DIR))
        if base_model_dir is not None:
            shutil.copytree(base_model_dir, tmp / BASE_MODEL_DIR)
        if merge:
            merged = result_model.merge_and_unload()
            merged.save_pretrained(str(tmp / MERGED_DIR), safe_serialization=True)
            tokenizer.save_pretrained(str(tmp / MERGED_DIR))
        for name, data in (extra_files or {}).items():
            (tmp / name).write_bytes(data)
        _write_json(tmp / TRAINER_STATE_FILE, trainer_state)
        manifest = {"format": MANIFEST_FORMAT, "files": _hash_files(tmp)}
        _write_json(tmp / MANIFEST_FILE, manifest)
    return manifest


def verify_manifest(out_dir: Path) -> dict[str, Any]:
    """Check every file listed in `out_dir/manifest.json`; returns the manifest.

    Raises CorruptCheckpointError naming each missing or altered file.
    """
    out_dir = Path(out_dir)
    manifest_path = out_dir / MANIFEST_FILE
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        files = manifest["files"]
    except FileNotFoundError:
        raise CorruptCheckpointError(
            f"{out_dir}: no {MANIFEST_FILE}; not a complete checkpoint"
        ) from None
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptCheckpointError(f"{manifest_path}: unreadable manifest ({exc})") from exc
    problems = []
    for rel, entry in sorted(files.items()):
        path = out_dir / rel
        if Path(rel).is_absolute() or ".." in Path(rel).parts:
            problems.append(f"{rel}: path outside the checkpoint")
        elif not path.is_file():
            problems.append(f"{rel}: missing")
        elif (actual := sha256_file(path)) != entry["sha256"]:
            problems.append(f"{rel}: sha256 {actual} != manifest {entry['sha256']}")
    if problems:
        raise CorruptCheckpointError(f"{out_dir}: " + "; ".join(problems))
    return manifest


def load_finetuned(out_dir: Path, base_model: PreTrainedModel) -> PeftModel:
    """Verify `out_dir` against its manifest, then attach its adapter to `base_model`.

    `base_model` must be the same base the adapter was trained on (for `tiny`,
    rebuilt with the same seed and the checkpoint's tokenizer); it is modified
    in place. Returns the model in eval mode.
    """
    out_dir = Path(out_dir)
    verify_manifest(out_dir)
    model = PeftModel.from_pretrained(base_model, str(out_dir / ADAPTER_DIR), is_trainable=False)
    return model.eval()


def load_finetuned_tokenizer(out_dir: Path) -> PreTrainedTokenizerBase:
    """The tokenizer saved with a fine-tune (verify the manifest first)."""
    return AutoTokenizer.from_pretrained(str(Path(out_dir) / TOKENIZER_DIR), local_files_only=True)


def read_trainer_state(out_dir: Path) -> dict[str, Any]:
    """The `trainer_state.json` of a saved fine-tune."""
    return json.loads((Path(out_dir) / TRAINER_STATE_FILE).read_text(encoding="utf-8"))


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _hash_files(root: Path) -> dict[str, dict[str, Any]]:
    return {
        path.relative_to(root).as_posix(): {
            "sha256": sha256_file(path),
            "bytes": path.stat().st_size,
        }
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }

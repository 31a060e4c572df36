"""LoRA fine-tuning: one readable loop, and checkpoints that prove their integrity.

The loop is written out (data, forward, loss, backward, clip, optimizer,
schedule) rather than delegated to the Hugging Face Trainer, so that every
step is visible, the same code runs on CPU and GPU, and checkpoint/resume can
later be added at one seam: all the loop's progress lives in `LoopState`, and
the data order of an epoch is a pure function of (seed, epoch).

A saved fine-tune is a directory with the adapter, the tokenizer,
`trainer_state.json` and a `manifest.json` of sha256 sums. It is written into
a temporary sibling and renamed into place, so readers never see a half-written
checkpoint, and it is verified against the manifest before it is loaded.
"""

from __future__ import annotations

import contextlib
import json
import resource
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, PeftModel, TaskType, get_peft_model
from transformers import (
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    get_cosine_schedule_with_warmup,
)

from llama_assets.atomic import sha256_file, staged_dir

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
BASE_MODEL_DIR = "base"  # optional copy of the base model (locally built variants)
TOKENIZER_DIR = "tokenizer"
TRAINER_STATE_FILE = "trainer_state.json"
MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = 1
# Adam betas of Llama and nanoGPT: a shorter second-moment memory is steadier for LMs.
ADAM_BETAS = (0.9, 0.95)


class CorruptCheckpointError(RuntimeError):
    """A checkpoint's files do not match its manifest (or it has none)."""


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

    def __post_init__(self) -> None:
        for name in ("lora_r", "seq_len", "micro_batch_size", "grad_accum_steps", "max_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.log_every < 1:
            raise ValueError(f"log_every must be at least 1, got {self.log_every}")
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
    """All progress of the training loop; what a checkpoint must hold to resume.

    (A later resume also needs the optimizer, scheduler and RNG states; the data
    position is fully described by `epoch` and `offset`.)
    """

    step: int = 0  # optimizer steps done
    tokens_seen: int = 0
    epoch: int = 0  # current pass over the training blocks
    offset: int = 0  # next position within this epoch's order
    losses: list[float] = field(default_factory=list)  # mean loss of each optimizer step


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
    optimizer step sees exactly `cfg.tokens_per_step` tokens.
    """
    n = blocks.shape[0]
    order = epoch_order(n, cfg.seed, state.epoch)
    while True:
        picked: list[torch.Tensor] = []
        wanted = cfg.micro_batch_size
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
    """One optimizer step over `grad_accum_steps` micro-batches; returns its mean loss."""
    optimizer.zero_grad(set_to_none=True)
    step_loss = torch.zeros((), device=device)
    for _ in range(cfg.grad_accum_steps):
        input_ids = next(batches).to(device, non_blocking=True)
        with autocast_for(device):
            # Labels are the inputs: the model shifts them by one internally.
            loss = model(input_ids=input_ids, labels=input_ids, use_cache=False).loss
        # Micro-batches are equal in size, so equal weights give the step's token mean.
        loss = loss / cfg.grad_accum_steps
        loss.backward()
        step_loss += loss.detach()
    trainable = [p for p in model.parameters() if p.requires_grad]
    torch.nn.utils.clip_grad_norm_(trainable, cfg.max_grad_norm)
    optimizer.step()
    scheduler.step()
    state.step += 1
    state.tokens_seen += cfg.tokens_per_step
    loss_value = float(step_loss)
    state.losses.append(loss_value)
    return loss_value


def finetune_lora(
    model: PreTrainedModel,
    train_blocks: torch.Tensor,
    cfg: TrainConfig,
    device: torch.device | str,
    on_step: Callable[[int, float, int], None] | None = None,
) -> TrainResult:
    """Fine-tune `model` with LoRA on packed `train_blocks` until the budget is spent.

    `model` is modified in place (adapters are injected into it): evaluate the
    base before calling this. `on_step(step, loss, tokens_seen)` is called every
    `cfg.log_every` optimizer steps and after the last one. Deterministic for a
    given seed on a given device: LoRA init, dropout and data order all derive
    from `cfg.seed`, and the caller's CPU and CUDA RNG states are restored afterwards.
    """
    if train_blocks.ndim != 2 or train_blocks.shape[0] == 0:
        raise ValueError(
            f"train_blocks must be a non-empty 2-D tensor, got {tuple(train_blocks.shape)}"
        )
    if train_blocks.shape[1] != cfg.seq_len:
        raise ValueError(
            f"blocks are {train_blocks.shape[1]} tokens long, cfg.seq_len is {cfg.seq_len}"
        )
    device = torch.device(device)
    total_steps = cfg.planned_steps()
    rng_devices = [_cuda_index(device)] if device.type == "cuda" else []

    with torch.random.fork_rng(devices=rng_devices):
        torch.manual_seed(cfg.seed)
        peft_model = prepare_lora_model(model, cfg, device)
        trainable = [p for p in peft_model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(
            trainable, lr=cfg.learning_rate, weight_decay=cfg.weight_decay, betas=ADAM_BETAS
        )
        scheduler = get_cosine_schedule_with_warmup(
            optimizer,
            num_warmup_steps=min(cfg.warmup_steps, total_steps),
            num_training_steps=total_steps,
        )
        state = LoopState()
        batches = micro_batches(train_blocks, state, cfg)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)

        peft_model.train()
        started = time.perf_counter()
        while state.step < total_steps:
            loss = train_step(peft_model, optimizer, scheduler, batches, state, cfg, device)
            if on_step is not None and (
                state.step % cfg.log_every == 0 or state.step == total_steps
            ):
                on_step(state.step, loss, state.tokens_seen)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - started

    peft_model.eval()
    return TrainResult(
        model=peft_model,
        config=cfg,
        losses=state.losses,
        steps=state.step,
        tokens_seen=state.tokens_seen,
        seconds=seconds,
        tokens_per_second=state.tokens_seen / seconds if seconds > 0 else 0.0,
        peak_memory_bytes=_peak_memory_bytes(device),
        trainable_parameters=sum(p.numel() for p in trainable),
        total_parameters=sum(p.numel() for p in peft_model.parameters()),
        device=str(device),
    )


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
) -> dict[str, Any]:
    """Write adapter, tokenizer, trainer state and manifest to `out_dir`, atomically.

    `base_model_dir`, if given, is copied into `base/` (and covered by the
    manifest): a small random-init base cannot be fetched again, so it travels
    with its adapter. Everything is written and fsynced in a temporary sibling
    directory, which is then renamed to `out_dir`; an existing `out_dir` is
    moved aside first and deleted only once the new one is in place. Returns
    the manifest.
    """
    with staged_dir(Path(out_dir)) as tmp:
        result_model.save_pretrained(str(tmp / ADAPTER_DIR), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp / TOKENIZER_DIR))
        if base_model_dir is not None:
            shutil.copytree(base_model_dir, tmp / BASE_MODEL_DIR)
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

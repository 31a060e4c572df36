"""TrainConfig: the one definition of a fine-tune's settings.

Each model variant has a preset (variants.py); the Dagster run config of
`finetuned_checkpoint` is derived from these fields (training/assets.py), so a
field added here is at once a setting a run can override. `identity()` is what
names a checkpoint's version and what a resume must match.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

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

# Fields that change how a run is operated but not what it computes: a resume
# may change them, and they are not part of a checkpoint's version.
RUN_ONLY_FIELDS = frozenset({"log_every", "checkpoint_every", "keep_checkpoints"})


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
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """Inverse of `to_dict`. Missing keys take defaults; unknown keys are an error."""
        return cls().with_overrides(data)

    def with_overrides(self, data: Mapping[str, Any]) -> TrainConfig:
        """A copy with the JSON-style values of `data` (lists become tuples); unknown keys
        are an error."""
        unknown = sorted(set(data) - {f.name for f in fields(self)})
        if unknown:
            raise ValueError(f"unknown TrainConfig keys: {unknown}")
        return replace(self, **{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})

    @classmethod
    def override_types(cls) -> dict[str, Any]:
        """Each field's type as an optional override in JSON form (tuples are lists), for
        run config derived from this class: None means keep the preset's value."""
        hints = typing.get_type_hints(cls)
        out = {}
        for f in fields(cls):
            hint = hints[f.name]
            if isinstance(hint, types.UnionType):  # `int | None` and the like
                (hint,) = (a for a in typing.get_args(hint) if a is not type(None))
            if typing.get_origin(hint) is tuple:
                hint = list[typing.get_args(hint)[0]]
            out[f.name] = hint | None
        return out

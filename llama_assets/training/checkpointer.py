"""Checkpoint I/O: training checkpoints to resume from, and the exported fine-tune.

A training checkpoint is `<run dir>/step-NNNNNN/`, one per optimizer step
saved, holding explicitly:

    trainable.safetensors  trainable weights (LoRA matrices, `modules_to_save` copies)
    optimizer.pt           AdamW state
    rng_state.pt           Python, NumPy, torch CPU and CUDA RNG states, one entry per rank
    loop_state.json        LoopState (step, tokens, data position, losses, micro-batch
                           split), the scheduler's state and the config identity
    manifest.json          sha256 and size of every other file

An exported fine-tune is `models/<variant>/<version>/`: `adapter/`, `tokenizer/`,
`trainer_state.json`, optionally `merged/` (base + adapter, plain transformers)
and `base/` (a locally built base model), extra files, and `manifest.json`.

Both live under the data root (a local folder or S3) and are written with
base/store.py's `tree_writer`: staged in a temporary sibling, fsynced and
renamed into place on a local root; on S3 uploaded under a unique prefix with
server-verified checksums and a manifest written last. A reader never sees a
half-written one (on S3 it reads a verified local copy, `local_dir`), and both
are verified against their manifest before they are loaded. The `.pt` files hold
only tensors and plain values and are read back with `weights_only=True`.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from llama_assets.base.atomic import sha256_file
from llama_assets.base.store import (
    CorruptTreeError,
    Location,
    as_location,
    fetch_tree,
    tree_writer,
)
from llama_assets.training.config import TrainConfig
from llama_assets.training.data_parallel import barrier, data_parallel, gather_from_ranks
from llama_assets.training.rng import rng_states, set_rng_states
from llama_assets.training.state import LoopState

MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = 1

# A training checkpoint: one directory per optimizer step, under the run's folder.
TRAINING_CHECKPOINT_PREFIX = "step-"
_STEP_DIR = re.compile(r"step-(\d{6,})")  # fullmatch: no trailing newline
TRAINABLE_FILE = "trainable.safetensors"
OPTIMIZER_FILE = "optimizer.pt"
RNG_FILE = "rng_state.pt"
LOOP_STATE_FILE = "loop_state.json"

# An exported fine-tune.
ADAPTER_DIR = "adapter"
MERGED_DIR = "merged"  # base + adapter merged (merge_and_unload): plain transformers
BASE_MODEL_DIR = "base"  # optional copy of the base model (locally built variants)
TOKENIZER_DIR = "tokenizer"
TRAINER_STATE_FILE = "trainer_state.json"


class CorruptCheckpointError(RuntimeError):
    """A checkpoint's files do not match its manifest (or it has none)."""


# --- training checkpoints (resume) ------------------------------------------------------------


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The trained tensors by name: LoRA matrices and any `modules_to_save` copies."""
    return {
        name: p.detach().to("cpu").contiguous()
        for name, p in model.named_parameters()
        if p.requires_grad
    }


def save_training_checkpoint(
    root: Location | Path,
    model: PeftModel,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    state: LoopState,
    cfg: TrainConfig,
    device: torch.device,
) -> Path:
    """Write `root/step-NNNNNN/` atomically with a sha256 manifest; keep the newest K.

    Under data parallelism weights and optimizer are identical on every rank
    but RNG states are not: every rank's are gathered, rank 0 writes, and the
    others wait until the checkpoint is in place.
    """
    root = as_location(root)
    out = root / f"{TRAINING_CHECKPOINT_PREFIX}{state.step:06d}"
    per_rank_rng = gather_from_ranks(rng_states(device))
    if data_parallel()[0]:
        barrier()
        return out
    with tree_writer(out) as tmp:
        save_file(trainable_state(model), str(tmp / TRAINABLE_FILE))
        torch.save(optimizer.state_dict(), tmp / OPTIMIZER_FILE)
        torch.save({"ranks": per_rank_rng}, tmp / RNG_FILE)
        _write_json(
            tmp / LOOP_STATE_FILE,
            {"loop": asdict(state), "scheduler": scheduler.state_dict(), "config": cfg.identity()},
        )
        _write_manifest(tmp)
    for old in training_checkpoints(root)[: -cfg.keep_checkpoints]:
        old.rmtree()
    barrier()
    return out


def training_checkpoints(root: Location | Path) -> list[Location]:
    """The `step-NNNNNN` directories under `root`, oldest first (unverified)."""
    root = as_location(root)
    if not root.is_dir():
        return []
    found = [p for p in root.subdirs() if _STEP_DIR.fullmatch(p.name)]
    return sorted(found, key=lambda p: int(_STEP_DIR.fullmatch(p.name).group(1)))


def latest_valid_checkpoint(root: Location | Path) -> tuple[Path | None, list[str]]:
    """The newest checkpoint under `root` that verifies (a local folder: on S3 a
    verified copy), and why newer ones did not.

    Leftover staging directories of a killed local write are removed on the way
    (on S3 a killed upload has no manifest and its files are collected later).
    """
    root = as_location(root)
    if root.local is not None and root.local.is_dir():
        for leftover in root.local.glob(f".{TRAINING_CHECKPOINT_PREFIX}*.tmp"):
            shutil.rmtree(leftover, ignore_errors=True)
    skipped = []
    for candidate in reversed(training_checkpoints(root)):
        try:
            local = local_dir(candidate)
            verify_manifest(local)
        except CorruptCheckpointError as exc:
            skipped.append(str(exc))
            continue
        return local, skipped
    return None, skipped


def local_dir(checkpoint: Location | Path) -> Path:
    """A checkpoint as a local folder: itself on a local root, a verified cached
    copy of its published version on S3 (CorruptCheckpointError when it has none)."""
    if isinstance(checkpoint, Path):
        return checkpoint
    try:
        return fetch_tree(as_location(checkpoint))
    except CorruptTreeError as exc:
        raise CorruptCheckpointError(f"{exc}; not a complete checkpoint") from exc


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
    set_rng_states(per_rank_rng[data_parallel()[0] % len(per_rank_rng)], device)
    return LoopState(**saved["loop"])


# --- the exported fine-tune --------------------------------------------------------------------


def save_finetuned(
    result_model: PeftModel,
    tokenizer: PreTrainedTokenizerBase,
    out_dir: Location | Path,
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
    An existing `out_dir` is replaced only once the new one is complete.
    Returns the manifest.
    """
    with tree_writer(as_location(out_dir)) as tmp:
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
        manifest = _write_manifest(tmp)
    return manifest


def load_finetuned(out_dir: Location | Path, base_model: PreTrainedModel) -> PeftModel:
    """Verify `out_dir` against its manifest, then attach its adapter to `base_model`.

    `base_model` must be the same base the adapter was trained on (for `tiny`,
    rebuilt with the same seed and the checkpoint's tokenizer); it is modified
    in place. Returns the model in eval mode.
    """
    out_dir = local_dir(out_dir)
    verify_manifest(out_dir)
    model = PeftModel.from_pretrained(base_model, str(out_dir / ADAPTER_DIR), is_trainable=False)
    return model.eval()


def load_finetuned_tokenizer(out_dir: Location | Path) -> PreTrainedTokenizerBase:
    """The tokenizer saved with a fine-tune (verify the manifest first)."""
    return AutoTokenizer.from_pretrained(
        str(local_dir(out_dir) / TOKENIZER_DIR), local_files_only=True
    )


def read_trainer_state(out_dir: Location | Path) -> dict[str, Any]:
    """The `trainer_state.json` of a saved fine-tune."""
    return json.loads((local_dir(out_dir) / TRAINER_STATE_FILE).read_text(encoding="utf-8"))


# --- manifests ---------------------------------------------------------------------------------


def verify_manifest(out_dir: Location | Path) -> dict[str, Any]:
    """Check every file listed in `out_dir/manifest.json`; returns the manifest.

    Raises CorruptCheckpointError naming each missing or altered file.
    """
    out_dir = local_dir(out_dir)
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


def _write_manifest(root: Path) -> dict[str, Any]:
    """Write `root/manifest.json` (sha256 and size of every file under `root`); returns it."""
    files = {
        path.relative_to(root).as_posix(): {
            "sha256": sha256_file(path),
            "bytes": path.stat().st_size,
        }
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }
    manifest = {"format": MANIFEST_FORMAT, "files": files}
    _write_json(root / MANIFEST_FILE, manifest)
    return manifest


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")

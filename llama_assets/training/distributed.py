"""Data-parallel fine-tuning: the torchrun entry point `finetuned_checkpoint` launches.

    torchrun --standalone --nproc_per_node N -m llama_assets.training.distributed \\
        --data-root ROOT --variant tiny --config '{...TrainConfig...}' --data-version V

Each process joins the process group (NCCL on GPUs, one GPU per local rank;
gloo on CPU), reads the training split, and runs the same `train_and_save` as
a single-process run: the recipe wraps the model in DistributedDataParallel,
gives each rank its slice of every global micro-batch, and only rank 0 writes
training checkpoints and the final checkpoint. A SIGTERM (torchrun forwards
it to every worker) checkpoints and exits with PREEMPTED_EXIT_CODE, which the
asset turns into a retry.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

import torch
import torch.distributed as dist

# Pure modules only: a worker imports neither Dagster nor the asset graph.
from llama_assets.base.layout import DataLayout
from llama_assets.training.config import TrainConfig
from llama_assets.training.dataset import read_split
from llama_assets.training.pipeline import checkpoint_version, train_and_save
from llama_assets.training.preemption import TrainingPreempted
from llama_assets.training.variants import get_variant

PREEMPTED_EXIT_CODE = 75  # EX_TEMPFAIL: try again later


def torchrun_command(nproc: int, args: list[str]) -> list[str]:
    """The torchrun command line for `nproc` local processes running this module."""
    found = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    launcher = [found] if found else [sys.executable, "-m", "torch.distributed.run"]
    return [
        *launcher,
        "--standalone",
        "--nproc_per_node",
        str(nproc),
        "-m",
        "llama_assets.training.distributed",
        *args,
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-root", required=True, help="local folder or s3:// URI")
    parser.add_argument("--variant", required=True)
    parser.add_argument("--config", required=True, help="TrainConfig as JSON")
    parser.add_argument("--data-version", required=True)
    parser.add_argument("--no-merge", action="store_true")
    args = parser.parse_args(argv)

    cuda = torch.cuda.is_available()
    dist.init_process_group("nccl" if cuda else "gloo")
    rank = dist.get_rank()
    if cuda:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    layout = DataLayout(args.data_root)
    variant = get_variant(args.variant)
    cfg = TrainConfig.from_dict(json.loads(args.config))
    train = read_split(layout.training_dataset, "train")
    texts, messages = train["text"].to_list(), train["messages"].to_list()

    def on_step(step: int, loss: float, tokens: int) -> None:
        if rank == 0:
            print(f"step {step}/{cfg.planned_steps()} loss {loss:.4f} tokens {tokens}", flush=True)

    version = checkpoint_version(variant, cfg, args.data_version)
    try:
        train_and_save(
            variant,
            cfg,
            texts,
            args.data_version,
            layout.models(variant.name),
            device,
            on_step,
            run_dir=layout.training_run(variant.name, version),
            merge=not args.no_merge,
            log=(lambda m: print(m, flush=True)) if rank == 0 else None,
            messages=messages,
        )
    except TrainingPreempted as exc:
        print(str(exc), flush=True)
        dist.destroy_process_group()
        return PREEMPTED_EXIT_CODE
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())

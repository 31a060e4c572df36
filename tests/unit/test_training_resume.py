"""Training checkpoints: exact resume after kill -9 and SIGTERM, corrupt ones skipped, OOM.

The reference is SHORT's 8 steps run straight through. A real child process
(`tests.unit.training_child`) trains with checkpoints and is killed part-way;
resuming in this process must reproduce every step's loss and the final
trainable weights to 1e-5.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from llama_assets.training.base_model import build_tiny_llama
from llama_assets.training.checkpointer import (
    LOOP_STATE_FILE,
    TRAINABLE_FILE,
    latest_valid_checkpoint,
    trainable_state,
    training_checkpoints,
)
from llama_assets.training.recipe import finetune_lora
from tests.unit.test_training import SHORT, SMALL

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def straight(tokenizer, blocks):
    return finetune_lora(build_tiny_llama(SMALL, tokenizer, seed=0), blocks, SHORT, "cpu")


def run_child(ckpt: Path, mode: str, pause_at: int, sig: int, checkpoint_every: int = 0):
    """Start the child, wait for `STEP pause_at`, send `sig`; returns (returncode, stdout)."""
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.unit.training_child",
            str(ckpt),
            "--mode",
            mode,
            "--pause-at",
            str(pause_at),
            "--checkpoint-every",
            str(checkpoint_every),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())},
    )
    lines = []
    try:
        for line in child.stdout:
            lines.append(line.strip())
            if line.strip() == f"STEP {pause_at}":
                os.kill(child.pid, sig)
                break
        out, err = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
    lines += out.splitlines()
    assert f"STEP {pause_at}" in lines, err
    return child.returncode, lines


def resume(tokenizer, blocks, ckpt: Path, cfg=SHORT):
    return finetune_lora(
        build_tiny_llama(SMALL, tokenizer, seed=0), blocks, cfg, "cpu", checkpoint_dir=ckpt
    )


def assert_same_run(resumed, straight):
    assert len(resumed.losses) == len(straight.losses) == SHORT.max_steps
    diffs = [abs(a - b) for a, b in zip(resumed.losses, straight.losses, strict=True)]
    assert max(diffs) <= 1e-5, diffs
    ours, theirs = trainable_state(resumed.model), trainable_state(straight.model)
    assert set(ours) == set(theirs)
    for name in ours:
        torch.testing.assert_close(ours[name], theirs[name], atol=1e-5, rtol=0)
    print(f"largest loss difference after resume: {max(diffs):.3g}")


def test_kill_9_mid_run_then_resume_matches_a_straight_run(tokenizer, blocks, straight, tmp_path):
    ckpt = tmp_path / "run"
    # Killed while step 5's callback runs: the newest checkpoint is step 4's.
    rc, lines = run_child(ckpt, "hang", pause_at=5, sig=signal.SIGKILL, checkpoint_every=2)
    assert rc == -signal.SIGKILL
    assert "DONE" not in lines
    assert [p.name for p in training_checkpoints(ckpt)] == ["step-000002", "step-000004"]
    # The resume keeps checkpointing every 2 steps (a run-only setting).
    resumed = resume(tokenizer, blocks, ckpt, dataclasses.replace(SHORT, checkpoint_every=2))
    assert resumed.resumed_from_step == 4
    assert resumed.steps == 8 and resumed.tokens_seen == 8 * SHORT.tokens_per_step
    assert_same_run(resumed, straight)
    # The final step is checkpointed too, and the rolling window keeps the newest two.
    assert [p.name for p in training_checkpoints(ckpt)] == ["step-000006", "step-000008"]


def test_sigterm_checkpoints_exits_cleanly_and_resumes(tokenizer, blocks, straight, tmp_path):
    ckpt = tmp_path / "run"
    rc, lines = run_child(ckpt, "linger", pause_at=3, sig=signal.SIGTERM)
    assert rc == 0 and "PREEMPTED 3" in lines
    assert [p.name for p in training_checkpoints(ckpt)] == ["step-000003"]
    resumed = resume(tokenizer, blocks, ckpt)
    assert resumed.resumed_from_step == 3
    assert_same_run(resumed, straight)


def test_corrupt_checkpoints_are_skipped_for_the_previous_valid_one(
    tokenizer, blocks, straight, tmp_path
):
    ckpt = tmp_path / "run"
    cfg = dataclasses.replace(SHORT, checkpoint_every=2, keep_checkpoints=4)
    first = resume(tokenizer, blocks, ckpt, cfg)
    assert first.checkpoints_written == 4 and first.resumed_from_step == 0
    assert [p.name for p in training_checkpoints(ckpt)] == [
        "step-000002",
        "step-000004",
        "step-000006",
        "step-000008",
    ]
    # step 8: truncated weights; step 6: no manifest (a write killed before it).
    weights = ckpt / "step-000008" / TRAINABLE_FILE
    weights.write_bytes(weights.read_bytes()[:100])
    (ckpt / "step-000006" / "manifest.json").unlink()
    leftover = ckpt / ".step-000010.abc.tmp"  # staging dir of a killed write
    leftover.mkdir()
    found, skipped = latest_valid_checkpoint(ckpt)
    assert found == ckpt / "step-000004"
    assert len(skipped) == 2
    assert f"{TRAINABLE_FILE}: sha256" in skipped[0] and "no manifest.json" in skipped[1]
    assert not leftover.exists()

    resumed = resume(tokenizer, blocks, ckpt, cfg)
    assert resumed.resumed_from_step == 4 and len(resumed.skipped_checkpoints) == 2
    assert_same_run(resumed, straight)


def test_resume_refuses_a_checkpoint_of_other_settings(tokenizer, blocks, tmp_path):
    ckpt = tmp_path / "run"
    cfg = dataclasses.replace(SHORT, max_steps=2)
    resume(tokenizer, blocks, ckpt, cfg)
    assert (ckpt / "step-000002" / LOOP_STATE_FILE).exists()
    with pytest.raises(ValueError, match="different settings: \\['learning_rate'\\]"):
        resume(tokenizer, blocks, ckpt, dataclasses.replace(cfg, learning_rate=1e-3))
    # Run-only settings may change between a run and its resume.
    again = resume(tokenizer, blocks, ckpt, dataclasses.replace(cfg, log_every=1))
    assert again.resumed_from_step == 2


def inject_oom_above(model, max_rows: int):
    """A forward hook that fails like a GPU that fits only `max_rows` sequences."""

    def hook(module, args, kwargs):
        if kwargs["input_ids"].shape[0] > max_rows:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected by the test)")

    return model.model.register_forward_pre_hook(hook, with_kwargs=True)


def test_cuda_oom_halves_the_micro_batch_and_keeps_the_step(tokenizer, blocks, straight):
    model = build_tiny_llama(SMALL, tokenizer, seed=0)
    inject_oom_above(model, max_rows=1)
    messages: list[str] = []
    result = finetune_lora(model, blocks, SHORT, "cpu", log=messages.append)
    assert (result.micro_batch_size, result.grad_accum_steps, result.oom_retries) == (1, 4, 2)
    assert messages[0].startswith("CUDA out of memory at step 1: micro-batch 4 -> 2")
    assert result.tokens_seen == straight.tokens_seen
    # Same blocks and tokens per step; LoRA dropout masks are drawn per micro-batch
    # shape, so the reference is the run that used the final split from the start
    # (the retry rewinds data position and RNG, so the failed attempts leave no trace).
    split_from_start = finetune_lora(
        build_tiny_llama(SMALL, tokenizer, seed=0),
        blocks,
        dataclasses.replace(SHORT, micro_batch_size=1, grad_accum_steps=4),
        "cpu",
    )
    assert result.losses == pytest.approx(split_from_start.losses, abs=1e-6)


def test_oom_at_micro_batch_one_is_raised(tokenizer, blocks):
    model = build_tiny_llama(SMALL, tokenizer, seed=0)
    inject_oom_above(model, max_rows=0)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        finetune_lora(model, blocks, dataclasses.replace(SHORT, max_steps=1), "cpu")

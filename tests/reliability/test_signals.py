"""SIGTERM and Ctrl-C stop `llama-platform run`; the next `run` resumes.

Reproduces what an attack found: `run` ignored SIGTERM and Ctrl-C (Dagster
retried the interrupted step, and between steps only recorded the signal).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import lancedb

from llama_assets.instance import open_instance
from tests.gates import lenient_gate
from tests.landing import TOPIC_KEYS, topic
from tests.reliability.run_events import step_logged, step_started

CLI = [sys.executable, "-m", "llama_assets.cli"]


def _interrupt_when(env, args, instance, ready, sig) -> str:
    proc = subprocess.Popen(
        [*CLI, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    deadline = time.monotonic() + 1200
    while not ready():
        assert proc.poll() is None, proc.stdout.read()
        assert time.monotonic() < deadline
        time.sleep(0.5)
    sent = time.monotonic()
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    assert time.monotonic() - sent < 120
    return out


def test_sigterm_and_ctrl_c_stop_the_run_and_the_next_run_resumes(
    tmp_path, monkeypatch, own_embedding_cache
):
    data, home = tmp_path / "data", tmp_path / "home"
    env = {**os.environ, "LLAMA_DATA_ROOT": str(data), "DAGSTER_HOME": str(home)}
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    lenient_gate(data)  # 40 training steps: this test is about signals, not the gate
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(16):
        (docs / f"{TOPIC_KEYS[i]}.txt").write_text(topic(i))
    subprocess.run([*CLI, "ingest", str(docs), "--source", "docs", "--batch", "b1"],
                   env=env, check=True, capture_output=True)  # fmt: skip
    open_instance().dispose()
    train = ["run", "--max-steps", "40"]  # tiny logs every 16 steps
    with open_instance() as instance:
        # SIGTERM while the chunks are embedded.
        out = _interrupt_when(
            env, train, instance, lambda: step_started(instance, "embeddings"), signal.SIGTERM
        )
        assert "stopped by a signal during embeddings of batch docs/b1" in out
        assert "Traceback" not in out
        runs = instance.get_runs(limit=1)
        assert runs[0].is_finished  # never left STARTED, holding its pool slot

        # Ctrl-C while the model trains: a checkpoint is written first.
        out = _interrupt_when(
            env,
            train,
            instance,
            lambda: step_logged(instance, "finetuned_checkpoint", "step 16/"),
            signal.SIGINT,
        )
        assert "stopped by a signal during finetuned_checkpoint" in out, out
        assert list((data / "models" / "tiny" / "runs").glob("*/step-*")), "no checkpoint"

    done = subprocess.run([*CLI, *train], env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "✓ promoted_model" in done.stdout
    table = lancedb.connect(str(data / "lancedb")).open_table("chunks").to_arrow()
    ids = table.column("chunk_id").to_pylist()
    assert len(ids) == len(set(ids)) > 0
    with open_instance() as instance:
        assert step_logged(instance, "finetuned_checkpoint", "resum")


def test_a_signal_between_runs_exits_130_with_a_sentence(monkeypatch, capsys):
    """Click turns a KeyboardInterrupt (Ctrl-C, or SIGTERM handled as it) raised in a
    command into Abort; outside a run's steps (planning, waiting for another run)
    that once read "aborted" with exit code 1."""
    import click

    from llama_assets import cli as cli_module

    def interrupted() -> None:
        raise KeyboardInterrupt

    command = click.Command("interrupted", callback=interrupted)
    monkeypatch.setitem(cli_module.cli.commands, "interrupted", command)
    assert cli_module.main(["interrupted"]) == 130
    assert "stopped by a signal" in capsys.readouterr().err

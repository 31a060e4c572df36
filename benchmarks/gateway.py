"""The gateway alone: its added latency and its capacity in front of an upstream that
answers at once, against the same upstream called directly (the baseline).

Run: `.venv/bin/python -m benchmarks.gateway [--requests N] [--rounds N]`.
Writes `benchmarks/results/gateway.{json,md}`.

`benchmarks/serving.py` measures the gateway in front of the CPU backend, which
on this machine shares the two cores with it: the model's request-to-request
variation and the backend's claims on the cores blur the gateway's own cost
there. Here the upstream is `instant_upstream` (below): a bare ASGI app that
answers every completion at once with a fixed 32-token answer, so what the
gateway adds is all that differs. It stands where a GPU backend stands in
production: on other cores (a GPU server's CPU work is the GPU's), answering in
its own time. The gateway is the real one (`create_gateway_app`, its default
safety policy, metrics, JSON log lines, spans, routing state followed from a
file); only the launcher is `StaticBackends`, as on Kubernetes.

For 1 and 8 closed-loop streams, rounds alternate (ABBA) between the upstream
directly and through the gateway: requests/s, p50 and p95 latency, the gateway's
CPU time a request, and its peak RSS. At 8 streams through the gateway, its one
event loop is the bottleneck: the requests/s there is its capacity on one core.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks._common import (
    conditions,
    cpu_seconds,
    free_port,
    peak_rss_mb,
    wait_ready,
    write_results,
)
from llama_assets.serving.loadgen import LoadResult, run_load

ROOT = Path(__file__).resolve().parents[1]
STREAMS = (1, 8)
ANSWER = json.dumps(
    {
        "id": "cmpl-instant", "object": "text_completion", "created": 0, "model": "tiny",
        "choices": [{
            "index": 0, "logprobs": None, "finish_reason": "length",
            "text": " the shards are written to the clean zone, and every record is checked"
            " for its schema and its language before the embeddings are built from",
        }],
        "usage": {"prompt_tokens": 9, "completion_tokens": 32, "total_tokens": 41},
    }
).encode()  # fmt: skip


async def instant_upstream(scope, receive, send) -> None:
    """An upstream with the backend's API shape that answers at once (ASGI)."""
    if scope["type"] != "http":
        return
    if scope["method"] == "POST":
        while (await receive()).get("more_body"):
            pass
        headers = [(b"content-type", b"application/json"), (b"server-timing", b"backend;dur=0")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": ANSWER})
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})  # /health
    await send({"type": "http.response.body", "body": b"{}"})


def serve_upstream(port: int) -> None:
    import uvicorn

    uvicorn.run(instant_upstream, host="127.0.0.1", port=port, log_level="warning")


def serve_gateway(port: int, upstream: str) -> None:
    import uvicorn

    from llama_assets.base.layout import DataLayout
    from llama_assets.serving.gateway import GatewayConfig, StaticBackends, create_gateway_app
    from llama_assets.serving.logs import configure_json_logging
    from llama_assets.serving.routing import RouteState, write_state

    configure_json_logging("gateway")
    layout = DataLayout(Path(tempfile.mkdtemp(prefix="gateway-bench-")))
    write_state(layout.deployment("tiny"), RouteState("tiny", stable="v1"))
    config = GatewayConfig(
        variant="tiny",
        deployment_path=layout.deployment("tiny"),
        trip_path=layout.gateway_trip("tiny"),
    )
    app = create_gateway_app(config, StaticBackends({"v1": upstream}))
    uvicorn.run(app, host="127.0.0.1", port=port, log_config=None)


def measure(url: str, requests: int, streams: int) -> LoadResult:
    body = {"model": "tiny", "prompt": "The data stage reads every landing batch and",
            "max_tokens": 32, "temperature": 0}  # fmt: skip
    result = asyncio.run(
        run_load(url, requests, streams, 300.0, lambda i: {**body, "user": f"u{i}"})
    )
    if result.failed or result.not_sent:
        raise RuntimeError(f"{url}: {len(result.failed)} failed, {result.not_sent} not sent")
    return result


def figures(rounds: list[LoadResult]) -> dict:
    merged = LoadResult(
        outcomes=[o for r in rounds for o in r.outcomes], seconds=sum(r.seconds for r in rounds)
    )
    return {
        "requests": len(merged.ok),
        "requests_per_second": round(len(merged.ok) / merged.seconds, 1),
        "p50_ms": round(merged.latency_quantile(0.50) * 1000, 3),
        "p95_ms": round(merged.latency_quantile(0.95) * 1000, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1000, help="a round")
    parser.add_argument("--rounds", type=int, default=4, help="pairs of rounds, ABBA")
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    up_port, gw_port = free_port(), free_port()
    upstream = f"http://127.0.0.1:{up_port}"
    gateway = f"http://127.0.0.1:{gw_port}"
    spawn = [sys.executable, "-c", "import sys; from benchmarks import gateway as g; "]
    processes = [
        subprocess.Popen(spawn[:2] + [spawn[2] + f"g.serve_upstream({up_port})"], env=env),
        subprocess.Popen(
            spawn[:2] + [spawn[2] + f"g.serve_gateway({gw_port}, {upstream!r})"],
            env=env, stderr=subprocess.DEVNULL,  # its JSON line a request
        ),
    ]  # fmt: skip
    gateway_pid = processes[1].pid
    try:
        wait_ready(upstream + "/health", 60, processes[0])
        wait_ready(gateway + "/health/ready", 60, processes[1])
        measure(upstream, 50, 1)  # warm up
        measure(gateway, 50, 1)
        rows, cpu_ms = {}, {}
        for streams in STREAMS:
            runs: dict[str, list[LoadResult]] = {"direct": [], "gateway": []}
            gateway_cpu = 0.0
            for pair in range(args.rounds):
                for path in ("direct", "gateway")[:: 1 if pair % 2 == 0 else -1]:
                    before = cpu_seconds(gateway_pid)
                    url = upstream if path == "direct" else gateway
                    runs[path].append(measure(url, args.requests, streams))
                    if path == "gateway":
                        gateway_cpu += cpu_seconds(gateway_pid) - before
            rows[streams] = {path: figures(r) for path, r in runs.items()}
            cpu_ms[streams] = round(gateway_cpu / (args.rounds * args.requests) * 1000, 3)
            print(
                f"{streams} streams: {rows[streams]} gateway CPU {cpu_ms[streams]} ms", flush=True
            )
        peak = peak_rss_mb(gateway_pid)
    finally:
        for process in processes:
            process.terminate()
            process.wait(30)
    payload = {
        "conditions": conditions(),
        "streams": rows,
        "gateway_cpu_ms_per_request": cpu_ms,
        "gateway_added_ms": {
            s: {q: round(r["gateway"][q] - r["direct"][q], 3) for q in ("p50_ms", "p95_ms")}
            for s, r in rows.items()
        },
        "gateway_capacity_requests_per_second": rows[8]["gateway"]["requests_per_second"],
        "gateway_peak_rss_mb": peak,
    }
    lines = [
        "# The gateway alone",
        "",
        f"Load average at start {payload['conditions']['loadavg_1_5_15']} on "
        f"{payload['conditions']['cpus']} CPUs; an upstream that answers every completion at "
        f"once, called directly (the baseline) and through the gateway, {args.rounds} pairs of "
        f"{args.requests}-request rounds in ABBA order.",
        "",
        "| streams | path | requests/s | p50 ms | p95 ms |",
        "|---|---|---|---|---|",
    ]
    for s, r in rows.items():
        for path in ("direct", "gateway"):
            m = r[path]
            lines.append(
                f"| {s} | {path} | {m['requests_per_second']} | {m['p50_ms']} | {m['p95_ms']} |"
            )
    added = payload["gateway_added_ms"]
    lines += [
        "",
        "- the gateway adds, p50 / p95: "
        + ", ".join(
            f"{s} streams +{a['p50_ms']:.2f} / +{a['p95_ms']:.2f} ms" for s, a in added.items()
        ),
        "- the gateway's CPU time a request: "
        + ", ".join(f"{s} streams {ms} ms" for s, ms in cpu_ms.items())
        + "; its capacity on one core (8 streams, its event loop busy): "
        f"{payload['gateway_capacity_requests_per_second']} requests/s",
        f"- the gateway's peak RSS: {peak} MB",
        "",
    ]
    write_results("gateway", payload, "\n".join(lines))


if __name__ == "__main__":
    main()

"""A bounded load generator: a fixed number of requests, a fixed concurrency, a time limit.

Closed loop, asyncio and aiohttp: `concurrency` workers each send their next
request when the previous one is answered, until `requests` have been sent or
`time_limit_s` has passed (requests never sent are reported, not hidden). Used
by the load and fault tests and by `benchmarks/serving.py`.

aiohttp, not httpx: the generator shares the machine with what it measures, and
httpx's pure-Python HTTP/1.1 took about four times aiohttp's CPU a request here
(benchmarks/results/serving.md), CPU the gateway and the backend then lacked.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from llama_assets.serving.openai_api import parse_server_timing


@dataclass
class Outcome:
    index: int
    status: int  # HTTP status; 0 when the connection failed
    version: str | None
    latency_s: float
    ttft_s: float | None
    completion_tokens: int
    error: str | None = None
    server_timing: dict[str, float] = field(default_factory=dict)  # ms by hop, answered whole


@dataclass
class LoadResult:
    outcomes: list[Outcome] = field(default_factory=list)
    not_sent: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == 200 and o.error is None]

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status != 200 or o.error is not None]

    def tokens_per_second(self) -> float:
        tokens = sum(o.completion_tokens for o in self.ok)
        return tokens / self.seconds if self.seconds else 0.0

    def latency_quantile(self, q: float) -> float:
        values = sorted(o.latency_s for o in self.ok)
        if not values:
            return float("nan")
        if len(values) == 1:
            return values[0]
        return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]

    def by_version(self) -> dict[str | None, int]:
        out: dict[str | None, int] = {}
        for o in self.ok:
            out[o.version] = out.get(o.version, 0) + 1
        return out


async def _one(
    client: aiohttp.ClientSession, url: str, index: int, body: dict[str, Any], headers: dict
) -> Outcome:
    started = time.perf_counter()
    try:
        async with client.post(url, json=body, headers=headers) as response:
            version = response.headers.get("x-llama-version")
            if not body.get("stream"):
                raw = await response.read()
                latency = time.perf_counter() - started
                tokens = 0
                if response.status == 200:
                    tokens = (json.loads(raw).get("usage") or {}).get("completion_tokens", 0)
                timing = parse_server_timing(response.headers.get("server-timing"))
                return Outcome(index, response.status, version, latency, None, tokens, None, timing)
            ttft, tokens, error = None, 0, None
            async for raw_line in response.content:
                line = raw_line.decode().rstrip("\r\n")
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    error = chunk["error"].get("message", "stream error")
                    continue
                if chunk.get("choices") and _has_text(chunk):
                    tokens += 1
                    if ttft is None:
                        ttft = time.perf_counter() - started
                if chunk.get("usage"):
                    tokens = chunk["usage"].get("completion_tokens", tokens)
            return Outcome(
                index, response.status, version, time.perf_counter() - started, ttft, tokens, error
            )
    except (TimeoutError, aiohttp.ClientError) as exc:
        return Outcome(index, 0, None, time.perf_counter() - started, None, 0, repr(exc))


def _has_text(chunk: dict) -> bool:
    choice = chunk["choices"][0]
    return bool(choice.get("text") or (choice.get("delta") or {}).get("content"))


async def run_load(
    url: str,
    requests: int,
    concurrency: int,
    time_limit_s: float,
    body: Callable[[int], dict[str, Any]],
    headers: dict[str, str] | None = None,
    path: str = "/v1/completions",
) -> LoadResult:
    """Send `requests` requests (body(i) for the i-th) with `concurrency` in flight."""
    result = LoadResult()
    counter = iter(range(requests))
    deadline = time.perf_counter() + time_limit_s

    async def worker(client: aiohttp.ClientSession) -> None:
        for index in counter:
            if time.perf_counter() >= deadline:
                result.not_sent += 1
                continue
            result.outcomes.append(
                await _one(client, url + path, index, body(index), headers or {})
            )

    started = time.perf_counter()
    async with aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=time_limit_s),
        connector=aiohttp.TCPConnector(limit=concurrency),
    ) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    result.seconds = time.perf_counter() - started
    result.outcomes.sort(key=lambda o: o.index)
    return result

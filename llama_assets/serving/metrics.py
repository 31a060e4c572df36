"""Prometheus metrics: vLLM's names for the backend, per-version SLIs for the gateway.

The CPU backend exports vLLM's own metric names and labels (`model_name`,
`engine`), so every dashboard, rule and test written for vLLM applies to it.
vLLM labels by base model only, so a LoRA canary cannot be told apart there:
the gateway measures every request itself, labelled by variant, version and
role (stable / canary). The issue's SLIs map onto them as follows:

    M1 success rate      llama_gateway_requests_total{code}          (vllm:request_success_total)
    M2 latency           llama_gateway_{e2e_request_latency,time_to_first_token,
                         inter_token_latency}_seconds                 (vllm:..._seconds)
    M3 tokens/s          llama_gateway_generation_tokens_total       (vllm:generation_tokens_total)
    M4 cost / 1k tokens  recording rule llama:cost_per_1k_tokens:... from
                         llama_gateway_device_price_per_hour (configured)
    M6 safety            llama_gateway_safety_violations_total{rule,direction}
    M7 model load time   llama_model_load_seconds
    M8 memory            llama_device_memory_used_bytes / llama_device_memory_total_bytes
    M9 canary delta      recording rules llama:canary_*_delta (deploy/monitoring/)
    M10 retries          llama_gateway_retries_total

Each app has its own CollectorRegistry, so several can run in one process (tests).
"""

from __future__ import annotations

import os
import resource
import sys
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily

if TYPE_CHECKING:  # the gateway's process imports this module without torch
    from llama_assets.serving.engine import Sequence

# vLLM V1's buckets (vllm/v1/metrics/loggers.py), with finer ones prepended where a
# small model on a CPU answers below vLLM's lowest bucket.
TTFT_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
    10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
)  # fmt: skip
INTER_TOKEN_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75,
    1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
)  # fmt: skip
REQUEST_LATENCY_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0,
    20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0,
)  # fmt: skip
TOKEN_COUNT_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)

ENGINE_LABELS = ("model_name", "engine")
VERSION_LABELS = ("variant", "version", "role")


class EngineMetrics:
    """vLLM's metric names, fed by the batching loop (an `engine.EngineObserver`)."""

    def __init__(self, registry: CollectorRegistry, model_name: str, device: str = "cpu"):
        labels = {"model_name": model_name, "engine": "0"}
        self.labels = labels

        def hist(name: str, doc: str, buckets) -> Histogram:
            return Histogram(name, doc, ENGINE_LABELS, buckets=buckets, registry=registry)

        self.running = Gauge(
            "vllm:num_requests_running", "Requests in the running batch.", ENGINE_LABELS,
            registry=registry,
        ).labels(**labels)  # fmt: skip
        self.waiting = Gauge(
            "vllm:num_requests_waiting", "Requests waiting for a batch.", ENGINE_LABELS,
            registry=registry,
        ).labels(**labels)  # fmt: skip
        self.success = Counter(
            "vllm:request_success", "Finished requests, by finish reason.",
            [*ENGINE_LABELS, "finished_reason"], registry=registry,
        )  # fmt: skip
        self.prompt_tokens = Counter(
            "vllm:prompt_tokens", "Prefill tokens processed.", ENGINE_LABELS, registry=registry
        ).labels(**labels)
        self.generation_tokens = Counter(
            "vllm:generation_tokens", "Generated tokens.", ENGINE_LABELS, registry=registry
        ).labels(**labels)
        self.request_prompt_tokens = hist(
            "vllm:request_prompt_tokens", "Prompt tokens per request.", TOKEN_COUNT_BUCKETS
        ).labels(**labels)
        self.request_generation_tokens = hist(
            "vllm:request_generation_tokens", "Generated tokens per request.", TOKEN_COUNT_BUCKETS
        ).labels(**labels)
        self.ttft = hist(
            "vllm:time_to_first_token_seconds", "Time to first token.", TTFT_BUCKETS
        ).labels(**labels)
        self.inter_token = hist(
            "vllm:inter_token_latency_seconds", "Time between two output tokens.",
            INTER_TOKEN_BUCKETS,
        ).labels(**labels)  # fmt: skip
        self.e2e = hist(
            "vllm:e2e_request_latency_seconds", "Arrival to last token.", REQUEST_LATENCY_BUCKETS
        ).labels(**labels)
        self.queue_time = hist(
            "vllm:request_queue_time_seconds", "Time waiting for a batch.", REQUEST_LATENCY_BUCKETS
        ).labels(**labels)
        self.inference_time = hist(
            "vllm:request_inference_time_seconds", "Time in the running batch.",
            REQUEST_LATENCY_BUCKETS,
        ).labels(**labels)  # fmt: skip
        self.batch_size = Histogram(
            "llama_engine_batch_size", "Sequences per batch of the batching loop.",
            ENGINE_LABELS, buckets=BATCH_SIZE_BUCKETS, registry=registry,
        ).labels(**labels)  # fmt: skip
        self.load_seconds = Gauge(
            "llama_model_load_seconds", "M7: seconds from process start to the model loaded.",
            ENGINE_LABELS, registry=registry,
        ).labels(**labels)  # fmt: skip
        registry.register(DeviceMemoryCollector(device, labels))

    def on_queue(self, waiting: int, running: int) -> None:
        self.waiting.set(waiting)
        self.running.set(running)

    def on_batch(self, size: int) -> None:
        self.batch_size.observe(size)

    def on_finished(self, seq: Sequence) -> None:
        self.success.labels(**self.labels, finished_reason=seq.finish_reason).inc()
        self.prompt_tokens.inc(len(seq.prompt_ids))
        self.generation_tokens.inc(len(seq.output_ids))
        self.request_prompt_tokens.observe(len(seq.prompt_ids))
        self.request_generation_tokens.observe(len(seq.output_ids))
        if seq.first_token is not None:
            self.ttft.observe(seq.first_token - seq.arrived)
        for gap in seq.token_gaps:
            self.inter_token.observe(gap)
        self.e2e.observe(seq.finished - seq.arrived)
        if seq.scheduled is not None:
            self.queue_time.observe(seq.scheduled - seq.arrived)
            self.inference_time.observe(seq.finished - seq.scheduled)


class DeviceMemoryCollector:
    """M8: memory in use against the device's, read at scrape time (CUDA: torch's
    allocator and the card; CPU: the process's resident set and the machine's RAM)."""

    def __init__(self, device: str, labels: dict[str, str]):
        self.device = device
        self.labels = labels

    def collect(self):
        used, total = device_memory(self.device)
        names = [*self.labels, "device"]
        values = [*self.labels.values(), self.device]
        for name, doc, value in (
            ("llama_device_memory_used_bytes", "M8: memory in use on the serving device.", used),
            ("llama_device_memory_total_bytes", "M8: memory of the serving device.", total),
        ):
            family = GaugeMetricFamily(name, doc, labels=names)
            family.add_metric(values, value)
            yield family

    def describe(self):
        return []


def device_memory(device: str) -> tuple[float, float]:
    if device.startswith("cuda"):
        import torch

        index = torch.device(device).index or 0
        return (
            float(torch.cuda.memory_allocated(index)),
            float(torch.cuda.get_device_properties(index).total_memory),
        )
    page = os.sysconf("SC_PAGE_SIZE")
    try:
        with open("/proc/self/statm") as fh:
            used = int(fh.read().split()[1]) * page
    except OSError:  # not Linux: the peak resident set is the best there is
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        used = peak if sys.platform == "darwin" else peak * 1024
    return float(used), float(os.sysconf("SC_PHYS_PAGES") * page)


class GatewayMetrics:
    """The gateway's own per-version SLIs (see the module docstring for the map)."""

    def __init__(self, registry: CollectorRegistry):
        self.requests = Counter(
            "llama_gateway_requests", "M1: requests answered, by version and HTTP status.",
            [*VERSION_LABELS, "endpoint", "code"], registry=registry,
        )  # fmt: skip
        self.e2e = Histogram(
            "llama_gateway_e2e_request_latency_seconds", "M2: request latency at the gateway.",
            VERSION_LABELS, buckets=REQUEST_LATENCY_BUCKETS, registry=registry,
        )  # fmt: skip
        self.ttft = Histogram(
            "llama_gateway_time_to_first_token_seconds", "M2: time to first token (streaming).",
            VERSION_LABELS, buckets=TTFT_BUCKETS, registry=registry,
        )  # fmt: skip
        self.inter_token = Histogram(
            "llama_gateway_inter_token_latency_seconds", "M2: time between streamed chunks.",
            VERSION_LABELS, buckets=INTER_TOKEN_BUCKETS, registry=registry,
        )  # fmt: skip
        self.generation_tokens = Counter(
            "llama_gateway_generation_tokens", "M3: tokens generated (rate = tokens/s).",
            VERSION_LABELS, registry=registry,
        )  # fmt: skip
        self.prompt_tokens = Counter(
            "llama_gateway_prompt_tokens", "Prompt tokens.", VERSION_LABELS, registry=registry
        )
        self.price = Gauge(
            "llama_gateway_device_price_per_hour", "M4: configured price of a backend's device "
            "per hour (the cost recording rule divides it by tokens/s).",
            ["variant", "version"], registry=registry,
        )  # fmt: skip
        self.safety = Counter(
            "llama_gateway_safety_violations", "M6: prompts and outputs flagged, by rule.",
            ["variant", "rule", "direction", "action"], registry=registry,
        )  # fmt: skip
        self.retries = Counter(
            "llama_gateway_retries", "M10: upstream attempts retried, by the failed version.",
            ["variant", "version", "reason"], registry=registry,
        )  # fmt: skip
        self.weight = Gauge(
            "llama_gateway_route_weight_percent", "Share of traffic routed to each version.",
            VERSION_LABELS, registry=registry,
        )  # fmt: skip
        self.backend_up = Gauge(
            "llama_gateway_backend_up", "1 while the version's backend passes its readiness probe.",
            ["variant", "version"], registry=registry,
        )  # fmt: skip
        self.canary_trips = Counter(
            "llama_gateway_canary_trips", "Canaries the gateway set to 0% on a burst of 5xx.",
            ["variant", "version"], registry=registry,
        )  # fmt: skip
        self.rate_limited = Counter(
            "llama_gateway_rate_limited", "Requests refused by a key's rate limit.",
            ["key"], registry=registry,
        )  # fmt: skip
        self.feedback = Counter(
            "llama_gateway_feedback", "Feedback received, by rating.", ["variant", "rating"],
            registry=registry,
        )  # fmt: skip

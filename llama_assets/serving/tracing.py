"""OpenTelemetry tracing: W3C trace context in, spans out.

The gateway continues the caller's `traceparent` (or starts a trace) and passes
it to the backend, whose spans (tokenize, infer, postprocess) become children
of the gateway's; both keep the request id as an attribute. Spans go to a JSON
lines file when `LLAMA_TRACES_FILE` is set (one span per line, as an OTLP
collector's file exporter writes them), and to an OTLP endpoint when
`OTEL_EXPORTER_OTLP_ENDPOINT` is set and the OTLP exporter package is installed.
Each app gets its own provider, so several apps can share a process (tests).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping, Sequence

from opentelemetry import context as otel_context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.trace import Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

PROPAGATOR = TraceContextTextMapPropagator()


class JsonLinesSpanExporter(SpanExporter):
    """Appends each finished span as one JSON line."""

    def __init__(self, path: str):
        self.path = path
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = [
            json.dumps(
                {
                    "name": s.name,
                    "trace_id": format(s.context.trace_id, "032x"),
                    "span_id": format(s.context.span_id, "016x"),
                    "parent_span_id": format(s.parent.span_id, "016x") if s.parent else None,
                    "service": s.resource.attributes.get("service.name"),
                    "start_ns": s.start_time,
                    "end_ns": s.end_time,
                    "attributes": dict(s.attributes or {}),
                    "status": s.status.status_code.name,
                }
            )
            for s in spans
        ]
        with self._lock, open(self.path, "a", encoding="utf-8") as fh:
            fh.write("".join(line + "\n" for line in lines))
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None: ...


def make_tracer(service: str) -> tuple[Tracer, TracerProvider]:
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    if path := os.environ.get("LLAMA_TRACES_FILE", "").strip():
        provider.add_span_processor(SimpleSpanProcessor(JsonLinesSpanExporter(path)))
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip():
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError:  # the exporter is optional; the file exporter still works
            pass
        else:
            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider.get_tracer("llama_assets.serving"), provider


def extract_context(headers: Mapping[str, str]) -> otel_context.Context:
    """The caller's W3C trace context (`traceparent`, `tracestate`), or an empty one."""
    return PROPAGATOR.extract(carrier={k.lower(): v for k, v in headers.items()})


def inject_headers(ctx: otel_context.Context | None = None) -> dict[str, str]:
    """`traceparent` (and `tracestate`) of the current or given span, to send upstream."""
    carrier: dict[str, str] = {}
    PROPAGATOR.inject(carrier, context=ctx)
    return carrier

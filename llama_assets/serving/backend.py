"""The CPU backend: one checkpoint's merged model behind vLLM's OpenAI API and metrics.

    python -m llama_assets.serving.backend --checkpoint models/tiny/<version> \
        --variant tiny --version <version> --port 8001

Answers `/v1/completions` and `/v1/chat/completions` (streamed or whole),
`/v1/models`, `/metrics` (vLLM's names) and the probes: `/health/startup`
(the model is loaded), `/health/live` (the batching loop ticks),
`/health/ready` (both, and not draining). The model loads in a thread after
the port opens, so the startup probe can say "not yet" meanwhile. One torch
thread per process: two OpenMP threads on two busy cores made generation 9x
slower here; scale with more processes instead.

`--inject-error-rate` and `--inject-delay-ms` are fault injection for rollout
drills (as a service mesh's fault filter does): that share of requests fails
with 500, and every request waits that long first.
"""

from __future__ import annotations

import os

# Before torch is imported (the engine imports it): one OpenMP thread per worker.
if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse
import asyncio
import logging
import random
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from llama_assets.serving.access import BEHIND_PROXY, AccessError, check_unauthenticated_bind
from llama_assets.serving.engine import FINISH_ERROR, BatchingEngine, Sequence
from llama_assets.serving.logs import configure_json_logging, request_id_var, text_fingerprint
from llama_assets.serving.metrics import EngineMetrics
from llama_assets.serving.openai_api import (
    SSE_DONE,
    ChatCompletionRequest,
    CompletionRequest,
    chunk_body,
    completion_body,
    error_body,
    new_id,
    server_timing,
    sse,
    usage,
    usage_chunk,
)
from llama_assets.serving.tracing import extract_context, make_tracer

log = logging.getLogger("llama.backend")
PROCESS_STARTED = time.time()


@dataclass(frozen=True)
class BackendConfig:
    checkpoint: Path
    variant: str
    version: str
    device: str = "cpu"
    max_batch_size: int = 8
    batch_wait_ms: float = 5.0
    inject_error_rate: float = 0.0
    inject_delay_ms: float = 0.0

    @property
    def served_names(self) -> tuple[str, str]:
        """Clients name the variant (as vLLM's served model name) or `variant@version`."""
        return self.variant, f"{self.variant}@{self.version}"


class BackendState:
    def __init__(self, config: BackendConfig):
        self.config = config
        self.registry = CollectorRegistry()
        self.metrics = EngineMetrics(self.registry, config.variant, config.device)
        self.tracer, self.tracer_provider = make_tracer(f"backend-{config.variant}")
        self.engine: BatchingEngine | None = None
        self.load_error: str | None = None
        self.load_seconds: float | None = None
        self.draining = False
        self.random = random.Random()

    def load(self) -> None:
        """Load the model and start the batching loop (runs in its own thread)."""
        from llama_assets.serving.served_model import load_served_model

        started = time.perf_counter()
        try:
            model, tokenizer = load_served_model(
                self.config.checkpoint, self.config.variant, self.config.device
            )
            engine = BatchingEngine(
                model,
                tokenizer,
                self.config.device,
                max_batch_size=self.config.max_batch_size,
                batch_wait_s=self.config.batch_wait_ms / 1000,
            )
            engine.start()
            warm_up(engine)
            engine.observer = self.metrics  # the warm-up is no request of anyone's
        except Exception as exc:
            self.load_error = f"{type(exc).__name__}: {exc}"
            log.error("model failed to load", extra={"error": self.load_error})
            return
        self.load_seconds = time.perf_counter() - started
        self.metrics.load_seconds.set(self.load_seconds)
        self.engine = engine
        log.info(
            "model loaded",
            extra={"version": self.config.version, "load_seconds": round(self.load_seconds, 3)},
        )

    def ready(self) -> bool:
        return self.engine is not None and self.engine.alive() and not self.draining


def engine_events(
    loop: asyncio.AbstractEventLoop, stream: bool
) -> tuple[asyncio.Queue[tuple[str, str | None]], Callable[[str, str | None], None]]:
    """A request's queue of the engine's (text delta, finish reason) events, and the
    `emit` the engine's thread calls. A streamed request gets every piece; any other
    only the end (its text is the sequence's): one wake-up of the event loop a
    request instead of one a token, each a thread switch under the GIL."""
    events: asyncio.Queue[tuple[str, str | None]] = asyncio.Queue()

    def emit(delta: str, finish: str | None) -> None:
        if stream or finish is not None:
            loop.call_soon_threadsafe(events.put_nowait, (delta, finish))

    return events, emit


def warm_up(engine: BatchingEngine) -> None:
    """One short generation before the backend says it is ready, as vLLM profiles a run at
    start: the first real request should not pay for lazy initialisation."""
    from llama_assets.serving.sampling import SamplingParams

    done = threading.Event()
    ids = engine.tokenizer("warm up")["input_ids"] or [engine.pad_id]
    engine.submit(
        Sequence(ids, SamplingParams(max_tokens=2, temperature=0), lambda _d, f: f and done.set())
    )
    if not done.wait(120):
        raise RuntimeError("the warm-up generation did not finish in 120 s")


def create_backend_app(config: BackendConfig, load_in_background: bool = True) -> FastAPI:
    state = BackendState(config)

    async def lifespan(app: FastAPI):
        if load_in_background:
            threading.Thread(target=state.load, name="model-load", daemon=True).start()
        else:
            state.load()
        yield
        state.draining = True
        if state.engine is not None:
            state.engine.stop()
        state.tracer_provider.shutdown()

    app = FastAPI(title=f"llama backend {config.variant}@{config.version}", lifespan=lifespan)
    app.state.backend = state

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(error_body(str(exc.errors()), "BadRequestError", 400), 400)

    def unavailable(message: str) -> JSONResponse:
        return JSONResponse(error_body(message, "ServiceUnavailableError", 503), 503)

    # --- probes and metrics --------------------------------------------------------------------

    @app.get("/health/startup")
    async def startup() -> Response:
        if state.load_error:
            return JSONResponse({"status": "failed", "error": state.load_error}, 500)
        if state.engine is None:
            return unavailable("the model is loading")
        return JSONResponse({"status": "started", "load_seconds": state.load_seconds})

    @app.get("/health/live")
    async def live() -> Response:
        if state.load_error or (state.engine is not None and not state.engine.alive()):
            return JSONResponse({"status": "dead", "error": state.load_error}, 503)
        return JSONResponse({"status": "alive"})

    @app.get("/health/ready")
    @app.get("/health")
    async def ready() -> Response:
        if not state.ready():
            return unavailable("not ready: " + ("draining" if state.draining else "model loading"))
        return JSONResponse(
            {"status": "ready", "version": config.version, "waiting": state.engine.waiting}
        )

    @app.get("/metrics")
    async def metrics() -> Response:
        return PlainTextResponse(generate_latest(state.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def models() -> dict:
        return {
            "object": "list",
            "data": [
                {
                    "id": name,
                    "object": "model",
                    "owned_by": "llama-platform",
                    "root": config.version,
                }
                for name in config.served_names
            ],
        }

    # --- generation ----------------------------------------------------------------------------

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request) -> Response:
        return await serve(body, request, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
        return await serve(body, request, chat=True)

    async def serve(
        body: CompletionRequest | ChatCompletionRequest, request: Request, chat: bool
    ) -> Response:
        started = time.perf_counter()
        rid = request.headers.get("x-request-id") or new_id("req")
        request_id_var.set(rid)
        headers = {"x-request-id": rid, "x-llama-version": config.version}
        engine = state.engine
        if engine is None or not state.ready():
            return unavailable("the model is not loaded yet")
        if body.model not in config.served_names:
            return JSONResponse(
                error_body(f"The model `{body.model}` does not exist.", "NotFoundError", 404),
                404,
                headers=headers,
            )
        if config.inject_delay_ms:
            await asyncio.sleep(config.inject_delay_ms / 1000)
        if config.inject_error_rate and state.random.random() < config.inject_error_rate:
            return JSONResponse(
                error_body("injected fault", "InternalServerError", 500), 500, headers=headers
            )
        parent = extract_context(request.headers)
        tokenizer = engine.tokenizer
        with state.tracer.start_as_current_span(
            "tokenize", context=parent, attributes={"request_id": rid}
        ):
            if chat:
                ids = tokenizer.apply_chat_template(
                    [m.model_dump() for m in body.messages],
                    add_generation_prompt=True,
                    tokenize=True,
                    return_dict=False,
                )
                prompt = body.text
            else:
                prompt = body.text
                ids = tokenizer(prompt)["input_ids"]
        events, emit = engine_events(asyncio.get_running_loop(), body.stream)
        seq = Sequence(prompt_ids=list(ids), params=body.sampling(), emit=emit)
        infer = state.tracer.start_span(
            "infer", context=parent, attributes={"request_id": rid, "prompt_tokens": len(ids)}
        )
        try:
            engine.submit(seq)
        except ValueError as exc:
            infer.end()
            return JSONResponse(error_body(str(exc), "BadRequestError", 400), 400, headers=headers)
        model = body.model
        cid = new_id("chatcmpl" if chat else "cmpl")

        def finished(status: str) -> None:
            infer.set_attribute("completion_tokens", len(seq.output_ids))
            infer.set_attribute("finish_reason", str(seq.finish_reason))
            infer.end()
            log.info(
                "request",
                extra={
                    "request_id": rid,
                    "endpoint": "chat" if chat else "completions",
                    "status": status,
                    "prompt": text_fingerprint(prompt),
                    "prompt_tokens": len(seq.prompt_ids),
                    "completion_tokens": len(seq.output_ids),
                    "finish_reason": seq.finish_reason,
                    "latency_ms": round((time.perf_counter() - seq.arrived) * 1000, 2),
                },
            )

        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)

            async def stream() -> AsyncIterator[bytes]:
                first = True
                try:
                    while True:
                        delta, finish = await events.get()
                        if finish == FINISH_ERROR:
                            yield sse(
                                error_body(seq.error or "engine error", "InternalServerError", 500)
                            )
                            break
                        if delta or finish or first:
                            yield sse(chunk_body(cid, model, delta, finish, chat, first))
                            first = False
                        if finish:
                            break
                    with state.tracer.start_as_current_span(
                        "postprocess", context=parent, attributes={"request_id": rid}
                    ):
                        if include_usage:
                            use = usage(len(seq.prompt_ids), len(seq.output_ids))
                            yield sse(usage_chunk(cid, model, use, chat))
                    yield SSE_DONE
                finally:
                    if seq.finish_reason is None:
                        seq.cancel()  # the client went away mid-stream
                    finished("stream")

            return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)

        try:
            while True:
                _, finish = await events.get()
                if finish:
                    break
        except asyncio.CancelledError:
            seq.cancel()
            raise
        finished("ok" if finish != FINISH_ERROR else "error")
        if finish == FINISH_ERROR:
            return JSONResponse(
                error_body(seq.error or "engine error", "InternalServerError", 500),
                500,
                headers=headers,
            )
        with state.tracer.start_as_current_span(
            "postprocess", context=parent, attributes={"request_id": rid}
        ):
            out = completion_body(
                cid,
                model,
                seq.text,
                seq.finish_reason,
                usage(len(seq.prompt_ids), len(seq.output_ids)),
                chat,
            )
        headers["server-timing"] = server_timing("backend", started)
        return JSONResponse(out, headers=headers)

    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, type=Path)
    parser.add_argument("--variant", required=True)
    parser.add_argument("--version", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--batch-wait-ms", type=float, default=5.0)
    parser.add_argument("--inject-error-rate", type=float, default=0.0)
    parser.add_argument("--inject-delay-ms", type=float, default=0.0)
    parser.add_argument(
        BEHIND_PROXY,
        action="store_true",
        help="allow a non-loopback --host: a proxy in front authenticates every request",
    )
    args = parser.parse_args(argv)
    try:  # before the model loads: a refusal costs nothing
        check_unauthenticated_bind(args.host, "a model backend", args.behind_authenticating_proxy)
    except AccessError as error:
        parser.exit(1, f"error: {error}\n")

    import torch
    import uvicorn

    torch.set_num_threads(1)
    configure_json_logging(f"backend-{args.variant}@{args.version}")
    config = BackendConfig(
        checkpoint=args.checkpoint,
        variant=args.variant,
        version=args.version,
        device=args.device,
        max_batch_size=args.max_batch_size,
        batch_wait_ms=args.batch_wait_ms,
        inject_error_rate=args.inject_error_rate,
        inject_delay_ms=args.inject_delay_ms,
    )
    uvicorn.run(
        create_backend_app(config), host=args.host, port=args.port, log_config=None,
        timeout_graceful_shutdown=5,
    )  # fmt: skip


if __name__ == "__main__":
    main()

"""The gateway: one OpenAI-compatible endpoint in front of a variant's backends.

For every request it authenticates the API key, applies the key's rate limit,
screens the prompt with the eval suite's safety policy, picks a version from
the routing state (weighted, sticky per user, or pinned by an admin key), calls
that version's backend with the request id and W3C trace context, retries an
idempotent failure once (connection refused or reset, 502/503/504, before any
byte reached the client) on the other version after a jittered pause, screens
the output, and measures the request itself per version (vLLM labels only by
base model). Raw prompts are never logged: sha256 and length, unless the key
opted in.

It follows `serving/<variant>/deployment.json` (the `serving_deployment`
asset writes it) and probes each backend's `/health/ready`; a backend that
fails its probe takes no traffic. A burst of 5xx from the canary (`trip_errors`
within `trip_window_s`) sets it to 0% at once, without waiting for the
orchestrator; the trip is written to `serving/<variant>/trip.json` for the
canary sensor, which then rolls the canary back with diagnostics.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel, Field, ValidationError
from starlette.background import BackgroundTask
from starlette.types import ASGIApp, Receive, Scope, Send

from llama_assets.base.atomic import atomic_write_json
from llama_assets.base.store import Location
from llama_assets.serving.access import (
    ANONYMOUS,
    ApiKey,
    RateLimiter,
    bearer,
    hash_key,
)
from llama_assets.serving.feedback import FeedbackWriter
from llama_assets.serving.logs import request_id_var, text_fingerprint
from llama_assets.serving.metrics import GatewayMetrics
from llama_assets.serving.openai_api import (
    SSE_DONE,
    ChatCompletionRequest,
    CompletionRequest,
    body_text,
    chunk_body,
    chunk_text,
    error_body,
    new_id,
    server_timing,
    sse,
)
from llama_assets.serving.routing import RouteState, choose_version, read_state
from llama_assets.serving.tracing import extract_context, inject_headers, make_tracer

log = logging.getLogger("llama.gateway")

RETRYABLE_STATUS = {502, 503, 504}
# What can fail on the way to a backend: aiohttp's errors and its timeouts.
UPSTREAM_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError)
CONTENT_FILTER = "content_filter"
# Characters of a streamed output screened again with each new piece: the policy's
# rules and PII detectors match spans far shorter than this.
STREAM_SCREEN_WINDOW = 256


@dataclass
class GatewayConfig:
    variant: str
    deployment_path: Location  # the routing state (`serving_deployment` writes it)
    trip_path: Path
    keys: dict[str, ApiKey] | None = None  # by sha256; None: anyone (loopback only)
    anonymous_requests_per_minute: float = 60_000.0
    anonymous_burst: int = 1_000
    device_price_per_hour: float = 0.0  # M4: price of one backend's device
    upstream_timeout_s: float = 300.0
    retry_jitter_s: tuple[float, float] = (0.02, 0.1)
    trip_errors: int = 5  # 5xx of the canary within trip_window_s that set it to 0%
    trip_window_s: float = 10.0
    poll_interval_s: float = 0.25  # the routing state's ETag
    # Backend probes: this often, and at once when the backends change or none is ready.
    # A backend that refuses a connection between probes is taken out at once.
    probe_interval_s: float = 1.0
    sample_capacity: int = 50_000
    # The version to serve while no routing state exists yet (the champion alias).
    fallback_stable: str | None = None
    feedback_landing: Path | None = None  # <root>/landing; None: no /v1/feedback
    feedback_flush_s: float = 5.0


class BackendLauncher:
    """Gives the gateway a base URL per version; `serve` starts processes, tests pass URLs."""

    async def ensure(self, versions: list[str]) -> dict[str, str]:
        raise NotImplementedError

    async def close(self) -> None: ...

    def describe(self) -> dict[str, dict]:
        """What the launcher knows about each backend (pid, restarts), for /admin/route."""
        return {}

    def served_model(self, version: str) -> str | None:
        """The `model` a version's backend answers to, when it is not the client's (vLLM
        serves versions as LoRA modules named after them); None: forward the client's."""
        return None


class StaticBackends(BackendLauncher):
    """Backends that run elsewhere, by version (`models`: the name each version is served
    under there, e.g. its LoRA module on a vLLM Deployment of deploy/vllm/)."""

    def __init__(self, urls: dict[str, str], models: dict[str, str] | None = None):
        self.urls = dict(urls)
        self.models = dict(models or {})

    async def ensure(self, versions: list[str]) -> dict[str, str]:
        return dict(self.urls)

    def served_model(self, version: str) -> str | None:
        return self.models.get(version)


@dataclass
class Sample:
    """One request's outcome, as the canary judge reads it."""

    t: float
    version: str
    role: str
    status: int
    latency_s: float
    ttft_s: float | None
    tokens: int
    retried: bool = False


@dataclass
class Attempt:
    version: str
    role: str
    response: aiohttp.ClientResponse | None = None
    error: str | None = None  # why no response came: a reason label (M10), e.g. "refused"
    retryable: bool = False  # the failure happened before the backend took the request


def upstream_failure(exc: BaseException) -> tuple[str, bool]:
    """A failed call's reason label and whether it is safe to retry: refused or reset
    connections are (the backend never ran the request, or died with it); a timeout
    is not (the backend may still be generating)."""
    if isinstance(exc, asyncio.TimeoutError):
        return "timeout", False
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "refused", True
    if isinstance(exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)):
        return "reset", True
    return type(exc).__name__, False


class FeedbackBody(BaseModel):
    request_id: str | None = None
    rating: int | None = Field(default=None, ge=1, le=5)
    correction: str | None = None
    prompt: str | None = None
    comment: str | None = None


@dataclass
class GatewayState:
    config: GatewayConfig
    launcher: BackendLauncher
    safety: Any = None
    route: RouteState = field(init=False)
    route_etag: str | None | int = -1  # the state file's ETag; -1: never read yet
    urls: dict[str, str] = field(default_factory=dict)
    up: set[str] = field(default_factory=set)
    tripped: dict[str, Any] | None = None
    samples: collections.deque = field(init=False)
    canary_errors: collections.deque = field(default_factory=collections.deque)
    ready: bool = False
    follow_error: str | None = None
    probed: tuple[dict[str, str], float] = ({}, float("-inf"))  # the URLs probed, and when

    def __post_init__(self) -> None:
        self.route = RouteState(variant=self.config.variant)
        self.samples = collections.deque(maxlen=self.config.sample_capacity)

    @property
    def canary_weight(self) -> float:
        """The weight the canary really gets: 0 while the gateway has tripped it."""
        route = self.route
        if self.tripped and self.tripped.get("version") == route.canary:
            return 0.0
        return route.canary_weight


class GenerationRoutes:
    """POST /v1/completions and /v1/chat/completions as plain ASGI, ahead of FastAPI's
    router: FastAPI's routing, endpoint wrapping and exception middleware cost about
    0.27 ms a request here, a tenth of the gateway's own CPU time on the hot path
    (benchmarks/results/serving.md). Every other route goes through FastAPI."""

    def __init__(
        self, app: ASGIApp, routes: dict[str, Callable[[Request], Awaitable[Response]]]
    ) -> None:
        self.app, self.routes = app, routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self.routes.get(scope["path"]) if scope["type"] == "http" else None
        if route is None:
            await self.app(scope, receive, send)
            return
        if scope["method"] != "POST":
            response: Response = JSONResponse(
                error_body("Method Not Allowed", "MethodNotAllowedError", 405),
                405,
                headers={"allow": "POST"},
            )
        else:
            response = await route(Request(scope, receive))
        await response(scope, receive, send)


def create_gateway_app(
    config: GatewayConfig,
    launcher: BackendLauncher,
    safety: Any = None,
    on_ready: Callable[[], Awaitable[None]] | None = None,
) -> FastAPI:
    """The gateway app. `safety` is the eval suite's policy (`evals.safety`; the
    default policy when None, no screening when False): `screen_prompt(text)` and
    `screen_output(text)` return a verdict with `.blocked` and `.findings`."""
    if safety is None:
        from evals.safety import default_policy

        safety = default_policy()
    state = GatewayState(config, launcher, safety or None)
    registry = CollectorRegistry()
    metrics = GatewayMetrics(registry)
    tracer, tracer_provider = make_tracer(f"gateway-{config.variant}")
    limiter = RateLimiter()
    anonymous = ApiKey(ANONYMOUS, "", config.anonymous_requests_per_minute, config.anonymous_burst)
    rng = random.Random()
    feedback = (
        FeedbackWriter(config.feedback_landing, config.variant)
        if config.feedback_landing is not None
        else None
    )
    variant = config.variant

    # --- following the routing state and the backends ------------------------------------------

    async def follow_once(client: aiohttp.ClientSession) -> None:
        path = config.deployment_path
        try:
            # The file's ETag (a local root derives it from inode, mtime and size): it
            # changes with every atomic replace, on S3 as on a disk.
            etag = path.stat().etag if path.exists() else None
            if etag != state.route_etag:
                route = read_state(path, variant)
                if route.stable is None and route.canary is None and config.fallback_stable:
                    route = RouteState(variant, stable=config.fallback_stable, reason="champion")
                state.route, state.route_etag = route, etag  # one assignment: atomic switch
                if state.tripped and state.tripped.get("version") != route.canary:
                    state.tripped = None  # that canary is gone; a new one starts untripped
                    state.canary_errors.clear()
                log.info(
                    "routing state",
                    extra={
                        "revision": route.revision,
                        "stable": route.stable,
                        "canary": route.canary,
                        "canary_weight": route.canary_weight,
                        "status": route.status,
                    },
                )
            if state.tripped is None and config.trip_path.exists():
                trip = json.loads(config.trip_path.read_text())
                if trip.get("version") == state.route.canary:  # a restarted gateway keeps it
                    state.tripped = trip
            state.urls = await state.launcher.ensure(state.route.versions)
            state.follow_error = None
        except Exception as exc:
            # A bad file or a launcher that cannot start a version (vLLM refusing its
            # plan, say) keeps the last good route; the loop must outlive any of them,
            # or the gateway would stop following without a word. Logged once a cause.
            error = f"{type(exc).__name__}: {exc}"
            if error != state.follow_error:
                log.warning("cannot follow the routing state", extra={"error": error})
            state.follow_error = error
        urls, probed_at = state.probed
        now = time.monotonic()
        if urls != state.urls or not state.ready or now - probed_at >= config.probe_interval_s:
            urls = dict(state.urls)
            results = await asyncio.gather(
                *(probe(client, url) for url in urls.values()), return_exceptions=True
            )
            state.up = {v for v, ok in zip(urls, results, strict=True) if ok is True}
            state.probed = urls, now
        route = state.route
        for version in state.urls:
            metrics.backend_up.labels(variant, version).set(1 if version in state.up else 0)
            metrics.price.labels(variant, version).set(config.device_price_per_hour)
        for version, role, weight in (
            (route.stable, "stable", 100.0 - state.canary_weight if route.canary else 100.0),
            (route.canary, "canary", state.canary_weight),
        ):
            if version:
                metrics.weight.labels(variant, version, role).set(weight)
        was_ready = state.ready
        state.ready = bool(route.stable and route.stable in state.up) or bool(
            route.canary and route.canary in state.up
        )
        if state.ready and not was_ready and on_ready is not None:
            await on_ready()

    async def probe(client: aiohttp.ClientSession, url: str) -> bool:
        try:
            # `/health`: vLLM's readiness route, which the CPU backend answers alike.
            async with client.get(f"{url}/health") as response:
                return response.status == 200
        except UPSTREAM_ERRORS:
            return False

    async def follow_loop() -> None:
        timeout = aiohttp.ClientTimeout(total=2.0)
        async with aiohttp.ClientSession(timeout=timeout) as probe_client:
            while True:
                await follow_once(probe_client)
                await asyncio.sleep(config.poll_interval_s)

    async def lifespan(app: FastAPI):
        # aiohttp, not httpx: its C HTTP parser took the upstream call from about a third
        # of the gateway's CPU to a tenth (benchmarks/results/serving.md). The read
        # timeout is per socket read, so a long stream is never cut.
        app.state.client = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(
                total=None, connect=5.0, sock_read=config.upstream_timeout_s
            ),
            connector=aiohttp.TCPConnector(limit=512, limit_per_host=0),
            auto_decompress=False,
        )
        tasks = [asyncio.create_task(follow_loop(), name="follow")]
        if feedback is not None:
            tasks.append(asyncio.create_task(feedback.flush_loop(config.feedback_flush_s)))
        yield
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if feedback is not None:
            await asyncio.to_thread(feedback.flush)
        await app.state.client.close()
        await state.launcher.close()
        tracer_provider.shutdown()

    app = FastAPI(title=f"llama gateway {variant}", lifespan=lifespan)
    app.state.gateway = state

    # --- probes, metrics, admin ----------------------------------------------------------------

    @app.get("/health/live")
    @app.get("/health/startup")
    async def live() -> Response:
        return JSONResponse({"status": "alive"})

    @app.get("/health/ready")
    async def ready() -> Response:
        if not state.ready:
            return JSONResponse(
                {
                    "status": "not ready",
                    "up": sorted(state.up),
                    "route": state.route.versions,
                    "error": state.follow_error,
                },
                503,
            )
        return JSONResponse({"status": "ready", "up": sorted(state.up)})

    @app.get("/metrics")
    async def metrics_endpoint() -> Response:
        return PlainTextResponse(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    def authenticate(request: Request) -> ApiKey | JSONResponse:
        if not config.keys:
            return anonymous
        token = bearer(request.headers.get("authorization"))
        key = config.keys.get(hash_key(token)) if token else None
        if key is None:
            return JSONResponse(
                error_body("Incorrect API key provided.", "AuthenticationError", 401), 401
            )
        return key

    def admin_only(request: Request) -> ApiKey | JSONResponse:
        key = authenticate(request)
        if isinstance(key, ApiKey) and config.keys and not key.admin:
            return JSONResponse(error_body("admin key required", "PermissionDeniedError", 403), 403)
        return key

    @app.get("/admin/route")
    async def route_endpoint(request: Request) -> Response:
        key = admin_only(request)
        if isinstance(key, JSONResponse):
            return key
        return JSONResponse(
            {
                "route": state.route.to_json(),
                "effective_canary_weight": state.canary_weight,
                "up": sorted(state.up),
                "urls": state.urls,
                "backends": state.launcher.describe(),
                "tripped": state.tripped,
            }
        )

    @app.get("/admin/samples")
    async def samples_endpoint(request: Request, since: float = 0.0) -> Response:
        """Every request's outcome since `since` (unix seconds), for the canary judge."""
        key = admin_only(request)
        if isinstance(key, JSONResponse):
            return key
        rows = [s.__dict__ for s in list(state.samples) if s.t >= since]
        return JSONResponse({"now": time.time(), "samples": rows})

    # --- generation ----------------------------------------------------------------------------

    app.add_middleware(
        GenerationRoutes,
        routes={
            "/v1/completions": lambda request: handle(request, "completions", CompletionRequest),
            "/v1/chat/completions": lambda request: handle(request, "chat", ChatCompletionRequest),
        },
    )

    @app.get("/v1/models")
    async def models() -> dict:
        return {
            "object": "list",
            "data": [
                {"id": name, "object": "model", "owned_by": "llama-platform", "root": version}
                for version in state.route.versions
                for name in ((variant,) if version == state.route.stable else ())
                + (f"{variant}@{version}",)
            ],
        }

    async def handle(request: Request, endpoint: str, model_cls) -> Response:
        started = time.perf_counter()
        rid = request.headers.get("x-request-id") or new_id("req")
        request_id_var.set(rid)
        headers = {"x-request-id": rid}
        key = authenticate(request)
        if isinstance(key, JSONResponse):
            metrics.requests.labels(variant, "", "", endpoint, "401").inc()
            key.headers["x-request-id"] = rid
            return key
        wait = limiter.take(key)
        if wait > 0:
            metrics.rate_limited.labels(key.name).inc()
            metrics.requests.labels(variant, "", "", endpoint, "429").inc()
            return JSONResponse(
                error_body(f"Rate limit reached for key {key.name}.", "RateLimitError", 429),
                429,
                headers={**headers, "retry-after": str(max(1, round(wait)))},
            )
        try:
            raw = await request.json()
            parsed = model_cls.model_validate(raw)
        except (ValueError, ValidationError) as exc:
            metrics.requests.labels(variant, "", "", endpoint, "400").inc()
            return JSONResponse(
                error_body(f"invalid request: {exc}", "BadRequestError", 400), 400, headers=headers
            )
        prompt = parsed.text
        with tracer.start_as_current_span(
            f"gateway {endpoint}",
            context=extract_context(request.headers),
            kind=SpanKind.SERVER,
            attributes={"request_id": rid, "variant": variant},
        ) as span:
            verdict = screen(prompt, "prompt")
            if verdict is not None and verdict.blocked:
                metrics.requests.labels(variant, "", "", endpoint, "400").inc()
                log_request(key, rid, endpoint, prompt, "", "", 400, started, blocked="prompt")
                return JSONResponse(
                    error_body(
                        "The prompt was refused by the safety policy: "
                        + ", ".join(sorted({f.category for f in verdict.findings})),
                        "BadRequestError",
                        400,
                        param="content_policy_violation",
                    ),
                    400,
                    headers=headers,
                )
            pinned = request.headers.get("x-llama-version")
            if pinned and (not config.keys or key.admin) and pinned in state.urls:
                version, role = pinned, ("stable" if pinned == state.route.stable else "canary")
            else:
                user = parsed.user or request.headers.get("x-user-id")
                version, role = choose_version(
                    state.route, user, state.up, state.canary_weight, rng
                )
            if version is None or version not in state.urls:
                metrics.requests.labels(variant, "", "", endpoint, "503").inc()
                return JSONResponse(
                    error_body("no backend is serving yet", "ServiceUnavailableError", 503),
                    503,
                    headers=headers,
                )
            upstream_body = dict(raw)
            if parsed.stream:
                # The gateway counts tokens from the usage chunk; it is dropped again
                # unless the client asked for it.
                upstream_body["stream_options"] = {"include_usage": True}
            upstream_headers = {"x-request-id": rid, **inject_headers()}
            path = "/v1/completions" if endpoint == "completions" else "/v1/chat/completions"
            attempt, retried = await call_with_retry(
                request.app.state.client, path, upstream_body, upstream_headers, parsed.stream,
                version, role, endpoint,
            )  # fmt: skip
            span.set_attribute("version", attempt.version)
            span.set_attribute("retried", retried)
            headers["x-llama-version"] = attempt.version
            if attempt.response is None or attempt.response.status != 200:
                return await upstream_failed(
                    attempt, endpoint, headers, started, retried, key, rid, prompt
                )
            if parsed.stream:
                return StreamingResponse(
                    relay_stream(attempt, parsed, endpoint, started, retried, key, rid, prompt),
                    media_type="text/event-stream",
                    headers=headers,
                )
            return await relay_whole(attempt, endpoint, headers, started, retried, key, rid, prompt)

    async def call_with_retry(
        client: aiohttp.ClientSession,
        path: str,
        body: dict,
        headers: dict,
        stream: bool,
        version: str,
        role: str,
        endpoint: str,
    ) -> tuple[Attempt, bool]:
        attempt = await call(client, path, body, headers, stream, version, role)
        if not retryable(attempt):
            return attempt, False
        reason = attempt.error or str(attempt.response.status)
        metrics.retries.labels(variant, version, reason_label(attempt)).inc()
        # The failed attempt is a sample of its version: the judge must see it.
        record(
            attempt.version,
            attempt.role,
            status_of(attempt),
            0.0,
            None,
            0,
            endpoint,
            False,
            count=False,
        )  # M1 counts what the client got; M10 counts this attempt
        if attempt.response is not None:
            attempt.response.release()
        log.warning("retrying", extra={"version": version, "reason": reason})
        await asyncio.sleep(rng.uniform(*config.retry_jitter_s))
        other = [v for v in state.route.versions if v != version and v in state.up]
        next_version = other[0] if other else version
        next_role = "stable" if next_version == state.route.stable else "canary"
        return await call(client, path, body, headers, stream, next_version, next_role), True

    async def call(client, path, body, headers, stream, version, role) -> Attempt:
        url = state.urls.get(version)
        if url is None:
            return Attempt(version, role, error="no backend")
        model = state.launcher.served_model(version)
        if model is not None:
            body = {**body, "model": model}
        try:
            # The response's headers are read here; its body is read by the relay.
            response = await client.post(url + path, json=body, headers=headers)
        except UPSTREAM_ERRORS as exc:
            error, retry = upstream_failure(exc)
            if error == "refused":
                state.up.discard(version)  # down until its next probe answers
            return Attempt(version, role, error=error, retryable=retry)
        return Attempt(version, role, response=response)

    def retryable(attempt: Attempt) -> bool:
        if attempt.response is not None:
            return attempt.response.status in RETRYABLE_STATUS
        return attempt.retryable

    def reason_label(attempt: Attempt) -> str:
        if attempt.response is not None:
            return f"http_{attempt.response.status}"
        return attempt.error or "error"

    def status_of(attempt: Attempt) -> int:
        if attempt.response is not None:
            return attempt.response.status
        return 504 if attempt.error == "timeout" else 502

    async def upstream_failed(
        attempt: Attempt, endpoint, headers, started, retried, key, rid, prompt
    ) -> Response:
        code = status_of(attempt)
        if attempt.response is not None:
            try:
                raw = await attempt.response.read()
            except UPSTREAM_ERRORS:
                raw = b""
            finally:
                attempt.response.release()
            try:
                body = json.loads(raw)
            except ValueError:
                body = error_body(raw[:200].decode(errors="replace"), "UpstreamError", code)
        else:
            body = error_body(
                f"the backend of {attempt.version} failed: {attempt.error}", "BadGatewayError", code
            )
        # The request's span: both callers run inside `handle`'s.
        trace.get_current_span().set_status(Status(StatusCode.ERROR, f"upstream {code}"))

        async def account() -> None:  # async: runs on the loop, not in a thread
            finish(attempt, endpoint, code, started, None, [], 0, 0, retried)
            log_request(key, rid, endpoint, prompt, attempt.version, attempt.role, code, started)

        return JSONResponse(body, code, headers=headers, background=BackgroundTask(account))

    async def relay_whole(attempt, endpoint, headers, started, retried, key, rid, prompt):
        response = attempt.response
        upstream_timing = response.headers.get("server-timing")
        try:
            raw = await response.read()
        except UPSTREAM_ERRORS as exc:  # the backend died before its answer was whole
            attempt.response, attempt.error = None, upstream_failure(exc)[0]
            return await upstream_failed(
                attempt, endpoint, headers, started, retried, key, rid, prompt
            )
        finally:
            response.release()
        body = json.loads(raw)
        text = body_text(body)
        verdict = screen(text, "output")
        passed = verdict is None or not verdict.blocked
        if not passed:
            for choice in body.get("choices", []):
                if "text" in choice:
                    choice["text"] = ""
                if isinstance(choice.get("message"), dict):
                    choice["message"]["content"] = ""
                choice["finish_reason"] = CONTENT_FILTER
        use = body.get("usage") or {}

        async def account() -> None:  # async: runs on the loop, not in a thread
            finish(
                attempt, endpoint, 200, started, None, [], use.get("completion_tokens", 0),
                use.get("prompt_tokens", 0), retried,
            )  # fmt: skip
            log_request(
                key, rid, endpoint, prompt, attempt.version, attempt.role, 200, started,
                output=text, blocked=None if passed else "output",
            )  # fmt: skip

        # Metrics, samples and the log line are written once the answer is out: the
        # client does not wait for them. They run on the loop before it takes another
        # event, so a scrape or the canary judge's poll after the answer sees them.
        after = BackgroundTask(account)
        headers["server-timing"] = server_timing("gateway", started, upstream_timing)
        if passed:  # the backend's bytes as they came: no second serialisation
            return Response(raw, media_type="application/json", headers=headers, background=after)
        return JSONResponse(body, headers=headers, background=after)

    async def relay_stream(
        attempt, parsed, endpoint, started, retried, key, rid, prompt
    ) -> AsyncIterator[bytes]:
        response = attempt.response
        wants_usage = bool(parsed.stream_options and parsed.stream_options.include_usage)
        chat = endpoint == "chat"
        text, ttft, gaps, last = "", None, [], None
        use: dict = {}
        status, blocked = 200, False
        cid, model = new_id("chatcmpl" if chat else "cmpl"), parsed.model
        try:
            async for raw_line in response.content:
                line = raw_line.decode().rstrip("\r\n")
                if not line.startswith("data: "):
                    continue
                payload = line[6:]
                if payload == "[DONE]":
                    break
                chunk = json.loads(payload)
                cid, model = chunk.get("id", cid), chunk.get("model", model)
                if "error" in chunk:
                    status = int(chunk["error"].get("code") or 500)
                    yield sse(chunk)
                    break
                if chunk.get("usage") and not chunk.get("choices"):
                    use = chunk["usage"]
                    if wants_usage:
                        yield sse(chunk)
                    continue
                piece = chunk_text(chunk)
                if piece:
                    now = time.perf_counter()
                    if ttft is None:
                        ttft = now - started
                    else:
                        gaps.append(now - last)
                    last = now
                    verdict = screen_stream(text, piece)
                    if verdict is not None and verdict.blocked:
                        blocked = True
                        yield sse(chunk_body(cid, model, "", CONTENT_FILTER, chat))
                        break
                    text += piece
                yield (line + "\n\n").encode()
            yield SSE_DONE
        except UPSTREAM_ERRORS as exc:  # the backend died mid-stream: bytes are out, no retry
            status = 502
            yield sse(error_body(f"the backend failed mid-stream: {exc}", "BadGatewayError", 502))
            yield SSE_DONE
        finally:
            response.release()
            finish(
                attempt, endpoint, status, started, ttft, gaps, use.get("completion_tokens", 0),
                use.get("prompt_tokens", 0), retried,
            )  # fmt: skip
            log_request(
                key, rid, endpoint, prompt, attempt.version, attempt.role, status, started,
                output=text, blocked="output" if blocked else None,
            )  # fmt: skip

    # --- measuring -----------------------------------------------------------------------------

    def screen(text: str, direction: str):
        if state.safety is None:
            return None
        check = state.safety.screen_prompt if direction == "prompt" else state.safety.screen_output
        verdict = check(text)
        count_findings(verdict, verdict.findings, direction)
        return verdict

    def screen_stream(text: str, piece: str):
        """A streamed output's new piece, screened with the window before it: a finding
        that ends in the piece starts within STREAM_SCREEN_WINDOW characters of it.
        Screening the whole output again at every token made the gateway's work per
        stream grow with the square of its length, and counted each finding again."""
        if state.safety is None:
            return None
        start = max(0, len(text) - STREAM_SCREEN_WINDOW)
        verdict = state.safety.screen_output(text[start:] + piece)
        # Earlier findings were counted (and a blocking one ended the stream) already.
        new = len(text) - start
        count_findings(verdict, [f for f in verdict.findings if f.end > new], "output")
        return verdict

    def count_findings(verdict, findings, direction: str) -> None:
        action = "blocked" if verdict.blocked else "flagged"
        for finding in findings:
            metrics.safety.labels(variant, finding.rule, direction, action).inc()

    def record(version, role, status, latency, ttft, tokens, endpoint, retried, count=True):
        state.samples.append(
            Sample(time.time(), version, role, status, latency, ttft, tokens, retried)
        )
        if count:
            metrics.requests.labels(variant, version, role, endpoint, str(status)).inc()
        if status >= 500 and version == state.route.canary and role == "canary":
            note_canary_error(version)

    def finish(attempt, endpoint, status, started, ttft, gaps, tokens, prompt_tokens, retried):
        latency = time.perf_counter() - started
        version, role = attempt.version, attempt.role
        labels = (variant, version, role)
        record(version, role, status, latency, ttft, tokens, endpoint, retried)
        metrics.e2e.labels(*labels).observe(latency)
        if ttft is not None:
            metrics.ttft.labels(*labels).observe(ttft)
        for gap in gaps:
            metrics.inter_token.labels(*labels).observe(gap)
        metrics.generation_tokens.labels(*labels).inc(tokens)
        metrics.prompt_tokens.labels(*labels).inc(prompt_tokens)

    def note_canary_error(version: str) -> None:
        now = time.monotonic()
        errors = state.canary_errors
        errors.append(now)
        while errors and errors[0] < now - config.trip_window_s:
            errors.popleft()
        if len(errors) >= config.trip_errors and state.tripped is None:
            state.tripped = {
                "version": version,
                "at": time.time(),
                "reason": f"{len(errors)} 5xx within {config.trip_window_s:g} s",
            }
            metrics.canary_trips.labels(variant, version).inc()
            try:
                atomic_write_json(config.trip_path, state.tripped)
            except OSError as exc:  # the trip holds in memory either way
                log.error("cannot record the trip", extra={"error": str(exc)})
            log.error("canary tripped to 0%", extra=state.tripped)

    def log_request(
        key, rid, endpoint, prompt, version, role, status, started, output="", blocked=None
    ) -> None:
        extra: dict[str, Any] = {
            "request_id": rid,
            "endpoint": endpoint,
            "key": key.name,
            "version": version,
            "role": role,
            "status": status,
            "latency_ms": round((time.perf_counter() - started) * 1000, 2),
            "prompt": text_fingerprint(prompt),
            "output": text_fingerprint(output),
        }
        if blocked:
            extra["blocked"] = blocked
        if key.log_prompts:
            extra["prompt_text"] = prompt
            extra["output_text"] = output
        log.info("request", extra=extra)

    # --- feedback ------------------------------------------------------------------------------

    @app.post("/v1/feedback")
    async def post_feedback(request: Request) -> Response:
        rid = request.headers.get("x-request-id") or new_id("req")
        key = authenticate(request)
        if isinstance(key, JSONResponse):
            return key
        if feedback is None:
            return JSONResponse(error_body("feedback is not enabled", "NotFoundError", 404), 404)
        try:
            body = FeedbackBody.model_validate(await request.json())
        except (ValueError, ValidationError) as exc:
            return JSONResponse(error_body(f"invalid feedback: {exc}", "BadRequestError", 400), 400)
        if body.rating is None and not body.correction:
            return JSONResponse(
                error_body("give a rating or a correction", "BadRequestError", 400), 400
            )
        feedback_id = new_id("fb")
        feedback.add(
            {
                "feedback_id": feedback_id,
                "request_id": body.request_id or rid,
                "rating": body.rating,
                "correction": body.correction,
                "prompt": body.prompt,
                "comment": body.comment,
                "key": key.name,
                "stable": state.route.stable,
                "canary": state.route.canary,
                "received_at": time.time(),
            }
        )
        metrics.feedback.labels(variant, str(body.rating) if body.rating else "none").inc()
        return JSONResponse({"id": feedback_id, "status": "accepted"}, 202)

    app.state.flush_feedback = (lambda: feedback.flush()) if feedback is not None else None
    return app

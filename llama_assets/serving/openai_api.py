"""The OpenAI API's request and response shapes (the subset vLLM's server answers with).

`/v1/completions` and `/v1/chat/completions`, streamed as server-sent events
(`data: {...}` lines ending with `data: [DONE]`) or answered whole; errors in
OpenAI's `{"error": {...}}` shape. Shared by the backend and the gateway.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from llama_assets.serving.sampling import SamplingParams

MAX_TOKENS_DEFAULT = 16  # OpenAI's and vLLM's default for /v1/completions


class StreamOptions(BaseModel):
    include_usage: bool = False


class _Sampling(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    n: int = Field(default=1, ge=1, le=1)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    ignore_eos: bool = False

    def sampling(self, default_max_tokens: int = MAX_TOKENS_DEFAULT) -> SamplingParams:
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return SamplingParams(
            max_tokens=self.max_tokens or default_max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            seed=self.seed,
            stop=tuple(s for s in stop if s),
            ignore_eos=self.ignore_eos,
        )


class CompletionRequest(_Sampling):
    prompt: str | list[str]

    @field_validator("prompt")
    @classmethod
    def one_prompt(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list) and len(value) != 1:
            raise ValueError("exactly one prompt per request is supported")
        return value

    @property
    def text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)

    @property
    def text(self) -> str:
        """The text a safety policy reads: every message's content."""
        return "\n".join(m.content for m in self.messages)


def new_id(kind: str) -> str:
    return f"{kind}-{uuid.uuid4().hex}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def completion_body(
    rid: str, model: str, text: str, finish: str | None, use: dict[str, int] | None, chat: bool
) -> dict[str, Any]:
    if chat:
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "finish_reason": finish,
        }
    else:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
    body = {
        "id": rid,
        "object": "chat.completion" if chat else "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [choice],
    }
    if use is not None:
        body["usage"] = use
    return body


def chunk_body(
    rid: str, model: str, delta: str, finish: str | None, chat: bool, first: bool = False
) -> dict[str, Any]:
    if chat:
        piece: dict[str, Any] = {"content": delta}
        if first:
            piece["role"] = "assistant"
        choice = {"index": 0, "delta": piece, "finish_reason": finish}
    else:
        choice = {"index": 0, "text": delta, "logprobs": None, "finish_reason": finish}
    return {
        "id": rid,
        "object": "chat.completion.chunk" if chat else "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [choice],
    }


def usage_chunk(rid: str, model: str, use: dict[str, int], chat: bool) -> dict[str, Any]:
    return {
        "id": rid,
        "object": "chat.completion.chunk" if chat else "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [],
        "usage": use,
    }


def sse(data: dict[str, Any] | str) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"data: {payload}\n\n".encode()


SSE_DONE = sse("[DONE]")


def error_body(message: str, kind: str, code: int, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def chunk_text(chunk: dict[str, Any]) -> str:
    """The text a streamed chunk adds (completion or chat)."""
    out = []
    for choice in chunk.get("choices") or []:
        if "text" in choice:
            out.append(choice["text"] or "")
        elif isinstance(choice.get("delta"), dict):
            out.append(choice["delta"].get("content") or "")
    return "".join(out)


def body_text(body: dict[str, Any]) -> str:
    """The text of a whole (non-streamed) answer."""
    out = []
    for choice in body.get("choices") or []:
        if "text" in choice:
            out.append(choice["text"] or "")
        elif isinstance(choice.get("message"), dict):
            out.append(choice["message"].get("content") or "")
    return "".join(out)


def server_timing(name: str, started: float, upstream: str | None = None) -> str:
    """A W3C `Server-Timing` value: `name` took from `started` (perf_counter) until
    now, then the upstream's entries. An answer sent whole carries the time each hop
    held it (`gateway;dur=6.10, backend;dur=130.84`, in ms): the client's latency less
    the backend's is what the hops and the gateway cost, without the model's time."""
    entry = f"{name};dur={(time.perf_counter() - started) * 1000:.2f}"
    return f"{entry}, {upstream}" if upstream else entry


_TIMING_ENTRY = re.compile(r'([\w.-]+)\s*;[^,]*?\bdur="?(\d+(?:\.\d+)?)')


def parse_server_timing(value: str | None) -> dict[str, float]:
    """`{name: ms}` of a `Server-Timing` value (entries without a duration are skipped)."""
    return {m[1]: float(m[2]) for m in _TIMING_ENTRY.finditer(value or "")}

"""What the control plane reads from a running gateway: its samples, metrics and route.

The gateway writes its address to `serving/<variant>/gateway.json` when it is
ready; the canary sensor, the SLO checks and the diagnostics read from there.
With API keys configured the admin endpoints need an admin key, taken from
`LLAMA_GATEWAY_ADMIN_KEY`.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from llama_assets.base.layout import DataLayout

ADMIN_KEY_ENV = "LLAMA_GATEWAY_ADMIN_KEY"
TIMEOUT_S = 10.0


class GatewayUnavailable(RuntimeError):
    """No gateway is running for the variant, or it does not answer."""


@dataclass(frozen=True)
class GatewayClient:
    url: str

    @classmethod
    def for_variant(cls, layout: DataLayout, variant: str) -> GatewayClient:
        path: Path = layout.gateway_endpoint(variant)
        if not path.exists():
            raise GatewayUnavailable(
                f"no gateway is serving {variant} ({path} is missing): "
                f"start one with `llama-platform serve --variant {variant}`"
            )
        return cls(json.loads(path.read_text())["url"])

    def _headers(self) -> dict[str, str]:
        key = os.environ.get(ADMIN_KEY_ENV, "").strip()
        return {"authorization": f"Bearer {key}"} if key else {}

    def _get(self, path: str, **params: Any) -> httpx.Response:
        try:
            response = httpx.get(
                self.url + path, params=params, headers=self._headers(), timeout=TIMEOUT_S
            )
            response.raise_for_status()
        except httpx.HTTPError as exc:
            raise GatewayUnavailable(
                f"the gateway at {self.url} did not answer {path}: {exc}"
            ) from exc
        return response

    def samples(self, since: float = 0.0) -> list[dict[str, Any]]:
        return self._get("/admin/samples", since=since).json()["samples"]

    def route(self) -> dict[str, Any]:
        return self._get("/admin/route").json()

    def metrics_text(self) -> str:
        return self._get("/metrics").text

    def smoke(self, version: str, model: str, requests: int) -> list[dict[str, Any]]:
        """`requests` small completions pinned to `version` (the pre-switch analysis)."""
        out = []
        body = {"model": model, "prompt": "Smoke test:", "max_tokens": 4, "temperature": 0}
        with httpx.Client(timeout=TIMEOUT_S * 6, headers=self._headers()) as client:
            for _ in range(requests):
                started = time.perf_counter()
                try:
                    response = client.post(
                        self.url + "/v1/completions",
                        json=body,
                        headers={"x-llama-version": version},
                    )
                    status = response.status_code
                    served = response.headers.get("x-llama-version")
                except httpx.HTTPError:
                    status, served = 0, None
                out.append(
                    {
                        "status": status if served in (version, None) else 409,
                        "latency_s": time.perf_counter() - started,
                        "version": served,
                    }
                )
        return out

"""Evidence of a rolled-back canary, saved before its weight goes to 0%.

`serving/<variant>/diagnostics/<UTC time>-<version>/`: `decision.json` (the
verdict, its reasons and figures, the routing state before the move),
`metrics.prom` (the gateway's /metrics at that moment), `samples.jsonl` (every
request the gateway still holds since the rollout began), `route.json` (what
the gateway saw: weights, backends up, the trip) and `trip.json` when the
gateway had tripped the canary. Written as one directory, atomically; what
cannot be fetched (no gateway) is recorded as such, never blocks the rollback.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from llama_assets.base.atomic import staged_dir
from llama_assets.base.layout import DataLayout
from llama_assets.deployment.gateway_client import GatewayClient, GatewayUnavailable
from llama_assets.serving.routing import RouteState


def save_diagnostics(
    layout: DataLayout,
    state: RouteState,
    reason: str,
    judgement: dict[str, Any] | None,
) -> Path:
    version = state.canary or "none"
    name = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ") + f"-{version}"
    final = layout.rollout_diagnostics(state.variant, name)
    fetched: dict[str, Any] = {}
    problems: list[str] = []
    try:
        client = GatewayClient.for_variant(layout, state.variant)
        since = (
            datetime.fromisoformat(state.rollout_started_at).timestamp()
            if state.rollout_started_at
            else 0.0
        )
        fetched["metrics.prom"] = client.metrics_text()
        fetched["samples.jsonl"] = "".join(
            json.dumps(s, sort_keys=True) + "\n" for s in client.samples(since)
        )
        fetched["route.json"] = json.dumps(client.route(), indent=2, sort_keys=True)
    except GatewayUnavailable as exc:
        problems.append(str(exc))
    trip = layout.gateway_trip(state.variant)
    if trip.exists():
        fetched["trip.json"] = trip.read_text()
    decision = {
        "reason": reason,
        "judgement": judgement,
        "state_before": state.to_json(),
        "saved_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "problems": problems,
    }
    with staged_dir(final) as tmp:
        (tmp / "decision.json").write_text(json.dumps(decision, indent=2, sort_keys=True) + "\n")
        for file_name, text in fetched.items():
            (tmp / file_name).write_text(text)
    return final

"""Feedback from users, back into the data: `POST /v1/feedback` -> `landing/feedback/<batch>/`.

The gateway buffers feedback and writes it every few seconds as a new landing
batch of JSON lines through the landing zone's atomic write, so the landing
sensor registers it like any other batch and validation, PII masking and the
review queue treat it like any other text. A correction with its prompt becomes
an instruction record (prompt, response: the correction), which the next
fine-tune learns as a chat turn; a correction alone becomes a document. A
rating without a correction holds no text for the corpus: it is counted
(`llama_gateway_feedback_total`) and logged, not landed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from typing import Any

from llama_assets.ingest.landing import new_batch_name, write_landing_batch

log = logging.getLogger("llama.feedback")
SOURCE = "feedback"
FILE_NAME = "feedback.jsonl"


def landing_record(item: dict[str, Any]) -> dict[str, Any] | None:
    """The corpus record of one feedback item, or None when it has no text."""
    correction = (item.get("correction") or "").strip()
    if not correction:
        return None
    meta = {
        "id": item["feedback_id"],
        "request_id": item.get("request_id"),
        "rating": item.get("rating"),
        "variant": item.get("variant"),
        "stable": item.get("stable"),
        "canary": item.get("canary"),
    }
    if (item.get("prompt") or "").strip():
        return {**meta, "prompt": item["prompt"], "response": correction}
    return {**meta, "text": correction}


class FeedbackWriter:
    def __init__(self, landing, variant: str):
        self.landing = landing
        self.variant = variant
        self._items: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self.batches: list[str] = []

    def add(self, item: dict[str, Any]) -> None:
        with self._lock:
            self._items.append({**item, "variant": self.variant})

    def flush(self) -> str | None:
        """Write what is buffered as one landing batch; its key, or None when nothing was."""
        with self._lock:
            items, self._items = self._items, []
        records = [r for r in map(landing_record, items) if r is not None]
        if not records:
            return None
        data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()
        try:
            key = write_landing_batch(self.landing, SOURCE, new_batch_name(), {FILE_NAME: data})
        except OSError:
            with self._lock:  # keep them for the next flush
                self._items[:0] = items
            raise
        self.batches.append(key)
        log.info("feedback landed", extra={"batch": key, "records": len(records)})
        return key

    async def flush_loop(self, every_s: float) -> None:
        while True:
            await asyncio.sleep(every_s)
            try:
                await asyncio.to_thread(self.flush)
            except OSError as exc:
                log.error("cannot land feedback", extra={"error": str(exc)})

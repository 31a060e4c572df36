"""The CPU backend's engine: one batching loop that generates for concurrent requests together.

Requests are queued by the web handlers; the loop thread takes what is waiting
(up to `max_batch_size`, waiting at most `batch_wait_s` after the first for
others to arrive), prefills them as one left-padded batch and decodes them
step by step with the KV cache, handing each new piece of text back to its
request as it is produced (streaming). Batching is continuous, as in vLLM and
TGI: between two decode steps, requests that arrived meanwhile are prefilled
and join the running batch (their KV cache left-padded to its length), and a
sequence leaves it at its end (eos, a stop string, max_tokens, or its client
gone). A request never waits for a whole batch to end, so arrivals that are a
few milliseconds apart (clients behind a gateway, real traffic) still share
decode steps; decode steps of a batch of 8 cost about what one costs on a CPU,
so throughput grows with concurrency.

The loop reports a heartbeat on every step, which the liveness and readiness
probes read, and records vLLM's request-level timings (queue, first token,
inter-token, end to end) on each sequence for the metrics.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from llama_assets.serving.sampling import SamplingParams

log = logging.getLogger(__name__)

FINISH_STOP = "stop"
FINISH_LENGTH = "length"
FINISH_ABORT = "abort"
FINISH_ERROR = "error"


@dataclass
class Sequence:
    """One request inside the engine; `emit(text_delta, finish_reason)` is called
    from the loop thread for every new piece of text and once more at the end."""

    prompt_ids: list[int]
    params: SamplingParams
    emit: Callable[[str, str | None], None]
    arrived: float = field(default_factory=time.perf_counter)
    output_ids: list[int] = field(default_factory=list)
    text: str = ""
    sent_chars: int = 0
    finish_reason: str | None = None
    cancelled: bool = False
    scheduled: float | None = None
    first_token: float | None = None
    last_token: float | None = None
    token_gaps: list[float] = field(default_factory=list)
    finished: float | None = None
    generator: torch.Generator | None = None
    error: str | None = None

    def cancel(self) -> None:
        """The client went away: the loop drops the sequence at its next step."""
        self.cancelled = True


class EngineObserver:
    """Hooks for metrics; the default observes nothing."""

    def on_queue(self, waiting: int, running: int) -> None: ...

    def on_batch(self, size: int) -> None: ...

    def on_finished(self, seq: Sequence) -> None: ...


class BatchingEngine:
    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer,
        device: torch.device | str = "cpu",
        max_batch_size: int = 8,
        batch_wait_s: float = 0.005,
        max_model_len: int | None = None,
        observer: EngineObserver | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.device = torch.device(device)
        self.max_batch_size = max_batch_size
        self.batch_wait_s = batch_wait_s
        self.max_model_len = max_model_len or int(
            getattr(model.config, "max_position_embeddings", 2048)
        )
        self.observer = observer or EngineObserver()
        self.eos_ids = _eos_ids(model, tokenizer)
        self.pad_id = (
            tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_ids[0]
        )
        self._queue: queue.Queue[Sequence] = queue.Queue()
        self._running = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.heartbeat = time.monotonic()
        self.batches = 0
        self.error: BaseException | None = None

    # --- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="batching-loop", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def alive(self, max_silence_s: float = 10.0) -> bool:
        """The loop thread runs and has ticked recently (it ticks every step, and every
        0.1 s while idle)."""
        return (
            self._thread is not None
            and self._thread.is_alive()
            and time.monotonic() - self.heartbeat < max_silence_s
        )

    @property
    def waiting(self) -> int:
        return self._queue.qsize()

    @property
    def running(self) -> int:
        return self._running

    # --- requests ------------------------------------------------------------------------------

    def submit(self, seq: Sequence) -> None:
        """Queue a sequence; raises ValueError when the prompt leaves no room to generate."""
        if not seq.prompt_ids:
            raise ValueError("the prompt is empty")
        room = self.max_model_len - len(seq.prompt_ids)
        if room < 1:
            raise ValueError(
                f"the prompt has {len(seq.prompt_ids)} tokens; this model's context is "
                f"{self.max_model_len} tokens"
            )
        if seq.params.max_tokens > room:
            seq.params = SamplingParams(**{**seq.params.__dict__, "max_tokens": room})
        if seq.params.seed is not None:
            seq.generator = torch.Generator(device="cpu").manual_seed(seq.params.seed)
        self._queue.put(seq)
        self.observer.on_queue(self.waiting, self._running)

    # --- the loop ------------------------------------------------------------------------------

    def _loop(self) -> None:
        try:
            running: _Batch | None = None
            while not self._stop.is_set():
                self.heartbeat = time.monotonic()
                if running is None:
                    arrived = self._collect()  # waits (briefly) for the first request
                else:
                    arrived = self._waiting(self.max_batch_size - len(running.seqs))
                try:
                    if arrived:
                        joined = self._prefill(arrived)
                        running = joined if running is None else running.merge(joined)
                        self.observer.on_batch(len(running.seqs))
                    if running is not None:
                        running = self._step(running)
                except Exception as exc:  # a failed batch fails its requests, not the loop
                    failed = (running.seqs if running is not None else []) + arrived
                    log.exception("batch of %d failed", len(failed))
                    for seq in failed:
                        seq.error = f"{type(exc).__name__}: {exc}"
                        self._finish(seq, FINISH_ERROR)
                    running = None
                self._running = len(running.seqs) if running is not None else 0
                self.observer.on_queue(self.waiting, self._running)
        except BaseException as exc:  # pragma: no cover - the probes report it
            self.error = exc
            raise

    def _collect(self) -> list[Sequence]:
        try:
            first = self._queue.get(timeout=0.1)
        except queue.Empty:
            return []
        batch = [first]
        deadline = time.perf_counter() + self.batch_wait_s
        while len(batch) < self.max_batch_size:
            remaining = deadline - time.perf_counter()
            try:
                batch.append(
                    self._queue.get(timeout=remaining)
                    if remaining > 0
                    else self._queue.get_nowait()
                )
            except queue.Empty:
                break
        return self._live(batch)

    def _waiting(self, room: int) -> list[Sequence]:
        """What arrived while a batch runs, up to `room` sequences (never waits)."""
        arrived: list[Sequence] = []
        while len(arrived) < room:
            try:
                arrived.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return self._live(arrived)

    def _live(self, seqs: list[Sequence]) -> list[Sequence]:
        live = []
        for seq in seqs:
            if seq.cancelled:
                self._finish(seq, FINISH_ABORT)
            else:
                live.append(seq)
        return live

    @torch.inference_mode()
    def _prefill(self, seqs: list[Sequence]) -> _Batch:
        """One forward pass over the prompts (left-padded): their KV cache and the
        logits of their first token."""
        now = time.perf_counter()
        for seq in seqs:
            seq.scheduled = now
        width = max(len(s.prompt_ids) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for row, seq in enumerate(seqs):
            n = len(seq.prompt_ids)
            ids[row, width - n :] = torch.tensor(seq.prompt_ids)
            mask[row, width - n :] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True)
        self.batches += 1  # admissions: a batch started, or requests that joined one
        return _Batch(
            list(seqs), out.past_key_values, mask, positions[:, -1:], out.logits[:, -1, :]
        )

    @torch.inference_mode()
    def _step(self, batch: _Batch) -> _Batch | None:
        """Sample a token for every sequence, let the finished ones leave, and run one
        decode step for the rest; None when none is left."""
        next_ids = self._sample(batch.logits, batch.seqs)
        now = time.perf_counter()
        keep = []
        for row, seq in enumerate(batch.seqs):
            if seq.cancelled:
                self._finish(seq, FINISH_ABORT)
                continue
            self._append(seq, int(next_ids[row]), now)
            if seq.finish_reason is None:
                keep.append(row)
        if not keep:
            return None
        if len(keep) < len(batch.seqs):
            batch = batch.select(keep)
            next_ids = next_ids[keep]
        mask = torch.cat([batch.mask, batch.mask.new_ones((len(keep), 1))], 1)
        positions = batch.positions + 1
        out = self.model(
            input_ids=next_ids.unsqueeze(1).to(self.device),
            attention_mask=mask,
            position_ids=positions,
            past_key_values=batch.past,
            use_cache=True,
        )
        return _Batch(batch.seqs, out.past_key_values, mask, positions, out.logits[:, -1, :])

    def _sample(self, logits: torch.Tensor, batch: list[Sequence]) -> torch.Tensor:
        logits = logits.float().cpu()
        chosen = logits.argmax(-1)
        for row, seq in enumerate(batch):
            p = seq.params
            if p.temperature <= 0 or seq.finish_reason is not None:
                continue
            probs = torch.softmax(logits[row] / p.temperature, -1)
            if p.top_p < 1.0:
                sorted_probs, order = probs.sort(descending=True)
                keep = sorted_probs.cumsum(-1) - sorted_probs < p.top_p
                sorted_probs = sorted_probs * keep
                probs = torch.zeros_like(probs).scatter(0, order, sorted_probs)
            chosen[row] = torch.multinomial(probs, 1, generator=seq.generator)[0]
        return chosen

    def _append(self, seq: Sequence, token: int, now: float) -> None:
        if seq.first_token is None:
            seq.first_token = now
        else:
            seq.token_gaps.append(now - seq.last_token)
        seq.last_token = now
        if token in self.eos_ids and not seq.params.ignore_eos:
            self._finish(seq, FINISH_STOP)
            return
        seq.output_ids.append(token)
        seq.text = self.tokenizer.decode(seq.output_ids, skip_special_tokens=True)
        for stop in seq.params.stop:
            at = seq.text.find(stop)
            if at >= 0:
                seq.text = seq.text[:at]
                self._finish(seq, FINISH_STOP)
                return
        if len(seq.output_ids) >= seq.params.max_tokens:
            self._finish(seq, FINISH_LENGTH)
            return
        # Hold back an incomplete UTF-8 sequence and a possible start of a stop string.
        safe = len(seq.text.rstrip("\ufffd"))
        for stop in seq.params.stop:
            for k in range(min(len(stop) - 1, len(seq.text)), 0, -1):
                if seq.text.endswith(stop[:k]):
                    safe = min(safe, len(seq.text) - k)
                    break
        if safe > seq.sent_chars:
            seq.emit(seq.text[seq.sent_chars : safe], None)
            seq.sent_chars = safe

    def _finish(self, seq: Sequence, reason: str) -> None:
        if seq.finish_reason is not None:
            return
        seq.finish_reason = reason
        seq.finished = time.perf_counter()
        # An incomplete UTF-8 sequence at the end never completes: dropped, as vLLM's
        # detokenizer does (it withholds text ending in U+FFFD and never sends it).
        seq.text = seq.text.rstrip("\ufffd")
        rest = seq.text[seq.sent_chars :]
        seq.sent_chars = len(seq.text)
        self.observer.on_finished(seq)
        seq.emit(rest, reason)


@dataclass
class _Batch:
    """The sequences decoding together: their KV cache (one row each, left-padded to a
    common length), attention mask, last positions and the logits of their next token."""

    seqs: list[Sequence]
    past: object  # transformers' DynamicCache
    mask: torch.Tensor
    positions: torch.Tensor
    logits: torch.Tensor

    def select(self, rows: list[int]) -> _Batch:
        """Only these rows; columns that are padding in every remaining row are dropped."""
        index = torch.tensor(rows, device=self.mask.device)
        mask = self.mask[index]
        start = int((mask.sum(0) > 0).nonzero()[0])
        for layer in self.past.layers:
            layer.keys = layer.keys[index, :, start:]
            layer.values = layer.values[index, :, start:]
        seqs = [self.seqs[r] for r in rows]
        return _Batch(seqs, self.past, mask[:, start:], self.positions[index], self.logits[index])

    def merge(self, other: _Batch) -> _Batch:
        """Both batches as one: the shorter one's cache and mask left-padded."""
        width = max(self.mask.shape[1], other.mask.shape[1])
        for mine, theirs in zip(self.past.layers, other.past.layers, strict=True):
            mine.keys = torch.cat([_left_pad(mine.keys, width), _left_pad(theirs.keys, width)])
            mine.values = torch.cat(
                [_left_pad(mine.values, width), _left_pad(theirs.values, width)]
            )
        return _Batch(
            self.seqs + other.seqs,
            self.past,
            torch.cat([_left_pad(self.mask, width, -1), _left_pad(other.mask, width, -1)]),
            torch.cat([self.positions, other.positions]),
            torch.cat([self.logits, other.logits]),
        )


def _left_pad(t: torch.Tensor, width: int, dim: int = -2) -> torch.Tensor:
    """`t` with zeros before its entries along `dim` up to `width` (a KV cache's
    sequence axis is -2; a mask's is -1). Masked out, so their values never count."""
    missing = width - t.shape[dim]
    if missing == 0:
        return t
    shape = list(t.shape)
    shape[dim] = missing
    return torch.cat([t.new_zeros(shape), t], dim)


def _eos_ids(model, tokenizer) -> tuple[int, ...]:
    ids = getattr(model.generation_config, "eos_token_id", None) or tokenizer.eos_token_id
    if ids is None:
        return ()
    return tuple(ids) if isinstance(ids, list | tuple) else (int(ids),)

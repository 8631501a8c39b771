"""The default engine's models on a GPU, batched across pages (issue 13, ADR 0020).

One :class:`GpuBatcher` per process owns the device: a thread that takes the
detection inputs and recognition batches of every page being read (by any
number of page threads, each with its own :class:`RapidOcrEngine`), merges
those of the same shape into one batch, runs it and hands each page its part.
Pages keep the CPU engine's whole path: render, rapidocr's pre- and
post-processing, line crops, the width-bucketed recognition of
``batching.py`` (each line cut at its own width, so padding adds no text),
word boxes and reading order; only the two model calls move.

Merging is by exact shape: detection inputs of one size (pages of one paper
size at one zoom), recognition batches of one padded width. Nothing is padded
further to merge, so a page reads the same whether it shares a batch or not.

:func:`gpu_available` is the fallback test: no ``torch``, no CUDA device, or a
model that does not load leaves the caller on the CPU engine, with the reason.
"""

from __future__ import annotations

import importlib
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from contrackt.adapters.ocr.batching import BatchedTextRecognizer, Bucketing
from contrackt.adapters.ocr.pixels import Pixels


def gpu_available(device: str = "cuda") -> tuple[bool, str]:
    """(usable, why not): ``torch`` importable and ``device`` present."""
    try:
        torch = importlib.import_module("torch")
    except ImportError:
        return False, "torch is not installed (requirements-gpu.txt)"
    if device.startswith("cuda") and not torch.cuda.is_available():
        return False, "no CUDA device is visible"
    return True, ""


@dataclass
class _Request:
    kind: str  # "det" or "rec"
    batch: np.ndarray | Pixels
    future: Future[Any] = field(default_factory=Future)


def _merge(batches: list[np.ndarray | Pixels], takes_pixels: bool) -> np.ndarray | Pixels:
    """One model input of same-shaped ``batches``: :class:`Pixels` for a model that normalises
    them itself, else floats (made here, in the device's thread, not the worker's event loop)."""
    if takes_pixels and all(isinstance(b, Pixels) for b in batches):
        merged = Pixels.concat([b for b in batches if isinstance(b, Pixels)])
        if merged is not None:
            return merged
    floats = [b.floats() if isinstance(b, Pixels) else b for b in batches]
    return floats[0] if len(floats) == 1 else np.concatenate(floats)


@dataclass
class BatcherStats:
    calls: dict[str, int] = field(default_factory=lambda: {"det": 0, "rec": 0})
    items: dict[str, int] = field(default_factory=lambda: {"det": 0, "rec": 0})
    requests: dict[str, int] = field(default_factory=lambda: {"det": 0, "rec": 0})
    busy_s: float = 0.0


class GpuBatcher:
    """The device's one thread: requests of one kind and shape that arrive within ``linger_s`` of
    each other run as one batch (at most ``max_det`` pages / ``max_rec`` lines)."""

    def __init__(
        self,
        det: Callable[[Any], np.ndarray],
        rec: Callable[[Any], tuple[np.ndarray, np.ndarray]],
        rec_stride: int,
        linger_s: float = 0.002,
        max_det: int = 8,
        max_rec: int = 512,
    ) -> None:
        self.det = det
        self.rec = rec
        self.rec_stride = rec_stride
        self.linger_s = linger_s
        self.limits = {"det": max_det, "rec": max_rec}
        self.stats = BatcherStats()
        self._queue: queue.Queue[_Request | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="contrackt-gpu", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)

    def submit(self, kind: str, batch: np.ndarray | Pixels) -> Any:
        return self.submit_many(kind, [batch])[0]

    def submit_many(self, kind: str, batches: list[Any]) -> list[Any]:
        """Queue ``batches`` together (one page's recognition batches), wait for all."""
        return [f.result() for f in self.enqueue_many(kind, batches)]

    def enqueue_many(self, kind: str, batches: list[Any]) -> list[Future[Any]]:
        """Queue ``batches`` together; their futures (an event loop awaits them wrapped)."""
        requests = [_Request(kind, b) for b in batches]
        for r in requests:
            self._queue.put(r)
        return [r.future for r in requests]

    def _loop(self) -> None:
        pending: list[_Request] = []
        while True:
            # idle: wait for a request, then linger for others to join it; busy (requests left
            # over from the last run): only take what has arrived meanwhile
            linger = 0.0
            if not pending:
                first = self._queue.get()
                if first is None:
                    return
                pending.append(first)
                linger = self.linger_s
            deadline = time.perf_counter() + linger
            while True:
                left = deadline - time.perf_counter()
                try:
                    item = self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    while pending:
                        pending = self._run(pending)
                    return
                pending.append(item)
            pending = self._run(pending)

    def _run(self, pending: list[_Request]) -> list[_Request]:
        """Run the largest group of ``pending`` (same kind and shape); return what is left."""
        # a page that stopped waiting (its time ran out) cancelled its future: nothing to run
        pending = [r for r in pending if not r.future.cancelled()]
        if not pending:
            return []
        groups: dict[tuple[str, tuple[int, ...]], list[_Request]] = {}
        for r in pending:
            groups.setdefault((r.kind, r.batch.shape[1:]), []).append(r)
        (kind, _), members = max(groups.items(), key=lambda kv: sum(len(r.batch) for r in kv[1]))
        chosen: list[_Request] = []
        count = 0
        for r in members:
            if chosen and count + len(r.batch) > self.limits[kind]:
                break
            chosen.append(r)
            count += len(r.batch)
        started = time.perf_counter()
        try:
            model = self.det if kind == "det" else self.rec
            batch = _merge([r.batch for r in chosen], getattr(model, "takes_pixels", False))
            if kind == "det":
                maps = self.det(batch)
                parts: list[Any] = []
                at = 0
                for r in chosen:
                    parts.append(maps[at : at + len(r.batch)])
                    at += len(r.batch)
            else:
                ids, probs = self.rec(batch)
                parts, at = [], 0
                for r in chosen:
                    parts.append((ids[at : at + len(r.batch)], probs[at : at + len(r.batch)]))
                    at += len(r.batch)
            for r, part in zip(chosen, parts, strict=True):
                if not r.future.done():  # cancelled while it ran
                    r.future.set_result(part)
        except Exception as exc:  # every waiting page gets the error, the thread goes on
            for r in chosen:
                if not r.future.done():
                    r.future.set_exception(exc)
        self.stats.busy_s += time.perf_counter() - started
        self.stats.calls[kind] += 1
        self.stats.items[kind] += count
        self.stats.requests[kind] += len(chosen)
        taken = {id(r) for r in chosen}
        return [r for r in pending if id(r) not in taken]


class BatcherLineRunner:
    """A :class:`~contrackt.adapters.ocr.batching.LineRunner` that reads through the batcher."""

    def __init__(self, batcher: GpuBatcher) -> None:
        self.batcher = batcher
        self.stride = batcher.rec_stride

    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ids, probs = self.batcher.submit("rec", batch)
        return ids, probs

    def run_many(self, batches: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        return list(self.batcher.submit_many("rec", batches))


class BatcherDetSession:
    """Stands in for rapidocr's detector session: one page's input through the batcher."""

    def __init__(self, batcher: GpuBatcher) -> None:
        self.batcher = batcher

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self.batcher.submit("det", batch))


def load_models(
    name: str,
    device: str = "cuda",
    precision: str = "fp32",
    latin: bool = True,
    pad_batch: bool = True,
    model_dir: str | None = None,
) -> tuple[Any, Any]:
    """(detector session, line runner) of engine ``name`` on ``device`` (torch)."""
    from contrackt.adapters.ocr.engines import rapidocr_models
    from contrackt.adapters.ocr.latin import restrict_to_latin
    from contrackt.adapters.ocr.torch_graph import TorchDetSession, TorchLineRunner

    det_path, rec_path, keys = rapidocr_models(name, model_dir)
    rec = restrict_to_latin(rec_path, keys)[0] if latin else rec_path.read_bytes()
    return (
        TorchDetSession(det_path.read_bytes(), device, precision, pad_batch),
        TorchLineRunner(rec, device, precision, pad_batch),
    )


def attach(engine: Any, batcher: GpuBatcher, bucketing: Bucketing = Bucketing()) -> Any:
    """``engine`` (a warmed :class:`RapidOcrEngine`) with both model calls going through ``batcher``."""
    ocr = engine._ocr
    ocr.text_det.session = BatcherDetSession(batcher)
    inner = ocr.text_rec.inner if isinstance(ocr.text_rec, BatchedTextRecognizer) else ocr.text_rec
    ocr.text_rec = BatchedTextRecognizer(inner, bucketing, BatcherLineRunner(batcher))
    return engine

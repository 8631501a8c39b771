"""The OCR children's model calls, answered by the worker process's device (issue 13, ADR 0020).

A child reads one job's pages inside the sandbox (ADR 0006: its own uid, no network, a system
call filter, memory limits) and cannot hold a CUDA context. With a device configured
(``CONTRACKT_OCR_DEVICE``), the child still renders, detects lines' boxes, crops and decodes;
only its two model calls leave it: each detector input and each page's recogniser batches go to
the worker over the child's own pipe as a ``model`` frame, and the child waits for the
``model_result``. The worker checks the request as it checks every reply of a child (a hostile
PDF may have taken the child over): kind, dtype, shape, sizes and a per-page budget, all bounded
by :class:`DeviceLimits`, which both sides share; a legitimate child never crosses them (a call
that would, it runs itself). Requests of all children meet in one :class:`~gpu.GpuBatcher`, so
pages of different jobs share batches. A ``model_error`` answer (the device failed) makes the
child run that call on its own CPU session, which it still holds: a device fault slows pages and
fails none.

Arrays cross as raw C-ordered bytes described in the header: ``arrays: [[dtype, shape], ...]``.
Model inputs cross as the uint8 pixels they are normalised from (:class:`~pixels.Pixels`, a
quarter of the bytes): ``["pixels", shape, widths]``, each row's first ``width`` columns
(``3 x H x width`` bytes, C order) and then the ``3 x 256`` float32 table; the worker checks the
table is finite and small and the floats are made where the model runs.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from contrackt.adapters.ocr.batching import BatchedTextRecognizer, Bucketing, OrtLineRunner
from contrackt.adapters.ocr.pixels import CHANNELS, Pixels, as_floats, det_pixels
from contrackt.adapters.ocr.protocol import ProtocolViolation, encode, read_frame, write_all

log = logging.getLogger("contrackt.ocr.device")

_DTYPES: dict[str, Any] = {"float32": np.float32, "int64": np.int64}
_TABLE_BYTES = CHANNELS * 256 * 4
# a normalisation table maps pixels to model inputs: PP-OCR's are in [-1, 1] (ImageNet's in
# [-2.2, 2.7]); nothing sane is past this, and a non-finite value is never sane
_TABLE_MAX = 64.0


@dataclass(frozen=True)
class DeviceLimits:
    """What one model request may hold, and one page's share of the device. The detector reads a
    page shrunk to at most 2,000 px a side (``rapidocr_engine.DET_MAX_SIDE``, rounded up to 32);
    recogniser batches are ``batching.Bucketing``'s (at most 16 lines, 19,200 columns), a single
    line up to ``max_rec_width``."""

    max_det_side: int = 2048
    max_rec_rows: int = 64
    max_rec_width: int = 16_384
    max_rec_columns: int = 32_768  # rows x width of one batch
    max_batches: int = 256  # recogniser batches in one request
    # one request's inputs: a detector input at the largest side (50 MB) fits; a page's
    # recogniser batches go in as many requests as this takes
    max_request_bytes: int = 64 * 1024 * 1024
    det_calls_per_page: int = 16
    rec_lines_per_page: int = 16_000

    def fits(self, kind: str, batch: np.ndarray | Pixels) -> bool:
        """Whether a well-formed ``batch`` of ``kind`` may be sent (the child's own check)."""
        if isinstance(batch, Pixels):
            codes = batch.codes
            if codes.dtype != np.uint8 or batch.widths.shape != (len(codes),) or batch.table.shape != (3, 256):
                return False
            widths = batch.widths
            if codes.ndim == 4 and len(codes) and not 1 <= int(widths.min()) <= int(widths.max()) <= codes.shape[3]:
                return False
        elif batch.dtype != np.float32:
            return False
        if len(batch.shape) != 4 or batch.shape[1] != 3 or batch.shape[0] < 1:
            return False
        n, _, h, w = batch.shape
        if kind == "det":
            return bool(n == 1 and 1 <= h <= self.max_det_side and 1 <= w <= self.max_det_side)
        return bool(
            h == 48 and n <= self.max_rec_rows and 1 <= w <= self.max_rec_width and n * w <= self.max_rec_columns
        )


LIMITS = DeviceLimits()


# ----------------------------------------------------------------------------- the wire


def pack(arrays: Sequence[np.ndarray | Pixels]) -> tuple[list[list[Any]], bytes]:
    """(header specs, blob) for ``arrays`` (float32, int64 or :class:`Pixels`)."""
    specs: list[list[Any]] = []
    parts: list[bytes] = []
    for a in arrays:
        if isinstance(a, Pixels):
            widths = [int(w) for w in a.widths]
            specs.append(["pixels", [int(d) for d in a.shape], widths])
            full = a.shape[3]
            parts.extend(
                a.codes[row].tobytes() if width == full else a.codes[row, :, :, :width].tobytes()
                for row, width in enumerate(widths)
            )
            parts.append(np.ascontiguousarray(a.table, np.float32).tobytes())
            continue
        name = "int64" if a.dtype.kind in "iu" else "float32"
        data = np.ascontiguousarray(a, dtype=_DTYPES[name])
        specs.append([name, [int(d) for d in data.shape]])
        parts.append(data.tobytes())
    return specs, b"".join(parts)


def _unpack_pixels(spec: list[Any], blob: bytes, at: int, room: int) -> tuple[Pixels, int]:
    """Pixels from ``blob`` at ``at``, their padded codes taking at most ``room`` bytes."""
    shape, widths = spec[1], spec[2]
    if len(shape) != 4 or shape[1] != CHANNELS or not isinstance(widths, list) or len(widths) != shape[0]:
        raise ProtocolViolation("bad pixels description")
    n, _, h, w = shape
    if not all(type(v) is int and 1 <= v <= w for v in widths):
        raise ProtocolViolation("bad pixels widths")
    if n * CHANNELS * h * w > room:  # the padding is made here: bounded before it is
        raise ProtocolViolation("pixels larger than a request may be")
    size = CHANNELS * h * sum(widths) + _TABLE_BYTES
    if at + size > len(blob):
        raise ProtocolViolation("model arrays longer than their blob")
    codes = np.zeros((n, CHANNELS, h, w), np.uint8)
    for row, width in enumerate(widths):
        count = CHANNELS * h * width
        codes[row, :, :, :width] = np.frombuffer(blob, np.uint8, count, at).reshape(CHANNELS, h, width)
        at += count
    table = np.frombuffer(blob, np.float32, CHANNELS * 256, at).reshape(CHANNELS, 256).copy()
    if not (np.isfinite(table).all() and float(np.abs(table).max()) <= _TABLE_MAX):
        raise ProtocolViolation("pixels table out of range")
    return Pixels(codes, np.array(widths, np.int64), table), at + _TABLE_BYTES


def unpack(specs: Any, blob: bytes, max_arrays: int, max_bytes: int = LIMITS.max_request_bytes) -> list[Any]:
    """The arrays (and :class:`Pixels`) ``specs`` describes, read from ``blob``; ProtocolViolation
    if they do not add up. Pixels are padded to their shapes here, in at most ``max_bytes``."""
    if not isinstance(specs, list) or not 1 <= len(specs) <= max_arrays:
        raise ProtocolViolation("model arrays missing or too many")
    out: list[Any] = []
    at, room = 0, max_bytes
    for spec in specs:
        pixels = isinstance(spec, list) and len(spec) == 3 and spec[0] == "pixels"
        if not (
            isinstance(spec, list) and (pixels or (len(spec) == 2 and spec[0] in _DTYPES)) and isinstance(spec[1], list)
        ):
            raise ProtocolViolation("bad model array description")
        shape = spec[1]
        if not 1 <= len(shape) <= 4 or not all(type(d) is int and 0 <= d <= 1 << 24 for d in shape):
            raise ProtocolViolation("bad model array shape")
        if pixels:
            item, at = _unpack_pixels(spec, blob, at, room)
            room -= item.codes.nbytes
            out.append(item)
            continue
        dtype = np.dtype(_DTYPES[spec[0]])
        size = math.prod(shape) * dtype.itemsize
        if at + size > len(blob):
            raise ProtocolViolation("model arrays longer than their blob")
        out.append(np.frombuffer(blob, dtype=dtype, count=math.prod(shape), offset=at).reshape(shape))
        at += size
    if at != len(blob):
        raise ProtocolViolation("model blob longer than its arrays")
    return out


def check_request(header: dict[str, Any], blob: bytes, limits: DeviceLimits = LIMITS) -> tuple[str, list[Any]]:
    """(kind, inputs) of a child's ``model`` frame, or ProtocolViolation."""
    if set(header) != {"op", "kind", "arrays"}:
        raise ProtocolViolation("unexpected model request fields")
    kind = header["kind"]
    if kind not in ("det", "rec"):
        raise ProtocolViolation("unknown model kind")
    if len(blob) > limits.max_request_bytes:
        raise ProtocolViolation("model request over the size limit")
    arrays = unpack(header["arrays"], blob, 1 if kind == "det" else limits.max_batches, limits.max_request_bytes)
    for a in arrays:
        if not isinstance(a, Pixels) and a.dtype != np.float32:
            raise ProtocolViolation("a model input is neither float32 nor pixels")
        if not limits.fits(kind, a):
            raise ProtocolViolation(f"model input of shape {tuple(a.shape)} is outside the limits")
    return kind, arrays


@dataclass
class PageBudget:
    """One page request's share of the device; a child that asks for more is violating."""

    limits: DeviceLimits = LIMITS
    det_calls: int = 0
    rec_lines: int = 0

    def allows(self, kind: str, arrays: list[Any]) -> bool:
        if kind == "det":
            return self.det_calls + 1 <= self.limits.det_calls_per_page
        return self.rec_lines + sum(len(a) for a in arrays) <= self.limits.rec_lines_per_page

    def charge(self, kind: str, arrays: list[Any]) -> None:
        if kind == "det":
            self.det_calls += 1
        else:
            self.rec_lines += sum(len(a) for a in arrays)


# ----------------------------------------------------------------------------- the worker's side


@dataclass
class HostStats:
    requests: dict[str, int] = field(default_factory=lambda: {"det": 0, "rec": 0})
    failures: int = 0


class DeviceHost:
    """The worker's device, serving its children's model calls for engine ``engine``."""

    def __init__(self, batcher: Any, engine: str, device: str, limits: DeviceLimits = LIMITS) -> None:
        self.batcher = batcher  # a gpu.GpuBatcher (or anything with enqueue_many and close)
        self.engine = engine
        self.device = device
        self.limits = limits
        self.stats = HostStats()
        self._lock = threading.Lock()

    async def answer(self, header: dict[str, Any], blob: bytes, budget: PageBudget) -> tuple[dict[str, Any], bytes]:
        """The reply frame to a child's ``model`` request; ProtocolViolation for a malformed or
        over-budget one (the caller kills the child)."""
        from contrackt.metrics import OCR_DEVICE_CALLS

        kind, inputs = check_request(header, blob, self.limits)
        if not budget.allows(kind, inputs):
            raise ProtocolViolation("a page asked for more of the device than its budget")
        budget.charge(kind, inputs)
        futures = self.batcher.enqueue_many(kind, inputs)
        try:
            results = [await asyncio.wrap_future(f) for f in futures]
        except Exception as exc:  # the device failed this call: the child reads it on its CPU
            with self._lock:
                self.stats.failures += 1
                first = self.stats.failures == 1
            OCR_DEVICE_CALLS.labels(kind=kind, outcome="failed").inc()
            (log.warning if first else log.debug)("ocr.device.call_failed: %s", type(exc).__name__)
            return {"op": "model_error", "message": type(exc).__name__}, b""
        with self._lock:
            self.stats.requests[kind] += 1
        OCR_DEVICE_CALLS.labels(kind=kind, outcome="ok").inc()
        outputs: list[np.ndarray] = []
        for result in results:
            outputs.extend([result] if kind == "det" else list(result))
        specs, out = pack(outputs)
        return {"op": "model_result", "arrays": specs}, out

    def close(self) -> None:
        self.batcher.close()


def open_host(
    device: str, engine: str, precision: str = "fp16", latin: bool = True, model_dir: str | None = None
) -> tuple[DeviceHost | None, str]:
    """(the device host, "") or (None, why the worker reads on its CPU)."""
    from contrackt.adapters.ocr.gpu import GpuBatcher, gpu_available, load_models

    if device == "cpu":
        return None, "CONTRACKT_OCR_DEVICE is cpu"
    if engine not in ("rapidocr", "rapidocr-fast"):
        return None, f"the {engine} engine has no device models"
    usable, why = gpu_available("cuda")
    if not usable:
        return None, why
    try:
        det, rec = load_models(engine, "cuda", precision, latin, model_dir=model_dir)
    except Exception as exc:  # a driver or memory error: keep the CPU engine, say why
        return None, f"the models did not load on the device ({type(exc).__name__}: {str(exc)[:160]})"
    return DeviceHost(GpuBatcher(det, rec, rec.stride), engine, "cuda"), ""


# ----------------------------------------------------------------------------- the child's side


class ParentChannel:
    """The child's end: model calls over its pipe to the worker. Set up in the zygote (so nothing
    is imported after confinement) and connected to a child's pipe in ``serve``; unconnected, or
    over a limit, a call runs on the child's CPU."""

    def __init__(self, limits: DeviceLimits = LIMITS) -> None:
        self.limits = limits
        self.fds: tuple[int, int] | None = None
        self.budget = PageBudget(limits)
        self.failed = 0  # calls the device could not answer

    def connect(self, fd_in: int, fd_out: int) -> None:
        self.fds = (fd_in, fd_out)

    def begin_page(self) -> None:
        self.budget = PageBudget(self.limits)

    def call(self, kind: str, inputs: list[Any]) -> list[np.ndarray] | None:
        """The outputs (det: one map per input; rec: ids and probs per input), or None when the
        call must run here."""
        if self.fds is None or not all(self.limits.fits(kind, a) for a in inputs):
            return None
        if len(inputs) > (1 if kind == "det" else self.limits.max_batches) or not self.budget.allows(kind, inputs):
            return None
        if sum(a.nbytes for a in inputs) > self.limits.max_request_bytes:
            return None
        self.budget.charge(kind, inputs)
        fd_in, fd_out = self.fds
        specs, blob = pack(inputs)
        write_all(fd_out, encode({"op": "model", "kind": kind, "arrays": specs}, blob))
        frame = read_frame(fd_in)
        if frame is None:
            raise EOFError("the worker closed the pipe")
        header, data = frame
        if header.get("op") != "model_result":
            self.failed += 1
            return None
        outputs = unpack(header.get("arrays"), data, 2 * len(inputs))
        if len(outputs) != (len(inputs) if kind == "det" else 2 * len(inputs)):
            raise ValueError("the worker answered another number of outputs")
        return outputs


class RemoteDetSession:
    """Stands in for rapidocr's detector session in a child: the worker's device, else ``local``
    (given the floats)."""

    def __init__(self, channel: ParentChannel, local: Callable[[np.ndarray], Any]) -> None:
        self.channel = channel
        self.local = local

    def __call__(self, batch: np.ndarray | Pixels) -> Any:
        outputs = self.channel.call("det", [batch])
        return outputs[0] if outputs is not None else self.local(as_floats(batch))


class RemoteLineRunner:
    """A :class:`~batching.LineRunner` in a child: one page's batches to the worker's device in
    one request, else read by ``local`` (the child's own ONNX Runtime session)."""

    takes_pixels = True

    def __init__(self, channel: ParentChannel, local: OrtLineRunner) -> None:
        self.channel = channel
        self.local = local
        self.stride = local.stride

    def __call__(self, batch: np.ndarray | Pixels) -> tuple[np.ndarray, np.ndarray]:
        return self.run_many([batch])[0]

    def run_many(self, batches: list[Any]) -> list[tuple[np.ndarray, np.ndarray]]:
        limits = self.channel.limits
        results: list[tuple[np.ndarray, np.ndarray]] = []
        start = 0
        while start < len(batches):
            end, size = start, 0
            while end < len(batches) and end - start < limits.max_batches:
                if end > start and size + batches[end].nbytes > limits.max_request_bytes:
                    break
                size += batches[end].nbytes
                end += 1
            chunk = batches[start:end]
            outputs = self.channel.call("rec", chunk) if size <= limits.max_request_bytes else None
            if outputs is None:
                results.extend(self.local(as_floats(b)) for b in chunk)
            else:
                results.extend((outputs[2 * k], outputs[2 * k + 1]) for k in range(len(chunk)))
            start = end
        return results


def attach_remote(engine: Any, channel: ParentChannel, bucketing: Bucketing = Bucketing()) -> None:
    """``engine`` (a warmed :class:`RapidOcrEngine`, in the zygote) with both model calls sent
    through ``channel``; recognition in width buckets (``bucketing``: at the default, 99.5 % of
    the corpus's lines read as one line alone, ADR 0017 §2), so batches from many children
    share the device. Both inputs go as :class:`Pixels`."""
    ocr = engine._ocr
    ocr.text_det.session = RemoteDetSession(channel, ocr.text_det.session)
    det_pixels(ocr.text_det)
    inner = ocr.text_rec.inner if isinstance(ocr.text_rec, BatchedTextRecognizer) else ocr.text_rec
    runner = RemoteLineRunner(channel, OrtLineRunner(inner.session.session))
    ocr.text_rec = BatchedTextRecognizer(inner, bucketing, runner)

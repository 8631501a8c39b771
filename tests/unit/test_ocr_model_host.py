"""GPU workers on the CPU: the sandboxed children's model calls answered by the worker (ADR 0020).

ONNX Runtime sessions in the test process stand in for the GPU (``bench/gpu`` runs the same path
with torch on one). What a user of a GPU worker would notice if this broke: pages read through
the worker's device differ from pages read in the children, a device failure fails a job instead
of slowing it, or a child taken over by a hostile PDF gets more of the shared device than its page
(or malformed arrays into it).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from contrackt.adapters.ocr.batching import OrtLineRunner
from contrackt.adapters.ocr.gpu import GpuBatcher
from contrackt.adapters.ocr.model_host import (
    LIMITS,
    DeviceHost,
    PageBudget,
    ParentChannel,
    check_request,
    open_host,
    pack,
    unpack,
)
from contrackt.adapters.ocr.pool import ProcessPoolExtractor
from contrackt.adapters.ocr.protocol import ProtocolViolation
from contrackt.adapters.ocr.worker_child import WARM_UP_PDF
from contrackt.domain.errors import SandboxViolation
from contrackt.ports.extractor import ExtractOptions
from tests.conftest import corpus_path

# ----------------------------------------------------------------------------- the wire


def test_arrays_cross_the_pipe_unchanged() -> None:
    det = np.random.default_rng(1).random((1, 3, 64, 96), dtype=np.float32)
    ids = np.arange(12, dtype=np.int64).reshape(3, 4)
    specs, blob = pack([det, ids])
    back = unpack(specs, blob, 4)
    assert back[0].dtype == np.float32 and np.array_equal(back[0], det)
    assert back[1].dtype == np.int64 and np.array_equal(back[1], ids)


@pytest.mark.parametrize(
    ("specs", "extra"),
    [
        ([["float64", [1, 3, 8, 8]]], 0),  # a dtype the device never takes
        ([["float32", [1, 3, 8, 9]]], 0),  # says more than the blob holds
        ([["float32", [1, 3, 8, 8]]], 4),  # the blob holds more than it says
        ([["float32", [1, -3, 8, 8]]], 0),  # a negative dimension
        ([["float32", "1x3x8x8"]], 0),
        ([], 0),
    ],
)
def test_arrays_that_do_not_add_up_are_a_violation(specs: list[Any], extra: int) -> None:
    blob = bytes(1 * 3 * 8 * 8 * 4 + extra)
    with pytest.raises(ProtocolViolation):
        unpack(specs, blob, 4)


def _request(kind: str, *arrays: np.ndarray) -> tuple[dict[str, Any], bytes]:
    specs, blob = pack(list(arrays))
    return {"op": "model", "kind": kind, "arrays": specs}, blob


@pytest.mark.parametrize(
    ("kind", "shape"),
    [
        ("det", (2, 3, 64, 64)),  # two pages in one detector call
        ("det", (1, 3, 4096, 64)),  # past the detector's largest side
        ("det", (1, 1, 64, 64)),
        ("rec", (4, 3, 32, 320)),  # recogniser lines are 48 px high
        ("rec", (65, 3, 48, 320)),  # more rows than a batch has
        ("rec", (16, 3, 48, 4096)),  # more columns than a batch has
        ("dream", (1, 3, 64, 64)),
    ],
)
def test_inputs_outside_the_limits_are_a_violation(kind: str, shape: tuple[int, ...]) -> None:
    header, blob = _request("det" if kind == "dream" else kind, np.zeros(shape, np.float32))
    header["kind"] = kind
    with pytest.raises(ProtocolViolation):
        check_request(header, blob)
    assert not LIMITS.fits(kind, np.zeros(shape, np.float32))


def test_legitimate_inputs_pass_and_a_page_has_a_budget() -> None:
    kind, arrays = check_request(*_request("det", np.zeros((1, 3, 2016, 1440), np.float32)))
    assert kind == "det" and arrays[0].shape == (1, 3, 2016, 1440)
    kind, arrays = check_request(
        *_request("rec", np.zeros((16, 3, 48, 1200), np.float32), np.zeros((1, 3, 48, 9000), np.float32))
    )
    assert kind == "rec" and [a.shape[0] for a in arrays] == [16, 1]
    budget = PageBudget()
    one = [np.zeros((1, 3, 32, 32), np.float32)]
    for _ in range(LIMITS.det_calls_per_page):
        assert budget.allows("det", one)
        budget.charge("det", one)
    assert not budget.allows("det", one)


# ----------------------------------------------------------------------------- the host


def _det_double(batch: np.ndarray) -> np.ndarray:
    return batch[:, :1] * 2


def _rec_rows(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n, w = len(batch), batch.shape[3] // 8
    return np.tile(np.arange(w, dtype=np.int64), (n, 1)), np.full((n, w), 0.5, np.float32)


def test_the_host_answers_each_request_with_its_own_outputs() -> None:
    host = DeviceHost(GpuBatcher(_det_double, _rec_rows, 8, linger_s=0.01), "rapidocr", "test")
    try:

        async def both() -> list[tuple[dict[str, Any], bytes]]:
            det = _request("det", np.full((1, 3, 32, 64), 3.0, np.float32))
            rec = _request("rec", np.zeros((2, 3, 48, 320), np.float32), np.zeros((1, 3, 48, 640), np.float32))
            return list(await asyncio.gather(host.answer(*det, PageBudget()), host.answer(*rec, PageBudget())))

        (det_head, det_blob), (rec_head, rec_blob) = asyncio.run(both())
        assert det_head["op"] == "model_result"
        (det_map,) = unpack(det_head["arrays"], det_blob, 2)
        assert det_map.shape == (1, 1, 32, 64) and np.all(det_map == 6.0)
        ids1, probs1, ids2, probs2 = unpack(rec_head["arrays"], rec_blob, 4)
        assert ids1.shape == probs1.shape == (2, 40) and ids2.shape == probs2.shape == (1, 80)
        assert host.stats.requests == {"det": 1, "rec": 1}
    finally:
        host.close()


def test_a_device_failure_is_answered_not_raised_and_an_over_budget_page_is_refused() -> None:
    def broken(batch: np.ndarray) -> np.ndarray:
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    host = DeviceHost(GpuBatcher(broken, _rec_rows, 8, linger_s=0.0), "rapidocr", "test")
    try:
        header, blob = _request("det", np.zeros((1, 3, 32, 32), np.float32))
        reply, out = asyncio.run(host.answer(header, blob, PageBudget()))
        assert reply == {"op": "model_error", "message": "RuntimeError"} and out == b""
        assert host.stats.failures == 1
        spent = PageBudget(det_calls=LIMITS.det_calls_per_page)
        with pytest.raises(ProtocolViolation):
            asyncio.run(host.answer(header, blob, spent))
    finally:
        host.close()


def test_without_a_gpu_the_worker_stays_on_the_cpu_and_says_why() -> None:
    host, why = open_host("cpu", "rapidocr")
    assert host is None and why == "CONTRACKT_OCR_DEVICE is cpu"
    host, why = open_host("cuda", "tesseract")
    assert host is None and "tesseract" in why
    host, why = open_host("cuda", "rapidocr")
    if host is not None:  # a GPU machine: nothing to fall back from
        host.close()
        pytest.skip("a CUDA device is present here; the fallback is tested where there is none")
    assert why in ("torch is not installed (requirements-gpu.txt)", "no CUDA device is visible")


def test_an_unconnected_or_oversized_call_runs_in_the_child() -> None:
    channel = ParentChannel()
    assert channel.call("det", [np.zeros((1, 3, 32, 32), np.float32)]) is None  # the zygote: no pipe
    channel.connect(-1, -1)  # would fail if it were written to
    assert channel.call("det", [np.zeros((1, 3, 4096, 32), np.float32)]) is None


# ----------------------------------------------------------------------------- through the pool


class _OrtDevice:
    """The default engine's models in this process, in ONNX Runtime: the 'GPU' of these tests."""

    def __init__(self) -> None:
        from contrackt.adapters.ocr.engines import load_engine

        engine = load_engine("rapidocr")
        self.det_session = engine._ocr.text_det.session.session  # type: ignore[attr-defined]
        self.det_input = self.det_session.get_inputs()[0].name
        self.rec = OrtLineRunner(engine._ocr.text_rec.session.session)  # type: ignore[attr-defined]
        self.fail = threading.Event()

    def det(self, batch: np.ndarray) -> np.ndarray:
        if self.fail.is_set():
            raise RuntimeError("CUDA error: out of memory")
        return np.asarray(self.det_session.run(None, {self.det_input: batch})[0])

    def rec_call(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.fail.is_set():
            raise RuntimeError("CUDA error: out of memory")
        return self.rec(batch)


@pytest.fixture(scope="module")
def device() -> _OrtDevice:
    return _OrtDevice()


@pytest.fixture(scope="module")
def gpu_pool(device: _OrtDevice) -> Iterator[tuple[ProcessPoolExtractor, DeviceHost]]:
    host = DeviceHost(GpuBatcher(device.det, device.rec_call, device.rec.stride, linger_s=0.01), "rapidocr", "test")
    pool = ProcessPoolExtractor(workers=2, fault_engines=True, page_timeout_s=60, device_host=host)
    try:
        asyncio.run(pool.start())
        yield pool, host
    finally:
        asyncio.run(pool.close())


def _lines(result: Any) -> list[str]:
    return [ln.text for page in result.pages for ln in page.lines]


SCAN = corpus_path("synthetic", "scan_mild.pdf")


def test_pages_read_on_the_workers_device_are_the_childrens_own_reading(
    gpu_pool: tuple[ProcessPoolExtractor, DeviceHost], device: _OrtDevice
) -> None:
    """Both pages of a scan through the worker's device, then again with the device failing
    every call (each child reads on its CPU instead): the same text, and no job failed."""
    pool, host = gpu_pool
    assert pool.device_status() == {"device": "test", "engine": "rapidocr", "precision": "fp16"}
    pdf = SCAN.read_bytes()
    options = ExtractOptions(mode="ocr")
    before = dict(host.stats.requests)
    on_device = asyncio.run(pool.extract(pdf, options))
    assert host.stats.requests["det"] - before["det"] >= 2, "the pages' detection did not reach the device"
    assert host.stats.requests["rec"] - before["rec"] >= 2, "the pages' recognition did not reach the device"
    device.fail.set()
    try:
        failures = host.stats.failures
        fallen_back = asyncio.run(pool.extract(pdf, options))
        assert host.stats.failures > failures
    finally:
        device.fail.clear()
    lines = _lines(on_device)
    assert len(lines) > 30
    assert lines == _lines(fallen_back)
    assert pool.violations == 0


def test_device_reading_matches_a_cpu_worker(gpu_pool: tuple[ProcessPoolExtractor, DeviceHost]) -> None:
    """Against a worker without a device (each line read alone): recognition batches by width
    change a line now and then (ADR 0017 §2); the words a user searches for are the same."""
    pool, _ = gpu_pool
    pdf = SCAN.read_bytes()
    cpu = ProcessPoolExtractor(workers=2, page_timeout_s=60)

    async def read() -> Any:
        try:
            return await cpu.extract(pdf, ExtractOptions(mode="ocr"))
        finally:
            await cpu.close()

    reference = _lines(asyncio.run(read()))
    got = _lines(asyncio.run(pool.extract(pdf, ExtractOptions(mode="ocr"))))
    assert cpu.device_status() == {"device": "cpu", "why": "CONTRACKT_OCR_DEVICE is cpu"}
    same = sum(a == b for a, b in zip(got, reference, strict=False))
    assert len(got) == len(reference)
    assert same / len(reference) >= 0.95, f"only {same} of {len(reference)} lines as a CPU worker reads them"
    words = " ".join(reference).split()
    found = set(" ".join(got).split())
    assert sum(w in found for w in words) / len(words) >= 0.99


def test_a_child_that_asks_for_more_than_its_page_is_killed_and_others_read_on(
    gpu_pool: tuple[ProcessPoolExtractor, DeviceHost],
) -> None:
    pool, _ = gpu_pool
    violations = pool.violations
    with pytest.raises(SandboxViolation):
        asyncio.run(pool.extract(WARM_UP_PDF, ExtractOptions(engine="greedy")))
    assert pool.violations == violations + 1
    result = asyncio.run(pool.extract(SCAN.read_bytes(), ExtractOptions(mode="ocr", pages=(1,))))
    assert len(_lines(result)) > 15

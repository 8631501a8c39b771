"""The GPU engine's plumbing, on the CPU (ONNX Runtime stands in for the device).

What a user of a GPU worker would notice if it broke: pages read through the shared batcher
differ from the CPU engine's, one page's failure reaches another page, or a batch mixes
shapes. ``bench/gpu`` runs the same path with the models on a GPU (ADR 0020).
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from contrackt.adapters.ocr.batching import Bucketing, OrtLineRunner
from contrackt.adapters.ocr.gpu import GpuBatcher, attach, gpu_available
from tests.conftest import corpus_path


def _det_double(batch: np.ndarray) -> np.ndarray:
    return batch[:, :1] * 2


def _rec_sum(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    total = batch.reshape(len(batch), -1).sum(axis=1)
    return np.repeat(total[:, None], 3, axis=1).astype(np.int64), np.ones((len(batch), 3), np.float32)


def test_requests_of_one_shape_share_a_call_and_each_gets_its_own_rows() -> None:
    batcher = GpuBatcher(_det_double, _rec_sum, rec_stride=8, linger_s=0.05)
    try:
        results: dict[int, np.ndarray] = {}

        def page(k: int) -> None:
            x = np.full((1, 3, 32, 64 if k % 2 else 96), float(k), np.float32)
            results[k] = batcher.submit("det", x)

        threads = [threading.Thread(target=page, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for k, out in results.items():
            assert out.shape == (1, 1, 32, 64 if k % 2 else 96)
            assert np.all(out == 2 * k), f"page {k} got another page's rows"
        stats = batcher.stats
        assert stats.requests["det"] == 8
        assert stats.calls["det"] < 8, "nothing was merged"
        assert stats.calls["det"] >= 2, "two shapes were merged into one call"
    finally:
        batcher.close()


def test_many_recognition_batches_come_back_in_order() -> None:
    batcher = GpuBatcher(_det_double, _rec_sum, rec_stride=8, linger_s=0.0)
    try:
        batches = [np.full((n, 3, 48, 320 + 8 * (n % 3)), float(n), np.float32) for n in range(1, 9)]
        outs = batcher.submit_many("rec", batches)
        for n, (ids, probs) in enumerate(outs, start=1):
            assert ids.shape == (n, 3) and probs.shape == (n, 3)
            assert np.all(ids == n * 3 * 48 * (320 + 8 * (n % 3)))
    finally:
        batcher.close()


def test_a_failing_batch_fails_its_pages_only_and_the_device_thread_goes_on() -> None:
    calls = {"n": 0}

    def flaky(batch: np.ndarray) -> np.ndarray:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("CUDA error: out of memory")
        return _det_double(batch)

    batcher = GpuBatcher(flaky, _rec_sum, rec_stride=8, linger_s=0.0)
    try:
        with pytest.raises(RuntimeError, match="out of memory"):
            batcher.submit("det", np.ones((1, 3, 32, 32), np.float32))
        started = time.perf_counter()
        out = batcher.submit("det", np.ones((1, 3, 32, 32), np.float32))
        assert np.all(out == 2)
        assert time.perf_counter() - started < 5
    finally:
        batcher.close()


def test_a_page_that_stops_waiting_costs_the_others_nothing() -> None:
    """A page whose time ran out cancels its request (the worker's event loop does, through
    ``enqueue_many``); the pages batched with it still get their own rows."""
    started = threading.Event()
    release = threading.Event()

    def slow(batch: np.ndarray) -> np.ndarray:
        started.set()
        release.wait(5)
        return _det_double(batch)

    batcher = GpuBatcher(slow, _rec_sum, rec_stride=8, linger_s=0.05)
    try:
        first = batcher.enqueue_many("det", [np.ones((1, 3, 32, 32), np.float32)])[0]
        assert started.wait(5)  # the device is busy with the first page
        waiting = batcher.enqueue_many("det", [np.full((1, 3, 32, 32), float(k), np.float32) for k in range(3)])
        assert waiting[1].cancel()
        release.set()
        assert np.all(first.result(5) == 2)
        assert np.all(waiting[0].result(5) == 0) and np.all(waiting[2].result(5) == 4)
        assert waiting[1].cancelled()
    finally:
        batcher.close()


def test_pages_read_through_the_batcher_match_the_cpu_engine() -> None:
    """Two page threads, each with its own engine, both models behind one batcher (ONNX Runtime
    sessions here, torch on a GPU): the text is the CPU engine's, line for line."""
    import onnxruntime as ort

    from contrackt.adapters.ocr.engines import load_engine
    from contrackt.adapters.ocr.rapidocr_engine import group_rows
    from contrackt.adapters.ocr.worker_child import _page_pixels, open_pdf

    pdf = corpus_path("synthetic", "scan_mild.pdf").read_bytes()
    doc = open_pdf(pdf)
    try:
        images = [_page_pixels(doc[i], 200 / 72) for i in range(2)]
    finally:
        doc.close()
    reference = load_engine("rapidocr")
    expected = [[ln.text for ln in group_rows(reference.recognize(img))] for img in images]

    det_session = reference._ocr.text_det.session.session
    det_input = det_session.get_inputs()[0].name
    rec = OrtLineRunner(reference._ocr.text_rec.session.session)

    def det(batch: np.ndarray) -> np.ndarray:
        return np.asarray(det_session.run(None, {det_input: batch})[0])

    assert isinstance(det_session, ort.InferenceSession)
    batcher = GpuBatcher(det, rec, rec.stride, linger_s=0.01)
    # one line at a time at its own width: exactly rapidocr's reading (ADR 0017: wider buckets
    # change a line now and then; bench.gpu reports that share)
    single = Bucketing(max_lines=1, align=1)
    engines = [attach(load_engine("rapidocr"), batcher, single) for _ in images]
    got: dict[int, list[str]] = {}

    def read(k: int) -> None:
        got[k] = [ln.text for ln in group_rows(engines[k].recognize(images[k]))]

    try:
        threads = [threading.Thread(target=read, args=(k,)) for k in range(len(images))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        batcher.close()
    for k, lines in enumerate(expected):
        assert len(lines) > 15
        assert got[k] == lines, f"page {k + 1} differs from the CPU engine"
    assert batcher.stats.requests["rec"] > 0 and batcher.stats.requests["det"] == 2


def test_no_torch_or_no_device_says_why() -> None:
    usable, why = gpu_available("cuda")
    if usable:  # a GPU machine: nothing to fall back from
        assert why == ""
    else:
        assert why in ("torch is not installed (requirements-gpu.txt)", "no CUDA device is visible")

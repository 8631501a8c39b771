"""The torch interpreter of the PP-OCR ONNX graphs against ONNX Runtime (CPU).

Needs ``torch``: ``scripts/install.sh`` installs its CPU build (``requirements-torch-cpu.txt``)
where the machine's package sources carry it, as this project's CI machines do; elsewhere the
module is skipped and says so in the summary. ``python -m bench.gpu`` checks the same graphs on
a GPU page by page.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip(
    "torch",
    reason="torch is not installed (scripts/install.sh found no CPU build); bench/gpu checks these graphs on a GPU",
)

import onnxruntime as ort  # noqa: E402

from contrackt.adapters.ocr.engines import rapidocr_models  # noqa: E402
from contrackt.adapters.ocr.latin import restrict_to_latin  # noqa: E402
from contrackt.adapters.ocr.torch_graph import OnnxTorch, TorchDetSession, TorchLineRunner  # noqa: E402


def _ort(model: bytes | str, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {session.get_inputs()[0].name: x})[0])


@pytest.mark.parametrize("shape", [(1, 3, 224, 352), (2, 3, 160, 96)])
def test_detector_matches_onnx_runtime(shape: tuple[int, int, int, int]) -> None:
    det, _, _ = rapidocr_models("rapidocr")
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    got = TorchDetSession(det.read_bytes(), "cpu")(x)
    assert got.shape == (shape[0], 1, shape[2], shape[3])
    assert np.abs(got - _ort(str(det), x)).max() < 1e-4


@pytest.mark.parametrize("width", [320, 517, 1203])
def test_recogniser_matches_onnx_runtime_at_odd_widths(width: int) -> None:
    _, rec, keys = rapidocr_models("rapidocr")
    model, _ = restrict_to_latin(rec, keys)
    x = np.random.default_rng(2).standard_normal((3, 3, 48, width)).astype(np.float32)
    ref = _ort(model, x)
    runner = TorchLineRunner(model, "cpu")
    scores = OnnxTorch(model, "cpu")(torch.from_numpy(x))[0].numpy()
    assert np.abs(scores - ref).max() < 1e-4
    ids, probs = runner(x)
    assert (ids == ref.argmax(axis=2)).all()
    assert np.allclose(probs, ref.max(axis=2), atol=1e-5)
    assert runner.stride == 8


def test_an_unknown_operator_is_refused_at_load() -> None:
    from onnx import TensorProto, helper

    node = helper.make_node("Einsum", ["x", "x"], ["y"], equation="ij,ij->ij")
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2])],
    )
    model = helper.make_model(graph).SerializeToString()
    with pytest.raises(ValueError, match="Einsum"):
        OnnxTorch(model, "cpu")


def test_padding_the_batch_to_a_power_of_two_changes_no_row() -> None:
    _, rec, keys = rapidocr_models("rapidocr")
    model, _ = restrict_to_latin(rec, keys)
    x = np.random.default_rng(3).standard_normal((3, 3, 48, 400)).astype(np.float32)
    plain = TorchLineRunner(model, "cpu")(x)
    padded = TorchLineRunner(model, "cpu", pad_batch=True)(x)
    assert padded[0].shape == (3, plain[0].shape[1])
    assert (padded[0] == plain[0]).all()
    assert np.allclose(padded[1], plain[1], atol=1e-5)


def test_pixels_become_the_cpu_engines_floats_on_the_device() -> None:
    """Pixels (ADR 0020 decision 5) are normalised where the model runs: the same floats as the
    CPU path, padding 0.0, and rows added to reach a power of two are padding too."""
    from contrackt.adapters.ocr.pixels import REC_TABLE, Pixels

    _, rec, keys = rapidocr_models("rapidocr")
    model, _ = restrict_to_latin(rec, keys)
    rng = np.random.default_rng(4)
    codes = rng.integers(0, 256, (3, 3, 48, 400), dtype=np.uint8)
    widths = np.array([400, 123, 1], np.int64)
    for row, width in enumerate(widths):
        codes[row, :, :, width:] = 0
    table = np.stack([REC_TABLE[0], REC_TABLE[1] * 0.5, REC_TABLE[2] - 0.25]).astype(np.float32)  # per channel
    pixels = Pixels(codes, widths, table)
    runner = TorchLineRunner(model, "cpu", pad_batch=True)
    got = runner._input(pixels, 4).numpy()
    assert got.shape == (4, 3, 48, 400) and got.dtype == np.float32
    assert np.array_equal(got[:3], pixels.floats()) and not got[3].any()
    assert [a.tolist() for a in runner(pixels)] == [a.tolist() for a in runner(pixels.floats())]
    # the device keeps the tables it has seen: a batch with another table gets that table's floats
    for k in range(12):
        other = Pixels(codes, widths, (table * (1 + k / 8)).astype(np.float32))
        assert np.array_equal(runner._input(other, 3).numpy(), other.floats())
    assert np.array_equal(runner._input(pixels, 3).numpy(), pixels.floats())
    # what it keeps is its own: a request's buffer reused afterwards changes nothing
    reused = (table * 3).astype(np.float32)
    runner._input(Pixels(codes, widths, reused), 3)
    again = Pixels(codes, widths, reused.copy())
    reused[:] = 0.0
    assert np.array_equal(runner._input(again, 3).numpy(), again.floats())


def test_the_worker_path_with_torch_as_its_device_reads_as_a_cpu_worker() -> None:
    """The sandboxed children's pixels over their pipes into the torch runners (on the CPU here):
    the page reads as a worker without a device reads it (width buckets change a line now and then,
    ADR 0017 §2)."""
    import asyncio

    from contrackt.adapters.ocr.gpu import GpuBatcher, load_models
    from contrackt.adapters.ocr.model_host import DeviceHost
    from contrackt.adapters.ocr.pixels import Pixels
    from contrackt.adapters.ocr.pool import ProcessPoolExtractor
    from contrackt.ports.extractor import ExtractOptions
    from tests.conftest import corpus_path

    torch.set_num_threads(1)
    det, rec = load_models("rapidocr", "cpu", "fp32", latin=True)
    given: list[bool] = []

    def spy(model: Any) -> Any:
        def call(batch: Any) -> Any:
            given.append(isinstance(batch, Pixels))
            return model(batch)

        call.takes_pixels = True  # type: ignore[attr-defined]
        return call

    host = DeviceHost(GpuBatcher(spy(det), spy(rec), rec.stride, linger_s=0.01), "rapidocr", "torch-cpu")
    pdf = corpus_path("synthetic", "scan_mild.pdf").read_bytes()

    async def read(pool: ProcessPoolExtractor) -> list[str]:
        await pool.start()
        try:
            result = await pool.extract(pdf, ExtractOptions(mode="ocr", pages=(1,)))
        finally:
            await pool.close()
        return [line.text for page in result.pages for line in page.lines]

    on_device = asyncio.run(read(ProcessPoolExtractor(workers=1, page_timeout_s=300, device_host=host)))
    on_cpu = asyncio.run(read(ProcessPoolExtractor(workers=1, page_timeout_s=300)))
    assert given and all(given), "the children's inputs did not reach torch as pixels"
    assert len(on_cpu) > 15
    same = sum(a == b for a, b in zip(on_device, on_cpu, strict=False))
    assert same >= 0.95 * len(on_cpu)
    words = " ".join(on_cpu).split()
    assert sum(w in set(" ".join(on_device).split()) for w in words) >= 0.99 * len(words)

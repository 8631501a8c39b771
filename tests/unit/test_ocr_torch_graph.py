"""The torch interpreter of the PP-OCR ONNX graphs against ONNX Runtime (CPU).

Needs ``torch`` (``requirements-gpu.txt``), which the CI image does not carry (it is 3 GB
with its CUDA libraries): there the module is skipped and says so in the summary. It runs
where torch is installed, and ``python -m bench.gpu`` checks the same graphs on a GPU page by page.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip(
    "torch", reason="torch is not installed here (GPU image only); bench/gpu checks these graphs on a GPU"
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

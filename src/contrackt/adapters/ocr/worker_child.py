"""Code that runs inside the sandboxed child processes of the OCR pool.

A child first leaves the host's network (a fresh network namespace holding
only a downed loopback, when the kernel lets it: ``isolate_network``), caps its
own address space (RLIMIT_AS), pins every math library to one thread, loads
its OCR engine once and then serves requests from its end of a
``multiprocessing`` pipe until it receives ``stop`` or the pipe closes.

Protocol (tuples, pickled by ``Connection.send``):

parent -> child
    ("inspect", req_id, pdf_bytes)
    ("page", req_id, {"doc_id", "pdf" (bytes | None), "index", "mode", "engine",
                      "drop_after", "forget"})
    ("stop",)
child -> parent
    ("ready", pid, engines, network)          once, after warming up; network:
                                               "netns" | "userns+netns" | "off" |
                                               "unavailable: <reason>"
    (req_id, "ok", payload)
    (req_id, "err", code, message)             code: encrypted_pdf | corrupt_pdf |
                                               resource_limit | doc_missing |
                                               unknown_engine | internal_error

Only the standard library is imported at module level: the parent imports this
module too, and the child must set its thread variables before numpy,
ONNX Runtime or PDFium are loaded.
"""

from __future__ import annotations

import math
import os
import re
import signal
import sys
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

THREAD_ENV = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "NUMEXPR_NUM_THREADS": "1",
    "OMP_THREAD_LIMIT": "1",
    "ORT_NUM_THREADS": "1",
}

FAULT_ENGINES = ("crash", "hang", "oom")
NETWORK_MODES = ("auto", "required", "off")
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
FAULT_ENV = "CONTRACKT_OCR_FAULT_ENGINES"

DOC_CACHE_SIZE = 2


@dataclass(frozen=True)
class ChildConfig:
    kind: str = "worker"  # worker (loads the engine) | inspect (PDF only)
    engine: str = "rapidocr"  # loaded (and self-tested) at start-up
    # other engines this child may serve; each is loaded on its first page
    extra_engines: tuple[str, ...] = ()
    memory_limit_mb: int = 2048
    zoom: float | None = None  # None: the engine's own policy (engines.ENGINES)
    max_pixels: int = 40_000_000
    # rapidocr shrinks anything larger to 2,000 px before detection anyway;
    # rendering more only costs memory.
    max_side_px: int = 4_000
    fault_engines: bool = False
    orientation: bool = True
    model_dirs: tuple[tuple[str, str], ...] = ()  # (engine, folder) overrides
    postcorrect: bool = True  # rapidocr_engine.fix_text (measured: bench --postcorrect-ablation)
    latin: bool = True  # Latin-restricted PP-OCR recognisers (measured: bench --latin-ablation)
    # auto: leave the network when the kernel allows it; required: refuse to start otherwise
    network_isolation: str = "auto"


class ChildError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# ----------------------------------------------------------------------------- sandbox


def isolate_network(unshare: Any = None) -> str:
    """Move this process into a new, empty network namespace.

    Inside it the only interface is a loopback that is down, so a parser
    exploit in a hostile PDF cannot reach the host's services, the cloud
    metadata endpoint or the internet; the pipe to the parent (already open)
    is unaffected.  Tried as is (needs CAP_SYS_ADMIN, e.g. root), then inside a
    new user namespace (unprivileged, where the kernel allows user namespaces;
    the process must still be single-threaded, so this runs first thing).
    Returns how it was done, or ``"unavailable: <reason>"``.
    """
    if unshare is None:
        if not sys.platform.startswith("linux"):
            return "unavailable: not Linux"
        import ctypes

        try:
            libc = ctypes.CDLL(None, use_errno=True)
        except OSError:  # pragma: no cover - no C library to call
            return "unavailable: no C library"

        def libc_unshare(flags: int) -> int:
            return 0 if libc.unshare(flags) == 0 else ctypes.get_errno() or -1

        unshare = libc_unshare
    if unshare(CLONE_NEWNET) == 0:
        return "netns"
    uid, gid = os.getuid(), os.getgid()
    err = unshare(CLONE_NEWUSER | CLONE_NEWNET)
    if err == 0:
        # keep our own uid/gid inside, so files we own stay ours
        for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
            try:
                with open(f"/proc/self/{name}", "w") as fh:
                    fh.write(text)
            except OSError:
                pass
        return "userns+netns"
    return f"unavailable: {os.strerror(err) if err > 0 else 'unshare failed'}"


def network_policy(mode: str, isolate: Any = isolate_network) -> str:
    """Apply ``mode`` (auto | required | off); raise if ``required`` cannot be met."""
    if mode == "off":
        return "off"
    status = str(isolate())
    if mode == "required" and status.startswith("unavailable"):
        raise RuntimeError(f"OCR network isolation is required but {status}")
    return status


def apply_limits(memory_limit_mb: int) -> None:
    """Thread variables, address-space cap, no core dumps, die with the parent."""
    os.environ.update(THREAD_ENV)
    try:
        import resource

        if memory_limit_mb > 0:
            cap = int(memory_limit_mb) * 1024 * 1024
            resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (ImportError, ValueError, OSError):  # pragma: no cover - non-Linux
        pass
    # Die with the parent even while busy on a page (PR_SET_PDEATHSIG would
    # follow the parent *thread* that spawned us, and the pool respawns from
    # short-lived threads).
    parent = os.getppid()

    def watch_parent() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(0)

    threading.Thread(target=watch_parent, name="parent-watch", daemon=True).start()
    # The parent handles Ctrl+C and stops us through the pipe.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


# ----------------------------------------------------------------------------- PDF work


def open_pdf(pdf: bytes) -> Any:
    import pypdfium2 as pdfium

    if not pdf:
        raise ChildError("corrupt_pdf", "The PDF is empty")
    try:
        return pdfium.PdfDocument(pdf)
    except pdfium.PdfiumError as exc:
        if getattr(exc, "err_code", None) == pdfium.raw.FPDF_ERR_PASSWORD:
            raise ChildError("encrypted_pdf", "The PDF is protected by a password") from None
        raise ChildError("corrupt_pdf", "The PDF could not be read") from None


_JS_TOKEN = re.compile(rb"/(?:JavaScript|JS)(?![A-Za-z0-9])")


def active_content(doc: Any, pdf: bytes) -> list[str]:
    """Kinds of active content present (none is ever executed: PDFium runs no scripts here).

    PDFium's counts are authoritative for document-level scripts and attachments; the
    token scan adds actions in uncompressed objects (an object stream can hide them).
    """
    import pypdfium2 as pdfium

    found = []
    if pdfium.raw.FPDFDoc_GetJavaScriptActionCount(doc.raw) > 0 or _JS_TOKEN.search(pdf):
        found.append("javascript")
    if b"/Launch" in pdf:
        found.append("launch_action")
    if pdfium.raw.FPDFDoc_GetAttachmentCount(doc.raw) > 0 or b"/EmbeddedFile" in pdf:
        found.append("embedded_files")
    return found


def inspect_pdf(pdf: bytes) -> dict[str, Any]:
    import pypdfium2 as pdfium

    doc = open_pdf(pdf)
    try:
        revision = int(pdfium.raw.FPDF_GetSecurityHandlerRevision(doc.raw))
        return {"pages": len(doc), "encrypted": revision != -1, "active_content": active_content(doc, pdf)}
    finally:
        doc.close()


def render_zoom(width_pt: float, height_pt: float, zoom: float, max_pixels: int, max_side: int) -> float:
    """The zoom to render at: ``zoom``, lowered so the bitmap stays in budget."""
    if width_pt <= 0 or height_pt <= 0 or not math.isfinite(width_pt * height_pt):
        return 0.0
    z = zoom
    if width_pt * height_pt * z * z > max_pixels:
        z = math.sqrt(max_pixels / (width_pt * height_pt))
    if max(width_pt, height_pt) * z > max_side:
        z = max_side / max(width_pt, height_pt)
    return z


class PageWorker:
    """Holds the engines and a tiny cache of open documents."""

    def __init__(self, config: ChildConfig) -> None:
        self.config = config
        self.loaded: dict[str, Any] = {}
        self.orienter: Any = None
        self.docs: OrderedDict[str, tuple[Any, bytes]] = OrderedDict()

    @property
    def engine(self) -> Any:
        return self.loaded.get(self.config.engine)

    def engines(self) -> list[str]:
        names = [self.config.engine, *self.config.extra_engines] if self.loaded else []
        if self.config.fault_engines:
            names += list(FAULT_ENGINES)
        return names

    def load(self) -> None:
        import pypdfium2  # noqa: F401 - load PDFium before the first request

        if self.config.kind != "worker":
            return
        self.get_engine(self.config.engine)
        if self.config.orientation:
            try:
                from contrackt.adapters.ocr.orientation import OrientationDetector

                self.orienter = OrientationDetector()
            except Exception:
                self.orienter = None

    def get_engine(self, name: str) -> Any:
        """The engine ``name``, loaded (and self-tested) on first use."""
        engine = self.loaded.get(name)
        if engine is not None:
            return engine
        if name != self.config.engine and name not in self.config.extra_engines:
            raise ChildError("unknown_engine", f"engine {name!r} is not available")
        from contrackt.adapters.ocr.engines import ModelMissing, load_engine

        try:
            engine = load_engine(name, dict(self.config.model_dirs).get(name), latin=self.config.latin)
        except ModelMissing as exc:
            raise ChildError("unknown_engine", str(exc)) from None
        self.loaded[name] = engine
        return engine

    # -- documents -------------------------------------------------------------

    def forget(self, doc_id: str) -> None:
        entry = self.docs.pop(doc_id, None)
        if entry is not None:
            entry[0].close()

    def document(self, doc_id: str, pdf: bytes | None) -> Any:
        entry = self.docs.get(doc_id)
        if entry is not None:
            self.docs.move_to_end(doc_id)
            return entry[0]
        if pdf is None:
            raise ChildError("doc_missing", "document not cached")
        doc = open_pdf(pdf)
        self.docs[doc_id] = (doc, pdf)
        while len(self.docs) > DOC_CACHE_SIZE:
            _, (old, _) = self.docs.popitem(last=False)
            old.close()
        return doc

    # -- pages -----------------------------------------------------------------

    def page(self, req: dict[str, Any]) -> dict[str, Any]:
        for doc_id in req.get("forget") or ():
            self.forget(doc_id)
        engine = req["engine"]
        if engine in FAULT_ENGINES and self.config.fault_engines:
            _fault(engine)
        doc_id = req["doc_id"]
        doc = self.document(doc_id, req.get("pdf"))
        try:
            return self._page(doc, int(req["index"]), str(req["mode"]), str(engine))
        finally:
            if req.get("drop_after"):
                self.forget(doc_id)

    def _page(self, doc: Any, index: int, mode: str, engine: str) -> dict[str, Any]:
        import pypdfium2 as pdfium

        from contrackt.adapters.ocr.textlayer import extract_text_layer

        try:
            page = doc[index]
        except (pdfium.PdfiumError, IndexError):
            raise ChildError("corrupt_pdf", "A page could not be read") from None
        try:
            if mode != "ocr":
                layer = extract_text_layer(page)
                if layer.meaningful or mode == "text":
                    lines = [{"text": ln.text, "confidence": 1.0, "bbox": list(ln.bbox)} for ln in layer.lines]
                    return {
                        "number": index + 1,
                        "source": "text_layer",
                        "zoom": None,
                        "rotation": 0,
                        "confidence": 1.0 if lines else 0.0,
                        "text": "\n".join(ln.text for ln in layer.lines),
                        "lines": lines,
                    }
            return self.ocr_page(page, index, engine)
        finally:
            page.close()

    def ocr_page(self, page: Any, index: int, engine_name: str) -> dict[str, Any]:
        """OCR one page with ``engine_name``'s render policy (zoom, low-confidence retry)."""
        from contrackt.adapters.ocr.engines import ENGINES

        engine = self.get_engine(engine_name)
        spec = ENGINES[engine_name]
        width, height = (float(v) for v in page.get_size())
        first = self.config.zoom or spec.zoom
        out, rotation = self._ocr_at(page, index, engine, width, height, first, None)
        retry = spec.retry_zoom
        if (
            self.config.zoom is None
            and retry is not None
            and retry > first
            and out["lines"]
            and out["confidence"] < spec.retry_below
        ):
            again, _ = self._ocr_at(page, index, engine, width, height, retry, rotation)
            if again["confidence"] > out["confidence"]:
                out = again
        return out

    def _ocr_at(
        self,
        page: Any,
        index: int,
        engine: Any,
        width: float,
        height: float,
        wanted: float,
        rotation: int | None,
    ) -> tuple[dict[str, Any], int]:
        from contrackt.adapters.ocr.rapidocr_engine import group_rows

        zoom = render_zoom(width, height, wanted, self.config.max_pixels, self.config.max_side_px)
        out: dict[str, Any] = {
            "number": index + 1,
            "source": "ocr",
            "zoom": round(zoom, 4),
            "rotation": 0,
            "confidence": 0.0,
            "text": "",
            "lines": [],
        }
        if zoom <= 0:
            return out, 0
        bitmap = page.render(scale=zoom, may_draw_forms=False)
        try:
            image = bitmap.to_numpy()
            if image.ndim == 3 and image.shape[2] == 4:
                image = image[:, :, :3]
            if rotation is None:
                rotation = self.orienter.detect(image) if self.orienter is not None else 0
            if rotation:
                image = _rotate(image, rotation)
            boxes = engine.recognize(image)
        finally:
            bitmap.close()
        lines = group_rows(boxes, correct=self.config.postcorrect)
        h_px, w_px = image.shape[:2]
        out_lines = []

        def points(box: tuple[float, float, float, float]) -> list[float]:
            if rotation:
                box = _unrotate_box(box, rotation, w_px, h_px)
            return [v / zoom for v in box]

        for ln in lines:
            entry: dict[str, Any] = {"text": ln.text, "confidence": float(ln.confidence), "bbox": points(ln.bbox)}
            if ln.words:
                entry["words"] = [{"text": t, "confidence": c, "bbox": points(b)} for t, c, b in ln.words]
            out_lines.append(entry)
        weight = sum(len(ln.text) for ln in lines)
        conf = sum(ln.confidence * len(ln.text) for ln in lines) / weight if weight else 0.0
        out.update(
            rotation=rotation,
            confidence=float(conf),
            text="\n".join(ln.text for ln in lines),
            lines=out_lines,
        )
        return out, rotation


def _rotate(image: Any, rotation: int) -> Any:
    """Turn the image clockwise by ``rotation`` degrees (90/180/270)."""
    import numpy as np

    # np.rot90 with k>0 turns counter-clockwise
    return np.ascontiguousarray(np.rot90(image, k=-(rotation // 90) % 4))


def _unrotate_box(
    box: tuple[float, float, float, float], rotation: int, w: int, h: int
) -> tuple[float, float, float, float]:
    """Map a box found on the image turned clockwise by ``rotation`` back to the
    rendered page.  ``w``/``h`` are the turned image's size."""
    x0, y0, x1, y1 = box
    if rotation == 90:  # turned image (w, h) = (H, W); original x = y', y = w - x'
        pts = [(y0, w - x1), (y1, w - x0)]
    elif rotation == 180:
        pts = [(w - x1, h - y1), (w - x0, h - y0)]
    elif rotation == 270:
        pts = [(h - y1, x0), (h - y0, x1)]
    else:
        return box
    xs = [p[0] for p in pts]
    ys = [p[1] for p in pts]
    return (min(xs), min(ys), max(xs), max(ys))


def _fault(engine: str) -> None:
    """Test engines (enabled only by configuration): misbehave on purpose."""
    if engine == "crash":
        os.kill(os.getpid(), signal.SIGKILL)
    elif engine == "hang":
        time.sleep(3600)
    elif engine == "oom":
        hog = [bytearray(64 * 1024 * 1024) for _ in range(1024)]
        del hog


# ----------------------------------------------------------------------------- main loop


def child_main(conn: Any, config: ChildConfig) -> None:
    """Entry point of a child process (``multiprocessing`` target)."""
    try:
        network = network_policy(config.network_isolation)
    except RuntimeError as exc:
        conn.send(("failed", os.getpid(), str(exc)))
        os._exit(3)
    apply_limits(config.memory_limit_mb)
    worker = PageWorker(config)
    try:
        worker.load()
    except BaseException as exc:
        try:
            conn.send(("failed", os.getpid(), f"{type(exc).__name__}: {exc}"))
        finally:
            os._exit(3)
    conn.send(("ready", os.getpid(), worker.engines(), network))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            break
        except MemoryError:
            os._exit(4)
        if not isinstance(msg, tuple) or not msg or msg[0] == "stop":
            break
        op, req_id = msg[0], msg[1]
        fatal = False
        try:
            if op == "inspect":
                reply: tuple[Any, ...] = (req_id, "ok", inspect_pdf(msg[2]))
            elif op == "page":
                reply = (req_id, "ok", worker.page(msg[2]))
            else:
                reply = (req_id, "err", "internal_error", f"unknown op {op!r}")
        except ChildError as exc:
            reply = (req_id, "err", exc.code, exc.message)
        except MemoryError:
            reply = (req_id, "err", "resource_limit", "The document exceeded the memory limit")
            fatal = True
        except Exception as exc:
            reply = (req_id, "err", "internal_error", type(exc).__name__)
        try:
            conn.send(reply)
        except (OSError, MemoryError):
            os._exit(5)
        if fatal:
            # The heap may be in a bad state: let the parent start a fresh child.
            os._exit(6)
    for doc_id in list(worker.docs):
        worker.forget(doc_id)

"""What runs inside an OCR child: one document, page by page, over a framed pipe.

A child is forked by the zygote (``zygote.py``) for one slice of one job: it
confines itself (``sandbox.confine``), says ``ready``, receives the document
once (``open``), answers ``page`` requests for that document only, and is
killed when its slice ends. It never sees a second document, so nothing of one
tenant's file can reach another tenant's job through it.

Protocol (frames of ``protocol.py``; the parent checks every reply):

parent -> child
    {"op": "open", "id", "media_type"} + blob: the document's bytes (once)
    {"op": "page", "id", "index", "mode", "engine"}   mode: auto | ocr | text | layer
    {"op": "searchable", "id", "pages": [validated pages], "cap"}   the searchable PDF
    {"op": "stop"}
child -> parent
    {"op": "ready", "uid", "seccomp"}                     once, after confinement
    {"op": "opened", "id", "pages", "encrypted", "active_content"}
    {"op": "page", "id", "page": {number, source, zoom, rotation, confidence, text, lines}}
    {"op": "searchable", "id"} + blob: the PDF (at most ``cap`` bytes; the only reply with a blob)
    {"op": "error", "id", "code", "message"}   code: encrypted_pdf | corrupt_pdf |
        corrupt_image | image_too_large | too_many_pages | resource_limit | output_limit |
        unknown_engine | needs_engine | needs_ocr | internal_error
    (``needs_engine``: a page needs OCR but the child was forked before the zygote had
    loaded the engine; the parent forks another child that has it and asks again.
    ``needs_ocr``: mode ``layer``, a text slot's request, met a page without a usable
    text layer; the parent asks again from an OCR slot)

An image (JPEG, PNG, TIFF) is a document whose pages are its frames
(``images.py``): decoded here only, after its declared sizes passed the pixel cap.

Only the standard library is imported at module level (the zygote pins its
thread variables before numpy, ONNX Runtime or PDFium load).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from contrackt.adapters.ocr.fault_engines import FAULT_ENGINES, RawReply, fault, marker
from contrackt.adapters.ocr.protocol import ChildError, encode, read_frame, write_all

if TYPE_CHECKING:
    from contrackt.adapters.ocr.images import Frame, ImageDocument
    from contrackt.adapters.ocr.resolution import Native


@dataclass(frozen=True)
class ChildConfig:
    kind: str = "worker"  # worker (loads the engine) | inspect (PDF only, tests)
    engine: str = "rapidocr"  # loaded (and self-tested) by the zygote at start-up (preload) or on first use
    # True (workers, serve): the zygote loads and self-tests the default engine before ``ready``;
    # False (``contrackt extract``): only when a page first needs OCR
    preload: bool = True
    # other engines a request may name; the zygote loads each on first use, before forking
    extra_engines: tuple[str, ...] = ()
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
    rec_min_width: int = 0  # > 0: narrow crops read at their own width (bench --narrow-ablation)
    # render scale per page from the scan's native resolution and text height (resolution.py;
    # measured: bench --adaptive-ablation); off: every page at the engine's zoom
    adaptive_scale: bool = True
    fax_cleanup: bool = True  # streaks and specks whitened on fax pages (cleanup.py)
    # an engine's unsure lines read again by a stronger recogniser (EngineSpec.reread_with):
    # fax (on fax pages) | all (also on pages where they are EngineSpec.reread_share of the lines) | off
    line_reread: str = "fax"
    max_page_chars: int = 100_000
    max_lines_per_page: int = 2_000
    max_image_pixels: int = 50_000_000  # declared pixels of one image frame (checked before decoding)
    max_frames: int = 500  # an image's frames are counted up to one past this
    # engines whose two model calls go to the worker's device over the child's pipe
    # (model_host.py); empty: every model runs in the child, on its CPU
    remote_models: tuple[str, ...] = ()


# ----------------------------------------------------------------------------- PDF work


def _warm_up_pdf() -> bytes:
    """A one-page PDF with a text layer, for the zygote to exercise every code path once."""
    content = b"BT /F1 18 Tf 12 40 Td (Contrackt 2026 ok) Tj ET"
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 240 80] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
    ]
    out = bytearray(b"%PDF-1.7\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


WARM_UP_PDF = _warm_up_pdf()


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


def describe(doc: Any, pdf: bytes) -> dict[str, Any]:
    import pypdfium2 as pdfium

    revision = int(pdfium.raw.FPDF_GetSecurityHandlerRevision(doc.raw))
    return {"pages": len(doc), "encrypted": revision != -1, "active_content": active_content(doc, pdf)}


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


def _num(value: Any) -> float:
    """A plain, finite float (numpy scalars and NaN never reach the wire)."""
    v = float(value)
    return v if math.isfinite(v) else 0.0


def _conf(value: Any) -> float:
    return min(1.0, max(0.0, _num(value)))


class PageWorker:
    """Holds the engines (loaded once, in the zygote) and, in a child, its one document."""

    def __init__(self, config: ChildConfig) -> None:
        self.config = config
        self.loaded: dict[str, Any] = {}
        self.orienter: Any = None
        self.doc: Any = None
        self.pdf: bytes | None = None
        self.image: ImageDocument | None = None
        self.request_id: Any = None  # the request being answered (test faults write raw replies)
        self.forked = False  # a child never loads a model: it has what the zygote had loaded
        self.prepared: set[str] = set()  # engines loaded and taken through their whole page path
        self.images_warm = False  # the image decoders have been taken once
        self.channel: Any = None  # model_host.ParentChannel when models run on the worker's device
        self.helpers: dict[str, Any] = {}  # engines loaded only to re-read others' unsure lines

    @property
    def engine(self) -> Any:
        return self.loaded.get(self.config.engine)

    def engines(self) -> list[str]:
        names = [self.config.engine, *self.config.extra_engines] if self.config.kind == "worker" else []
        if self.config.fault_engines:
            names += list(FAULT_ENGINES)
        return names

    def load(self) -> None:
        """Take every code path a text-layer page will take once, on a small built-in PDF
        (in the zygote: a confined child may not be able to read the installation any more,
        so nothing may be left to import lazily). Loads no OCR model: ``prepare`` does."""
        import numpy  # noqa: F401
        import pypdfium2  # noqa: F401

        # engines: the policy table a child reads before it finds it needs an engine
        from contrackt.adapters.ocr import engines, images, searchable, textlayer  # noqa: F401

        images.configure(self.config.max_image_pixels)
        for codec in ("utf-16-le", "utf-16", "utf-32-le", "latin-1", "cp1252"):
            "x".encode(codec).decode(codec)
        self.warm_up(None, images=False)

    def warm_images(self) -> None:
        """Take the image path once (decoders, Pillow plugins) without OCR: for an image document
        before any engine is prepared (``prepare`` takes it with OCR)."""
        if not self.images_warm:
            from contrackt.adapters.ocr.warmup import warm_up_images

            warm_up_images(self, None)
            self.images_warm = True

    def prepare(self, name: str) -> None:
        """Load ``name`` (zygote: at start-up or on first use) and take its whole page path once."""
        if name in self.prepared:
            return
        self.get_engine(name)
        if self.config.orientation and self.orienter is None:
            try:
                from contrackt.adapters.ocr.orientation import OrientationDetector

                self.orienter = OrientationDetector()
            except Exception:
                self.orienter = None
        self.warm_up(name, images=True)
        self._prepare_helper(name)
        if name in self.config.remote_models:
            # after the warm-up (the zygote reads on its CPU); children connect it to their pipe
            from contrackt.adapters.ocr.model_host import ParentChannel, attach_remote

            if self.channel is None:
                self.channel = ParentChannel()
            attach_remote(self.get_engine(name), self.channel)
        self.prepared.add(name)

    def _prepare_helper(self, name: str) -> None:
        """Load the engine that re-reads ``name``'s unsure lines (zygote, before any fork)."""
        from contrackt.adapters.ocr.engines import ENGINES, ModelMissing, load_engine

        spec = ENGINES.get(name)
        helper = spec.reread_with if spec is not None and self.config.line_reread != "off" else None
        if helper is None or helper in self.helpers:
            return
        if helper in self.loaded:
            self.helpers[helper] = self.loaded[helper]
        else:
            try:
                self.helpers[helper] = load_engine(
                    helper, dict(self.config.model_dirs).get(helper), latin=self.config.latin
                )
            except ModelMissing:
                return  # not installed: the engine reads alone
        # take the re-read path once here: a confined child must find everything imported
        import numpy as np

        from contrackt.adapters.ocr.rapidocr_engine import OcrBox

        image = np.full((48, 200, 3), 255, dtype=np.uint8)
        image[18:30, 20:180] = 0
        quad = np.array([[10.0, 10.0], [190.0, 10.0], [190.0, 38.0], [10.0, 38.0]])
        self.loaded[name].reread(image, [OcrBox(quad, "x", 0.0)], 1.0, self.helpers[helper])

    def reread_helper(self, engine_name: str) -> Any:
        """The engine that re-reads ``engine_name``'s unsure lines, or None."""
        from contrackt.adapters.ocr.engines import ENGINES

        spec = ENGINES.get(engine_name)
        if spec is None or spec.reread_with is None or self.config.line_reread == "off":
            return None
        return self.helpers.get(spec.reread_with)

    def warm_up(self, engine: str | None, images: bool = True) -> None:
        from contrackt.adapters.ocr.warmup import warm_up_images

        doc = open_pdf(WARM_UP_PDF)
        try:
            describe(doc, WARM_UP_PDF)
            pages = [self._page(doc, 0, "text", self.config.engine)]
            if engine is not None:
                pages.append(self._page(doc, 0, "ocr", engine))
            import pypdfium2 as pdfium

            two = pdfium.PdfDocument.new()
            try:  # a page selection: the selected pages copied into a new file
                two.import_pages(doc, [0, 0])
                self._searchable_pdf(two, [{**pages[-1], "number": 2}], 1 << 26)
            finally:
                two.close()
            for page in pages:  # the whole document: text layers added in place
                self._searchable_pdf(doc, [page], 1 << 26)
        finally:
            doc.close()
        if images:
            warm_up_images(self, engine)
            self.images_warm = True

    def get_engine(self, name: str) -> Any:
        """The engine ``name``, loaded (and self-tested) on first use."""
        engine = self.loaded.get(name)
        if engine is not None and (name in self.prepared or not self.forked):
            return engine
        if name != self.config.engine and name not in self.config.extra_engines:
            raise ChildError("unknown_engine", f"engine {name!r} is not available")
        if self.forked:
            raise ChildError("needs_engine", f"engine {name!r} was not loaded when this child was forked")
        from contrackt.adapters.ocr.engines import ModelMissing, load_engine

        try:
            engine = load_engine(
                name,
                dict(self.config.model_dirs).get(name),
                latin=self.config.latin,
                rec_min_width=self.config.rec_min_width,
            )
        except ModelMissing as exc:
            raise ChildError("unknown_engine", str(exc)) from None
        self.loaded[name] = engine
        return engine

    # -- the document ------------------------------------------------------------

    def open(self, data: bytes, media_type: str = "application/pdf") -> dict[str, Any]:
        if self.doc is not None or self.image is not None:
            raise ChildError("internal_error", "a child reads one document only")
        self.pdf = data
        if media_type != "application/pdf":
            self.image = open_image(data, media_type, self.config.max_image_pixels, self.config.max_frames)
            return {"pages": self.image.count, "encrypted": False, "active_content": []}
        doc = open_pdf(data)
        self.doc = doc
        return describe(doc, data)

    def page(self, index: int, mode: str, engine: str) -> dict[str, Any]:
        if self.pdf is None:
            raise ChildError("internal_error", "no document is open")
        if mode == "layer" and (self.image is not None or (engine in FAULT_ENGINES and self.config.fault_engines)):
            raise ChildError("needs_ocr", "the page needs OCR")  # a test engine acts at OCR time
        if engine in FAULT_ENGINES and self.config.fault_engines:
            return fault(engine, self.pdf, index, self.channel)
        if self.image is not None:
            return self.image_page(self.image, index, mode, engine)
        return self._page(self.doc, index, mode, engine)

    def searchable(self, pages: list[dict[str, Any]], cap: int) -> bytes:
        """The searchable PDF of the open document, from the parent's validated ``pages``."""
        if self.pdf is None:
            raise ChildError("internal_error", "no document is open")
        misbehave = marker(self.pdf, b"SEARCHABLE").decode() if self.config.fault_engines else ""
        if misbehave == "oversize":  # claims one byte more than the parent allows
            raise RawReply(encode({"op": "searchable", "id": self.request_id})[:-4] + (cap + 1).to_bytes(4, "big"))
        if misbehave == "garbage":
            return b"GIF89a" + b"\0" * 64
        if misbehave == "fail":
            raise ChildError("output_limit", "test fault")
        if self.image is not None:
            return self._searchable_image(self.image, pages, cap)
        return self._searchable_pdf(self.doc, pages, cap)

    def _searchable_pdf(self, doc: Any, pages: list[dict[str, Any]], cap: int) -> bytes:
        from contrackt.adapters.ocr.searchable import TooLarge, pdf_with_text

        try:
            return pdf_with_text(doc, pages, cap)
        except TooLarge as exc:
            raise ChildError("output_limit", str(exc)) from None

    def _searchable_image(self, image: ImageDocument, pages: list[dict[str, Any]], cap: int) -> bytes:
        from contrackt.adapters.ocr.images import ImageRefused
        from contrackt.adapters.ocr.searchable import TooLarge, image_pdf

        try:
            return image_pdf(image, pages, cap)
        except TooLarge as exc:
            raise ChildError("output_limit", str(exc)) from None
        except ImageRefused as exc:
            raise ChildError(exc.code, exc.message) from None

    def image_page(self, image: ImageDocument, index: int, mode: str, engine: str) -> dict[str, Any]:
        """One frame of an image: OCR'd as a scanned page would be (``mode=text``: no text)."""
        from contrackt.adapters.ocr.images import ImageRefused

        if not 0 <= index < image.count:
            raise ChildError("corrupt_image", "no such frame")
        if mode == "text":
            return {
                "number": index + 1,
                "source": "text_layer",
                "zoom": None,
                "rotation": 0,
                "confidence": 0.0,
                "text": "",
                "lines": [],
            }
        try:
            frame = image.frame(index)
        except ImageRefused as exc:
            raise ChildError(exc.code, exc.message) from None
        width, height = frame.size_pt
        out = self._ocr_policy(
            index, engine, width, height, lambda zoom: _frame_pixels(frame, zoom), lambda: _frame_native(frame)
        )
        if len(out["lines"]) > self.config.max_lines_per_page or len(out["text"]) > self.config.max_page_chars:
            raise ChildError("output_limit", "the page's text is over the output caps")
        return out

    def _page(self, doc: Any, index: int, mode: str, engine: str) -> dict[str, Any]:
        import pypdfium2 as pdfium

        from contrackt.adapters.ocr.textlayer import TextLimitExceeded, extract_text_layer

        try:
            page = doc[index]
        except (pdfium.PdfiumError, IndexError):
            raise ChildError("corrupt_pdf", "A page could not be read") from None
        try:
            if mode != "ocr":
                try:
                    layer = extract_text_layer(
                        page, max_chars=self.config.max_page_chars, max_lines=self.config.max_lines_per_page
                    )
                except TextLimitExceeded as exc:
                    raise ChildError("output_limit", str(exc)) from None
                if layer.meaningful or mode == "text":
                    lines = [_text_line(ln) for ln in layer.lines]
                    return {
                        "number": index + 1,
                        "source": "text_layer",
                        "zoom": None,
                        "rotation": 0,
                        "confidence": 1.0 if lines else 0.0,
                        "text": "\n".join(ln.text for ln in layer.lines),
                        "lines": lines,
                    }
                if mode == "layer":  # a text slot's child reads text layers only
                    raise ChildError("needs_ocr", "the page has no usable text layer")
            out = self.ocr_page(page, index, engine)
        finally:
            page.close()
        if len(out["lines"]) > self.config.max_lines_per_page or len(out["text"]) > self.config.max_page_chars:
            raise ChildError("output_limit", "the page's text is over the output caps")
        return out

    def ocr_page(self, page: Any, index: int, engine_name: str) -> dict[str, Any]:
        """OCR one page with ``engine_name``'s render policy (zoom, low-confidence retry)."""
        width, height = (float(v) for v in page.get_size())

        def native() -> Native | None:
            from contrackt.adapters.ocr.resolution import page_native

            return page_native(page)

        return self._ocr_policy(index, engine_name, width, height, lambda zoom: _page_pixels(page, zoom), native)

    def _ocr_policy(
        self,
        index: int,
        engine_name: str,
        width: float,
        height: float,
        render: Callable[[float], Any],
        native: Callable[[], Native | None] = lambda: None,
    ) -> dict[str, Any]:
        """OCR a page ``width`` x ``height`` points that ``render(zoom)`` draws (BGR pixels);
        ``native()`` is the scan's resolution when it can be read (adaptive scale)."""
        from contrackt.adapters.ocr.cleanup import cleaned, is_fax
        from contrackt.adapters.ocr.engines import ENGINES
        from contrackt.adapters.ocr.resolution import REREAD_RATIO, choose_zoom, reread_zoom

        engine = self.get_engine(engine_name)
        spec = ENGINES[engine_name]
        first = self.config.zoom or spec.zoom
        fax_floor = spec.fax_floor or (self.config.fax_cleanup and spec.fax_floor_cleaned)
        adaptive = self.config.zoom is None and self.config.adaptive_scale and spec.box_px is not None
        helper = self.reread_helper(engine_name)
        # the scan's resolution, read once: the adaptive scale, the fax cleanup and the fax re-read want it
        wanted = adaptive or self.config.fax_cleanup or (helper is not None and self.config.line_reread == "fax")
        found = native() if wanted else None
        scan = found if adaptive else None
        if adaptive:
            first = choose_zoom(spec.zoom, scan, fax_floor=fax_floor)
        # a fax rendered at its native resolution is still detected at the engine's zoom: the
        # detector reads text of a given height best, the recogniser gains from the pixels
        det_zoom = spec.zoom if scan is not None and first > spec.zoom else None
        if self.config.fax_cleanup:
            render = cleaned(render, found)
        out, rotation, text_pt, raw = self._ocr_at(render, index, engine, width, height, first, None, det_zoom)
        done = float(out["zoom"] or first)
        second = reread_zoom(done, spec.zoom, scan, text_pt, spec.box_px, fax_floor) if out["lines"] else None
        if second is not None:  # the pixel budget may hold the second pass where the first was
            budget = render_zoom(width, height, second, self.config.max_pixels, self.config.max_side_px)
            second = second if max(budget / done, done / budget) >= REREAD_RATIO else None
        if second is not None:
            again, _, _, again_raw = self._ocr_at(render, index, engine, width, height, second, rotation)
            if again["confidence"] >= out["confidence"]:
                out, raw = again, again_raw
        retry = spec.retry_zoom
        if (
            self.config.zoom is None
            and retry is not None
            and retry > first
            and out["lines"]
            and out["confidence"] < spec.retry_below
        ):
            again, _, _, again_raw = self._ocr_at(render, index, engine, width, height, retry, rotation)
            if again["confidence"] > out["confidence"]:
                out, raw = again, again_raw
        # passes are compared on the engine's own scores; the chosen one's unsure lines are then
        # read again by the stronger recogniser (whose scores would bias that comparison)
        fax = is_fax(found)
        if helper is not None and raw is not None and (fax or self.config.line_reread == "all"):
            image, boxes, zoom, turned = raw
            share = 0.0 if fax else spec.reread_share  # a fax: every unsure line (they cost little there)
            again_boxes = engine.reread(image, boxes, spec.reread_below, helper, share)
            if again_boxes is not boxes:
                out = self._from_boxes(index, zoom, turned, image.shape, again_boxes)
        return out

    def _ocr_at(
        self,
        render: Callable[[float], Any],
        index: int,
        engine: Any,
        width: float,
        height: float,
        wanted: float,
        rotation: int | None,
        det_zoom: float | None = None,
    ) -> tuple[dict[str, Any], int, float | None, tuple[Any, list[Any], float, int] | None]:
        """One pass at ``wanted`` (lowered to the pixel budget), text detected at ``det_zoom``
        when that is lower: the page, its rotation, the median height of its text boxes in
        points (None without boxes) and what it read (pixels, boxes, zoom, rotation; None
        when nothing could be rendered)."""
        zoom = render_zoom(width, height, wanted, self.config.max_pixels, self.config.max_side_px)
        if zoom <= 0:
            return self._from_boxes(index, zoom, 0, (0, 0), []), 0, None, None
        image = render(zoom)
        if rotation is None:
            rotation = self.orienter.detect(image) if self.orienter is not None else 0
        if rotation:
            image = _rotate(image, rotation)
        if det_zoom is not None and det_zoom < zoom:
            boxes = engine.recognize(image, det_zoom / zoom)
        else:
            boxes = engine.recognize(image)
        text_pt = _median_box_height(boxes) / zoom if boxes else None
        out = self._from_boxes(index, zoom, int(rotation), image.shape, boxes)
        return out, int(rotation), text_pt, (image, boxes, zoom, int(rotation))

    def _from_boxes(
        self, index: int, zoom: float, rotation: int, shape: tuple[int, ...], boxes: list[Any]
    ) -> dict[str, Any]:
        """The page read at ``zoom`` (pixels of ``shape``, turned by ``rotation``) from ``boxes``:
        rows in reading order, boxes in points of the unturned page, confidence per character."""
        from contrackt.adapters.ocr.rapidocr_engine import group_rows

        lines = group_rows(boxes, correct=self.config.postcorrect)
        h_px, w_px = shape[:2]
        out_lines = []

        def points(box: tuple[float, float, float, float]) -> list[float]:
            if rotation:
                box = _unrotate_box(box, rotation, w_px, h_px)
            return [_num(v / zoom) for v in box]

        for ln in lines:
            entry: dict[str, Any] = {"text": ln.text, "confidence": _conf(ln.confidence), "bbox": points(ln.bbox)}
            if ln.words:
                entry["words"] = [{"text": t, "confidence": _conf(c), "bbox": points(b)} for t, c, b in ln.words]
            out_lines.append(entry)
        weight = sum(len(ln.text) for ln in lines)
        conf = sum(ln.confidence * len(ln.text) for ln in lines) / weight if weight else 0.0
        return {
            "number": index + 1,
            "source": "ocr",
            "zoom": round(zoom, 4),
            "rotation": rotation,
            "confidence": _conf(conf),
            "text": "\n".join(ln.text for ln in lines),
            "lines": out_lines,
        }


def _median_box_height(boxes: list[Any]) -> float:
    """The median height (pixels) of detected text boxes: the mean of each quadrilateral's
    two side edges, so a skewed line is not taller than it is."""
    heights = sorted((math.hypot(*(b.quad[3] - b.quad[0])) + math.hypot(*(b.quad[2] - b.quad[1]))) / 2 for b in boxes)
    return float(heights[len(heights) // 2])


def _text_line(line: Any) -> dict[str, Any]:
    """A text-layer line as the wire carries it (words with their boxes when every word has one)."""
    out: dict[str, Any] = {"text": line.text, "confidence": 1.0, "bbox": [_num(v) for v in line.bbox]}
    if line.words:
        out["words"] = [{"text": t, "confidence": 1.0, "bbox": [_num(v) for v in box]} for t, box in line.words]
    return out


def _page_pixels(page: Any, zoom: float) -> Any:
    """A PDF page rendered at ``zoom`` pixels per point: BGR, as PDFium draws it."""
    import numpy as np

    bitmap = page.render(scale=zoom, may_draw_forms=False)
    try:
        image = bitmap.to_numpy()
        return np.array(image[:, :, :3] if image.ndim == 3 and image.shape[2] == 4 else image)
    finally:
        bitmap.close()


def _frame_pixels(frame: Frame, zoom: float) -> Any:
    """An image frame resampled to ``zoom`` pixels per point, BGR like a rendered PDF page."""
    import numpy as np

    from contrackt.adapters.ocr.images import scaled

    width, height = frame.size_pt
    pixels = scaled(frame.image, round(width * zoom), round(height * zoom))
    return np.ascontiguousarray(np.asarray(pixels)[:, :, ::-1])


def _frame_native(frame: Frame) -> Native | None:
    """An image frame's native resolution, when its file states one."""
    from contrackt.adapters.ocr.resolution import Native

    if not frame.dpi_stated:
        return None
    return Native(frame.xdpi, frame.ydpi, frame.image.mode == "1")


def open_image(data: bytes, media_type: str, max_pixels: int, max_frames: int) -> ImageDocument:
    from contrackt.adapters.ocr.images import ImageDocument, ImageRefused

    try:
        return ImageDocument(data, media_type, max_pixels, max_frames)
    except ImageRefused as exc:
        raise ChildError(exc.code, exc.message) from None


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


# ----------------------------------------------------------------------------- the serve loop


def serve(fd_in: int, fd_out: int, worker: PageWorker, status: dict[str, str]) -> None:
    """Answer the parent's requests for one document until ``stop`` or end of file."""
    worker.forked = True
    if worker.channel is not None:
        worker.channel.connect(fd_in, fd_out)
    write_all(fd_out, encode({"op": "ready", **status}))
    while True:
        frame = read_frame(fd_in)
        if frame is None:
            return
        header, blob = frame
        op, req_id = header.get("op"), header.get("id")
        if op == "stop":
            return
        worker.request_id = req_id
        fatal = False
        out_blob = b""
        try:
            if op == "open":
                media_type = str(header.get("media_type") or "application/pdf")
                reply: dict[str, Any] = {"op": "opened", "id": req_id, **worker.open(blob, media_type)}
            elif op == "searchable":
                out_blob = worker.searchable(list(header["pages"]), int(header["cap"]))
                reply = {"op": "searchable", "id": req_id}
            elif op == "page":
                if worker.channel is not None:
                    worker.channel.begin_page()
                page = worker.page(int(header["index"]), str(header["mode"]), str(header["engine"]))
                reply = {"op": "page", "id": req_id, "page": page}
            else:
                reply = {"op": "error", "id": req_id, "code": "internal_error", "message": "unknown request"}
        except RawReply as raw:
            write_all(fd_out, raw.data)
            return
        except ChildError as exc:
            reply = {"op": "error", "id": req_id, "code": exc.code, "message": exc.message[:200]}
        except MemoryError:
            reply = {"op": "error", "id": req_id, "code": "resource_limit", "message": "over the memory limit"}
            fatal = True  # the heap may be in a bad state
        except Exception as exc:
            reply = {"op": "error", "id": req_id, "code": "internal_error", "message": type(exc).__name__}
        try:
            out = encode(reply, out_blob if reply["op"] == "searchable" else b"")
        except (TypeError, ValueError):
            out = encode({"op": "error", "id": req_id, "code": "internal_error", "message": "unencodable reply"})
        write_all(fd_out, out)
        if fatal:
            os._exit(6)

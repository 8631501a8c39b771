"""The OCR part of the composition root: settings -> the extraction pool.

Kept apart from ``bootstrap.py`` (which re-exports it) so that ``contrackt extract``
builds its pool without importing the database, queue and web stacks: a one-shot
extraction of a text-layer PDF should start in well under a second.
"""

from __future__ import annotations

from contrackt.ports.extractor import Extractor
from contrackt.settings import Settings

__all__ = ["known_engines", "make_extractor"]


def known_engines(settings: Settings) -> list[str]:
    """OCR engines a request may name: installed ones (cheap disk check, no model
    is loaded), limited to CONTRACKT_OCR_ENGINES when set."""
    from contrackt.adapters.ocr.engines import available_engines

    names = available_engines()
    wanted = settings.ocr_engine_list
    return [e for e in names if e == settings.ocr_engine or not wanted or e in wanted]


def make_extractor(settings: Settings, preload: bool = True) -> Extractor:
    """The OCR pool; ``preload=False`` (one-shot ``contrackt extract``) loads no OCR model
    until a page needs one, so a text-layer PDF never pays for it."""
    from contrackt.adapters.ocr.pool import ProcessPoolExtractor
    from contrackt.adapters.ocr.protocol import OutputCaps

    return ProcessPoolExtractor(
        workers=settings.effective_workers,
        engine=settings.ocr_engine,
        engines=known_engines(settings),
        memory_limit_mb=settings.ocr_memory_limit_mb,
        text_slots=settings.ocr_text_slots,
        page_timeout_s=settings.page_timeout_seconds,
        job_timeout_s=settings.job_timeout_seconds,
        max_pages=settings.max_pages,
        max_image_pixels=settings.max_image_pixels,
        network_isolation=settings.ocr_network_isolation,
        sandbox_uid=settings.ocr_sandbox_uid,
        seccomp=settings.ocr_seccomp,
        adaptive_scale=settings.ocr_adaptive_scale,
        fax_cleanup=settings.ocr_fax_cleanup,
        line_reread=settings.ocr_line_reread,
        device=settings.ocr_device,
        device_precision=settings.ocr_device_precision,
        caps=OutputCaps(
            max_page_chars=settings.max_page_chars,
            max_lines_per_page=settings.max_lines_per_page,
            max_text_chars=settings.max_text_chars,
            max_lines=settings.max_lines,
        ),
        production=settings.env == "production",
        preload=preload,
    )

"""OCR models are loaded when a page first needs them, not before (issue 13).

A text-layer PDF must never wait for PP-OCRv6 to load: ``contrackt extract`` builds
its pool with ``preload=False`` and the zygote says ``ready`` before any model is in
memory. What is checked is what the zygote holds (its memory map: ONNX Runtime's
library is mapped once anything loads a model), not how long it took.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from contrackt.adapters.ocr.pool import ProcessPoolExtractor
from contrackt.ports.extractor import ExtractOptions

SYNTH = Path(__file__).resolve().parents[2].parent / "shared" / "corpus" / "synthetic"


def _corpus(name: str) -> bytes:
    path = SYNTH / name
    if not path.is_file():
        pytest.fail(f"test corpus file missing: {path} (../shared/corpus from the repo)")
    return path.read_bytes()


def _zygote_maps_onnxruntime(pool: ProcessPoolExtractor) -> bool:
    pid = pool.zygote_pid()
    assert pid is not None
    maps = Path(f"/proc/{pid}/maps").read_text()
    return "onnxruntime" in maps


@pytest.fixture
def lazy_pool() -> Iterator[ProcessPoolExtractor]:
    pool = ProcessPoolExtractor(workers=2, preload=False)
    asyncio.run(pool.start())
    try:
        yield pool
    finally:
        asyncio.run(pool.close())


def test_text_layer_pdf_never_loads_a_model_and_a_scan_loads_it_on_demand(lazy_pool: ProcessPoolExtractor) -> None:
    born_digital = _corpus("born_digital.pdf")
    scan = _corpus("scan_mild.pdf")

    result = asyncio.run(lazy_pool.extract(born_digital, ExtractOptions(mode="auto")))

    assert len(result.pages) == 10
    assert {p.source for p in result.pages} == {"text_layer"}
    assert "CONTRATO" in result.pages[0].text
    assert lazy_pool.engines_loaded == []
    assert not _zygote_maps_onnxruntime(lazy_pool)

    # the same pool, a scan in auto mode: the first child (forked without the engine) answers
    # needs_engine, the next one has it; the page is read, not failed
    scanned = asyncio.run(lazy_pool.extract(scan, ExtractOptions(mode="auto", pages=(1, 2))))

    assert [p.source for p in scanned.pages] == ["ocr", "ocr"]
    assert [p.number for p in scanned.pages] == [1, 2]
    assert all(len(p.text) > 200 for p in scanned.pages)
    assert lazy_pool.engines_loaded == ["rapidocr"]
    assert _zygote_maps_onnxruntime(lazy_pool)


def test_a_preloading_pool_holds_the_model_before_its_first_job() -> None:
    """Workers and ``serve`` keep loading (and self-testing) the default engine at start-up,
    so the first scanned page of a job does not wait for it."""
    pool = ProcessPoolExtractor(workers=1, preload=True)
    asyncio.run(pool.start())
    try:
        assert _zygote_maps_onnxruntime(pool)
        text = asyncio.run(pool.extract(_corpus("born_digital.pdf"), ExtractOptions(mode="auto", pages=(1,))))
        assert text.pages[0].source == "text_layer"
        assert pool.engines_loaded == ["rapidocr"]  # the child was forked with it
    finally:
        asyncio.run(pool.close())

"""What issue 12's inputs and outputs cost, each against its peer in the same run.

    .venv/bin/python -m bench.documents                  # 2 OCR slots, default engine
    .venv/bin/python -m bench.documents --json out.json --baseline 356790e

1. **Images vs the PDF path**: scan_mild.pdf pages 1-3 read as the PDF, as a PNG of
   page 1 and as a 3-page TIFF (LZW) rendered from them at 200 dpi: CER against gt/ and
   seconds per page, on one pool.
2. **The searchable PDF**: scan_mild.pdf (10 pages), the PNG and the TIFF, each extracted
   without and with ``searchable_pdf``: the extra wall time, the PDF's size against the
   upload, its word recall read back with pypdfium2. born_digital.pdf shows the
   shortcut (a PDF whose every page has text is its own searchable PDF).
3. **Markdown**: ``render_markdown`` per page on the born-digital (200 pages) and scanned
   results, beside ``json.dumps`` of the same result (work the worker already does).
4. **Word boxes on text-layer lines**: ``extract_text_layer`` ms/page on
   born_digital_x20.pdf, this tree against ``--baseline`` (lines only), one process.

Wall times on a shared machine move with its load: compare within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "corpus" / "synthetic"
BASELINE = "356790e"  # main before issue 12's inputs and outputs
sys.path.insert(0, str(ROOT))


def _images() -> tuple[bytes, bytes]:
    import pypdfium2 as pdfium

    doc = pdfium.PdfDocument((CORPUS / "scan_mild.pdf").read_bytes())
    pages = [doc[i].render(scale=200 / 72).to_pil().convert("L") for i in range(3)]
    png, tiff = io.BytesIO(), io.BytesIO()
    pages[0].save(png, "PNG", dpi=(200, 200))
    pages[0].save(tiff, "TIFF", compression="tiff_lzw", dpi=(200, 200), save_all=True, append_images=pages[1:])
    return png.getvalue(), tiff.getvalue()


def _gt(number: int) -> str:
    return (CORPUS / "gt" / f"page_{number:02d}.txt").read_text(encoding="utf-8")


async def _timed(pool: Any, data: bytes, **options: Any) -> tuple[Any, float]:
    from contrackt.ports.extractor import ExtractOptions

    started = time.perf_counter()
    result = await pool.extract(data, ExtractOptions(**options))
    return result, time.perf_counter() - started


async def ocr_parts(workers: int) -> dict[str, Any]:
    import pypdfium2 as pdfium
    from tests.helpers_cer import corpus_cer, word_recall

    from contrackt.adapters.ocr.pool import ProcessPoolExtractor

    png, tiff = _images()
    scan = (CORPUS / "scan_mild.pdf").read_bytes()
    born = (CORPUS / "born_digital.pdf").read_bytes()
    pool = ProcessPoolExtractor(workers=workers)
    await pool.start()
    out: dict[str, Any] = {"inputs": {}, "searchable": {}}
    try:
        await _timed(pool, png, media_type="image/png")  # first use of each path: not measured
        for name, data, options in (
            ("pdf p1-3", scan, {"pages": (1, 2, 3)}),
            ("tiff p1-3", tiff, {"media_type": "image/tiff"}),
            ("pdf p1", scan, {"pages": (1,)}),
            ("png p1", png, {"media_type": "image/png"}),
        ):
            result, seconds = await _timed(pool, data, **options)
            pairs = [(p.text, _gt(p.number)) for p in result.pages]
            out["inputs"][name] = {
                "cer": corpus_cer(pairs),
                "s_per_page": seconds / len(result.pages),
                "bytes": len(data),
            }
        for name, data, options in (
            ("scan_mild.pdf", scan, {}),
            ("png p1", png, {"media_type": "image/png"}),
            ("tiff p1-3", tiff, {"media_type": "image/tiff"}),
            ("born_digital.pdf", born, {}),
        ):
            _, plain = await _timed(pool, data, **options)
            result, with_pdf = await _timed(pool, data, searchable_pdf=True, **options)
            pdf = result.searchable_pdf or b""
            doc = pdfium.PdfDocument(pdf)
            text = "\n".join(doc[k].get_textpage().get_text_range() for k in range(len(doc)))
            reference = "\n".join(_gt(p.number) for p in result.pages)
            out["searchable"][name] = {
                "extract_s": plain,
                "with_pdf_s": with_pdf,
                "extra_s": with_pdf - plain,
                "size_vs_upload": len(pdf) / len(data),
                "word_recall": word_recall(text, reference),
            }
        out["results"] = {
            "scan": (await _timed(pool, scan))[0],
            "born_x20": (await _timed(pool, (CORPUS / "born_digital_x20.pdf").read_bytes()))[0],
        }
    finally:
        await pool.close()
    return out


def markdown_part(results: dict[str, Any]) -> dict[str, Any]:
    from contrackt.services.markdown import render_markdown

    out = {}
    for name, result in results.items():
        pages = len(result.pages)
        started = time.perf_counter()
        markdown = render_markdown(result)
        md_s = time.perf_counter() - started
        started = time.perf_counter()
        body = json.dumps(result.to_dict(), ensure_ascii=False)
        json_s = time.perf_counter() - started
        out[name] = {
            "pages": pages,
            "markdown_ms_per_page": md_s * 1000 / pages,
            "json_ms_per_page": json_s * 1000 / pages,
            "markdown_bytes_vs_json": len(markdown.encode()) / len(body.encode()),
        }
    return out


def textlayer_part(baseline: str) -> dict[str, Any]:
    import pypdfium2 as pdfium

    from contrackt.adapters.ocr import textlayer

    source = subprocess.run(
        ["git", "show", f"{baseline}:src/contrackt/adapters/ocr/textlayer.py"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    old = types.ModuleType("textlayer_baseline")
    sys.modules[old.__name__] = old  # dataclasses look their module up
    exec(compile(source, "textlayer_baseline.py", "exec"), old.__dict__)
    doc = pdfium.PdfDocument((CORPUS / "born_digital_x20.pdf").read_bytes())
    timings = {}
    for name, module in (("baseline", old), ("words", textlayer)):
        best = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            for i in range(len(doc)):
                page = doc[i]
                module.extract_text_layer(page)
                page.close()
            best = min(best, time.perf_counter() - started)
        timings[name] = best * 1000 / len(doc)
    words = sum(len(ln.words) for i in range(10) for ln in textlayer.extract_text_layer(doc[i]).lines)
    return {
        "baseline_ms_per_page": timings["baseline"],
        "words_ms_per_page": timings["words"],
        "ratio": timings["words"] / timings["baseline"],
        "words_per_page": words / 10,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--baseline", default=BASELINE)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    report = asyncio.run(ocr_parts(args.workers))
    report["markdown"] = markdown_part(report.pop("results"))
    report["textlayer"] = textlayer_part(args.baseline)
    print("inputs (scan_mild pages, 200 dpi images)      CER      s/page   bytes")
    for name, row in report["inputs"].items():
        print(f"  {name:<42} {row['cer']:7.3%}  {row['s_per_page']:6.2f}  {row['bytes']:>10,}")
    print("searchable PDF                    extract s  +pdf s  extra s  size/upload  word recall")
    for name, row in report["searchable"].items():
        print(
            f"  {name:<30} {row['extract_s']:8.2f} {row['with_pdf_s']:7.2f} {row['extra_s']:8.2f}"
            f" {row['size_vs_upload']:11.3f}  {row['word_recall']:10.2%}"
        )
    print("markdown                  pages  md ms/page  json ms/page  md bytes/json bytes")
    for name, row in report["markdown"].items():
        print(
            f"  {name:<22} {row['pages']:6d} {row['markdown_ms_per_page']:11.2f} {row['json_ms_per_page']:13.2f}"
            f" {row['markdown_bytes_vs_json']:20.3f}"
        )
    tl = report["textlayer"]
    print(
        f"text layer (born_digital_x20): {tl['baseline_ms_per_page']:.2f} ms/page lines only ({args.baseline}), "
        f"{tl['words_ms_per_page']:.2f} ms/page with word boxes "
        f"({tl['ratio']:.2f}x; {tl['words_per_page']:.0f} words/page)"
    )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

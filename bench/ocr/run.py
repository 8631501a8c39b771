"""OCR benchmark: our engines and their peers, on the same pages, in the same run.

    .venv/bin/python -m bench.ocr            # full run (about 10-15 min on 2 busy cores)
    .venv/bin/python -m bench.ocr --quick    # scan_hard (5 pages), cardinal, text layer (~5 min)

For each engine (through the real ``ProcessPoolExtractor``, ``--workers``
children, all cores busy) and each set it prints CER, word recall,
accented-word recall, exact recall of CPF / CNPJ / dates / R$ amounts,
seconds per page (per core), pages per second (all cores), and the peak RSS
of the pool's children (VmHWM).  The peers run on the same pages right after:
OCRmyPDF (its own rasteriser, ``--jobs N``) and the ``tesseract`` CLI (pages
rendered once at 2x beforehand, N processes at a time); each line then shows
ours/peer pages per second and CER ratio.  See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))

from contrackt.adapters.ocr.engines import ENGINES as ENGINE_SPECS  # noqa: E402
from contrackt.adapters.ocr.pool import ProcessPoolExtractor  # noqa: E402
from contrackt.ports.extractor import ExtractOptions  # noqa: E402
from helpers_cer import levenshtein, normalize  # noqa: E402

DEFAULT_CORPUS = ROOT.parent / "shared" / "corpus"
ENGINES = ("rapidocr", "rapidocr-fast", "tesseract")
PEERS = ("ocrmypdf", "tesseract-cli")

ENTITIES = {
    "cpf": re.compile(r"\b\d{3}\.\d{3}\.\d{3}-\d{2}\b"),
    "cnpj": re.compile(r"\b\d{2}\.\d{3}\.\d{3}/\d{4}-\d{2}\b"),
    "date": re.compile(r"\b\d{2}/\d{2}/\d{4}\b"),
    "brl": re.compile(r"R\$ ?\d{1,3}(?:\.\d{3})*,\d{2}"),
}
WORD = re.compile(r"\w+", re.UNICODE)


@dataclass
class DocSet:
    name: str
    pdf: Path
    refs: list[str] | None  # per page (None: no ground truth)
    pages: list[int] | None = None  # 0-based subset
    mode: str = "ocr"
    metric: str = "cer"  # cer | recall (approximate reference: word recall only)


@dataclass
class Row:
    engine: str
    set: str
    pages: int
    cer: float | None
    word_recall: float | None
    accent_recall: float | None
    entity_recall: dict[str, float | None]
    s_per_page: float
    pages_per_s: float
    peak_rss_mb: float | None
    zooms: list[float] = field(default_factory=list)
    rotations: list[int] = field(default_factory=list)
    page_recall: list[float] = field(default_factory=list)
    note: str = ""


# ----------------------------------------------------------------------------- scoring


def words(text: str) -> list[str]:
    return [w.lower() for w in WORD.findall(text)]


def recall(hyp: list[str], ref: list[str]) -> float | None:
    if not ref:
        return None
    have = Counter(hyp)
    need = Counter(ref)
    return sum(min(have[w], n) for w, n in need.items()) / sum(need.values())


def _accented(word: str) -> bool:
    return any(ch.isalpha() and not ch.isascii() for ch in word)


def score(hyps: list[str], refs: list[str]) -> dict[str, object]:
    dist = chars = 0
    for h, r in zip(hyps, refs, strict=True):
        hn, rn = normalize(h), normalize(r)
        dist += levenshtein(hn, rn)
        chars += len(rn)
    hw = [w for h in hyps for w in words(h)]
    rw = [w for r in refs for w in words(r)]
    accented = [w for w in rw if _accented(w)]
    hyp_all = normalize(" ".join(hyps))
    ents: dict[str, float | None] = {}
    for key, rx in ENTITIES.items():
        ref_hits = Counter(m.group() for r in refs for m in rx.finditer(normalize(r)))
        hyp_hits = Counter(m.group() for m in rx.finditer(hyp_all))
        total = sum(ref_hits.values())
        ents[key] = sum(min(hyp_hits[k], n) for k, n in ref_hits.items()) / total if total else None
    return {
        "cer": dist / chars if chars else 0.0,
        "word_recall": recall(hw, rw),
        "accent_recall": recall([w for w in hw if _accented(w)], accented),
        "entity_recall": ents,
    }


# ----------------------------------------------------------------------------- corpus


def subset_pdf(src: Path, pages: list[int] | None, out: Path) -> Path:
    import pypdfium2 as pdfium

    if pages is None:
        return src
    doc = pdfium.PdfDocument(str(src))
    new = pdfium.PdfDocument.new()
    new.import_pages(doc, pages)
    new.save(str(out))
    return out


def build_sets(corpus: Path, quick: bool, only: list[str] | None) -> list[DocSet]:
    syn, real = corpus / "synthetic", corpus / "real"
    gt = [(syn / "gt" / f"page_{n:02d}.txt").read_text("utf-8") for n in range(1, 11)]
    linn_ref = (real / "gt" / "linn_ocrmypdf_ref.txt").read_text("utf-8")
    sets = [
        DocSet("born_digital", syn / "born_digital.pdf", gt, mode="auto"),
        DocSet("scan_mild", syn / "scan_mild.pdf", gt),
        DocSet("scan_hard", syn / "scan_hard.pdf", gt),
        DocSet("francais", real / "francais.pdf", [(real / "gt" / "francais.txt").read_text("utf-8")]),
        DocSet("typewriter", real / "typewriter.pdf", [(real / "gt" / "typewriter.txt").read_text("utf-8")]),
        DocSet("cardinal", real / "cardinal.pdf", [linn_ref] * 4, metric="recall"),
        DocSet("linn", real / "linn.pdf", [linn_ref], metric="recall"),
    ]
    # generated (bench/ocr/dense.py): 300 dpi, 43-46 lines a page; in a full run, or when named
    if (not quick and not only) or (only and "dense" in only):
        from bench.ocr.dense import cached

        dense_pdf, dense_refs = cached()
        sets.append(DocSet("dense", dense_pdf, dense_refs))
    # generated (bench/ocr/rescan.py): corpus pages rescanned at 300 / 200 dpi, reduced
    # to 60 % at 300 dpi, and as 1-bit faxes; only when named
    from bench.ocr import rescan

    for name in rescan.SETS:
        if only and name in only:
            pdf, refs = rescan.cached(corpus, name)
            sets.append(DocSet(name, pdf, refs))
    if quick:
        hard = next(s for s in sets if s.name == "scan_hard")
        hard.pages, hard.refs = [0, 2, 4, 5, 8], [gt[i] for i in (0, 2, 4, 5, 8)]
        sets = [s for s in sets if s.name in ("born_digital", "scan_hard", "cardinal", "dense")]
    if only:
        sets = [s for s in sets if s.name in only]
    for s in sets:
        if not s.pdf.is_file():
            raise SystemExit(f"corpus file missing: {s.pdf}")
    return sets


# ----------------------------------------------------------------------------- ours


async def run_engine(
    engine: str,
    sets: list[DocSet],
    pdfs: dict[str, bytes],
    workers: int,
    postcorrect: bool = True,
    latin: bool = True,
    rec_min_width: int = 0,
    adaptive: bool = True,
    fax_cleanup: bool = True,
    line_reread: str = "fax",
) -> list[Row]:
    pool = ProcessPoolExtractor(
        workers=workers,
        engine=engine,
        engines=[],
        postcorrect=postcorrect,
        latin=latin,
        rec_min_width=rec_min_width,
        adaptive_scale=adaptive,
        fax_cleanup=fax_cleanup,
        line_reread=line_reread,
    )
    await pool.start()
    rows = []
    try:
        for s in sets:
            if s.name == "born_digital" and engine != "rapidocr":
                continue  # the text layer does not depend on the engine
            pdf = pdfs[s.name]
            if s.mode != "ocr":  # a text-layer pass is too short to time cold
                await pool.extract(pdf, ExtractOptions(mode=s.mode))
            t0 = time.perf_counter()
            result = await pool.extract(pdf, ExtractOptions(mode=s.mode))
            wall = time.perf_counter() - t0
            hyps = [p.text for p in result.pages]
            rows.append(_row(engine, s, hyps, wall, workers, pool.peak_child_rss_kb / 1024, result.pages))
    finally:
        await pool.close()
    return rows


def _row(engine: str, s: DocSet, hyps: list[str], wall: float, workers: int, rss: float | None, pages=()) -> Row:  # type: ignore[no-untyped-def]
    n = len(hyps)
    sc = score(hyps, s.refs or [""] * n) if s.refs else {}
    page_recall = []
    if s.refs:
        page_recall = [recall(words(h), words(r)) or 0.0 for h, r in zip(hyps, s.refs, strict=True)]
    row = Row(
        engine=engine,
        set=s.name,
        pages=n,
        cer=sc.get("cer") if s.metric == "cer" else None,  # type: ignore[arg-type]
        word_recall=sc.get("word_recall"),  # type: ignore[arg-type]
        accent_recall=sc.get("accent_recall"),  # type: ignore[arg-type]
        entity_recall=sc.get("entity_recall", {}),  # type: ignore[arg-type]
        s_per_page=wall * workers / n,
        pages_per_s=n / wall,
        peak_rss_mb=rss,
        zooms=[p.zoom for p in pages if p.zoom is not None],
        rotations=[p.rotation for p in pages],
        page_recall=page_recall,
    )
    return row


async def text_layer_speed(corpus: Path, workers: int) -> Row:
    pdf = (corpus / "synthetic" / "born_digital_x20.pdf").read_bytes()
    pool = ProcessPoolExtractor(workers=workers)
    await pool.start()
    try:
        await pool.extract(pdf, ExtractOptions())
        best = 0.0
        for _ in range(3):
            t0 = time.perf_counter()
            result = await pool.extract(pdf, ExtractOptions())
            best = max(best, len(result.pages) / (time.perf_counter() - t0))
        rss = pool.peak_child_rss_kb / 1024
    finally:
        await pool.close()
    n = len(result.pages)
    return Row("text-layer", "born_digital_x20", n, None, None, None, {}, workers / best, best, rss)


# ----------------------------------------------------------------------------- peers


def run_ocrmypdf(s: DocSet, pdf: Path, workers: int, tmp: Path) -> Row | None:
    if shutil.which("ocrmypdf") is None:
        return None
    out, sidecar = tmp / f"{s.name}.ocrmypdf.pdf", tmp / f"{s.name}.txt"
    # The ocrmypdf command renices itself (os.nice(5)); on a shared machine that
    # would starve it next to our children at nice 0.  Run its entry point with
    # os.nice disabled so both sides compete on equal terms.
    exe = shutil.which("ocrmypdf") or "ocrmypdf"
    first = Path(exe).read_text("utf-8", errors="replace").splitlines()[0]
    python = first[2:].strip().split()[0] if first.startswith("#!") and "python" in first else sys.executable
    cmd = [
        python,
        "-c",
        "import os, sys; os.nice = lambda n: 0; from ocrmypdf.__main__ import run; sys.exit(run())",
        "--force-ocr",
        "-l",
        "por",
        "--jobs",
        str(workers),
        "--output-type",
        "pdf",
        "--optimize",
        "0",
        "--sidecar",
        str(sidecar),
        "-q",
        str(pdf),
        str(out),
    ]
    env = {**os.environ, "OMP_THREAD_LIMIT": "1"}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        print(f"  ocrmypdf failed on {s.name}: {proc.stderr.strip()[-300:]}", file=sys.stderr)
        return None
    hyps = sidecar.read_text("utf-8").split("\f")
    n = len(s.refs or [])
    hyps = (hyps + [""] * n)[:n]
    return _row("ocrmypdf", s, hyps, wall, workers, None)


def run_tesseract_cli(s: DocSet, pdf: Path, workers: int, tmp: Path, zoom: float = 2.0) -> Row | None:
    import pypdfium2 as pdfium

    if shutil.which("tesseract") is None:
        return None
    doc = pdfium.PdfDocument(str(pdf))
    images = []
    for i in range(len(doc)):  # rendered once, before the clock starts
        path = tmp / f"{s.name}.{i:03d}.png"
        doc[i].render(scale=zoom).to_pil().save(path)
        images.append(path)
    env = {**os.environ, "OMP_THREAD_LIMIT": "1"}

    def one(path: Path) -> str:
        proc = subprocess.run(
            ["tesseract", str(path), "-", "-l", "por"],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        return proc.stdout

    t0 = time.perf_counter()
    with ThreadPoolExecutor(workers) as ex:
        hyps = list(ex.map(one, images))
    wall = time.perf_counter() - t0
    return _row("tesseract-cli", s, hyps, wall, workers, None)


# ----------------------------------------------------------------------------- report


def fmt(v: float | None, pct: bool = True) -> str:
    if v is None:
        return "-"
    return f"{v:.2%}" if pct else f"{v:.2f}"


def print_rows(rows: list[Row], show_zooms: bool = False) -> None:
    head = (
        f"{'engine':<19} {'set':<18}{'pages':>5}{'CER':>9}{'words':>8}{'accents':>9}"
        f"{'cpf':>7}{'cnpj':>7}{'date':>7}{'R$':>7}{'s/page':>8}{'pages/s':>9}{'RSS MB':>8}"
        f"  {'vs OCRmyPDF (pages/s, CER)':<28}{'vs tesseract CLI':<20}"
    )
    print(head)
    print("-" * len(head))
    peers = {(r.engine, r.set): r for r in rows if r.engine in PEERS}
    for r in rows:
        e = r.entity_recall
        ratios = []
        for peer in PEERS:
            p = peers.get((peer, r.set))
            if p is None or r.engine in PEERS:
                ratios.append("")
                continue
            speed = r.pages_per_s / p.pages_per_s if p.pages_per_s else float("nan")
            cer_ratio = f"{r.cer / p.cer:.2f}" if r.cer is not None and p.cer else "-"
            ratios.append(f"{speed:.2f}x, {cer_ratio}")
        print(
            f"{r.engine:<19} {r.set:<18}{r.pages:>5}{fmt(r.cer):>9}{fmt(r.word_recall):>8}{fmt(r.accent_recall):>9}"
            f"{fmt(e.get('cpf')):>7}{fmt(e.get('cnpj')):>7}{fmt(e.get('date')):>7}{fmt(e.get('brl')):>7}"
            f"{r.s_per_page:>8.3f}{r.pages_per_s:>9.2f}{fmt(r.peak_rss_mb, False):>8}"
            f"  {ratios[0]:<28}{ratios[1]:<20}"
        )
        if show_zooms and r.zooms and r.engine not in PEERS:
            print(f"{'':<18}  zoom per page {[round(z, 2) for z in r.zooms]}")
        if r.set in ("cardinal",) and r.page_recall:
            print(f"{'':<18}  per-page word recall {[round(x, 3) for x in r.page_recall]} rotation {r.rotations}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.ocr", description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    ap.add_argument("--engines", default=",".join(ENGINES))
    ap.add_argument("--sets", default="", help="comma-separated subset of set names")
    ap.add_argument("--quick", action="store_true", help="scan_hard (5 pages), cardinal, text layer")
    ap.add_argument("--no-peers", action="store_true")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--postcorrect-ablation", action="store_true", help="also run engines without post-correction")
    ap.add_argument(
        "--latin-ablation",
        action="store_true",
        help="also run the PP-OCR engines with their full multilingual recogniser output",
    )
    ap.add_argument(
        "--narrow-ablation",
        type=int,
        default=0,
        metavar="PX",
        help="also run the PP-OCR engines reading narrow line crops at their own width (padded to PX, not 320)",
    )
    ap.add_argument(
        "--adaptive-ablation",
        action="store_true",
        help="also run each engine with the adaptive render scale off (rows marked /fixed)",
    )
    ap.add_argument(
        "--cleanup-ablation",
        action="store_true",
        help="also run each engine with fax cleanup off (rows marked /raw-fax; fax sets only)",
    )
    ap.add_argument(
        "--reread-ablation",
        action="store_true",
        help="also run engines that re-read unsure lines without it (rows marked /alone)",
    )
    ap.add_argument(
        "--reread",
        default="fax",
        choices=("fax", "all", "off"),
        help="CONTRACKT_OCR_LINE_REREAD for the engines' own rows (default: the product's, fax)",
    )
    ap.add_argument("--json", type=Path, help="write the rows here")
    args = ap.parse_args(argv)
    if not args.corpus.is_dir():
        print(f"corpus missing: {args.corpus}", file=sys.stderr)
        return 2
    sets = build_sets(args.corpus, args.quick, [s for s in args.sets.split(",") if s] or None)
    engines = [e for e in args.engines.split(",") if e]
    load = os.getloadavg()
    print(
        f"# bench.ocr  cores={os.cpu_count()} workers={args.workers} load average at start {load[0]:.2f} {load[1]:.2f}"
    )
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bench-ocr-") as tmpdir:
        tmp = Path(tmpdir)
        paths = {s.name: subset_pdf(s.pdf, s.pages, tmp / f"{s.name}.pdf") for s in sets}
        pdfs = {name: path.read_bytes() for name, path in paths.items()}
        if any(s.name == "born_digital" for s in sets):
            rows.append(asyncio.run(text_layer_speed(args.corpus, args.workers)))
        # Set by set: our engines, then the peers on the same pages right away, so
        # the load of a shared machine is as alike as we can make it.
        for s in sets:
            for engine in engines:
                rows += asyncio.run(run_engine(engine, [s], pdfs, args.workers, line_reread=args.reread))
                if args.postcorrect_ablation and s.mode == "ocr":
                    for r in asyncio.run(run_engine(engine, [s], pdfs, args.workers, postcorrect=False)):
                        r.engine = f"{engine}/raw"
                        rows.append(r)
                if args.narrow_ablation and s.mode == "ocr" and engine.startswith("rapidocr"):
                    narrow = args.narrow_ablation
                    for r in asyncio.run(run_engine(engine, [s], pdfs, args.workers, rec_min_width=narrow)):
                        r.engine = f"{engine}/w{narrow}"
                        rows.append(r)
                if args.adaptive_ablation and s.mode == "ocr":
                    for r in asyncio.run(run_engine(engine, [s], pdfs, args.workers, adaptive=False)):
                        r.engine = f"{engine}/fixed"
                        rows.append(r)
                if args.cleanup_ablation and s.name.startswith("fax"):
                    for r in asyncio.run(run_engine(engine, [s], pdfs, args.workers, fax_cleanup=False)):
                        r.engine = f"{engine}/raw-fax"
                        rows.append(r)
                if args.reread_ablation and s.mode == "ocr" and ENGINE_SPECS[engine].reread_with is not None:
                    for r in asyncio.run(run_engine(engine, [s], pdfs, args.workers, line_reread="off")):
                        r.engine = f"{engine}/alone"
                        rows.append(r)
                if args.latin_ablation and s.mode == "ocr" and engine.startswith("rapidocr"):
                    for r in asyncio.run(run_engine(engine, [s], pdfs, args.workers, latin=False)):
                        r.engine = f"{engine}/full"
                        rows.append(r)
            if args.no_peers or s.mode != "ocr":
                continue
            for fn in (run_ocrmypdf, run_tesseract_cli):
                r = fn(s, paths[s.name], args.workers, tmp)
                if r is not None:
                    rows.append(r)
            print(f"# {s.name} done, load average {os.getloadavg()[0]:.2f}", flush=True)
    order = [s.name for s in sets]
    rows.sort(key=lambda r: order.index(r.set) if r.set in order else -1)
    print_rows(rows, show_zooms=args.adaptive_ablation)
    load = os.getloadavg()
    print(f"# load average at end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=1, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

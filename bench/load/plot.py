"""PNG line charts of a ``bench.load`` run, drawn with Pillow (already a dependency):

    .venv/bin/python -m bench.load.plot out.json docs/img

``load-latency.png``: ingest and end-to-end p50/p99 over the load steps (log scale);
``load-throughput.png``: pages/s over worker processes, per document kind (log scale).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

Series = dict[str, list[tuple[float, float]]]
COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf", "#7f7f7f"]
W, H, LEFT, RIGHT, TOP, BOTTOM = 960, 560, 90, 250, 50, 70


def chart(path: Path, title: str, xlabel: str, ylabel: str, series: Series, log_y: bool = True) -> None:
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=14)
    points = [p for values in series.values() for p in values if p[1] > 0 or not log_y]
    if not points:
        raise ValueError(f"{title}: nothing to plot")
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1 = min(xs), max(xs)
    if x0 == x1:
        x0, x1 = x0 - 1, x1 + 1
    if log_y:
        y0, y1 = float(math.floor(math.log10(min(ys)))), float(math.ceil(math.log10(max(ys))))
        if y0 == y1:
            y1 += 1
    else:
        y0, y1 = 0.0, max(ys) * 1.1
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM

    def px(x: float, y: float) -> tuple[float, float]:
        fy = (math.log10(y) - y0) / (y1 - y0) if log_y else (y - y0) / (y1 - y0)
        return LEFT + (x - x0) / (x1 - x0) * pw, TOP + ph - fy * ph

    d.rectangle([LEFT, TOP, LEFT + pw, TOP + ph], outline="black")
    ticks = [10.0**e for e in range(int(y0), int(y1) + 1)] if log_y else [y1 * i / 5 for i in range(6)]
    for t in ticks:
        _, y = px(x0, t)
        d.line([LEFT, y, LEFT + pw, y], fill="#dddddd")
        d.text((LEFT - 8, y), f"{t:g}", fill="black", font=font, anchor="rm")
    for x in sorted(set(xs)):
        X, _ = px(x, 10.0**y0 if log_y else y0)
        d.line([X, TOP, X, TOP + ph], fill="#eeeeee")
        d.text((X, TOP + ph + 8), f"{x:g}", fill="black", font=font, anchor="mt")
    d.text((W / 2 - RIGHT / 2, 15), title, fill="black", font=ImageFont.load_default(size=17), anchor="mt")
    d.text((LEFT + pw / 2, H - 25), xlabel, fill="black", font=font, anchor="mt")
    d.text((10, TOP - 30), ylabel, fill="black", font=font)
    for i, (name, values) in enumerate(series.items()):
        colour = COLOURS[i % len(COLOURS)]
        pts = [px(x, y) for x, y in sorted(values) if y > 0 or not log_y]
        if len(pts) > 1:
            d.line(pts, fill=colour, width=3)
        for X, Y in pts:
            d.ellipse([X - 4, Y - 4, X + 4, Y + 4], fill=colour)
        ly = TOP + 10 + 24 * i
        d.line([W - RIGHT + 15, ly, W - RIGHT + 45, ly], fill=colour, width=3)
        d.text((W - RIGHT + 52, ly), name, fill="black", font=font, anchor="lm")
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, optimize=True)


def plots(result: dict[str, Any], folder: Path) -> list[Path]:
    latency: Series = {}
    throughput: Series = {}
    for name, t in result["targets"].items():
        for field, label in (
            ("ingest_p50_ms", "ingest p50"),
            ("ingest_p99_ms", "ingest p99"),
            ("e2e_p50_ms", "e2e p50"),
            ("e2e_p99_ms", "e2e p99"),
        ):
            latency[f"{name} {label}"] = [(s["factor"], s[field]) for s in t["steps"] if s[field] is not None]
        for kind in ("born_1p", "scan_3p"):
            rows = [r for r in t["throughput"] if r["kind"] == kind and r.get("pages_per_s")]
            if rows:
                throughput[f"{name} {kind}"] = [(r["workers"], r["pages_per_s"]) for r in rows]
    out = [folder / "load-latency.png", folder / "load-throughput.png"]
    chart(
        out[0],
        "Latency over load steps (one-page born-digital PDFs)",
        "offered load, x measured capacity",
        "ms",
        latency,
    )
    chart(out[1], "Throughput over worker processes (2 shared cores)", "worker processes", "pages/s", throughput)
    return out


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    for path in plots(json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2])):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

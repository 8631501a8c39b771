"""A dense development set: 300 dpi scans of generated Portuguese pages, 40-60 lines each.

Each page is a contract clause in small type (8 pt), an itemised table with ruled
cells (9 columns of figures and short descriptions) and a signature block; the
text is made up from a fixed vocabulary with a seeded generator, so the set is the
same on every machine and nothing of it comes from elsewhere. Pages are drawn with
Pillow (DejaVu Sans) at 300 dpi, slightly rotated, blurred, noised and JPEG-compressed,
and wrapped into an image-only PDF. Ground truth: the printed lines, table rows read
left to right, one line each.

    .venv/bin/python -m bench.ocr.dense --out /tmp/dense --pages 4   # write the PDF and the truth
"""

from __future__ import annotations

import argparse
import io
import os
import random
import tempfile
from pathlib import Path

DPI = 300
A4 = (2480, 3508)  # pixels at 300 dpi
MARGIN = 170
# Debian's fonts-dejavu-core; CONTRACKT_BENCH_FONTS names another folder holding the two files
FONTS = os.environ.get("CONTRACKT_BENCH_FONTS", "/usr/share/fonts/truetype/dejavu")
FONT = f"{FONTS}/DejaVuSans.ttf"
FONT_BOLD = f"{FONTS}/DejaVuSans-Bold.ttf"
VERSION = 2  # bump when the pages or their text change (the cached PDF is keyed on it)

WORDS = (
    "contratante contratada prestação serviços cláusula parágrafo único obrigações partes vigência rescisão "
    "pagamento multa juros correção monetária índice reajuste prazo dias úteis notificação prévia escrita "
    "responsabilidade danos materiais morais terceiros confidencialidade informações sigilo proteção dados "
    "pessoais titular tratamento finalidade consentimento segurança técnica administrativa incidente comunicação "
    "autoridade nacional foro comarca São Paulo renúncia qualquer outro privilegiado seja dirimir questões "
    "oriundas presente instrumento testemunhas assinatura eletrônica válida nos termos legislação vigente "
    "fornecimento equipamentos manutenção preventiva corretiva atendimento técnico horário comercial locação "
    "imóvel situado avenida rua bairro município estado aluguel mensal encargos condomínio tributos taxas "
    "garantia fiança caução seguro incêndio benfeitorias necessárias úteis voluptuárias vistoria entrega chaves"
).split()
ITEMS = (
    "Licença de software anual",
    "Suporte técnico mensal",
    "Treinamento presencial",
    "Consultoria tributária",
    "Manutenção preventiva",
    "Locação de equipamento",
    "Hospedagem em nuvem",
    "Migração de dados",
    "Auditoria de segurança",
    "Desenvolvimento sob demanda",
    "Impressão e digitalização",
    "Serviço de entrega expressa",
)
UNITS = ("un", "h", "mês", "kg", "lote")


def _money(rng: random.Random, low: float, high: float) -> str:
    value = rng.uniform(low, high)
    whole, cents = int(value), round((value - int(value)) * 100) % 100
    return f"{whole:,}".replace(",", ".") + f",{cents:02d}"


def _cnpj(rng: random.Random) -> str:
    d = [rng.randint(0, 9) for _ in range(12)]
    return f"{d[0]}{d[1]}.{d[2]}{d[3]}{d[4]}.{d[5]}{d[6]}{d[7]}/{d[8]}{d[9]}{d[10]}{d[11]}-{rng.randint(10, 99)}"


def _sentence(rng: random.Random) -> str:
    words = [rng.choice(WORDS) for _ in range(rng.randint(8, 18))]
    if rng.random() < 0.3:
        words.insert(rng.randrange(len(words)), f"R$ {_money(rng, 100, 90000)}")
    if rng.random() < 0.2:
        date = f"{rng.randint(1, 28):02d}/{rng.randint(1, 12):02d}/20{rng.randint(24, 29)}"
        words.insert(rng.randrange(len(words)), date)
    if rng.random() < 0.15:
        words.insert(rng.randrange(len(words)), f"CNPJ {_cnpj(rng)}")
    text = " ".join(words)
    return text[0].upper() + text[1:] + rng.choice((".", ".", ";", ","))


def _wrap(text: str, font: object, width: int) -> list[str]:
    lines: list[str] = []
    current = ""
    for word in text.split():
        trial = f"{current} {word}".strip()
        if font.getlength(trial) <= width or not current:  # type: ignore[attr-defined]
            current = trial
        else:
            lines.append(current)
            current = word
    if current:
        lines.append(current)
    return lines


def draw_page(number: int, seed: int) -> tuple[object, list[str]]:
    """(grey Pillow image at 300 dpi, printed lines) of dense page ``number``."""
    from PIL import Image, ImageDraw, ImageFont

    rng = random.Random(seed * 1000 + number)
    body = ImageFont.truetype(FONT, 33)  # 8 pt at 300 dpi
    small = ImageFont.truetype(FONT, 31)
    head = ImageFont.truetype(FONT_BOLD, 42)
    head_small = ImageFont.truetype(FONT_BOLD, 31)
    image = Image.new("L", A4, 255)
    draw = ImageDraw.Draw(image)
    lines: list[str] = []
    y = MARGIN
    width = A4[0] - 2 * MARGIN

    def put(text: str, font: object, x: int = MARGIN, step: int = 44) -> None:
        nonlocal y
        draw.text((x, y), text, font=font, fill=20)  # type: ignore[arg-type]
        lines.append(text)
        y += step

    put(f"CLÁUSULA {number + 2}ª — DAS OBRIGAÇÕES E DO PREÇO", head, step=66)
    paragraph = " ".join(_sentence(rng) for _ in range(rng.randint(15, 19)))
    for text in _wrap(paragraph, body, width):
        put(text, body)
    y += 24
    columns = (
        ("Item", 90),
        ("Descrição", 700),
        ("Un.", 120),
        ("Qtd.", 140),
        ("Valor unit. (R$)", 400),
        ("Total (R$)", 380),
    )
    xs = [MARGIN]
    for _, w in columns:
        xs.append(xs[-1] + w)
    row_h = 50
    rows = [[c for c, _ in columns]]
    for i in range(rng.randint(15, 19)):
        qty = rng.randint(1, 240)
        unit = _money(rng, 10, 4000)
        total = _money(rng, 100, 200000)
        rows.append([f"{i + 1:02d}", rng.choice(ITEMS), rng.choice(UNITS), str(qty), unit, total])
    top = y
    for r, row in enumerate(rows):
        for c, cell in enumerate(row):
            draw.text((xs[c] + 12, y + 8), cell, font=head_small if r == 0 else small, fill=20)
        lines.append(" ".join(row))
        y += row_h
    for x in xs:
        draw.line([(x, top), (x, y)], fill=60, width=2)
    for k in range(len(rows) + 1):
        draw.line([(xs[0], top + k * row_h), (xs[-1], top + k * row_h)], fill=60, width=2)
    y += 30
    closing = " ".join(_sentence(rng) for _ in range(rng.randint(3, 4)))
    for text in _wrap(closing, body, width):
        put(text, body)
    y += 40
    put(f"São Paulo, {rng.randint(1, 28)} de março de 2026.", body, step=70)
    put(f"Contratante: CNPJ {_cnpj(rng)}        Contratada: CNPJ {_cnpj(rng)}", body)
    return image, lines


def degrade(image: object, rng: random.Random) -> object:
    """A 300 dpi office scan: up to half a degree of skew, light blur, sensor noise, JPEG q75."""
    import numpy as np
    from PIL import Image, ImageFilter

    img = image.rotate(rng.uniform(-0.5, 0.5), resample=Image.BICUBIC, fillcolor=255)  # type: ignore[attr-defined]
    img = img.filter(ImageFilter.GaussianBlur(0.7))
    arr = np.asarray(img, dtype=np.float32)
    arr += np.random.default_rng(rng.randint(0, 1 << 30)).normal(0, 7, arr.shape)
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    buffer = io.BytesIO()
    img.save(buffer, "JPEG", quality=75)
    return Image.open(io.BytesIO(buffer.getvalue()))


def build(out: Path, pages: int = 4, seed: int = 13) -> tuple[Path, list[str]]:
    """Write ``dense.pdf`` (image-only, 300 dpi) under ``out``; (its path, ground truth per page)."""
    out.mkdir(parents=True, exist_ok=True)
    pdf = out / f"dense-v{VERSION}-s{seed}-p{pages}.pdf"
    rng = random.Random(seed)
    images, truth = [], []
    for n in range(1, pages + 1):
        image, lines = draw_page(n, seed)
        images.append(degrade(image, rng))
        truth.append("\n".join(lines))
    if not pdf.is_file():
        tmp = pdf.with_suffix(".tmp")
        images[0].save(tmp, "PDF", resolution=DPI, save_all=True, append_images=images[1:])  # type: ignore[attr-defined]
        tmp.replace(pdf)
    return pdf, truth


def cached(pages: int = 4, seed: int = 13) -> tuple[Path, list[str]]:
    return build(Path(tempfile.gettempdir()) / "contrackt-bench-dense", pages, seed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--pages", type=int, default=4)
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args(argv)
    pdf, truth = build(args.out, args.pages, args.seed)
    for n, text in enumerate(truth, start=1):
        (args.out / f"dense_{n:02d}.txt").write_text(text + "\n", encoding="utf-8")
    print(f"{pdf}: {len(truth)} pages, lines per page {[t.count(chr(10)) + 1 for t in truth]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Markdown from the layout (services/markdown.py) on synthetic pages: headings, paragraphs, tables.

Each page is built the way the extractor reports one: lines with boxes in points and words
with boxes. A 10 pt body font on 14 pt line pitch, a 60..530 pt text block.
"""

from __future__ import annotations

from contrackt.domain.results import ExtractionResult, Line, Page, Word
from contrackt.services.markdown import render_markdown

CHAR = 5.0  # width of one character at 10 pt
LEFT = 60.0
RIGHT = 530.0


def line(y: float, *cells: tuple[float, str], size: float = 10.0) -> Line:
    """A line at ``y`` made of cells (x, text); words 1 character apart inside a cell."""
    words: list[Word] = []
    for x, text in cells:
        for token in text.split():
            width = CHAR * len(token) * size / 10.0
            words.append(Word(token, 0.99, (x, y, x + width, y + size)))
            x += width + CHAR * size / 10.0
    box = (words[0].bbox[0], y, words[-1].bbox[2], y + size)
    return Line(" ".join(w.text for w in words), 0.99, box, words)


def prose(y: float, text: str, *, full: bool = True) -> Line:
    """One line of running text that fills the block (or stops early: the end of a paragraph)."""
    ln = line(y, (LEFT, text))
    if full:  # justified text reaches the right edge
        x0, y0, _, y1 = ln.bbox
        ln.bbox = (x0, y0, RIGHT, y1)
    return ln


def page(*lines: Line, number: int = 1) -> Page:
    return Page(
        number=number, source="ocr", text="\n".join(ln.text for ln in lines), confidence=0.99, lines=list(lines)
    )


def md(*pages: Page) -> str:
    out = render_markdown(ExtractionResult(pages=list(pages)))
    assert out.endswith("\n") and not out.endswith("\n\n")
    return out.rstrip("\n")


def test_a_taller_line_is_a_title_and_a_short_line_in_capitals_a_heading() -> None:
    out = md(
        page(
            line(40, (150, "CONTRATO DE LOCAÇÃO"), size=16),
            prose(70, "As partes abaixo qualificadas celebram o presente contrato de locação"),
            prose(84, "nos termos da lei.", full=False),
            line(104, (LEFT, "CLÁUSULA PRIMEIRA – DO OBJETO")),
            prose(124, "O objeto é o imóvel situado na Avenida Brasil.", full=False),
        )
    )
    assert out.splitlines() == [
        "<!-- page 1 -->",
        "",
        "# CONTRATO DE LOCAÇÃO",
        "",
        "As partes abaixo qualificadas celebram o presente contrato de locação nos termos da lei.",
        "",
        "## CLÁUSULA PRIMEIRA – DO OBJETO",
        "",
        "O objeto é o imóvel situado na Avenida Brasil.",
    ]


def test_capitals_that_are_sentences_names_or_labels_are_not_headings() -> None:
    out = md(
        page(
            prose(40, "Texto corrido em minúsculas para a mediana das alturas das linhas.", full=False),
            line(60, (LEFT, "COMÉRCIO DE ALIMENTOS SÃO JOÃO LTDA.")),  # ends like a sentence
            line(80, (LEFT, "DISTRIBUIDORA CENTRO-OESTE, CNPJ 76.931.098/0001-62")),  # an enumeration
            line(100, (LEFT, "TESTEMUNHAS:")),  # a label
            line(120, (LEFT, "CPF 504.020.487-68")),  # too few letters
        )
    )
    assert "#" not in out
    assert "COMÉRCIO DE ALIMENTOS SÃO JOÃO LTDA." in out


def test_paragraphs_break_at_a_wider_gap_a_short_line_or_a_clause_number() -> None:
    out = md(
        page(
            prose(40, "Primeira linha do primeiro parágrafo que vai até a margem"),
            prose(54, "e continua aqui até o fim.", full=False),
            prose(68, "Segundo parágrafo logo abaixo de uma linha curta que vai até"),
            prose(82, "a margem direita da página"),
            prose(106, "Terceiro parágrafo depois de um espaço maior que vai até a margem"),
            prose(120, "1.2. Uma cláusula numerada começa outro parágrafo"),
            prose(134, "sócia-"),
            prose(148, "administradora e fim.", full=False),
        )
    )
    paragraphs = out.split("\n\n")[1:]
    assert paragraphs == [
        "Primeira linha do primeiro parágrafo que vai até a margem e continua aqui até o fim.",
        "Segundo parágrafo logo abaixo de uma linha curta que vai até a margem direita da página",
        "Terceiro parágrafo depois de um espaço maior que vai até a margem",
        "1.2. Uma cláusula numerada começa outro parágrafo sócia-administradora e fim.",
    ]


def test_aligned_cells_become_a_pipe_table_with_the_first_row_as_header() -> None:
    rows = [
        ("Item", "Descrição", "Valor"),
        ("001", "Consultoria tributária", "R$ 18.750,00"),
        ("002", "Parecer", "R$ 4.200,00"),
    ]
    lines = [line(100 + 14 * i, (60, a), (120, b), (400, c)) for i, (a, b, c) in enumerate(rows)]
    out = md(page(prose(60, "Antes da tabela.", full=False), *lines, prose(160, "Depois da tabela.", full=False)))
    assert out.split("\n\n")[1:] == [
        "Antes da tabela.",
        "| Item | Descrição | Valor |\n| --- | --- | --- |\n| 001 | Consultoria tributária | R$ 18.750,00 |\n"
        "| 002 | Parecer | R$ 4.200,00 |",
        "Depois da tabela.",
    ]


def test_a_missing_cell_stays_empty_and_a_form_gets_an_empty_header() -> None:
    table = md(
        page(
            line(100, (60, "Código"), (200, "Quantidade"), (400, "Total")),
            line(114, (60, "A-1"), (400, "R$ 10,00")),
            line(128, (60, "B-2"), (200, "3"), (400, "R$ 30,00")),
        )
    )
    assert "| A-1 |  | R$ 10,00 |" in table
    form = md(
        page(
            line(100, (60, "Nome:"), (200, "Sebastião Ribeiro")),
            line(114, (60, "CPF:"), (200, "213.763.162-85")),
            line(128, (60, "Estado civil:"), (200, "União estável")),
        )
    )
    assert form.split("\n\n")[1].splitlines()[:3] == ["|  |  |", "| --- | --- |", "| Nome: | Sebastião Ribeiro |"]


def test_two_rows_or_cells_that_do_not_line_up_are_not_a_table() -> None:
    two_rows = md(
        page(
            line(100, (60, "Razão social: Assessoria Técnica"), (300, "CNPJ: 76.931.098/0001-62")),
            line(114, (60, "Inscrição municipal: 4.587.921-0"), (300, "Município: São Paulo")),
        )
    )
    assert "|" not in two_rows
    # the second row's wide first cell spans the first row's two columns: no clear columns
    ragged = md(
        page(
            line(100, (60, "A"), (100, "B"), (300, "C")),
            line(114, (60, "uma célula bem larga que cobre"), (300, "D")),
            line(128, (60, "E"), (100, "F"), (300, "G")),
        )
    )
    assert "|" not in ragged


def test_markdown_syntax_in_the_text_is_escaped() -> None:
    out = md(
        page(
            prose(40, "1. Não é uma lista numerada", full=False),
            prose(60, "# nem um título", full=False),
            prose(80, "- nem um item *com* ênfase_ou [link](x) <b>", full=False),
            line(100, (60, "a|b"), (200, "c")),
            line(114, (60, "d"), (200, "e")),
            line(128, (60, "f"), (200, "g|h")),
        )
    )
    blocks = out.split("\n\n")[1:]
    assert blocks[:3] == [
        "1\\. Não é uma lista numerada",
        "\\# nem um título",
        "\\- nem um item \\*com\\* ênfase\\_ou \\[link\\](x) \\<b\\>",
    ]
    assert blocks[3].splitlines()[0] == "| a\\|b | c |"
    assert blocks[3].splitlines()[-1] == "| f | g\\|h |"


def test_pages_keep_their_numbers_and_empty_pages_stay() -> None:
    out = md(page(prose(40, "Página dois.", full=False), number=2), Page(7, "ocr", "", 0.0, []))
    assert out == "<!-- page 2 -->\n\nPágina dois.\n\n<!-- page 7 -->"


def test_lines_without_word_boxes_are_text_only() -> None:
    bare = Line("Item Descrição Valor", 1.0, (60, 100, 400, 110))
    out = md(
        page(bare, Line("001 Consultoria R$ 1,00", 1.0, (60, 114, 400, 124)), Line("x y", 1.0, (60, 128, 80, 138)))
    )
    assert "|" not in out
    assert "Item Descrição Valor" in out

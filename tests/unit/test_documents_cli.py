"""``contrackt extract`` reads images and page selections and writes markdown or a searchable PDF."""

from __future__ import annotations

from pathlib import Path

import pypdfium2 as pdfium
import pytest
from click.testing import CliRunner

from contrackt.cli import main
from tests.conftest import corpus_path
from tests.documents import ground_truth, png_of
from tests.helpers_cer import word_recall


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"CONTRACKT_HOME": str(tmp_path / "home"), "CONTRACKT_WORKERS": "2"}


def test_extract_a_page_selection_as_markdown(env: dict[str, str]) -> None:
    born = str(corpus_path("synthetic", "born_digital.pdf"))
    run = CliRunner().invoke(main, ["extract", born, "--pages", "6", "--format", "markdown"], env=env)
    assert run.exit_code == 0, run.output
    assert run.stdout.startswith("<!-- page 6 -->\n\n# NOTA FISCAL")
    assert "| Item | Descrição do serviço | Qtd. | Valor unit. | Valor total |" in run.stdout
    refused = CliRunner().invoke(main, ["extract", born, "--pages", "3-1"], env=env)
    assert refused.exit_code != 0 and "pages" in refused.output


def test_extract_an_image_as_a_searchable_pdf(env: dict[str, str], tmp_path: Path) -> None:
    image = tmp_path / "page.png"
    image.write_bytes(png_of(9))
    out = tmp_path / "page.pdf"
    run = CliRunner().invoke(main, ["extract", str(image), "--format", "pdf", "--output", str(out)], env=env)
    assert run.exit_code == 0, run.output
    doc = pdfium.PdfDocument(out.read_bytes())
    assert len(doc) == 1
    assert word_recall(doc[0].get_textpage().get_text_range(), ground_truth(9)) >= 0.98
    html = tmp_path / "page.html"
    html.write_text("<html></html>")
    refused = CliRunner().invoke(main, ["extract", str(html)], env=env)
    assert refused.exit_code != 0 and "not a PDF, JPEG, PNG or TIFF" in refused.output

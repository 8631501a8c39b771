"""OCR benchmark against peers: ``python -m bench.ocr`` (see bench/README.md)."""

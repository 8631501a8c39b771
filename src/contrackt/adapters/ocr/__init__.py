"""OCR adapter: text layer, RapidOCR engine and the sandboxed child-process pool."""

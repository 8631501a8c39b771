"""Contrackt: private, multi-tenant PDF text extraction."""

__version__ = "0.1.0"

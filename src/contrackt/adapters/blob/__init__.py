"""Blob stores: local encrypted files, memory, S3."""

"""Checkpoint sinks (outside the database)."""

"""Webhook delivery adapters."""

"""Narrow interfaces (typing.Protocol) between services and infrastructure."""

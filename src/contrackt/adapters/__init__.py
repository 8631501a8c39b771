"""Infrastructure adapters, one port each; imported lazily by bootstrap."""

"""Use cases in flow order; they talk to ports only, never to adapters."""

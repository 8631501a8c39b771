"""Worker: queue consumers, outbox relay, sweeper, graceful shutdown."""

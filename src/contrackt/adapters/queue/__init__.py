"""Job queues: in-process, Redis Streams, Kafka."""

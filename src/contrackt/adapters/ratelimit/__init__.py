"""Rate limiters: in-memory GCRA, Redis GCRA."""

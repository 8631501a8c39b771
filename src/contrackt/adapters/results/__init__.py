"""Result stores: SQL table with expiry, memory, Redis with TTL."""

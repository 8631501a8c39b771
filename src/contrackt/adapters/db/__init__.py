"""SQL persistence (SQLite embedded, PostgreSQL with row-level security)."""

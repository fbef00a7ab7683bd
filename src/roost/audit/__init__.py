"""Audit: the append-only, hash-chained record every domain writes on."""

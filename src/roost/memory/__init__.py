"""Long-term memory: facts extracted from conversations, runs and text, with entities and
relations as a temporal graph in PostgreSQL, hybrid recall, and the sharded store
(docs/memory.md)."""

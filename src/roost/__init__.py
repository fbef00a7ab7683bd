"""Roost: a self-hosted backend for AI agents on PostgreSQL + pgvector."""

__version__ = "0.1.0"

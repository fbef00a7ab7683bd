"""Personas, agents and durable agent runs (docs/agents.md)."""

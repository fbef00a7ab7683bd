"""Workflows (seed 004's ``workflows``): graphs an XYFlow (React Flow) canvas saves, validated,
published as immutable versions."""

"""Roost as an MCP server: a streamable-HTTP endpoint at ``/mcp`` (official ``mcp`` SDK,
stateless, JSON answers) that offers each caller their own capabilities as MCP tools.

``tools`` holds the tools and the provider hook (plain values: an ``AsyncSession``, the
``Principal``); ``routes`` is the web adapter (authentication, the SDK's server);
``startup`` runs the SDK's session manager for the app's lifetime.  See docs/mcp.md.
"""

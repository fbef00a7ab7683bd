"""Tools: MCP servers, the tool registry, tool calls and their runs (see docs/tools.md)."""

"""A small MCP server for the tools tests, built with the SDK's ``MCPServer`` (what
mcp 1.x called FastMCP).

    python tests/tools/mcp_echo_server.py                  # stdio
    python tests/tools/mcp_echo_server.py --http PORT      # streamable HTTP on 127.0.0.1

Tools: ``echo`` (returns its text), ``add`` (structured output), ``sleep`` (waits),
``big`` (returns ``size`` characters), ``fail`` (raises), ``pid`` (the server process's
id: which process served a call), ``crash`` (the process exits at once, as a crash would)
and ``hang`` (blocks the server's event loop: it answers nothing, pings included).
``bonus`` exists only while the file named by ``ECHO_BONUS_FILE`` exists when the server
starts, so a test can make the tool list change between two discoveries.
``ECHO_START_DELAY_S`` makes the server wait that long before it serves (a slow start).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys
import time
from pathlib import Path

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

server = MCPServer("echo-test", version="1.0")


@server.tool(description="Return the text unchanged.")
def echo(text: str) -> str:
    return text


@server.tool(description="Add two integers.")
def add(a: int, b: int) -> int:
    return a + b


@server.tool(description="Sleep for some seconds, then answer.")
async def sleep(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "woke up"


@server.tool(description="Return a long string.")
def big(size: int) -> str:
    return "x" * size


@server.tool(description="Always fails.")
def fail() -> str:
    raise ToolError("this tool always fails")


@server.tool(description="The server process's id.")
def pid() -> int:
    return os.getpid()


@server.tool(description="The sha256 of an environment variable of the server process "
                         "(empty string when unset): proves what it was given, shows nothing.")
def env_sha256(name: str) -> str:
    return hashlib.sha256(os.environ.get(name, "").encode()).hexdigest()


@server.tool(description="Exit the server process at once.")
def crash() -> str:
    os._exit(1)


@server.tool(description="Block the server's event loop for some seconds.")
async def hang(seconds: float) -> str:
    time.sleep(seconds)  # noqa: ASYNC251 - a hung server: nothing else is answered meanwhile
    return "unblocked"


_bonus = os.environ.get("ECHO_BONUS_FILE")
if _bonus and Path(_bonus).exists():

    @server.tool(description="Only there while the bonus file exists.")
    def bonus() -> str:
        return "bonus"


def main() -> None:
    time.sleep(float(os.environ.get("ECHO_START_DELAY_S", "0")))
    if len(sys.argv) == 3 and sys.argv[1] == "--http":
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        server.run("stdio")


if __name__ == "__main__":
    main()

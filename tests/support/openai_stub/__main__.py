"""``python -m tests.support.openai_stub``: serve the stub on loopback, print ``PORT <n>``."""

from __future__ import annotations

import argparse
import os
import socket
import sys
import threading

import uvicorn

from tests.support.openai_stub.app import State, build_app


def _exit_when_parent_goes() -> None:
    # The parent holds our stdin open; EOF means it is gone, even killed: never outlive it.
    sys.stdin.buffer.read()
    os._exit(0)


def main() -> None:
    parser = argparse.ArgumentParser(description="OpenAI/Anthropic-compatible test stub")
    parser.add_argument("--port", type=int, default=0, help="0: let the kernel choose")
    parser.add_argument("--log-level", default="error")
    args = parser.parse_args()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    print(f"PORT {sock.getsockname()[1]}", flush=True)  # race-free port choice
    threading.Thread(target=_exit_when_parent_goes, daemon=True).start()
    config = uvicorn.Config(build_app(State()), log_level=args.log_level, access_log=False,
                            lifespan="off", timeout_graceful_shutdown=1)
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()

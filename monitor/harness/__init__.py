"""The dev harness: what the demo, the tests and the benchmarks start around saemon.

Launchers for vLLM's OpenAI server (``vllm_server``), Debian's redis-server
(``redis_server``) and ``saemon serve`` as a child process (``sidecar``); a signature-checking
webhook receiver standing in for on-call (``receiver``, also ``saemon receive-alerts``); a
WatchAlerts collector (``watcher``); a headless chromium for the web pages' tests
(``browser``). Nothing in saemon's runtime path imports this package.
"""

from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]

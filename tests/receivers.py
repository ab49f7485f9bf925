"""Real HTTP receivers on loopback: record what saemon POSTs, answer with scripted codes."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    at_ns: int

    @property
    def json(self):
        return json.loads(self.body)


class HttpReceiver:
    """A threaded HTTP server. ``responses`` are the status codes of the first requests
    (200 after them); ``hold``, when given, keeps each answer until it is set."""

    def __init__(self, responses: list[int] = (), hold: threading.Event | None = None) -> None:
        self.responses = list(responses)
        self.hold = hold
        self.received: list[Received] = []
        self._cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver._cond:
                    receiver.received.append(
                        Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body, time.time_ns())
                    )
                    status = receiver.responses.pop(0) if receiver.responses else 200
                    receiver._cond.notify_all()
                if receiver.hold is not None:
                    receiver.hold.wait()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "text/plain")
                    self.end_headers()
                    self.wfile.write(b"ok" if status < 300 else b"no")
                except OSError:
                    pass  # the sender went away (killed mid-send)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def wait(self, count: int, timeout: float = 15) -> list[Received]:
        """Until ``count`` requests arrived; returns all of them."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.received) >= count, timeout):
                raise AssertionError(f"receiver got {len(self.received)} requests, expected {count}")
            return list(self.received)

    def __enter__(self) -> HttpReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.hold is not None:
            self.hold.set()
        self.server.shutdown()
        self.server.server_close()

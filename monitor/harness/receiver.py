"""``saemon receive-alerts``: a small alert receiver for trying a deployment end to end.

It accepts Alertmanager's version-4 webhook payloads (from saemon's webhooks or from an
Alertmanager), checks saemon's ``X-Saemon-Signature`` when given the secret (401 when it
does not verify), and hands each payload to a callback; the command prints one JSON line
per alert. The demo uses it as on-call's pager; the compose file runs it as the
Alertmanager webhook target. Use a real pager integration in production.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from monitor.sidecar.alerts import SIGNATURE_HEADER, verify


class AlertReceiver:
    """A threaded HTTP server on ``host:port`` (0: a free port) that takes POSTed payloads."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        secret: bytes | None = None,
        on_payload: Callable[[dict], None] | None = None,
    ) -> None:
        self.payloads: list[dict] = []
        self.bad_signatures = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if secret is not None and not verify(secret, self.headers.get(SIGNATURE_HEADER, ""), body, time.time()):
                    receiver.bad_signatures += 1
                    self.send_response(401)
                    self.end_headers()
                    return
                try:
                    payload = json.loads(body)
                except ValueError:
                    self.send_response(400)
                    self.end_headers()
                    return
                receiver.payloads.append(payload)
                if on_payload is not None:
                    on_payload(payload)
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer((host, port), Handler)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        assert isinstance(host, str)  # getsockname()'s after bind; the stub also allows bytes, as bind takes
        return f"http://{host}:{port}/alerts"

    def __enter__(self) -> AlertReceiver:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def serve_forever(self) -> None:
        self.server.serve_forever()


def print_alerts(payload: dict) -> None:
    """One JSON line per alert: status, labels, times, and the payload's receiver and group."""
    for alert in payload.get("alerts", []):
        line = {"receiver": payload.get("receiver"), "groupKey": payload.get("groupKey"), **alert}
        print(json.dumps(line, sort_keys=True), flush=True)

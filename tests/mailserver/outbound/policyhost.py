"""An HTTPS server in its own thread, standing in for a recipient domain's MTA-STS policy host
(``https://mta-sts.DOMAIN/.well-known/mta-sts.txt``, RFC 8461 §3.3).

Imported as ``mailserver.outbound.policyhost`` (``tests`` is on the path). The test sets what it
answers (``policy``, ``status``, ``content_type``, ``headers``, ``also_at``) at any time;
``requests`` records the Host header of each request it answered.
"""

from __future__ import annotations

import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import trustme

POLICY_PATH = "/.well-known/mta-sts.txt"


def policy_text(mode: str, *mx: str, max_age: int = 86400) -> str:
    lines = ["version: STSv1", f"mode: {mode}", *(f"mx: {m}" for m in mx), f"max_age: {max_age}"]
    return "".join(f"{line}\r\n" for line in lines)


class PolicyHost:
    """``start()`` returns the port; ``stop()`` closes it. The certificate is issued by ``ca``
    for ``names``; it listens on ``address`` (a loopback one) at ``port`` (0: any free one)."""

    def __init__(
        self, ca: trustme.CA, *names: str, address: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.policy = ""
        self.status = 200
        self.content_type = "text/plain; charset=utf-8"
        self.headers: dict[str, str] = {}
        self.also_at = ""  # another path answering 200 with the policy (a redirect's target)
        self.requests: list[str] = []
        self._lock = threading.Lock()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(*names).configure_cert(context)
        host = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with host._lock:
                    host.requests.append(self.headers.get("Host", ""))
                    status, body = host.status, host.policy.encode()
                    if host.also_at and self.path == host.also_at:
                        status = 200
                    elif self.path != POLICY_PATH:
                        status, body = 404, b"not found"
                    headers = {"Content-Type": host.content_type, **host.headers}
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer((address, port), Handler)
        self._server.daemon_threads = True
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def fetches(self) -> int:
        with self._lock:
            return len(self.requests)

    def serve(self, text: str) -> None:
        with self._lock:
            self.policy = text

    def start(self) -> int:
        self._thread.start()
        return self.port

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)

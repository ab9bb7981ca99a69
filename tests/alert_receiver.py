"""A local HTTP receiver for alert tests: records every request; answers with configurable statuses and bodies."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Receiver:
    """``with Receiver() as rx``: ``rx.url(path)``, ``rx.requests`` (method, path, headers, body),
    ``rx.statuses[path] = [503, 200]`` (answered in turn, then 200), ``rx.json[path] = {...}`` for GET answers."""

    def __init__(self):
        self.requests = []
        self.statuses = {}
        self.json = {}
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with receiver._lock:
                    receiver.requests.append(
                        {"method": self.command, "path": self.path, "headers": dict(self.headers), "body": body}
                    )
                    queued = receiver.statuses.get(self.path) or []
                    status = queued.pop(0) if queued else 200
                payload = receiver.json.get(self.path)
                data = json.dumps(payload).encode() if payload is not None else b"OK"
                self.send_response(status)
                self.send_header("Content-Type", "application/json" if payload is not None else "text/plain")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_HEAD = _answer

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def url(self, path=""):
        return f"http://127.0.0.1:{self.port}{path}"

    def paths(self):
        return [r["path"] for r in self.requests]

    def bodies(self, path):
        return [r["body"] for r in self.requests if r["path"] == path]

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def closed_port():
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]

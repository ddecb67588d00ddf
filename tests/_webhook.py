"""A webhook receiver on loopback for notification tests: collects the JSON bodies POSTed to it."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class WebhookReceiver:
    """`with WebhookReceiver() as hook:` listens on 127.0.0.1:<free port> (hook.url); hook.wait(n, timeout) returns
    the first n posts once they arrived (a condition variable, no sleeps), or fails after timeout seconds."""

    def __init__(self):
        self.posts: list[dict] = []
        self._arrived = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):   # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                self.send_response(200)
                self.end_headers()
                with receiver._arrived:
                    receiver.posts.append(json.loads(body or b"null"))
                    receiver._arrived.notify_all()

            def log_message(self, *args):   # quiet
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hook"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> "WebhookReceiver":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def wait(self, n: int, timeout: float) -> list[dict]:
        with self._arrived:
            if not self._arrived.wait_for(lambda: len(self.posts) >= n, timeout=timeout):
                raise AssertionError(f"{len(self.posts)} of {n} expected webhook posts arrived in {timeout} s: "
                                     f"{self.posts}")
            return list(self.posts[:n])

    def clear(self) -> None:
        with self._arrived:
            self.posts.clear()

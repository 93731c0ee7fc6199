"""A local HTTP receiver for the telemetry tests: it records every POST
(path, headers, body) and answers with a fixed status, standing in for a
telemetry gateway or an OTLP/HTTP collector."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List, Tuple


class Receiver:
    """A local HTTP server that records every POST (path, headers, JSON
    body) and answers `status` after `delay` seconds."""

    def __init__(self, status: int = 200, delay: float = 0.0) -> None:
        self.requests: List[Tuple[str, Dict[str, str], bytes]] = []
        self.status = status
        self.delay = delay
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                outer.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                if outer.delay:
                    time.sleep(outer.delay)
                self.send_response(outer.status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def bodies(self, path: str) -> List[Any]:
        return [json.loads(b) for p, _, b in self.requests if p == path]

    def raw(self) -> str:
        return "\n".join(b.decode() for _, _, b in self.requests)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

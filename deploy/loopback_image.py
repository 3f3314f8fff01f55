"""One image served on loopback over HTTP, for the gateway to fetch (standard library only).

Used by the container test and by `measure_memory.py`, which runs with the system Python.
"""

from __future__ import annotations

import http.server
import threading


def serve_image(body: bytes, name: str = "photo.jpg") -> tuple[http.server.ThreadingHTTPServer, str]:
    """Start a threaded server answering every GET with `body`; returns it and the image's URL.

    Stop it with `server.shutdown()` and `server.server_close()`.
    """

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # one line per fetch would drown the caller's output

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/{name}"

"""Small HTTP servers on loopback for the deploy tests and tools (standard library only).

`serve_image` is the image the gateway fetches (the container test, `measure_memory`); `serve`
answers each path from a function, which the readiness script's test uses to play TF Serving's
REST status endpoint.
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Callable

# path -> (Content-Type, body), or None for 404.
Answer = Callable[[str], tuple[str, bytes] | None]


def serve(answer: Answer) -> tuple[http.server.ThreadingHTTPServer, int]:
    """Start a threaded server answering every GET from `answer`; returns it and its port.

    Stop it with `server.shutdown()` and `server.server_close()`.
    """

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            found = answer(self.path)
            if found is None:
                self.send_error(404)
                return
            content_type, body = found
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # one line per request would drown the caller's output

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, int(server.server_address[1])


def serve_image(body: bytes, name: str = "photo.jpg") -> tuple[http.server.ThreadingHTTPServer, str]:
    """Serve `body` as a JPEG at every path; returns the server and the image's URL."""
    server, port = serve(lambda path: ("image/jpeg", body))
    return server, f"http://127.0.0.1:{port}/{name}"

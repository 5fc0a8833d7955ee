"""A loopback HTTP server for download tests: bound to 127.0.0.1 only, on a free port, in a
thread, with per-path behaviours (serve, 404, truncate, stall, announce a huge size) and a log
of every request path."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


@dataclass
class Route:
    body: bytes = b""
    status: int = 200
    cut: int | None = None  # send only this many body bytes, then close (Content-Length: full)
    stall: str | None = None  # "headers": before any response; "body": after half the body
    length: int | None = None  # Content-Length to announce (default: len(body))


@dataclass
class Loopback:
    url: str
    routes: dict[str, Route] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)

    def serve(self, path: str, body: bytes, **kwargs) -> None:
        self.routes[path] = Route(body, **kwargs)

    def serve_folder(self, prefix: str, folder: Path) -> None:
        for f in sorted(folder.iterdir()):
            if f.is_file():
                self.serve(f"{prefix}/{f.name}", f.read_bytes())


def _handler(state: Loopback) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # quiet
            pass

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            state.requests.append(self.path)
            route = state.routes.get(self.path)
            if route is None:
                self.send_error(404, "Not Found")
                return
            if route.stall == "headers":
                state.release.wait(30)
                return
            self.send_response(route.status)
            self.send_header("Content-Length", str(route.length or len(route.body)))
            self.end_headers()
            body = route.body if route.cut is None else route.body[: route.cut]
            if route.stall == "body":
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                state.release.wait(30)
                return
            self.wfile.write(body)
            if route.cut is not None:
                self.close_connection = True

    return Handler


@contextmanager
def loopback() -> Iterator[Loopback]:
    """A running server; it is shut down (and stalled handlers released) on exit."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(Loopback("")))
    state = Loopback(f"http://127.0.0.1:{server.server_address[1]}")
    server.RequestHandlerClass = _handler(state)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.release.set()
        server.shutdown()
        server.server_close()
        thread.join(10)


def dead_port_url() -> str:
    """An http URL on 127.0.0.1 where nothing listens (a port that was just freed)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"

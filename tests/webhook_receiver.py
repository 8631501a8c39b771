"""A webhook receiver on 127.0.0.1 for the tests: records every request, answers from a script."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int
    at: float = field(default_factory=time.monotonic)


class Receiver:
    """``statuses``: the answers to the first requests, in order; then ``default``.

    A status of 302 answers with ``Location: /elsewhere``. ``stall_s`` holds every answer that
    long first; ``endless_body`` answers 200 and then streams body bytes until the client leaves.
    """

    def __init__(
        self,
        statuses: list[int] | None = None,
        *,
        default: int = 204,
        stall_s: float = 0.0,
        endless_body: bool = False,
    ) -> None:
        self.script = list(statuses or [])
        self.default = default
        self.stall_s = stall_s
        self.endless_body = endless_body
        self.requests: list[Received] = []
        self.body_bytes_sent = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def accepted(self) -> list[Received]:
        with self._lock:
            return [r for r in self.requests if 200 <= r.status < 300]

    def all(self) -> list[Received]:
        with self._lock:
            return list(self.requests)

    async def wait(self, count: int, timeout: float = 20.0) -> list[Received]:
        """Wait until ``count`` requests arrived; all of them."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.all()
            if len(got) >= count:
                return got
            await asyncio.sleep(0.02)
        raise AssertionError(f"the receiver got {len(self.all())} requests, expected {count} within {timeout}s")

    def wait_sync(self, count: int, timeout: float = 20.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.all()
            if len(got) >= count:
                return got
            time.sleep(0.05)
        raise AssertionError(f"the receiver got {len(self.all())} requests, expected {count} within {timeout}s")

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # quiet
                return

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                with receiver._lock:
                    status = receiver.script.pop(0) if receiver.script else receiver.default
                    receiver.requests.append(
                        Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body, status)
                    )
                if receiver.stall_s:
                    time.sleep(receiver.stall_s)
                if receiver.endless_body:
                    self._endless()
                    return
                self.send_response(status)
                if status == 302:
                    self.send_header("Location", "/elsewhere")
                reply = b'{"ok": true}' if 200 <= status < 300 else b"nope"
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def _endless(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.end_headers()
                chunk = b"x" * 65536
                deadline = time.monotonic() + 30
                try:
                    while time.monotonic() < deadline:
                        self.wfile.write(chunk)
                        with receiver._lock:
                            receiver.body_bytes_sent += len(chunk)
                        time.sleep(0.01)
                except OSError:
                    return  # the client left: what this test wants

        return Handler

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()

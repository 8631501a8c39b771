"""A refusal must reach the client over a real socket, even when its body was sent unread.

A server that answers before reading a body and then closes the connection leaves the body in its
receive buffer; the kernel answers such a close with a reset, and a reset can destroy the answer
before the client reads it: the client sees no status and no ``Retry-After`` (found by
``bench.load`` with 64 clients). Small declared bodies are read and dropped before the refusal.
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path
from urllib.parse import urlsplit

from tests.fakes import fake_pdf
from tests.live_server import live_server


def post_raw(url: str, key: str, body: bytes, timeout: float = 10.0) -> bytes:
    """POST ``body`` whole over a plain socket (a sender thread, as a client with its body in flight
    would) and return every byte of the answer; a reset before the answer arrives raises."""
    parts = urlsplit(url)
    head = (
        f"POST /v1/extract HTTP/1.1\r\nHost: {parts.netloc}\r\nX-API-Key: {key}\r\n"
        f"Content-Type: application/pdf\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout) as s:

        def send() -> None:
            try:
                s.sendall(head + body)
            except OSError:
                pass  # the server may close before taking all of it; the answer is what counts

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        answer = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            answer += chunk
        sender.join(timeout)
        return answer


def test_a_refusal_before_the_body_is_read_reaches_the_client(tmp_path: Path) -> None:
    # tenant backlog 0: every extraction of this tenant is refused (429 backlog_full) before its body is read
    with live_server(tmp_path, tenant_max_backlog=0) as live:
        key = live.new_key()
        body = fake_pdf("refused") + b"%" + b"x" * (256 * 1024)
        for _ in range(5):
            answer = post_raw(live.url, key, body)
            status_line, _, rest = answer.partition(b"\r\n")
            assert status_line == b"HTTP/1.1 429 Too Many Requests", answer[:200]
            assert b'"code":"backlog_full"' in rest.replace(b" ", b"")
            assert b"retry-after:" in rest.lower()

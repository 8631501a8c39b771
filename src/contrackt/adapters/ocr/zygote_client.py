"""The pool's handle on its zygote: start it, ask it for children, stop it.

The zygote (``zygote.py``) is started from an allow-listed environment with one end of a
``SOCK_SEQPACKET`` pair; requests and replies are small JSON messages, children's pipes come
back as passed file descriptors. Calls block: the pool makes them from its threads.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
from typing import Any

from contrackt.adapters.ocr import sandbox
from contrackt.domain.errors import ContracktError, UnknownEngine

__all__ = ["ZygoteClient", "ZygoteGone"]

_STOP_JOIN_S = 2.0
_CTRL_MAX = 64 * 1024
_BOOT = (
    "import sys, json; sys.path[:] = json.loads(sys.argv[2]); "
    "from contrackt.adapters.ocr.zygote import main; main(int(sys.argv[1]))"
)


class ZygoteGone(Exception):
    """The zygote's channel broke: start a new zygote."""


class ZygoteClient:
    """The pool's handle on its zygote (blocking calls, made from the pool's threads)."""

    def __init__(self, proc: subprocess.Popen[bytes], ctrl: socket.socket, info: dict[str, Any]) -> None:
        self.proc = proc
        self.ctrl = ctrl
        self.info = info
        self.lock = threading.Lock()

    @classmethod
    def start(cls, request: dict[str, Any], timeout: float) -> ZygoteClient:
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-c", _BOOT, str(theirs.fileno()), json.dumps(sys.path)],
                pass_fds=[theirs.fileno()],
                env=sandbox.child_environment(os.environ),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                close_fds=True,
            )
        finally:
            theirs.close()
        mine.settimeout(timeout)
        try:
            mine.send(json.dumps({**request, "parent": os.getpid()}).encode())
            data = mine.recv(_CTRL_MAX)
        except OSError:
            data = b""
        info: dict[str, Any] = json.loads(data) if data else {"op": "failed", "error": "it exited or did not answer"}
        if info.get("op") != "ready":
            with contextlib.suppress(OSError):
                proc.kill()
            proc.wait(5)
            mine.close()
            raise ContracktError(f"The OCR zygote failed to start: {info.get('error')}")
        return cls(proc, mine, info)

    def spawn(
        self, engine: str | None, timeout: float, lazy: bool = False, images: bool = False
    ) -> tuple[dict[str, Any], list[int]]:
        with self.lock:
            try:
                self.ctrl.settimeout(timeout)
                request = {"op": "spawn", "engine": engine, "lazy": lazy, "images": images}
                self.ctrl.send(json.dumps(request).encode())
                data, fds, _flags, _addr = socket.recv_fds(self.ctrl, _CTRL_MAX, 3)
            except OSError as exc:
                raise ZygoteGone(str(exc)) from None
        if not data:
            raise ZygoteGone("channel closed")
        reply: dict[str, Any] = json.loads(data)
        if reply.get("op") != "spawned" or len(fds) < 2:
            for fd in fds:
                os.close(fd)
            error = str(reply.get("error", "no child"))
            if "unknown_engine" in error or "not available" in error:
                raise UnknownEngine(error[:200])
            raise ContracktError(f"The OCR zygote could not start a child: {error}")
        return reply, fds

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.ctrl.send(json.dumps({"op": "stop"}).encode())
        try:
            self.proc.wait(_STOP_JOIN_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.ctrl.close()

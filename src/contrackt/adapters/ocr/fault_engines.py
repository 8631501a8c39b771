"""Test engines: an OCR child that misbehaves on purpose, as one taken over by a hostile PDF would.

Enabled only by configuration (``ChildConfig.fault_engines``, ``CONTRACKT_OCR_FAULT_ENGINES``);
the sandbox, protocol and device tests name them as a request's engine: ``crash`` (SIGKILL),
``hang``, ``oom``, ``forge`` (a pickle written raw onto the reply pipe), ``oversize`` (a frame
length over the cap), ``probe`` (reports what the confined process can reach), ``greedy`` (model
calls past a page's share of the worker's device). With them on, a ``%SEARCHABLE:oversize|
garbage|fail`` line in a PDF makes the child misbehave when asked for the searchable PDF (the one
reply that carries a blob).

Only the standard library is imported at module level (as ``worker_child``).
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from contrackt.adapters.ocr.protocol import ChildError, encode, read_frame, write_all

FAULT_ENGINES = ("crash", "hang", "oom", "forge", "oversize", "probe", "greedy")
FAULT_ENV = "CONTRACKT_OCR_FAULT_ENGINES"


def marker(pdf: bytes, name: bytes) -> bytes:
    start = pdf.find(b"%" + name + b":")
    if start < 0:
        return b""
    start += len(name) + 2
    end = pdf.find(b"\n", start)
    return pdf[start : end if end >= 0 else len(pdf)].strip()


def fault(engine: str, pdf: bytes, index: int, channel: Any = None) -> dict[str, Any]:
    """Act as a child taken over by a hostile document would (tests only)."""
    if engine == "crash":
        os.kill(os.getpid(), signal.SIGKILL)
    elif engine == "hang":
        time.sleep(3600)
    elif engine == "oom":
        hog = [bytearray(64 * 1024 * 1024) for _ in range(1024)]
        del hog
    elif engine == "forge":
        # A pickle that would run a shell command in whoever unpickles it, written raw
        # onto the reply pipe (an unpickling parent would execute it).
        target = marker(pdf, b"FORGE").decode() or "/nonexistent/contrackt-forged"
        payload = b"cos\nsystem\n(S'touch " + target.encode() + b"'\ntR."
        raise RawReply(payload)
    elif engine == "oversize":
        raise RawReply((0x7FFFFFFF).to_bytes(4, "big") + b"{")
    elif engine == "greedy":
        # well-formed model calls past a page's share of the worker's device (model_host.py);
        # the modules are the zygote's already (it set the channel up)
        if channel is None or channel.fds is None:
            raise ChildError("internal_error", "no device to be greedy with")
        import numpy as np

        from contrackt.adapters.ocr.model_host import pack

        specs, blob = pack([np.zeros((1, 3, 32, 32), np.float32)])
        fd_in, fd_out = channel.fds
        for _ in range(channel.limits.det_calls_per_page + 1):
            write_all(fd_out, encode({"op": "model", "kind": "det", "arrays": specs}, blob))
            if read_frame(fd_in) is None:
                break
        raise ChildError("internal_error", "the worker answered every call")
    elif engine == "probe":
        import json

        targets = json.loads(marker(pdf, b"PROBE") or b"[]")
        text = json.dumps(probe(targets), sort_keys=True)
        return {
            "number": index + 1,
            "source": "text_layer",
            "zoom": None,
            "rotation": 0,
            "confidence": 1.0,
            "text": text,
            "lines": [],
        }
    raise ChildError("internal_error", "unknown fault")


class RawReply(Exception):
    """Bytes to write onto the reply pipe as they are, outside the framing (then the child ends)."""

    def __init__(self, data: bytes) -> None:
        super().__init__("raw reply")
        self.data = data


def probe(paths: list[str]) -> dict[str, Any]:
    """What this process can reach: files, the network, other programs and processes."""
    import socket
    import subprocess

    def attempt(fn: Any) -> str:
        try:
            fn()
            return "allowed"
        except OSError as exc:
            return errno_name(exc.errno)
        except Exception as exc:
            return type(exc).__name__

    out: dict[str, Any] = {"uid": os.getuid(), "gid": os.getgid(), "pid": os.getpid()}
    out["environ"] = sorted(os.environ)
    out["files"] = {path: attempt(lambda p=path: open(p, "rb").close()) for path in paths}
    out["socket"] = attempt(lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM).close())
    out["unix_socket"] = attempt(lambda: socket.socket(socket.AF_UNIX, socket.SOCK_STREAM).close())
    out["exec"] = attempt(lambda: subprocess.run(["/bin/true"], check=False))
    out["fork"] = attempt(lambda: os.waitpid(os.fork() or os._exit(0), 0))  # type: ignore[func-returns-value]
    out["signal_parent"] = attempt(lambda: os.kill(os.getppid(), 0))
    out["write_tmp"] = attempt(lambda: open(f"/tmp/contrackt-probe-{os.getpid()}", "wb").close())  # noqa: S108
    return out


def errno_name(number: int | None) -> str:
    import errno

    return errno.errorcode.get(number or 0, str(number))

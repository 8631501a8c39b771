"""The zygote: a trusted process that holds the loaded OCR models and forks confined children.

Started by the pool (``zygote_client.ZygoteClient``) from an allow-listed environment, it
leaves the network (``sandbox.network_policy``), loads and self-tests the OCR
engines once, and then only forks: each ``spawn`` request gets a fresh child,
with the models already in memory (copy-on-write, a few milliseconds instead
of seconds of loading), which confines itself before it reads a single byte of
a document. The zygote itself never receives a document.

With ``preload`` (workers, ``serve``) it loads and self-tests the default engine
before it says ``ready``; without (``contrackt extract``) it says ``ready`` once
the text-layer path is warm and loads an engine the first time a spawn needs it,
so a text-layer document never waits for a model.

Control channel (a ``SOCK_SEQPACKET`` socket pair, one JSON object a message):

pool -> zygote
    {"op": "config", "config": {...}, "confinement": {...}, "network": mode, "parent": pid}   first
    {"op": "spawn", "engine": name | null, "lazy": bool, "images": bool}
        lazy: fork now even if ``engine`` is not loaded yet (a text-layer page needs no model;
        a page that does makes the child answer ``needs_engine``); images: the document is an
        image (its decoders are warmed first, once)
    {"op": "stop"}
zygote -> pool
    {"op": "ready", "pid", "engines", "network", "seccomp", "uid_base"} | {"op": "failed", "error"}
    {"op": "spawned", "pid", "uid", "loaded": [engines in memory]}
        + descriptors: to the child, from the child, its pidfd (if any)
    {"op": "error", "error"}

It exits, killing every child it forked, when the pool closes the channel or
its parent process dies.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import sys
from dataclasses import fields
from typing import Any

from contrackt.adapters.ocr import sandbox
from contrackt.adapters.ocr.fault_engines import FAULT_ENGINES
from contrackt.adapters.ocr.worker_child import ChildConfig, PageWorker, serve

MAX_MESSAGE = 64 * 1024


def _send(ctrl: socket.socket, message: dict[str, Any], fds: list[int] | None = None) -> None:
    data = json.dumps(message).encode()
    if fds:
        socket.send_fds(ctrl, [data], fds)
    else:
        ctrl.send(data)


def _config(raw: dict[str, Any]) -> ChildConfig:
    known = {f.name for f in fields(ChildConfig)}
    values = {k: v for k, v in raw.items() if k in known}
    values["extra_engines"] = tuple(values.get("extra_engines", ()))
    values["remote_models"] = tuple(values.get("remote_models", ()))
    values["model_dirs"] = tuple(tuple(pair) for pair in values.get("model_dirs", ()))
    return ChildConfig(**values)


class Zygote:
    def __init__(self, ctrl: socket.socket, config: ChildConfig, confinement: sandbox.Confinement) -> None:
        self.ctrl = ctrl
        self.config = config
        self.confinement = confinement
        self.worker = PageWorker(config)
        self.children: dict[int, int | None] = {}  # pid -> uid
        self.pid = os.getpid()
        self.devnull = -1

    def pick_uid(self) -> int | None:
        base = self.confinement.uid_base
        if base is None:
            return None
        taken = {uid for uid in self.children.values() if uid is not None}
        for offset in range(sandbox.UID_RANGE):
            if base + offset not in taken:
                return base + offset
        raise RuntimeError("every sandbox uid is in use")

    def spawn(self, engine: str | None, lazy: bool = False, images: bool = False) -> None:
        if engine is not None and not (self.config.fault_engines and engine in FAULT_ENGINES):
            if not (lazy and engine not in self.worker.prepared):
                self.worker.prepare(engine)  # trusted: model files, before any document
        if images:
            self.worker.warm_images()
        uid = self.pick_uid()
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child
            code = 0
            try:
                self._become_child(to_child_r, from_child_w, uid)
            except BaseException:
                code = 3
            finally:
                os._exit(code)
        os.close(to_child_r)
        os.close(from_child_w)
        self.children[pid] = uid
        fds = [to_child_w, from_child_r]
        pidfd = -1
        if hasattr(os, "pidfd_open"):
            try:  # race-free: the child is ours and not reaped yet
                pidfd = os.pidfd_open(pid)
                fds.append(pidfd)
            except OSError:
                pidfd = -1
        try:
            _send(self.ctrl, {"op": "spawned", "pid": pid, "uid": uid, "loaded": sorted(self.worker.prepared)}, fds)
        finally:
            for fd in fds:
                os.close(fd)

    def _become_child(self, fd_in: int, fd_out: int, uid: int | None) -> None:
        sandbox.prctl(sandbox.PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != self.pid:
            return
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        # Nothing but the two pipes: no control channel (a child must never ask the
        # zygote for anything), no inherited log file (a child must not write to logs).
        for std in (0, 1, 2):
            os.dup2(self.devnull, std)
        keep = {0, 1, 2, fd_in, fd_out}
        for name in os.listdir("/proc/self/fd"):
            fd = int(name)
            if fd not in keep:
                try:
                    os.close(fd)
                except OSError:
                    pass
        status = sandbox.confine(self.confinement, uid)
        serve(fd_in, fd_out, self.worker, status)

    def reap(self) -> None:
        while self.children:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.children.clear()
                return
            if pid == 0:
                return
            self.children.pop(pid, None)

    def kill_all(self) -> None:
        for pid in list(self.children):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        for pid in list(self.children):
            try:
                os.waitpid(pid, 0)
            except OSError:
                pass
        self.children.clear()

    def loop(self, parent: int) -> None:
        while True:
            readable, _, _ = select.select([self.ctrl], [], [], 0.25)
            self.reap()
            if os.getppid() != parent:
                return
            if not readable:
                continue
            try:
                data = self.ctrl.recv(MAX_MESSAGE)
            except OSError:
                return
            if not data:
                return
            request = json.loads(data)
            if request.get("op") == "stop":
                return
            if request.get("op") == "spawn":
                try:
                    self.spawn(request.get("engine"), bool(request.get("lazy")), bool(request.get("images")))
                except Exception as exc:
                    _send(self.ctrl, {"op": "error", "error": f"{type(exc).__name__}: {exc}"[:500]})


def main(ctrl_fd: int) -> None:
    """Entry point (``python -I -c`` from the pool)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the worker stops us through the channel
    ctrl = socket.socket(fileno=ctrl_fd)
    request = json.loads(ctrl.recv(MAX_MESSAGE))
    parent = int(request["parent"])
    try:
        network = sandbox.network_policy(request["network"])
        config = _config(request["config"])
        confinement = sandbox.Confinement(**request["confinement"])
        seccomp = sandbox.seccomp_status()
        if confinement.seccomp == "required" and seccomp != "available":
            raise RuntimeError(f"seccomp is required but {seccomp}")
        if config.fault_engines:  # the probe engine reaches for these inside a child
            import errno  # noqa: F401
            import subprocess  # noqa: F401
        zygote = Zygote(ctrl, config, confinement)
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        zygote.worker.load()
        if config.preload and config.kind == "worker":
            zygote.worker.prepare(config.engine)
        zygote.devnull = os.open(os.devnull, os.O_RDWR)
    except BaseException as exc:
        _send(ctrl, {"op": "failed", "error": f"{type(exc).__name__}: {exc}"[:500]})
        sys.exit(3)
    _send(
        ctrl,
        {
            "op": "ready",
            "pid": os.getpid(),
            "engines": zygote.worker.engines(),
            "network": network,
            "seccomp": seccomp if confinement.seccomp != "off" else "off",
            "uid_base": confinement.uid_base,
        },
    )
    try:
        zygote.loop(parent)
    finally:
        zygote.kill_all()
    # Nothing to flush (stdout is /dev/null, no files are open for writing): skip the
    # interpreter's teardown of NumPy, ONNX Runtime and PDFium.
    os._exit(0)

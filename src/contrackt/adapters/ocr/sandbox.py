"""Confining the processes that parse untrusted PDFs.

Layers, each applied by the process to itself (see docs/adr/0006-ocr-sandbox.md):

* **environment** (``child_environment``): the OCR processes start from an
  allow-list, so no database URL, cloud credential or Vault token is ever in
  their memory or their ``/proc/<pid>/environ``;
* **network** (``isolate_network``): a fresh, empty network namespace, taken by
  the zygote once, inherited by every child;
* **identity** (``drop_privileges``): where the worker runs as root, each child
  switches to a uid of its own (no home, no groups), so it can read none of the
  service's files (master key, receipt key, SQLite database: mode 0600/0700)
  and cannot signal or trace another child;
* **resources** (``limit_resources``): address space, open files, processes,
  file size, no core dumps;
* **system calls** (``install_seccomp``): a seccomp filter, built by libseccomp
  (the seccomp project's library, security-maintained in Debian as
  ``libseccomp2``) through ``pyseccomp``, a ctypes binding API-compatible with
  libseccomp's own Python module (used instead when importable). It refuses
  what text extraction never needs: sockets, exec, new processes, ptrace and
  cross-process memory access, namespaces and mounts, kernel modules, BPF,
  keyrings, signals to other processes, links and permission changes.

Only the standard library is imported at module level.
"""

from __future__ import annotations

import ctypes
import errno
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
CLONE_THREAD = 0x00010000
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_NO_NEW_PRIVS = 38

NETWORK_MODES = ("auto", "required", "off")
SECCOMP_MODES = ("auto", "required", "off")

THREAD_ENV = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "NUMEXPR_NUM_THREADS": "1",
    "OMP_THREAD_LIMIT": "1",
    "ORT_NUM_THREADS": "1",
}
# Variables an OCR process may inherit (besides THREAD_ENV): locale, time zone and where
# Tesseract's data is. Everything else, secrets included, stays in the worker.
ENV_ALLOW = ("LANG", "LC_ALL", "LC_CTYPE", "TZ", "TESSDATA_PREFIX")

# Default first uid of the children's range, and the range's size. Below 65,536 so that
# a container runtime's user namespace (which maps 65,536 ids) can map them.
DEFAULT_UID_BASE = 64_000
UID_RANGE = 512

# System calls the children never need; refused with EPERM (clone3 with ENOSYS so that the
# C library falls back to clone, whose flags the filter can see).
DENIED_SYSCALLS = (
    # network
    "socket",
    "socketpair",
    "connect",
    "bind",
    "listen",
    "accept",
    "accept4",
    # programs and processes
    "execve",
    "execveat",
    "fork",
    "vfork",
    # other processes' memory and descriptors
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "kcmp",
    "pidfd_open",
    "pidfd_getfd",
    "pidfd_send_signal",
    "tkill",
    "rt_sigqueueinfo",
    "rt_tgsigqueueinfo",
    # namespaces, mounts, identity
    "unshare",
    "setns",
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "setuid",
    "setgid",
    "setreuid",
    "setregid",
    "setresuid",
    "setresgid",
    "setgroups",
    "capset",
    # the kernel
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "keyctl",
    "add_key",
    "request_key",
    "init_module",
    "finit_module",
    "delete_module",
    "kexec_load",
    "kexec_file_load",
    "reboot",
    "swapon",
    "swapoff",
    "acct",
    "quotactl",
    "syslog",
    "iopl",
    "ioperm",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "open_by_handle_at",
    "name_to_handle_at",
    "settimeofday",
    "clock_settime",
    "adjtimex",
    # files: nothing written, created, renamed or removed; no links, devices or permission changes
    "creat",
    "truncate",
    "rename",
    "renameat",
    "renameat2",
    "unlink",
    "unlinkat",
    "mkdir",
    "mkdirat",
    "rmdir",
    "link",
    "linkat",
    "symlink",
    "symlinkat",
    "mknod",
    "mknodat",
    "chmod",
    "fchmod",
    "fchmodat",
    "chown",
    "fchown",
    "lchown",
    "fchownat",
)


@dataclass(frozen=True)
class Confinement:
    """What each OCR child applies to itself right after it is forked."""

    memory_limit_mb: int = 2048
    uid_base: int | None = None  # None: keep the zygote's uid
    seccomp: str = "auto"  # auto | required | off
    max_open_files: int = 32
    max_processes: int = 16  # per uid: only with a uid of its own
    max_file_bytes: int = 1 << 20  # children write no files; a library cache is all this allows


def resolve_uid_base(setting: str, euid: int | None = None) -> int | None:
    """``CONTRACKT_OCR_SANDBOX_UID``: auto (own uids when root), off, or the first uid to use."""
    euid = os.geteuid() if euid is None else euid
    value = setting.strip().lower()
    if value == "off":
        return None
    if value == "auto":
        return DEFAULT_UID_BASE if euid == 0 else None
    try:
        base = int(value)
    except ValueError:
        raise ValueError("CONTRACKT_OCR_SANDBOX_UID must be auto, off or a uid number") from None
    if base <= 0:
        raise ValueError("CONTRACKT_OCR_SANDBOX_UID must not be 0 (root)")
    if euid != 0:
        raise ValueError("CONTRACKT_OCR_SANDBOX_UID needs a worker that can switch users (root)")
    return base


def child_environment(parent: Mapping[str, str]) -> dict[str, str]:
    """The OCR processes' whole environment: an allow-list, nothing secret."""
    env = {k: parent[k] for k in ENV_ALLOW if k in parent}
    env.setdefault("LANG", "C.UTF-8")
    env.update(THREAD_ENV)
    env["PATH"] = "/usr/local/bin:/usr/bin:/bin"
    env["HOME"] = "/nonexistent"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


# ----------------------------------------------------------------------------- libc


def _libc() -> Any:
    return ctypes.CDLL(None, use_errno=True)


def prctl(option: int, value: int) -> None:
    if _libc().prctl(option, ctypes.c_ulong(value), 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


# ----------------------------------------------------------------------------- network


def isolate_network(unshare: Callable[[int], int] | None = None) -> str:
    """Move this process into a new, empty network namespace.

    Inside it the only interface is a loopback that is down, so a parser
    exploit cannot reach the host's services, the cloud metadata endpoint or
    the internet. Tried as is (needs CAP_SYS_ADMIN, e.g. root), then inside a
    new user namespace (unprivileged, where the kernel allows it; the process
    must be single-threaded, so this runs first thing). Returns how it was
    done, or ``"unavailable: <reason>"``.
    """
    if unshare is None:
        if not sys.platform.startswith("linux"):
            return "unavailable: not Linux"
        try:
            libc = _libc()
        except OSError:  # pragma: no cover - no C library to call
            return "unavailable: no C library"

        def libc_unshare(flags: int) -> int:
            return 0 if libc.unshare(flags) == 0 else ctypes.get_errno() or -1

        unshare = libc_unshare
    if unshare(CLONE_NEWNET) == 0:
        return "netns"
    uid, gid = os.getuid(), os.getgid()
    err = unshare(CLONE_NEWUSER | CLONE_NEWNET)
    if err == 0:
        # keep our own uid/gid inside, so files we own stay ours
        for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
            try:
                with open(f"/proc/self/{name}", "w") as fh:
                    fh.write(text)
            except OSError:
                pass
        return "userns+netns"
    return f"unavailable: {os.strerror(err) if err > 0 else 'unshare failed'}"


def network_policy(mode: str, isolate: Callable[[], str] = isolate_network) -> str:
    """Apply ``mode`` (auto | required | off); raise if ``required`` cannot be met."""
    if mode == "off":
        return "off"
    status = str(isolate())
    if mode == "required" and status.startswith("unavailable"):
        raise RuntimeError(f"OCR network isolation is required but {status}")
    return status


# ----------------------------------------------------------------------------- seccomp


def seccomp_module() -> Any:
    """libseccomp's Python binding, or pyseccomp (same API over ctypes); None if neither."""
    try:
        import seccomp  # type: ignore[import-not-found]

        return seccomp
    except ImportError:
        pass
    try:
        import pyseccomp

        return pyseccomp
    except (ImportError, OSError):  # OSError: libseccomp.so.2 is missing
        return None


def seccomp_status() -> str:
    """Whether a filter can be built here: ``available`` or ``unavailable: <reason>``."""
    if not sys.platform.startswith("linux"):
        return "unavailable: not Linux"
    module = seccomp_module()
    if module is None:
        return "unavailable: neither libseccomp's Python module nor pyseccomp (libseccomp2) is installed"
    try:
        module.SyscallFilter(defaction=module.ALLOW)
    except Exception as exc:
        return f"unavailable: {type(exc).__name__}: {exc}"
    return "available"


def install_seccomp() -> int:
    """Load the deny-list filter into this process (irreversible). Returns the rules added."""
    sc = seccomp_module()
    if sc is None:
        raise RuntimeError("no seccomp binding")
    pid = os.getpid()
    filt = sc.SyscallFilter(defaction=sc.ALLOW)
    deny = sc.ERRNO(errno.EPERM)
    added = 0
    for name in DENIED_SYSCALLS:
        try:
            filt.add_rule(deny, name)
            added += 1
        except Exception:  # noqa: S112 - a system call this architecture does not have
            continue
    # Threads yes, processes no: clone is allowed only with CLONE_THREAD.
    filt.add_rule(deny, "clone", sc.Arg(0, sc.MASKED_EQ, CLONE_THREAD, 0))
    filt.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
    # Signals to itself only (raise/abort use tgkill on the own process id).
    filt.add_rule(deny, "kill", sc.Arg(0, sc.NE, pid))
    filt.add_rule(deny, "tgkill", sc.Arg(0, sc.NE, pid))
    # Files open for reading only (the pipes to the parent are already open).
    rules = 4
    for flag in (os.O_WRONLY, os.O_RDWR, os.O_CREAT):
        filt.add_rule(deny, "open", sc.Arg(1, sc.MASKED_EQ, flag, flag))
        filt.add_rule(deny, "openat", sc.Arg(2, sc.MASKED_EQ, flag, flag))
        rules += 2
    filt.add_rule(sc.ERRNO(errno.ENOSYS), "openat2")  # its flags are out of the filter's sight
    filt.load()
    return added + rules + 1


# ----------------------------------------------------------------------------- identity, limits


def drop_privileges(uid: int) -> None:
    """Become ``uid`` (group ``uid``, no supplementary groups) for good."""
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    if os.getuid() != uid or os.geteuid() != uid or os.getgid() != uid:
        raise RuntimeError("the privilege drop did not take effect")


def limit_resources(c: Confinement, own_uid: bool) -> None:
    import resource
    import signal

    def cap(kind: int, value: int) -> None:
        _soft, hard = resource.getrlimit(kind)
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        resource.setrlimit(kind, (value, value))

    if c.memory_limit_mb > 0:
        cap(resource.RLIMIT_AS, c.memory_limit_mb * 1024 * 1024)
    cap(resource.RLIMIT_CORE, 0)
    cap(resource.RLIMIT_NOFILE, c.max_open_files)
    cap(resource.RLIMIT_FSIZE, c.max_file_bytes)
    # Over RLIMIT_FSIZE a write fails with EFBIG instead of killing the process.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    if own_uid:
        # Counted per uid: with a uid of its own this bounds the child alone. With a
        # shared uid it would count the worker's threads too; seccomp forbids fork there.
        cap(resource.RLIMIT_NPROC, c.max_processes)


def confine(c: Confinement, uid: int | None) -> dict[str, str]:
    """Everything a freshly forked child applies before it reads a document.

    Order matters: limits and non-dumpable while still privileged, then the uid
    switch, then no-new-privileges and the seccomp filter (which also forbids
    switching back). Returns what was applied, for the pool's status.
    """
    limit_resources(c, own_uid=uid is not None)
    # Not dumpable: /proc/<pid>/{mem,environ,fd} of this child belong to root, and
    # a process of the same uid cannot ptrace it.
    prctl(PR_SET_DUMPABLE, 0)
    if uid is not None:
        drop_privileges(uid)
    prctl(PR_SET_NO_NEW_PRIVS, 1)
    status = {"uid": str(os.getuid())}
    if c.seccomp == "off":
        status["seccomp"] = "off"
        return status
    try:
        install_seccomp()
        status["seccomp"] = "on"
    except Exception as exc:
        if c.seccomp == "required":
            raise RuntimeError(f"seccomp is required but could not be loaded: {exc}") from None
        status["seccomp"] = f"unavailable: {type(exc).__name__}"
    return status

"""Secrets read from mounted files: ``NAME_FILE`` beside ``NAME`` (Kubernetes and Compose secrets).

A secret passed as an environment variable shows in ``/proc/<pid>/environ``, in ``docker
inspect``, in crash reports and in every child process; a mounted file shows in none of them.
Each secret setting therefore also has a ``_FILE`` variant naming a file to read at start-up.
Setting both is an error (a forgotten old variable must not silently win or lose). Errors name
the variable and the path, never the content.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from typing import Any

from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

# Settings whose value carries a credential: a password inside a URL, or a key.
SECRET_SETTINGS = (
    "database_url",
    "database_admin_url",
    "queue_url",
    "results_url",
    "rate_limit_url",
    "client_hash_key",
)

# As for the receipt key: group-readable is fine (a Kubernetes secret at 0440 with fsGroup); readable
# by others is refused, since the OCR children run under uids of their own (ADR 0006) and must not
# read the worker's credentials; writable by anyone but the owner is refused too.
FORBIDDEN_MODE = 0o027

# Larger than any URL or key; stops a mistaken path (/dev/zero, a disk image) from being read whole.
MAX_SECRET_BYTES = 64 * 1024


class SecretFileError(ValueError):
    """A ``*_FILE`` variable that cannot be used: unreadable, empty, or set beside its plain variable."""


def read_secret_file(variable: str, path: str) -> str:
    """The file's text without trailing line breaks (``echo`` and editors add one)."""
    try:
        with open(path, "rb") as f:
            mode = stat.S_IMODE(os.fstat(f.fileno()).st_mode)
            if mode & FORBIDDEN_MODE:
                raise SecretFileError(
                    f"{variable}: {path} is mode {mode:#o}; readable by others or writable by anyone but its "
                    "owner is refused (0400 or 0440)"
                )
            raw = f.read(MAX_SECRET_BYTES + 1)
    except OSError as exc:
        raise SecretFileError(f"{variable}: cannot read {path} ({exc.strerror or type(exc).__name__})") from None
    if len(raw) > MAX_SECRET_BYTES:
        raise SecretFileError(f"{variable}: {path} is larger than {MAX_SECRET_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SecretFileError(f"{variable}: {path} is not UTF-8 text") from None
    value = text.rstrip("\r\n")
    if not value.strip():
        raise SecretFileError(f"{variable}: {path} is empty")
    return value


def env_or_file(name: str, environ: Mapping[str, str] | None = None) -> str | None:
    """``name`` from the environment, or the content of the file ``name_FILE`` names; never both."""
    env = os.environ if environ is None else environ
    file_var = f"{name}_FILE"
    path = env.get(file_var)
    if not path:
        return env.get(name)
    if env.get(name) is not None:
        raise SecretFileError(f"set either {name} or {file_var}, not both")
    return read_secret_file(file_var, path)


class SecretFilesSource(PydanticBaseSettingsSource):
    """``CONTRACKT_<SETTING>_FILE`` for each of SECRET_SETTINGS, from the process environment."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str] | None = None) -> None:
        super().__init__(settings_cls)
        self._environ = environ

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        # Unused: __call__ reads every secret setting at once.
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        env = os.environ if self._environ is None else self._environ
        values: dict[str, Any] = {}
        for setting in SECRET_SETTINGS:
            name = f"CONTRACKT_{setting.upper()}"
            if env.get(f"{name}_FILE"):
                values[setting] = env_or_file(name, env)
        return values

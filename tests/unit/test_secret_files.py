"""Secret settings from mounted files: CONTRACKT_<SECRET>_FILE and VAULT_TOKEN_FILE."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from contrackt.adapters.keys.vault import VaultKeyProvider
from contrackt.secret_files import SECRET_SETTINGS, SecretFileError
from contrackt.settings import Settings

REPO = Path(__file__).resolve().parents[2]
SECRET = "s3cr3t-Do-Not-Print-7f3a"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for setting in SECRET_SETTINGS:
        monkeypatch.delenv(f"CONTRACKT_{setting.upper()}", raising=False)
        monkeypatch.delenv(f"CONTRACKT_{setting.upper()}_FILE", raising=False)
    for name in ("VAULT_TOKEN", "VAULT_TOKEN_FILE", "CONTRACKT_ENV", "CONTRACKT_KEYS_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no .env from the worktree


def secret_file(tmp_path: Path, content: str, mode: int = 0o400, name: str = "secret") -> Path:
    path = tmp_path / name
    path.write_text(content)
    path.chmod(mode)
    return path


def plain(value: object) -> object:
    return value.get_secret_value() if hasattr(value, "get_secret_value") else value


@pytest.mark.parametrize("setting", SECRET_SETTINGS)
def test_every_secret_setting_reads_its_file(setting: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    value = f"redis://:{SECRET}@redis.contrackt-data:6379/0"
    monkeypatch.setenv(f"CONTRACKT_{setting.upper()}_FILE", str(secret_file(tmp_path, value + "\n")))
    assert value == plain(getattr(Settings(), setting))  # the trailing line break is not part of it


def test_a_kubernetes_style_mount_is_read_through_its_symlinks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A Secret volume: key -> ..data/key, ..data -> ..2026_11_27_timestamp/, file mode 0440.
    stamp = tmp_path / "..2026_11_27_08_00_00.1"
    stamp.mkdir()
    secret_file(stamp, "postgresql+asyncpg://contrackt_app:pw@postgres/contrackt", 0o440, "database-url")
    (tmp_path / "..data").symlink_to(stamp.name)
    (tmp_path / "database-url").symlink_to("..data/database-url")
    monkeypatch.setenv("CONTRACKT_DATABASE_URL_FILE", str(tmp_path / "database-url"))
    assert "postgresql+asyncpg://contrackt_app:pw@postgres/contrackt" == Settings().database_url


def test_plain_variables_still_work_without_files(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONTRACKT_QUEUE_URL", "redis://127.0.0.1:6379/0")
    assert "redis://127.0.0.1:6379/0" == Settings().queue_url


def test_setting_both_is_an_error_that_names_both_and_shows_neither_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONTRACKT_DATABASE_ADMIN_URL", f"postgresql://postgres:{SECRET}@db/postgres")
    monkeypatch.setenv("CONTRACKT_DATABASE_ADMIN_URL_FILE", str(secret_file(tmp_path, f"other-{SECRET}")))
    with pytest.raises(SecretFileError) as caught:
        Settings()
    message = str(caught.value)
    assert "CONTRACKT_DATABASE_ADMIN_URL" in message and "CONTRACKT_DATABASE_ADMIN_URL_FILE" in message
    assert SECRET not in message


@pytest.mark.parametrize(
    ("content", "mode", "expected"),
    [
        ("", 0o400, "is empty"),
        ("\n", 0o400, "is empty"),
        (SECRET, 0o644, "readable by others"),
        (SECRET, 0o460, "writable by anyone but its owner"),
        ("x" * (64 * 1024 + 1), 0o400, "larger than"),
    ],
)
def test_unusable_files_are_refused_without_their_content(
    content: str, mode: int, expected: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONTRACKT_CLIENT_HASH_KEY_FILE", str(secret_file(tmp_path, content, mode)))
    with pytest.raises(SecretFileError) as caught:
        Settings()
    assert expected in str(caught.value)
    assert "CONTRACKT_CLIENT_HASH_KEY_FILE" in str(caught.value)
    assert SECRET not in str(caught.value)


def test_group_readable_0440_is_accepted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONTRACKT_CLIENT_HASH_KEY_FILE", str(secret_file(tmp_path, SECRET, 0o440)))
    key = Settings().client_hash_key
    assert key is not None and SECRET == key.get_secret_value()


def test_a_missing_file_names_the_variable_and_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONTRACKT_RESULTS_URL_FILE", str(tmp_path / "absent"))
    with pytest.raises(SecretFileError, match=r"CONTRACKT_RESULTS_URL_FILE: cannot read .*absent"):
        Settings()


def test_the_cli_reports_a_bad_secret_in_one_line_without_values(tmp_path: Path) -> None:
    """What an operator sees when a pod starts with a conflicting or unreadable secret."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONTRACKT_", "VAULT_"))}
    env.update(
        PYTHONPATH=f"{REPO / 'src'}{os.pathsep}{REPO}",
        CONTRACKT_HOME=str(tmp_path / "home"),
        CONTRACKT_DATABASE_URL=f"postgresql+asyncpg://contrackt_app:{SECRET}@db/contrackt",
        CONTRACKT_DATABASE_URL_FILE=str(secret_file(tmp_path, f"postgresql+asyncpg://contrackt_app:{SECRET}@x/y")),
    )
    cli = [sys.executable, "-c", "from contrackt.cli import main; main()", "migrate", "--no-bucket"]
    out = subprocess.run(cli, capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)
    assert 1 == out.returncode
    assert "Error: set either CONTRACKT_DATABASE_URL or CONTRACKT_DATABASE_URL_FILE, not both" in out.stderr
    assert "Traceback" not in out.stderr
    assert SECRET not in out.stdout + out.stderr


def test_a_settings_error_does_not_print_the_other_settings(tmp_path: Path) -> None:
    """pydantic shows the whole input of a failed validation unless told not to: URLs with passwords."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONTRACKT_", "VAULT_"))}
    env.update(
        PYTHONPATH=f"{REPO / 'src'}{os.pathsep}{REPO}",
        CONTRACKT_HOME=str(tmp_path / "home"),
        CONTRACKT_ENV="production",  # refuses the local master key: a validation error
        CONTRACKT_DATABASE_URL_FILE=str(secret_file(tmp_path, f"postgresql+asyncpg://app:{SECRET}@db/contrackt")),
    )
    cli = [sys.executable, "-c", "from contrackt.cli import main; main()", "migrate", "--no-bucket"]
    out = subprocess.run(cli, capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)
    assert 1 == out.returncode
    assert "production refuses the local master key file" in out.stderr
    assert SECRET not in out.stdout + out.stderr


def vault_recording() -> tuple[httpx.MockTransport, list[str]]:
    tokens: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        tokens.append(request.headers["X-Vault-Token"])
        return httpx.Response(200, json={"data": {"ciphertext": "vault:v1:abc"}})

    return httpx.MockTransport(handler), tokens


async def test_vault_reads_its_token_from_vault_token_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VAULT_TOKEN_FILE", str(secret_file(tmp_path, f"hvs.{SECRET}\n")))
    transport, tokens = vault_recording()
    provider = VaultKeyProvider.from_url("vault://vault:8200/transit/contrackt", transport=transport)
    try:
        await provider.wrap(b"k" * 32, "ctx")
    finally:
        await provider.close()
    assert [f"hvs.{SECRET}"] == tokens


def test_vault_refuses_token_and_token_file_together(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VAULT_TOKEN", "hvs.other")
    monkeypatch.setenv("VAULT_TOKEN_FILE", str(secret_file(tmp_path, f"hvs.{SECRET}")))
    with pytest.raises(SecretFileError, match="set either VAULT_TOKEN or VAULT_TOKEN_FILE, not both"):
        VaultKeyProvider.from_url("vault://vault:8200/transit/contrackt")


def test_vault_without_a_token_says_both_ways_to_give_one() -> None:
    with pytest.raises(ValueError, match="VAULT_TOKEN or VAULT_TOKEN_FILE"):
        VaultKeyProvider.from_url("vault://vault:8200/transit/contrackt")

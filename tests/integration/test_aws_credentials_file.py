"""AWS credentials from a mounted file (AWS_SHARED_CREDENTIALS_FILE), as deploy/k8s mounts them.

The S3 and KMS adapters use the SDK's default credential chain, so the standard variable is the
`*_FILE` variant for AWS: no AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY in the environment.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.contract.services import service, unique

REPO = Path(__file__).resolve().parents[2]

SCRIPT = """
import asyncio, sys
from contrackt.adapters.blob.s3 import S3BlobStore

async def main():
    store = S3BlobStore.from_url(sys.argv[1], endpoint_url=sys.argv[2], region_name="us-east-1")
    try:
        await store.ensure_bucket()
        await store.put("probe", b"sealed bytes")
        assert b"sealed bytes" == await store.get("probe")
        await store.delete("probe")
    finally:
        await store.close()
    print("stored and read back")

asyncio.run(main())
"""


def run_with(tmp_path: Path, credentials_file: Path | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CONTRACKT_"))}
    env.update(
        PYTHONPATH=f"{REPO / 'src'}{os.pathsep}{REPO}",
        HOME=str(tmp_path),  # no ~/.aws of the machine's
        AWS_CONFIG_FILE=str(tmp_path / "no-config"),
        AWS_EC2_METADATA_DISABLED="true",  # never ask 169.254.169.254
    )
    if credentials_file is not None:
        env["AWS_SHARED_CREDENTIALS_FILE"] = str(credentials_file)
    url = f"s3://{unique('credfile').lower().replace('_', '-')}/docs"
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, url, service("S3")], capture_output=True, text=True, timeout=120, env=env
    )


def test_s3_takes_its_credentials_from_the_mounted_file(tmp_path: Path) -> None:
    creds = tmp_path / "aws-credentials"
    creds.write_text("[default]\naws_access_key_id = contrackt-file-id\naws_secret_access_key = from-a-file\n")
    creds.chmod(0o400)
    out = run_with(tmp_path, creds)
    assert 0 == out.returncode, out.stderr[-2000:]
    assert "stored and read back" in out.stdout


def test_without_the_file_there_are_no_credentials(tmp_path: Path) -> None:
    out = run_with(tmp_path, None)
    assert 0 != out.returncode
    assert "NoCredentialsError" in out.stderr or "Unable to locate credentials" in out.stderr

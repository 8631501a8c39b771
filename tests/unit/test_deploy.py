"""Deploy files pass the offline validators (no Docker engine or cluster runs here)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    found = shutil.which(name, path=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    if found is None:
        pytest.fail(f"{name} is not installed: scripts/install.sh installs it")
    return found


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, env=env)


def test_dockerfile_passes_hadolint() -> None:
    out = run(tool("hadolint"), str(DEPLOY / "Dockerfile"))
    assert out.returncode == 0, out.stdout + out.stderr


def test_yaml_is_clean() -> None:
    out = run(tool("yamllint"), "--strict", "-c", str(DEPLOY / ".yamllint"), str(DEPLOY))
    assert out.returncode == 0, out.stdout + out.stderr


def test_kubernetes_manifests_validate_strictly() -> None:
    manifests = [
        str(p)
        for p in sorted((DEPLOY / "k8s" / "base").glob("*.yaml"))
        if p.name not in ("kustomization.yaml", "keda.yaml")
    ]  # KEDA's CRD has no bundled schema
    out = run(tool("kubernetes-validate"), "--strict", *manifests)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("passed") >= 4


def test_compose_file_is_valid() -> None:
    env = {
        **os.environ,
        "POSTGRES_PASSWORD": "x",
        "CONTRACKT_DB_PASSWORD": "x",
        "MINIO_ROOT_USER": "x",
        "MINIO_ROOT_PASSWORD": "x",
        "CONTRACKT_KEYS_URL": "kms://alias/contrackt",
    }
    out = run(tool("docker-compose"), "-f", str(DEPLOY / "docker-compose.yml"), "config", "-q", env=env)
    assert out.returncode == 0, out.stdout + out.stderr

#!/usr/bin/env bash
# Install everything Contrackt needs on a fresh Debian machine: system packages,
# a virtualenv in .venv with pinned Python packages, and the project itself.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages: OpenCV's runtime libraries (rapidocr), Tesseract with Portuguese
# data (the light OCR engine and the benchmark's peers), OCRmyPDF (benchmark peer),
# docker-compose (offline validation of deploy/docker-compose.yml; no engine is used), prometheus
# (its promtool checks and unit-tests the alert rules in deploy/monitoring; the server is not run).
APT_PACKAGES=(libgl1 libglib2.0-0 libseccomp2 tesseract-ocr tesseract-ocr-por tesseract-ocr-eng libtesseract-dev pkg-config ocrmypdf docker-compose prometheus chromium)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing system packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PYTHON=${PYTHON:-}
if [ -z "$PYTHON" ]; then
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1; then PYTHON=$candidate; break; fi
  done
fi
"$PYTHON" -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements.txt
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
# torch's CPU build, where this machine's package sources have it (requirements-torch-cpu.txt): the
# GPU workers' torch runners are then tested here on the CPU. Elsewhere, say so loudly and go on.
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
  if ! .venv/bin/python -m pip install -q --disable-pip-version-check -r requirements-torch-cpu.txt; then
    echo "warning: torch's CPU build is not available here; tests/unit/test_ocr_torch_graph.py will be skipped" >&2
  fi
fi
# kubectl (its built-in kustomize renders deploy/k8s in the tests) comes with the machine image,
# from a vendor's apt repository that a bare Debian lacks: say so here rather than in a test.
command -v kubectl >/dev/null 2>&1 || echo "warning: kubectl is missing; tests/unit/test_deploy.py will fail" >&2
echo "installed: $(.venv/bin/contrackt --version)"

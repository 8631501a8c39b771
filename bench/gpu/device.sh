#!/bin/bash
# There (the GPU machine, from the repository root, .whl and .gpu carried): install the carried wheels
# beside the machine's torch and run bench.gpu with the given arguments; the log goes to $OUT/gpu.log.
# Output is line-buffered all the way (a block-buffered pipe lost a whole run's output once).
set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 3
export PYTHONPATH=/tmp/site CONTRACKT_BENCH_FONTS=$PWD/.gpu/fonts PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
python3 -m bench.gpu --out /tmp/dense "$@" 2>&1 | tee "${OUT:-/tmp}/gpu.log" | grep --line-buffered -v -i -E "warn|exif"

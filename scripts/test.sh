#!/usr/bin/env bash
# The whole test suite, as CI runs it: install, start services, lint, type check, tests.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install.sh
# PostgreSQL, Redis, an S3 server (moto) and a Kafka broker (tansu) on 127.0.0.1, started if not up.
scripts/services.sh

echo "== ruff (lint + format)"
.venv/bin/ruff check src tests bench
.venv/bin/ruff format --check src tests bench
echo "== mypy (strict, src/)"
.venv/bin/mypy

echo "== pytest"
set +e
.venv/bin/pytest --durations=15 "$@"
rc=$?
set -e
if [ $rc -eq 5 ]; then
  echo "pytest collected no tests: that is a failure, not a pass" >&2
  exit 1
fi
exit $rc

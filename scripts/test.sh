#!/usr/bin/env bash
# The whole test suite, as CI runs it: install, start services, lint, type check, tests.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install.sh
if [ -x scripts/services.sh ]; then
  scripts/services.sh
fi

echo "== ruff"
.venv/bin/ruff check src tests bench
echo "== mypy (strict, src/)"
.venv/bin/mypy

echo "== pytest"
set +e
.venv/bin/pytest "$@"
rc=$?
set -e
if [ $rc -eq 5 ]; then
  echo "pytest collected no tests: that is a failure, not a pass" >&2
  exit 1
fi
exit $rc

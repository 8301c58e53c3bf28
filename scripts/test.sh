#!/usr/bin/env bash
# Install everything, then run lint, types and the whole test suite (unit and
# integration; integration tests bring up a real lab and need root).
# Exit status: non-zero when any check or test fails. Pytest's "no tests
# collected" (exit 5) alone is not a failure.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1
status=0
.venv/bin/ruff check src tests bench || status=1
.venv/bin/ruff format --check src tests bench || status=1
.venv/bin/mypy || status=1
.venv/bin/python -m pytest "$@"
rc=$?
[ $rc -eq 5 ] && rc=0
[ $rc -ne 0 ] && status=$rc
exit $status

#!/usr/bin/env bash
# Tempest's cold-migration tests (tempest.api.compute.admin.test_migrations)
# against a Ferry started here (fake driver, two hosts). Needs tempest in .venv.
# Extra arguments go to tests/e2e/tempest_run.py (--regex, --enforce-scope,
# --clouds-yaml PATH to use a running Ferry). Exit code: tempest's.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
exec "$PY" -m tests.e2e.tempest_run "$@"

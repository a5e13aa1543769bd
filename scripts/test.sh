#!/usr/bin/env bash
# Sets up .venv with the test packages and runs the suite; extra arguments go to pytest.
#   bash scripts/test.sh          the full suite (CI): also installs Chromium for the browser tests when it can
#   bash scripts/test.sh --fast   the fast lane, before each commit: no app, browser, fuzz, bench or slow tests
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --dev
fast=false
for arg in "$@"; do [ "$arg" = --fast ] && fast=true; done
if ! $fast && ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "Chromium could not be installed: the browser tests will be skipped."
fi
# The folders, markers and --fast live in pyproject.toml and tests/conftest.py.
exec .venv/bin/python -m pytest -q -ra "$@"

#!/usr/bin/env bash
# Sets up .venv with the test packages, installs Chromium for the browser test when it can, and runs the suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --dev
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "Chromium could not be installed: the browser test will be skipped."
fi
exec .venv/bin/python -m pytest -q -ra tests "$@"

#!/usr/bin/env bash
# Sets up .venv and starts the Gradio app; arguments go to app.py (e.g. --tiny on a machine without weights).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python app.py "$@"

#!/usr/bin/env bash
# Sets up .venv and starts the Gradio app; arguments go to app.py (e.g. --tiny on a machine without weights).
#   bash scripts/run_app.sh --gpus N [app.py flags]   N GPUs of this machine through torchrun (one app, rank 0 serves)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ "${1:-}" = --gpus ]; then
  gpus=${2:?--gpus needs a number}
  shift 2
  exec .venv/bin/torchrun --standalone --nproc-per-node "$gpus" app.py "$@"
fi
exec .venv/bin/python app.py "$@"

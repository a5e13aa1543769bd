#!/usr/bin/env bash
# Creates .venv and installs what the app needs; with --dev, what the tests need too.
# On a machine with an NVIDIA GPU it installs requirements.txt as a Space does. Without one it installs the CPU
# build of torch first (torch==2.13.0; an unpinned torch would pull gigabytes of CUDA packages) and then every
# other requirement, so the torch line of requirements.txt cannot replace it, with onnxruntime for onnxruntime-gpu.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
pip=(.venv/bin/python -m pip install -q --disable-pip-version-check)
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  "${pip[@]}" -r requirements.txt
else
  "${pip[@]}" "torch==${CPU_TORCH_VERSION:-2.13.0}"
  without_torch=$(mktemp)
  # The CPU build of onnxruntime too: onnxruntime-gpu would only add CUDA code that cannot run here.
  grep -vE '^[[:space:]]*torch([<>=!~; ]|$)' requirements.txt \
    | sed -E 's/^[[:space:]]*onnxruntime-gpu([<>=!~; ]|$)/onnxruntime\1/' >"$without_torch"
  "${pip[@]}" -r "$without_torch"
  rm -f "$without_torch"
fi
if [ "${1:-}" = "--dev" ]; then
  "${pip[@]}" -r requirements-dev.txt
fi

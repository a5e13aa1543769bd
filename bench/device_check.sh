#!/usr/bin/env bash
# SteadyDancer on one lent GPU (an H200), in one command: about 5-6 minutes with the wheel install. The hard caps of
# the install and the four phases sum to 500 s, and every other step has its own timeout (575 s at worst, kill
# grace included), so the command ends inside the device tool's 10-minute limit whatever happens.
#
# What it measures (the phases are bench/device_phases.py; its docstring has the details):
#   env          versions, the GPU, an import check of everything below (a missing package fails here, in seconds)
#   transformer  the 14B transformer with random bf16 weights in the real shapes (meta-device build, filled on the
#                GPU): one pass at 81x576x1024 (52,992 tokens) and at 81x480x832 (35,880 tokens), each with the best
#                attention backend (steadydancer.acceleration.best_attention_backend) and with the plain path;
#                TFLOP/s from steadydancer/flops.py; peak memory; the attention probe and kernel micro-benchmark;
#                one guidance step at 576p, 2 passes sequential vs batched, and the batched 3-pass step
#   job          the fast preset's whole job (4 steps, 5 passes, Wan VAE decode of 21 latent frames) through the
#                pipeline; the VAE decode alone at both sizes; one pass with fp8 weights vs bf16
#   compile      regional compile: first call (compile + pass) and a compiled pass, vs the eager pass
#   summary      derived figures (per pass, per step, the quality preset's denoise time, ...) and a table, last
# Each phase is its own process under a hard timeout (CAP_*) with a softer budget inside (it skips what would not
# fit), and writes its JSON after every measured call: a slow or crashing phase loses nothing already measured and
# does not stop the next ones.
#
# On the device machine (from the repository root; the wheels the image lacks, diffusers above all, are carried):
#   bash ../shared/gpu/fetch_wheels.sh        # here, once: puts the wheels into .whl/ (git-ignored)
#   device run: command "bash bench/device_check.sh", carry [".whl"], timeout_s 590
# CPU dry run (same code paths, tiny config at 5x32x64 and 5x32x48, no wheel install; about a minute):
#   TINY=1 PYTHON=.venv/bin/python OUT=/tmp/dc bash bench/device_check.sh
#
# Results: $OUT (default ./device_out): env.json, transformer.json, job.json, compile.json, summary.json and
# device_check.log (6 files; a device call returns at most 8). To commit them, copy the returned files into
# bench/results/ as h200_<name> (collect checks the format, refuses TINY results, and names the files after the GPU):
#   python -m bench.device_phases collect <files_at of the device reply>      # -> bench/results/h200_*.json
# steadydancer_space/calibration.py reads them from there.
#
# Environment: OUT, PYTHON (default python3), TINY=1, WHL_DIR (default .whl), SITE_DIR (default /tmp/site),
#   FORCE_INSTALL=1 (install the wheels in TINY mode too), COMPILE_BACKEND (default inductor; TINY: aot_eager),
#   CAP_INSTALL / CAP_ENV / CAP_TRANSFORMER / CAP_JOB / CAP_COMPILE: hard caps in seconds (defaults 35 / 40 / 160 /
#   135 / 130 = 500 s).
set -u
START=$(date +%s)
OUT=${OUT:-$PWD/device_out}
case "$OUT" in /*) ;; *) OUT=$PWD/$OUT ;; esac
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 1
mkdir -p "$OUT"
TINY=${TINY:-0}
PY=${PYTHON:-python3}
WHL=${WHL_DIR:-.whl}
SITE=${SITE_DIR:-/tmp/site}
CAP_INSTALL=${CAP_INSTALL:-35}
CAP_ENV=${CAP_ENV:-40}
CAP_TRANSFORMER=${CAP_TRANSFORMER:-160}
CAP_JOB=${CAP_JOB:-135}
CAP_COMPILE=${CAP_COMPILE:-130}
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 DIFFUSERS_VERBOSITY=error
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-/tmp/steadydancer_inductor}
FLAGS=()
[ "$TINY" = 1 ] && FLAGS+=(--tiny)
[ -n "${COMPILE_BACKEND:-}" ] && FLAGS+=(--compile-backend "$COMPILE_BACKEND")

ts() { echo "[device_check +$(( $(date +%s) - START ))s] $*"; }

# One phase: hard cap CAP (SIGTERM, then SIGKILL 5 s later), soft budget CAP - MARGIN inside.
phase() {
  local name=$1 cap=$2 margin=$3 rc
  ts "phase $name (cap ${cap}s)"
  timeout -k 5 "$cap" "$PY" -m bench.device_phases "$name" "$OUT" --budget $((cap - margin)) ${FLAGS[@]+"${FLAGS[@]}"}
  rc=$?
  case $rc in
    0) ts "phase $name done" ;;
    124|137) ts "phase $name hit its hard cap (rc $rc); its JSON holds what was measured" ;;
    *) ts "phase $name ended with errors (rc $rc); see $name.json" ;;
  esac
  return $rc
}

install_wheels() {
  if [ "$TINY" = 1 ] && [ -z "${FORCE_INSTALL:-}" ]; then
    ts "wheels: not installed (TINY dry run uses $PY's packages)"
    return 0
  fi
  if ! ls "$WHL"/*.whl >/dev/null 2>&1; then
    ts "wheels: none in $WHL; using the image's packages"
    return 0
  fi
  local sel
  sel=$(timeout 15 "$PY" -m bench.device_phases wheels "$WHL")
  if [ -n "$sel" ]; then
    # shellcheck disable=SC2086
    timeout "$CAP_INSTALL" "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$SITE" $sel || ts "WARNING: pip install returned $?"
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
    ts "wheels installed into $SITE"
  fi
}

main() {
  local failed=0 rc
  ts "start: TINY=$TINY PYTHON=$PY OUT=$OUT root=$ROOT"
  command -v nvidia-smi >/dev/null 2>&1 && timeout 10 nvidia-smi --query-gpu=name,memory.total,memory.used,clocks.sm,clocks.max.sm,power.draw,temperature.gpu --format=csv
  install_wheels
  export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$ROOT"
  phase env "$CAP_ENV" 5
  rc=$?
  if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
    ts "WARNING: the import check ran out of time (a cold first import?); going on"
  elif [ $rc -ne 0 ]; then
    ts "FATAL: the import check failed (see env.json and above); nothing else can run"
    timeout 20 "$PY" -m bench.device_phases summary "$OUT"
    return 1
  fi
  phase transformer "$CAP_TRANSFORMER" 12 || failed=1
  phase job "$CAP_JOB" 10 || failed=1
  phase compile "$CAP_COMPILE" 10 || failed=1
  command -v nvidia-smi >/dev/null 2>&1 && timeout 10 nvidia-smi --query-gpu=clocks.sm,power.draw,temperature.gpu --format=csv
  ts "summary"
  timeout 20 "$PY" -m bench.device_phases summary "$OUT" || failed=1
  ts "done (failed phases: $failed)"
  return $failed
}

main 2>&1 | tee -a "$OUT/device_check.log"
exit "${PIPESTATUS[0]}"

#!/usr/bin/env bash
# One prepared call of the device tool for a session that is lent a GPU (device time is ~15 min a
# session, ≤ 10 min a call, so everything that belongs together runs in this one command):
#
#   1. bench/train.py: eager fp32 reference vs the optimized path (CUDA graph + fused Adam), issue 7's
#      speed line → $OUT/train-bench.json
#   2. RenderBEGAN on DOMAIN with configs/DOMAIN-gpu.yaml (thesis defaults) for TRAIN_MINUTES; SIGTERM
#      at the limit checkpoints the run → $OUT/log.jsonl, the last sample grid
#   3. `labelforge eval` (full) of that run → $OUT/report.json, report.md
#   4. `labelforge export` of the run, eval attached → $OUT/bundle.tar (the checkpoint itself, with D
#      and the optimizer states, is too big to come back: a c=32 run is ~50 MB)
#
# Every step has its own time limit and the next runs even if one fails, so a call always returns
# what it got; $OUT/session.log has the whole output. On the device tool:
#
#   scripts/device-wheels.sh      # here, once: pydantic + typer wheels for the device's Python 3.12
#   run(command="DOMAIN=faces-m TRAIN_MINUTES=4 scripts/gpu-session.sh", carry=[".whl"], timeout_s=590)
#
# Here (no GPU), tests/deploy/test_gpu_session.py (`make test-all`) runs this script end to end on the CPU
# with a tiny configuration (DEVICE=cpu, EXTRA="--set net.c=4 …", EVAL=--quick, RUN and BUNDLE_DIR in a
# temporary folder), so no GPU minute goes to finding a typo in it.
set -uo pipefail
cd "$(dirname "$0")/.."
DOMAIN=${DOMAIN:-faces-m}
DEVICE=${DEVICE:-cuda}
TRAIN_MINUTES=${TRAIN_MINUTES:-4}
EVAL=${EVAL:-}               # "--quick" for the small evaluation
BENCH_ARGS=${BENCH_ARGS:-}   # extra bench/train.py arguments
EXTRA=${EXTRA:-}             # extra `labelforge train renderbegan` arguments (--set key=value …)
OUT=${OUT:?set OUT to the folder whose files come back}
RUN=${RUN:-runs/renderbegan-$DOMAIN-gpu}   # resumed when it exists
BUNDLE_DIR=${BUNDLE_DIR:-bundles-gpu/$DOMAIN}
mkdir -p "$OUT"
exec > >(tee "$OUT/session.log") 2>&1

PY=${PYTHON:-python3}
if ! "$PY" -c "import pydantic" 2>/dev/null && compgen -G ".whl/*.whl" > /dev/null; then  # the device lacks pydantic
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "wheel install failed"; exit 1; }
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD PYTHONUNBUFFERED=1
LF=("$PY" -m service.cli)
step() { echo "== $(date -u +%H:%M:%S) $*"; }
failed=()

step "device"
"$PY" -c "import torch; print(torch.__version__, torch.cuda.is_available() and torch.cuda.get_device_name(0))"

step "1/4 bench/train.py"
# shellcheck disable=SC2086  # BENCH_ARGS is a list of arguments
timeout --signal=TERM 150 "$PY" bench/train.py --device "$DEVICE" --out "$OUT/train-bench.json" $BENCH_ARGS \
  || failed+=(bench)

step "2/4 train renderbegan on $DOMAIN for $TRAIN_MINUTES min"
if [ -f "$RUN/training_options.json" ]; then args=(--resume); else args=(--config "configs/$DOMAIN-gpu.yaml"); fi
# shellcheck disable=SC2086  # EXTRA is a list of arguments
timeout --signal=TERM --kill-after=60 "${TRAIN_MINUTES}m" \
  "${LF[@]}" train renderbegan --domain "$DOMAIN" --out "$RUN" --device "$DEVICE" "${args[@]}" $EXTRA
rc=$?; [ $rc -ne 0 ] && [ $rc -ne 124 ] && failed+=(train)  # 124: stopped at the time limit, checkpointed
cp "$RUN/log.jsonl" "$OUT/" 2>/dev/null
last_grid=$(ls "$RUN"/samples/iter_*.png 2>/dev/null | tail -1)
[ -n "$last_grid" ] && cp "$last_grid" "$OUT/"

step "3/4 eval"
# shellcheck disable=SC2086  # EVAL is empty or --quick
timeout --signal=TERM 240 "${LF[@]}" eval --run "$RUN" --device "$DEVICE" $EVAL \
  && cp "$RUN/eval/report.json" "$RUN/eval/report.md" "$OUT/" || failed+=(eval)

step "4/4 export"
timeout --signal=TERM 90 "${LF[@]}" export --run "$RUN" --out "$BUNDLE_DIR" \
  && tar -cf "$OUT/bundle.tar" -C "$(dirname "$BUNDLE_DIR")" "$(basename "$BUNDLE_DIR")" || failed+=(export)
ls -la "$OUT"
if [ ${#failed[@]} -gt 0 ]; then step "failed: ${failed[*]}"; exit 1; fi
step "done"

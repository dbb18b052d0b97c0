#!/usr/bin/env bash
# A/B of two source trees in one GPU lease: `phyx bench models` alternating between a BASE tree
# (e.g. `git archive <commit> | tar -x -C .base`) and this tree, REPEATS times each, so the
# difference between two runs of the same tree (the noise) is measured beside the difference
# between the trees. Results: $OUT/{base,new}-<rep>.json and .log.
#   BASE=.base REPEATS=2 MODES=forward,train LAYERS=8 benchmarks/tools/ab_trees.sh
set -u
cd "$(dirname "$0")/../.."
OUT=${OUT:-$PWD/out/ab}; mkdir -p "$OUT"
BASE=${BASE:-.base}; REPEATS=${REPEATS:-2}; MODES=${MODES:-forward,train}; LAYERS=${LAYERS:-8}
PEER=${PEER:-}   # set to --no-peer to skip diffusers in every run
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1
if [ -d .whl ] && ! python3 -c "import diffusers" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export SITE=/tmp/site
fi
run() {  # run TREE NAME EXTRA...
  local tree=$1 name=$2; shift 2
  PYTHONPATH="$tree:$tree/backends:$tree/patches${SITE:+:$SITE}" timeout ${RUN_TIMEOUT:-280} \
    python3 -m phyx.cli bench models --backend cuda --modes "$MODES" --layers "$LAYERS" \
    ${MODELS:+--models $MODELS} "$@" --out "$OUT/$name.json" 2>&1 | tee "$OUT/$name.log" | grep -E "=>|ms" || true
}
for r in $(seq 1 "$REPEATS"); do
  run "$BASE" "base-$r" $PEER
  run "$PWD" "new-$r" $PEER
done
echo "ab done: $(ls "$OUT")"

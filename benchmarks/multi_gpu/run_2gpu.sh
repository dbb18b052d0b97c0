#!/usr/bin/env bash
# Multi-GPU parity and scaling (issue 10) on one host with N GPUs (default 2), one command:
#   benchmarks/multi_gpu/run_2gpu.sh                     # on the GPU machine; results in $OUT
#   NGPU=4 benchmarks/multi_gpu/run_2gpu.sh              # 4 or 8 GPUs: hybrid layouts run too
#   STEPS="env fp32 wan14b_720p" benchmarks/multi_gpu/run_2gpu.sh   # a subset
#   benchmarks/multi_gpu/run_2gpu.sh --dry-run           # print the plan and the estimate only
# Steps (each time-boxed, so one hang cannot eat the rest):
#   env          GPUs, versions, phyx backend check (must be cuda + nccl)
#   fp32         Wan 1.3B 480p, fp32, TF32 off, 4 blocks: every layout must match at rel L2 < 1e-5
#   wan14b_480p  Wan2.1 14B 480p (latent 21x60x104, seq 32760), bf16, LAYERS_14B blocks
#   wan14b_720p  Wan2.1 14B 720p (latent 21x90x160, seq 75600), bf16, LAYERS_14B blocks
#   single       one GPU (torchrun, NCCL world size 1): t1 of Wan 14B 720p, cond and guided
#   wan1.3b      Wan2.1 1.3B 480p, bf16, all 30 blocks
#   predict2     Cosmos-Predict2 2B Video2World 720p (24x88x160), bf16, LAYERS_COSMOS blocks
#   cosmos3      Cosmos3-Nano 720p (48 x 24x44x80 vision latents), bf16, LAYERS_COSMOS blocks
# What comes back (few files, as the device tool returns at most 8): $OUT/run.log (every
# table and log), $OUT/env.txt, and one merged JSON $OUT/multi_gpu_<date>_<gpu>x<N>.json,
# rewritten after every step, so a cut-off call keeps the finished steps. Copy it into
# benchmarks/results/.
set -u
cd "$(dirname "$0")/../.."
OUT=${OUT:-$PWD/out/multi_gpu}
NGPU=${NGPU:-2}
LAYERS_14B=${LAYERS_14B:-8}
LAYERS_COSMOS=${LAYERS_COSMOS:-8}
WARMUP=${WARMUP:-1}
ITERS=${ITERS:-3}
STEPS=${STEPS:-"env fp32 wan14b_480p wan14b_720p single wan1.3b predict2 cosmos3"}
DRY=0; CPU=0
[ "${1:-}" = "--dry-run" ] && DRY=1
# --cpu: the same steps on the CPU with gloo and tiny models (proves this script without a GPU)
[ "${1:-}" = "--cpu" ] && { CPU=1; export PHYX_BACKEND=cpu OMP_NUM_THREADS=1; }
PY=${PY:-python3}
RUNS=/tmp/phyx_mgpu_runs
mkdir -p "$OUT" "$RUNS"
# NVLink multicast stays off (shared hosts); unbuffered output so a killed step still logs.
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export PHYX_DIST_TIMEOUT_S=${PHYX_DIST_TIMEOUT_S:-300}
LOG="$OUT/run.log"
say() { echo "$*" | tee -a "$LOG"; }

# ---- install phyx from this tree, without touching the machine's torch --------------------------
if ! $PY -c "import phyx_cuda" 2>/dev/null; then
  # no registry on the device machine: no build isolation (it would fetch setuptools)
  $PY -m pip install -q --no-deps --no-build-isolation -e . >"$RUNS/pip.log" 2>&1 \
    || say "pip install -e . failed ($(tail -1 "$RUNS/pip.log")); using PYTHONPATH"
fi
export PYTHONPATH=$PWD:$PWD/backends${PYTHONPATH:+:$PYTHONPATH}
# What phyx imports at run time beside torch: numpy and safetensors (needed here), tqdm and
# einops (elsewhere in phyx). Missing ones come from wheels carried in .whl/ when present.
MISSING=""
for m in numpy safetensors tqdm einops; do $PY -c "import $m" 2>/dev/null || MISSING="$MISSING $m"; done
if [ -n "$MISSING" ]; then
  for m in $MISSING; do
    for w in .whl/${m}-*.whl; do
      [ -f "$w" ] && $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site "$w" \
        && export PYTHONPATH=/tmp/site:$PYTHONPATH
    done
  done
fi
$PY -c "import numpy, safetensors" 2>/dev/null || { say "FATAL: numpy and safetensors must import (missing:$MISSING); carry their wheels in .whl/"; exit 2; }

GPU=$($PY -c "import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu')" 2>/dev/null \
      | tr -c 'A-Za-z0-9.\n' '-' | tr -s '-' | sed 's/-$//')
MERGED="$OUT/multi_gpu_$(date -u +%F)_${GPU:-unknown}x${NGPU}.json"

# ---- the plan: name | seconds limit | arguments ----------------------------------------------------
MODES=${MODES:-tp,sp,ring,cfg,hybrid}
plan() {
  case $1 in
    fp32)        echo "--model wan-1.3b --res 480p --layers 4 --dtype fp32 --modes $MODES" ;;
    wan14b_480p) echo "--model wan-14b --res 480p --layers $LAYERS_14B --modes $MODES" ;;
    wan14b_720p) echo "--model wan-14b --res 720p --layers $LAYERS_14B --modes $MODES" ;;
    single)      echo "--model wan-14b --res 720p --layers $LAYERS_14B --modes $MODES" ;;
    wan1.3b)     echo "--model wan-1.3b --res 480p --modes $MODES --fp32-floor" ;;
    predict2)    echo "--model cosmos-predict2-2b --res 720p --layers $LAYERS_COSMOS --modes $MODES" ;;
    cosmos3)     echo "--model cosmos3-nano --res 720p --layers $LAYERS_COSMOS --modes $MODES" ;;
  esac
}
if [ $CPU = 1 ]; then
  plan() {
    case $1 in
      fp32|wan14b_480p|wan14b_720p|single|wan1.3b) echo "--model wan-tiny --res tiny --modes $MODES" ;;
      predict2) echo "--model cosmos-predict2-tiny --res tiny --modes $MODES" ;;
      cosmos3)  echo "--model cosmos3-tiny --res tiny --modes $MODES" ;;
    esac
  }
fi
nproc_of() { [ "$1" = single ] && echo 1 || echo "$NGPU"; }

# ---- expected runtime (FLOP model in mg_estimate.py; assumptions, not measurements) -----------
TOTAL=20
for s in $STEPS; do
  [ "$s" = env ] && continue
  line=$($PY benchmarks/multi_gpu/parallel_parity.py $(plan $s) --warmup $WARMUP --iters $ITERS \
         --estimate "$(nproc_of $s)" ${PHYX_BACKEND:+--backend $PHYX_BACKEND} 2>&1 | tail -1)
  say "plan $s: $line"
  sec=$(echo "$line" | sed -n 's/.*: ~\([0-9]*\) s .*/\1/p')
  TOTAL=$((TOTAL + ${sec:-60}))
done
say "expected runtime of STEPS=\"$STEPS\" on $NGPU x $GPU: ~${TOTAL} s ($((TOTAL / 60)) min); the device tool allows 600 s per call"
[ $TOTAL -gt 540 ] && say "that is close to or over one call's 600 s: split it, e.g. STEPS=\"env fp32 wan14b_480p wan14b_720p single\" then STEPS=\"env wan1.3b predict2 cosmos3\""
[ $DRY = 1 ] && exit 0

merge() {  # every finished run's JSON into one file, atomically
  $PY - "$MERGED" "$RUNS" <<'EOF'
import glob, json, os, sys
out, runs = sys.argv[1], sys.argv[2]
res = {}
for f in sorted(glob.glob(os.path.join(runs, "*.json")), key=os.path.getmtime):
    try:
        res[os.path.basename(f)[:-5]] = json.load(open(f))
    except ValueError as e:
        res[os.path.basename(f)[:-5]] = {"status": "unreadable", "error": str(e)}
tmp = out + ".tmp"
json.dump({"schema": "phyx.multi_gpu_parity.merged/1", "runs": res}, open(tmp, "w"), indent=1)
os.replace(tmp, out)
EOF
}

for s in $STEPS; do
  if [ "$s" = env ]; then
    {
      echo "date: $(date -u +%FT%TZ)"
      nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1
      nvidia-smi topo -m 2>&1 | head -12
      $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'gpus', torch.cuda.device_count(), 'nccl', torch.cuda.nccl.version() if torch.cuda.is_available() else None)"
      $PY -m phyx.cli info 2>&1 | head -20
      $PY -c "import phyx; b = phyx.get_backend(); print('phyx backend', b.name, b.dist_backend); assert $CPU or b.name == 'cuda', 'phyx did not select the cuda backend'"
    } 2>&1 | tee "$OUT/env.txt" | tee -a "$LOG"
    continue
  fi
  args=$(plan "$s")
  [ -z "$args" ] && { say "unknown step $s"; continue; }
  n=$(nproc_of "$s")
  say "=== $s: torchrun --nproc_per_node $n parallel_parity.py $args"
  rm -f "$RUNS/$s.json"          # never merge a stale result of an earlier call under this name
  if [ "$n" = 1 ]; then export CUDA_VISIBLE_DEVICES=0; fi
  timeout --kill-after=20 "${STEP_LIMIT_S:-420}" $PY -m torch.distributed.run --standalone --nproc_per_node "$n" \
    benchmarks/multi_gpu/parallel_parity.py $args --warmup "$WARMUP" --iters "$ITERS" \
    --out "$RUNS/$s.json" >>"$LOG" 2>&1
  rc=$?
  unset CUDA_VISIBLE_DEVICES
  say "=== $s: exit $rc"
  merge
done

# ---- summary: every table again, at the end of the output ------------------------------------
$PY - "$MERGED" <<'EOF' 2>&1 | tee -a "$LOG"
import json, sys
sys.path.insert(0, "benchmarks/multi_gpu")
from parallel_parity import format_table
runs = json.load(open(sys.argv[1]))["runs"]
for name, r in runs.items():
    print(f"--- {name} ({r.get('status')}, {r.get('elapsed_s', 0):.0f} s; estimated "
          f"{r.get('estimate', {}).get('total_s', 0):.0f} s)")
    try:
        print(format_table(r))
    except Exception as e:
        print(f"(no table: {type(e).__name__}: {e})")
EOF
echo "results: $MERGED"

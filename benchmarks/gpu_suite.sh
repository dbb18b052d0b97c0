#!/usr/bin/env bash
# One call on a GPU machine: CUDA backend tests, op parity on cuda, op benchmarks, model steps.
#   benchmarks/gpu_suite.sh            # on the GPU machine (writes into $OUT, default ./out/gpu)
#   benchmarks/gpu_suite.sh --cpu      # dry run of the same steps on the CPU, tiny shapes
# Steps: STEPS="tests parity certify ops models" (default all). certify: on cuda it records the
# NPU certificate's reference set into $OUT/certify_artifacts (copy it to
# phyx/tools/certify/artifacts); on npu / npu-emulated it runs `phyx certify` into $OUT/certificate. Each step is time-boxed so one hang
# cannot eat the rest; every log and JSON lands in $OUT. Knobs: OPS_SECTIONS, OPS_NAME, MODELS,
# MODES, PEER_ATTENTION (native | fa4), MODELS_NAME, PROFILE (a folder: vendor profiler traces),
# BACKEND (default cuda; cpu with --cpu), *_TIMEOUT.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/out/gpu}
mkdir -p "$OUT"
MODE=gpu
[ "${1:-}" = "--cpu" ] && MODE=cpu
STEPS=${STEPS:-"tests parity certify ops models"}
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1
PY=${PY:-python3}

# diffusers (and importlib_metadata) travel as wheels in .whl where the machine lacks them
if [ -d .whl ] && ! $PY -c "import diffusers" 2>/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
# FlashAttention-4 (optional): travels as .fa4a/ + .fa4b/ (benchmarks/tools/fa4_install.sh)
if [ -d .fa4a ] || [ -d .fa4b ]; then bash benchmarks/tools/fa4_install.sh; fi
if [ -d /tmp/site/nvidia_cutlass_dsl ]; then
  export PYTHONPATH=/tmp/site:/tmp/site/nvidia_cutlass_dsl/dsl_packages${PYTHONPATH:+:$PYTHONPATH}
fi
# phyx from this tree without touching the machine's torch
export PYTHONPATH=$PWD:$PWD/backends${PYTHONPATH:+:$PYTHONPATH}

# BACKEND: cuda by default; benchmarks/npu_suite.sh runs these same steps with BACKEND=npu
if [ "$MODE" = cpu ]; then BACKEND=${BACKEND:-cpu}; QUICK=--quick; else BACKEND=${BACKEND:-cuda}; QUICK=; fi
case $BACKEND in
  cuda) BACKEND_TESTS="tests/backend/test_cuda_backend.py tests/backend/test_triton_kernels.py" ;;
  npu|npu-emulated) BACKEND_TESTS="tests/backend/test_npu_backend.py tests/backend/test_npu_emulator.py" ;;
  *) BACKEND_TESTS="tests/backend/test_cuda_backend.py tests/backend/test_triton_kernels.py" ;;
esac
# PROFILE=DIR: the vendor profiler (torch_npu's on an NPU) around the ops run and one extra step
# of every model row, traces under DIR
PROFILE_OPS=${PROFILE:+--profile $PROFILE/ops}
PROFILE_MODELS=${PROFILE:+--profile $PROFILE/models}

{
  echo "date: $(date -u +%FT%TZ)"
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv 2>/dev/null
  command -v npu-smi >/dev/null && npu-smi info 2>/dev/null
  env | grep -E '^(TASK_QUEUE_ENABLE|CPU_AFFINITY_CONF|PYTORCH_NPU_ALLOC_CONF|ASCEND_RT_VISIBLE_DEVICES)=' || true
  $PY - <<'EOF'
import torch, importlib
print("torch", torch.__version__, "cuda", torch.version.cuda, "gpu", torch.cuda.is_available())
for m in ("triton", "diffusers", "transformers", "flash_attn", "flash_attn_interface", "flash_attn.cute"):
    try:
        print(m, getattr(importlib.import_module(m), "__version__", "?"))
    except Exception as e:
        print(m, "MISSING", type(e).__name__)
EOF
  $PY -m phyx.cli info --backend "$BACKEND"
} 2>&1 | tee "$OUT/env.txt"


for step in $STEPS; do
  case $step in
    tests)
      timeout ${TESTS_TIMEOUT:-240} $PY -m pytest -q -p no:cacheprovider $BACKEND_TESTS -rs --tb=short 2>&1 | tee "$OUT/tests.log" | tail -50 ;;
    parity)
      timeout 150 $PY -m pytest -q -p no:cacheprovider tests/ops/test_ops_parity.py --backend "$BACKEND" --tb=line 2>&1 | tee "$OUT/parity.log" | tail -30 ;;
    certify)
      case $BACKEND in
        cuda) timeout ${CERTIFY_TIMEOUT:-300} $PY -m phyx.cli certify record --backend cuda --overwrite \
                --out "$OUT/certify_artifacts" 2>&1 | tee "$OUT/certify.log" ;;
        npu|npu-emulated) timeout ${CERTIFY_TIMEOUT:-600} $PY -m phyx.cli certify --backend "$BACKEND" \
                --out "$OUT/certificate" 2>&1 | tee "$OUT/certify.log" | tail -40 ;;
        *) echo "certify: nothing to do on $BACKEND" ;;
      esac ;;
    ops)
      timeout ${OPS_TIMEOUT:-330} $PY -m phyx.cli bench ops --backend "$BACKEND" $QUICK ${OPS_SECTIONS:+--sections $OPS_SECTIONS} $PROFILE_OPS \
        --out "$OUT/${OPS_NAME:-ops}.json" 2>&1 | tee "$OUT/${OPS_NAME:-ops}.log" ;;
    models)
      timeout ${MODELS_TIMEOUT:-560} $PY -m phyx.cli bench models --backend "$BACKEND" $QUICK ${MODELS:+--models $MODELS} \
        ${MODES:+--modes $MODES} ${PEER_ATTENTION:+--peer-attention $PEER_ATTENTION} $PROFILE_MODELS \
        --out "$OUT/${MODELS_NAME:-models}.json" 2>&1 | tee "$OUT/${MODELS_NAME:-models}.log" ;;
  esac
done
echo "suite done: $(ls "$OUT")"

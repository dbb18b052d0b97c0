#!/usr/bin/env bash
# The benchmark suite on an Ascend NPU machine (torch, torch_npu and CANN installed, the toolkit's
# set_env.sh sourced): the same steps and outputs as gpu_suite.sh, through phyx's npu backend.
#   benchmarks/npu_suite.sh                     # on the NPU machine: JSON + logs into $OUT
#   PROFILE=out/prof benchmarks/npu_suite.sh    # plus torch_npu.profiler traces (for MindStudio)
#   benchmarks/npu_suite.sh --emulated          # rehearsal on any CPU machine: npu-emulated, tiny
#                                               # shapes (proves the path and the files, no numbers)
# Host settings: Ascend's documented speed-ups are applied only where the caller left them unset
# (TASK_QUEUE_ENABLE=2: level-2 task queue; CPU_AFFINITY_CONF=2: fine-grained core binding;
# PYTORCH_NPU_ALLOC_CONF=expandable_segments:True), and each JSON records what was in effect
# (meta.host.settings). Then `phyx bench merge gpu/models.json npu/models.json` is the
# cross-vendor table. Never run on hardware here: no Ascend NPU was available to this project.
set -u
cd "$(dirname "$0")/.."
export TASK_QUEUE_ENABLE=${TASK_QUEUE_ENABLE:-2}
export CPU_AFFINITY_CONF=${CPU_AFFINITY_CONF:-2}
export PYTORCH_NPU_ALLOC_CONF=${PYTORCH_NPU_ALLOC_CONF:-expandable_segments:True}
if [ "${1:-}" = "--emulated" ]; then
  OUT=${OUT:-$PWD/out/npu-emulated} BACKEND=npu-emulated exec bash benchmarks/gpu_suite.sh --cpu
fi
OUT=${OUT:-$PWD/out/npu} BACKEND=npu exec bash benchmarks/gpu_suite.sh

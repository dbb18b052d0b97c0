#!/usr/bin/env bash
# Installs FlashAttention-4 (flash-attn-4, CuTe DSL) into /tmp/site on a GPU machine that cannot
# reach a package index. Its compiler wheel (nvidia-cutlass-dsl-libs-cu13, 88 MiB) exceeds the
# device tool's 64 MiB carry, so it travels xz-compressed in two parts: .fa4a/ (first call) and
# .fa4b/ (second call, with the small wheels). Then: export PYTHONPATH as printed.
set -euo pipefail
if [ -f /tmp/site/.fa4_installed ]; then echo "fa4_install: already installed"; exit 0; fi
mkdir -p /tmp/fa4parts
cp .fa4a/cu13.part.* /tmp/fa4parts/ 2>/dev/null || true
cp .fa4b/cu13.part.* /tmp/fa4parts/ 2>/dev/null || true
if [ ! -f /tmp/fa4parts/cu13.part.ab ] || [ ! -f /tmp/fa4parts/cu13.part.aa ]; then
  echo "fa4_install: have $(ls /tmp/fa4parts) so far; carry the other part next"; exit 0
fi
cat /tmp/fa4parts/cu13.part.* > /tmp/fa4parts/cu13.tar.xz
md5sum /tmp/fa4parts/cu13.tar.xz
# pip --target --upgrade replaces whole top-level folders, so the shared nvidia_cutlass_dsl/
# gets the untarred compiler libraries after pip, not before.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .fa4b/*.whl
tar -xJf /tmp/fa4parts/cu13.tar.xz -C /tmp/site
touch /tmp/site/.fa4_installed
echo "fa4_install: done; export PYTHONPATH=/tmp/site:/tmp/site/nvidia_cutlass_dsl/dsl_packages"

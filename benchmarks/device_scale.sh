#!/usr/bin/env bash
# The GPU check of this stop, one call of the `device` tool (a bare machine with PyTorch, timm and
# transformers but none of our other dependencies, and no network). Carry `.whl` (diffusers and
# pydantic wheels for the machine's Python 3.12, see docs/gpu-check.md); the project goes on the path
# through a package shim, not an install. It runs:
#   1. benchmarks/stages_gpu.py: Flow-GRPO rollout and update, DMD step, `small` preset, bf16, torch.compile;
#   2. benchmarks/gpu_scale.py: per-GPU images/s of the CLIP towers and tokens/s of a Qwen3-VL-2B-shaped
#      captioner (the figures docs/scale.md is calibrated by).
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUTDIR=${OUT:-/tmp/device-out}
mkdir -p "$OUTDIR"
if [ -d "$ROOT/.whl" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$ROOT"/.whl/*.whl || exit 3
fi
SHIM=/tmp/fw-shim
rm -rf "$SHIM" && mkdir -p "$SHIM"
cp -r "$ROOT/flywheel" "$SHIM/flywheel"
for d in filters captioning training models; do rm -f "$SHIM/flywheel/$d"; ln -s "$ROOT/$d" "$SHIM/flywheel/$d"; done
export PYTHONPATH="/tmp/site:$SHIM:$ROOT/benchmarks" HF_HUB_OFFLINE=1 DO_NOT_TRACK=1 PYTHONUNBUFFERED=1
cd /tmp
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c "import torch, transformers, timm; print('torch', torch.__version__, 'transformers', transformers.__version__, 'timm', timm.__version__)"
t0=$SECONDS
timeout 330 python3 "$ROOT/benchmarks/stages_gpu.py" --device cuda --preset small --bf16 --compile --buckets 512 \
  --iters 3 --warmup 1 --out "$OUTDIR/stages_gpu.json" 2>&1 | tail -25
echo "stages_gpu: $((SECONDS - t0)) s"
t0=$SECONDS
timeout 200 python3 "$ROOT/benchmarks/gpu_scale.py" --out "$OUTDIR/gpu_scale.json" 2>&1 | tail -25
echo "gpu_scale: $((SECONDS - t0)) s"

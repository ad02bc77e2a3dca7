#!/usr/bin/env bash
# GPU check of the `small` preset: a few hundred steps with bf16 autocast and torch.compile on synthetic
# 512px scenes; prints step time, peak memory and MFU (goal >= 35% on an H100). Prepared for the `device`
# tool (one H100/H200); the lead decides when to run it. Weights are random (none can be downloaded):
# this measures throughput, not quality.
#
#   bash benchmarks/train_gpu.sh [STEPS=300] [RESOLUTION=512] [BATCH=16]
set -euo pipefail
STEPS=${1:-300}
RES=${2:-512}
BATCH=${3:-16}
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
if ! "$PY" -c "import flywheel.training.trainer" 2>/dev/null; then
  "$PY" -m pip install -q --no-deps --no-build-isolation -e . || { echo "cannot import flywheel; install the project first"; exit 2; }
fi
WORK=${OUT:-/tmp}/train-gpu
rm -rf "$WORK" && mkdir -p "$WORK"
export HF_HUB_OFFLINE=1 FLYWHEEL_HOME="$WORK/home" STEPS RES BATCH WORK
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
"$PY" - <<'PY'
import json, os, statistics, sys, time
import torch
sys.path.insert(0, "benchmarks")
from train_step import flops_per_step, mfu
from flywheel.training import synthetic as syn
from flywheel.training.config import TrainConfig
from flywheel.training.trainer import main
from flywheel.models import qwen_image as qi

steps, res, batch, work = int(os.environ["STEPS"]), int(os.environ["RES"]), int(os.environ["BATCH"]), os.environ["WORK"]
t0 = time.time()
syn.write_dataset(f"{work}/data", batch * 20, seed=0, size=res, split="train", suite="shapes")
print(f"data: {time.time() - t0:.0f}s", flush=True)
torch.cuda.reset_peak_memory_stats()
cfg = TrainConfig(datasets=[f"{work}/data"], out=f"{work}/out", preset="small", vae="small", resolution=res, steps=steps,
                  batch_size=batch, bf16=True, compile=True, device="cuda", log_every=20, ti2i_ratio=0.0,
                  caption_probs={"original": 1.0}, ckpt_every=10**9, progress=False)
r = main(cfg)
recs = [json.loads(l) for l in open(f"{work}/out/metrics.jsonl")]
steady = [x["sec_per_step"] for x in recs[2:]] or [recs[-1]["sec_per_step"]]  # skip compile + first (encoding) epoch
sec = statistics.median(steady)
tcfg = json.load(open(f"{work}/out/transformer/config.json"))
last = recs[-1]
flops = flops_per_step(tcfg, last["batch"], last["img_tokens"], last["txt_tokens"])
name = torch.cuda.get_device_name()
peak = 989.0  # dense bf16 TFLOPS, H100/H200 SXM
params = sum(v.numel() for v in qi.load_transformer(f"{work}/out").parameters())
print(f"device: {name}; small preset {params / 1e6:.0f}M params; {res}px, batch {batch}, "
      f"{last['img_tokens']} image + {last['txt_tokens']} text tokens")
print(f"step time (median after warm-up): {sec * 1000:.1f} ms; first interval {recs[0]['sec_per_step'] * 1000:.0f} ms/step")
print(f"peak memory: {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
print(f"model FLOPs/step: {flops / 1e12:.2f} TFLOP; MFU vs {peak:.0f} TFLOPS bf16: {mfu(flops, sec, peak):.1%}")
print(f"loss: first {recs[0]['loss']:.4f} -> last {last['loss']:.4f}")
PY

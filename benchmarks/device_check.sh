#!/usr/bin/env bash
# The GPU check run through the `device` tool (a bare machine with PyTorch and transformers but
# none of our other dependencies, and no network). Carry `.devdeps` (diffusers installed with
# `pip install --no-deps --target .devdeps diffusers==<ours>`): the project is put on the path
# through a package shim instead of an install, and the text encoder is a tiny random Qwen3-VL
# made there (MiniLM's weights are too large to carry). Then the `small` preset trains with bf16
# autocast and torch.compile: step time, peak memory, MFU (benchmarks/train_gpu.sh's measurement).
#   bash benchmarks/device_check.sh [STEPS] [RES] [BATCH]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHIM=/tmp/fw-shim
rm -rf "$SHIM" && mkdir -p "$SHIM"
cp -r "$ROOT/flywheel" "$SHIM/flywheel"
for d in filters captioning training models; do ln -s "$ROOT/$d" "$SHIM/flywheel/$d"; done
export PYTHONPATH="$ROOT/.devdeps:$SHIM:$ROOT/benchmarks" HF_HUB_OFFLINE=1 DO_NOT_TRACK=1
export STEPS=${1:-200} RES=${2:-512} BATCH=${3:-16} WORK=${OUT:-/tmp}/train-gpu
rm -rf "$WORK" && mkdir -p "$WORK" && export FLYWHEEL_HOME="$WORK/home"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
cd "$WORK"  # not the repo root: its own flywheel/ (without the mapped packages) would shadow the shim
python3 - <<'PY'
import json, os, statistics, time
import torch
from train_step import flops_per_step, mfu
from flywheel.training import synthetic as syn
from flywheel.training.config import TrainConfig
from flywheel.training.trainer import main
from flywheel.models import qwen_image as qi
from flywheel.models.text_encoders import save_tiny_qwen3vl

steps, res, batch, work = int(os.environ["STEPS"]), int(os.environ["RES"]), int(os.environ["BATCH"]), os.environ["WORK"]
print("torch", torch.__version__, "| device", torch.cuda.get_device_name(), flush=True)
t0 = time.time()
enc = save_tiny_qwen3vl(f"{work}/qwen3vl-tiny", hidden=64)
syn.write_dataset(f"{work}/data", batch * 20, seed=0, size=res, split="train", suite="shapes")
print(f"setup (tiny encoder + {batch * 20} scenes): {time.time() - t0:.0f}s", flush=True)
results = {}
for compile_ in (False, True):
    torch.cuda.reset_peak_memory_stats()
    out = f"{work}/out-{int(compile_)}"
    cfg = TrainConfig(datasets=[f"{work}/data"], out=out, preset="small", vae="small", resolution=res, steps=steps,
                      batch_size=batch, bf16=True, compile=compile_, device="cuda", log_every=20, ti2i_ratio=0.0,
                      caption_probs={"original": 1.0}, ckpt_every=10**9, progress=False, text_encoder=str(enc))
    t1 = time.time()
    main(cfg)
    recs = [json.loads(l) for l in open(f"{out}/metrics.jsonl")]
    steady = [x["sec_per_step"] for x in recs[2:]] or [recs[-1]["sec_per_step"]]
    sec = statistics.median(steady)
    tcfg = json.load(open(f"{out}/transformer/config.json"))
    last = recs[-1]
    flops = flops_per_step(tcfg, last["batch"], last["img_tokens"], last["txt_tokens"])
    params = sum(v.numel() for v in qi.load_transformer(out).parameters())
    results[compile_] = sec
    print(f"compile={compile_}: small preset {params / 1e6:.0f}M params, {res}px, batch {batch}, "
          f"{last['img_tokens']} image + {last['txt_tokens']} text tokens; step {sec * 1000:.1f} ms (median after "
          f"warm-up); peak memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB; {flops / 1e12:.2f} TFLOP/step; "
          f"MFU {mfu(flops, sec, 989.0):.1%} of 989 TFLOPS bf16; loss {recs[0]['loss']:.4f} -> {last['loss']:.4f}; "
          f"run {time.time() - t1:.0f}s", flush=True)
print(f"compile speed-up: {results[False] / results[True]:.2f}x")
PY

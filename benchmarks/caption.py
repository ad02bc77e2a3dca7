"""Captioning throughput on the tiny random Qwen3-VL (real tokenizer, processor and model code).

Three comparisons, each against a baseline measured in the same run; start-up (model build, load,
server start) is reported apart and excluded from the ratios:
  1. batched generation (batch 8) vs one by one               goal >= 3x
  2. server backend, client concurrency 8 vs 1, through the
     server's batching of concurrent requests                 goal >= 4x
  3. cache-hit rerun vs first run of the Captioner            goal >= 50x

    .venv/bin/python benchmarks/caption.py [--n 16] [--tokens 16] [--device cpu|cuda] [--model DIR]
"""

from __future__ import annotations

import argparse
import io
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def png(seed: int, size=(96, 64)) -> bytes:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    im = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=16, help="requests / rows per measurement")
    ap.add_argument("--tokens", type=int, default=16, help="new tokens per caption")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--model", default=None, help="a Qwen3-VL dir (default: build the tiny random one)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--skip-server", action="store_true")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    os.environ.setdefault("FLYWHEEL_HOME", tempfile.mkdtemp(prefix="fw-bench-"))
    from flywheel.captioning.annotate import Captioner
    from flywheel.captioning.backends import OpenAIBackend, Request, TransformersBackend
    from flywheel.captioning.types import Prompt

    startup: dict[str, float] = {}
    results: list[tuple[str, float, float, float, float]] = []  # name, baseline s, new s, ratio, goal
    tmp = Path(tempfile.mkdtemp(prefix="caption-bench-"))
    model = args.model
    if model is None:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tiny model is test code
        from builders import tiny_qwen3vl_captioner

        startup["build tiny model"], model = timed(lambda: str(tiny_qwen3vl_captioner(tmp / "tiny")))

    be = TransformersBackend(model, max_new_tokens=args.tokens, batch_size=8, device=args.device)
    startup["load model"], _ = timed(be.setup)
    reqs = [Request([png(i)], Prompt("general", "You annotate images.", "Describe this image.")) for i in range(args.n)]
    be.generate(reqs[:8])  # warm-up
    t_one, one = timed(lambda: [be.generate([r])[0] for r in reqs])
    t_batch, batched = timed(lambda: be.generate(reqs))
    same = sum(a == b for a, b in zip(one, batched))
    results.append(("batched (8) vs one by one", t_one, t_batch, t_one / t_batch, 3.0))
    print(f"batched == one by one for {same}/{len(reqs)} captions (greedy)")

    if not args.skip_server:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        t0 = time.perf_counter()
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        proc = subprocess.Popen([sys.executable, "-m", "flywheel.captioning.server", "--model", model, "--port", str(port),
                                 "--device", args.device,
                                 "--max-batch", "8", "--max-wait-ms", "30", "--max-new-tokens", str(args.tokens)],
                                env=env, stdout=subprocess.DEVNULL, stderr=open(tmp / "server.log", "wb"))
        try:
            import httpx

            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    if proc.poll() is not None:
                        raise RuntimeError("caption server exited: " + (tmp / "server.log").read_text()[-3000:])
                    time.sleep(0.5)
            startup["start server"] = time.perf_counter() - t0
            url = f"http://127.0.0.1:{port}/v1"
            c1 = OpenAIBackend(base_url=url, concurrency=1, max_tokens=args.tokens)
            c8 = OpenAIBackend(base_url=url, concurrency=8, max_tokens=args.tokens)
            c1.setup(), c8.setup()
            c8.generate(reqs[:8])  # warm-up
            t1, _ = timed(lambda: c1.generate(reqs))
            t8, _ = timed(lambda: c8.generate(reqs))
            sizes = httpx.get(f"http://127.0.0.1:{port}/health").json()["batch_sizes"]
            results.append(("server: concurrency 8 vs 1", t1, t8, t1 / t8, 4.0))
            print(f"server batch sizes (last run): {sizes[-max(1, args.n // 8 + 2):]}")
        finally:
            proc.terminate()
            proc.wait(30)

    import pyarrow as pa

    from flywheel.datasets import sample_id

    imgs = [png(1000 + i) for i in range(args.n)]
    table = pa.table({"id": [sample_id(b) for b in imgs], "task": ["t2i"] * args.n, "image": imgs,
                      "caption": [f"picture {i}" for i in range(args.n)]})
    cap = Captioner(types=["general", "text"], backend="transformers",
                    backend_kwargs={"model": model, "max_new_tokens": args.tokens, "batch_size": 8,
                                    "device": args.device}, cache_path=str(tmp / "cache.db"))
    startup["captioner setup"], _ = timed(cap.setup)
    t_first, _ = timed(lambda: cap(table))
    t_hit, _ = timed(lambda: cap(table))
    results.append(("cache-hit rerun vs first run", t_first, t_hit, t_first / t_hit, 50.0))

    dev = be._device
    print(f"\ncaption benchmark: {args.n} captions x {args.tokens} new tokens, device {dev}, "
          f"torch threads {args.threads}")
    print("start-up (excluded): " + ", ".join(f"{k} {v:.2f}s" for k, v in startup.items()))
    print(f"{'comparison':34s} {'baseline s':>11s} {'new s':>8s} {'ratio':>7s} {'goal':>6s}")
    for name, base, new, ratio, goal in results:
        print(f"{name:34s} {base:11.3f} {new:8.3f} {ratio:6.1f}x {goal:5.0f}x {'ok' if ratio >= goal else 'BELOW GOAL'}")


if __name__ == "__main__":
    main()

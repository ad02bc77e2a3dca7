"""Captioning throughput on the tiny random Qwen3-VL (real tokenizer, processor and model code).

Three comparisons, each against a baseline measured in the same run; start-up (model build, load,
server start) is reported apart and excluded from the ratios:
  1. batched generation (batch 8) vs one by one               goal >= 3x
  2. server backend, client concurrency 8 vs 1, through the
     server's batching of concurrent requests                 goal >= 4x
  3. cache-hit rerun vs first run of the Captioner            goal >= 50x

    .venv/bin/python benchmarks/caption.py [--n 16] [--tokens 16] [--device cpu|cuda] [--model DIR]

Offline captioning cost on real document pages (issue 18 item 4, goal <= 4 s per page with default
settings): `--pages ROOT` writes the decision set's document pages (benchmarks/fetch_decision_set.py)
as a dataset and runs `flywheel caption` on it as a user would (default workers, batch size and
thread limits; a fresh FLYWHEEL_HOME, so nothing is cached), then prints wall and CPU seconds per
page (CPU of the whole process tree: driver, Ray workers, servers; the machine may be shared, CPU
seconds are the figure that does not depend on it). `--flywheel PATH` measures another install
(e.g. main's, for the before figure).

    .venv/bin/python benchmarks/caption.py --pages /work/evaldata/decisions [--split test] [--limit 12]
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


def _tree_cpu(proc, seen: dict) -> None:
    """Record the cumulative CPU seconds of a process and its descendants (kept per pid: a process
    that has exited keeps its last reading). A process's reaped children are not added (they are
    read as processes themselves), so a child that lives under one polling interval is missed: the
    before figure (a tesseract process per page) is if anything too low."""
    import psutil

    try:
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return
    for p in procs:
        try:
            t = p.cpu_times()
            seen[p.pid] = t.user + t.system
        except psutil.Error:
            pass


def pages(args) -> None:
    """`flywheel caption --backend offline` over the real document pages; s/page wall and CPU."""
    import json

    import psutil
    import pyarrow as pa

    from flywheel.datasets import BASE_SCHEMA, DatasetWriter, sample_id

    root = Path(args.pages)
    rows = [json.loads(x) for x in (root / "index.jsonl").read_text(encoding="utf-8").splitlines()]
    rows = [r for r in rows if r["category"] == "doc_page" and args.split in ("both", r["split"])]
    if args.limit:
        step = max(1, len(rows) // args.limit)
        rows = rows[::step][:args.limit]
    tmp = Path(tempfile.mkdtemp(prefix="caption-pages-"))
    recs = []
    for r in rows:
        b = (root / r["path"]).read_bytes()
        recs.append({"id": sample_id(b), "source": str(root / r["path"]), "task": "t2i", "image": b})
    with DatasetWriter(tmp / "in", name="pages", kind="synthetic", schema=BASE_SCHEMA) as w:
        w.write(pa.Table.from_pylist(recs, schema=BASE_SCHEMA))
    exe = args.flywheel or str(Path(sys.executable).with_name("flywheel"))
    env = {**os.environ, "FLYWHEEL_HOME": str(tmp / "home"), "DO_NOT_TRACK": "1"}
    cmd = [exe, "caption", "-i", str(tmp / "in"), "-o", str(tmp / "out"), "--backend", "offline", *args.extra]
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; {len(rows)} pages; {' '.join(cmd[1:])}")
    seen: dict = {}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ps = psutil.Process(proc.pid)
    while proc.poll() is None:
        _tree_cpu(ps, seen)
        time.sleep(0.2)
    wall = time.perf_counter() - t0
    out = proc.stdout.read()
    if proc.returncode:
        raise SystemExit(f"flywheel caption failed:\n{out[-3000:]}")
    for line in out.splitlines():
        if "captioning" in line and "workers" in line or "wrote" in line:
            print("  " + line.strip())
    stats = {}
    for f in (tmp / "home").rglob("caption_stats.json"):
        stats = json.loads(f.read_text())
    cpu = sum(seen.values())
    step = stats.get("timing", {}).get("caption_s")
    n = len(rows)
    print(f"offline captions, {n} real pages: end to end {wall:.1f}s = {wall / n:.2f} s/page wall, "
          f"{cpu / n:.2f} CPU s/page (process tree)"
          + (f"; caption step {step:.1f}s = {step / n:.2f} s/page wall" if step else "")
          + f"  goal <= 4 s/page {'ok' if (step or wall) / n <= 4 else 'ABOVE GOAL'}")
    import pyarrow.parquet as pq

    engines: dict = {}
    for f in sorted((tmp / "out" / "data").glob("*.parquet")):
        t = pq.read_table(f)
        if "caption_meta" in t.column_names:
            for m in t.column("caption_meta").to_pylist():
                e = (m or {}).get("text") or "?"
                engines[e] = engines.get(e, 0) + 1
    if engines:
        print("  text read by: " + ", ".join(f"{e} x{k}" for e, k in sorted(engines.items(), key=lambda kv: -kv[1])))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=16, help="requests / rows per measurement")
    ap.add_argument("--tokens", type=int, default=16, help="new tokens per caption")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--model", default=None, help="a Qwen3-VL dir (default: build the tiny random one)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--skip-server", action="store_true")
    ap.add_argument("--pages", default=None, help="offline backend on the decision set's document pages (ROOT)")
    ap.add_argument("--split", default="both", choices=["test", "tuning", "both"])
    ap.add_argument("--limit", type=int, default=0, help="pages (evenly spaced through the set); 0 = all")
    ap.add_argument("--flywheel", default=None, help="the flywheel executable to measure (default: this one)")
    ap.add_argument("extra", nargs="*", help="after --: more `flywheel caption` options")
    args = ap.parse_args()
    if args.pages:
        pages(args)
        return

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

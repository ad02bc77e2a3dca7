"""Curation throughput on CPU: `flywheel curate` (stage 1 CPU operators) against a plain
single-process loop doing the same fused work, measured in the same run.

  .venv/bin/python benchmarks/curate_cpu.py --n 2000 [--rss 10000,50000]

(a) baseline: one process, per image: read, sha256, Pillow draft decode to 256 px, imagehash
    phash, entropy measures, JPEG quality estimate.
(b) `flywheel curate --recipe stage1 --skip nsfw,rotation,clip` with 1 and 2 workers, each as a
    fresh process (so Ray and Prefect start-up are included), plus a run on a handful of images:
    start-up = the small run's time; steady state = (big - small) time over (big - small) images.
Memory: peak RSS of the whole process tree at each size in --rss.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
FLYWHEEL = str(Path(sys.executable).parent / "flywheel")


def make_corpus(root: Path, n: int, seed: int = 0) -> None:
    """N JPEGs of mixed sizes cut from scikit-image's photos, each with a caption."""
    from PIL import Image
    from skimage import data

    rng = np.random.default_rng(seed)
    srcs = [Image.fromarray(getattr(data, k)()).convert("RGB") for k in
            ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry", "retina")]
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        im = srcs[i % len(srcs)]
        w, h = im.size
        cw, ch = int(w * rng.uniform(0.5, 1)), int(h * rng.uniform(0.5, 1))
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        target = int(rng.choice([320, 512, 800, 1200, 1600]))
        crop = im.crop((x, y, x + cw, y + ch))
        s = target / min(crop.size)
        crop = crop.resize((max(1, int(crop.size[0] * s)), max(1, int(crop.size[1] * s))), Image.BILINEAR)
        arr = np.asarray(crop).astype(np.int16) + rng.integers(-3, 4, (crop.size[1], crop.size[0], 1))
        sub = root / f"{i // 1000:03d}"
        sub.mkdir(exist_ok=True)
        Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(sub / f"{i:07d}.jpg", quality=int(rng.integers(60, 95)))
        (sub / f"{i:07d}.txt").write_text(f"photo number {i}, a crop of a sample image")


def fused_loop(root: Path) -> tuple[int, float]:
    """The baseline: the same work in one plain loop."""
    import imagehash
    from PIL import Image

    from flywheel.filters.compression_quality import jpeg_quality

    files = sorted(root.rglob("*.jpg"))
    t0 = time.perf_counter()
    for f in files:
        b = f.read_bytes()
        hashlib.sha256(b).hexdigest()
        (f.with_suffix(".txt")).read_text()
        im = Image.open(io.BytesIO(b))
        q = im.quantization
        w, h = im.size
        s = 256 / min(w, h)
        if s < 1:
            im.draft("RGB", (int(w * s), int(h * s)))
        im = im.convert("RGB")
        if min(im.size) > 256:
            s = 256 / min(im.size)
            im = im.resize((int(im.size[0] * s), int(im.size[1] * s)), Image.BILINEAR)
        g = np.asarray(im.convert("L"), dtype=np.float32)
        imagehash.phash(Image.fromarray(g.astype(np.uint8)))
        counts = np.bincount(g.astype(np.uint8).ravel(), minlength=256) / g.size
        p = counts[counts > 0]
        -(p * np.log2(p)).sum()
        ((np.abs(np.diff(g, axis=1))[:-1] + np.abs(np.diff(g, axis=0))[:, :-1]) > 24).mean()
        np.corrcoef(g[:, :-1].ravel(), g[:, 1:].ravel())
        jpeg_quality(q[0])
    return len(files), time.perf_counter() - t0


def tree_rss(pid: int) -> int:
    import psutil

    try:
        p = psutil.Process(pid)
        procs = [p] + p.children(recursive=True)
    except psutil.Error:
        return 0
    total = 0
    for q in procs:
        try:
            total += q.memory_info().rss
        except psutil.Error:
            pass
    return total


def ray_rss() -> int:
    """RSS of Ray worker processes (they are not children of the CLI process)."""
    import psutil

    total = 0
    for q in psutil.process_iter(["name", "cmdline"]):
        try:
            cmd = " ".join(q.info["cmdline"] or [])
            if "ray::" in cmd or "raylet" in cmd or "gcs_server" in cmd or "default_worker.py" in cmd:
                total += q.memory_info().rss
        except psutil.Error:
            pass
    return total


def curate(inp: Path, out: Path, workers: int, home: Path) -> dict:
    env = {**os.environ, "FLYWHEEL_HOME": str(home)}
    env.pop("RAY_ADDRESS", None)
    t0 = time.perf_counter()
    proc = subprocess.Popen([FLYWHEEL, "curate", "--recipe", "stage1", "--input", str(inp), "--output", str(out),
                             "--skip", "nsfw,rotation,clip", "--reject-uncaptioned", "--workers", str(workers)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = [0]

    def watch():
        while proc.poll() is None:
            peak[0] = max(peak[0], tree_rss(proc.pid) + ray_rss())
            time.sleep(0.5)

    th = threading.Thread(target=watch, daemon=True)
    th.start()
    _, err = proc.communicate()
    wall = time.perf_counter() - t0
    th.join()
    if proc.returncode != 0:
        raise SystemExit(f"curate failed:\n{err.decode()[-3000:]}")
    stats = json.loads((out / "stats.json").read_text())
    return {"wall": wall, "rows": stats["rows"], "score_s": stats["timing"]["score_s"],
            "steady": stats["timing"].get("steady_images_per_s"), "first_block_s": stats["timing"].get("first_block_s"),
            "ray_startup_s": stats["timing"]["ray_startup_s"], "peak_rss_mb": peak[0] / 2**20}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--small", type=int, default=16)
    ap.add_argument("--rss", default="", help="comma-separated corpus sizes for the memory check, e.g. 10000,50000")
    ap.add_argument("--workdir", default=None)
    a = ap.parse_args()
    work = Path(a.workdir or tempfile.mkdtemp(prefix="fw-bench-"))
    big, small = work / f"corpus-{a.n}", work / f"corpus-{a.small}"
    if not big.exists():
        print(f"making {a.n} JPEGs in {big} ...", flush=True)
        make_corpus(big, a.n)
    if not small.exists():
        make_corpus(small, a.small, seed=1)

    n, t = fused_loop(big)
    base = n / t
    print(f"(a) fused single-process loop: {n} images in {t:.1f}s = {base:.1f} img/s", flush=True)
    res = {}
    for w in (1, 2):
        s = curate(small, work / f"out-small-{w}-{time.time_ns()}", w, work / f"home-{w}-{time.time_ns()}")
        b = curate(big, work / f"out-big-{w}-{time.time_ns()}", w, work / f"home-{w}-{time.time_ns()}")
        steady = b["steady"] or b["rows"] / b["score_s"]  # blocks finished after the first quarter, per second
        res[w] = steady
        print(f"(b) curate, {w} worker(s): start-up (whole run on {s['rows']} images) {s['wall']:.1f}s "
              f"(Ray start {s['ray_startup_s']:.1f}s); {b['rows']} images {b['wall']:.1f}s, of which scoring "
              f"{b['score_s']:.1f}s (first block after {b['first_block_s'] or 0:.1f}s); steady state {steady:.1f} img/s; "
              f"peak RSS {b['peak_rss_mb']:.0f} MB", flush=True)
    print(f"ratios: 2 workers / fused loop = {res[2] / base:.2f}x (goal >= 1.7x); "
          f"2 workers / 1 worker = {res[2] / res[1]:.2f}x (goal >= 1.7x)")
    for size in [int(x) for x in a.rss.split(",") if x.strip()]:
        c = work / f"corpus-{size}"
        if not c.exists():
            print(f"making {size} JPEGs ...", flush=True)
            make_corpus(c, size, seed=size)
        r = curate(c, work / f"out-rss-{size}-{time.time_ns()}", 2, work / f"home-rss-{size}")
        print(f"memory: {size} images -> peak RSS {r['peak_rss_mb']:.0f} MB ({r['rows'] / r['score_s']:.1f} img/s)", flush=True)


if __name__ == "__main__":
    main()

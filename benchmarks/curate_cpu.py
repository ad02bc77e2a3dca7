"""Curation throughput on CPU, against baselines measured in the same run (issue 18).

  .venv/bin/python benchmarks/curate_cpu.py                  # 20,000 JPEGs, 3 runs of each arm
  .venv/bin/python benchmarks/curate_cpu.py --n 4000 --runs 1 --no-peer --allow-load   # a quick look

Arms, on the same generated JPEGs of mixed sizes (scikit-image photos, cut and scaled):
(a) fused loop: one process, no engine; per batch of 64 files it reads the bytes, hashes them,
    decodes with the engine's own `decode` and calls each stage-1 CPU operator's own `score`
    (the same per-image work as the operators, nothing of the engine: no Arrow parts, no Ray);
(b) `flywheel curate --recipe stage1 --skip nsfw,rotation,clip` with 1 and with 2 workers, each a
    fresh command (real Ray, a real Prefect flow run), start-up measured apart on 20 images;
(c) peer: Data-Juicer's equivalent recipe (image shape, aspect ratio, size filters and its phash
    deduplicator, np=2), installed in its own virtualenv by this script (--peer-venv).
Steady state = rows per second between the moments 10% and 90% of the rows were written (the
run's own block times for (b), per-image times for (a)). End to end = rows over the command's wall
time, start-up included. Each figure is the median of --runs runs, with min and max. Peak memory:
PSS (smaps_rollup) summed over the command's process tree (driver, Ray workers, raylet, the
Prefect server), sampled every 0.25 s. The load average is printed first; the script refuses to
measure above 0.5 unless --allow-load (and then says so in every line it prints).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from soak import _pss_kb as soak_pss_kb  # benchmarks/soak.py: one reader of smaps_rollup

ROOT = Path(__file__).resolve().parent.parent
FLYWHEEL = str(Path(sys.executable).parent / "flywheel")
SKIP = "nsfw,rotation,clip"


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


# -- (a) the fused loop ------------------------------------------------------------------------

def fused_loop(root: Path, batch: int = 64) -> dict:
    """The operators' own functions in one plain loop: what the engine would cost if it cost
    nothing. Returns rows, wall seconds and the per-image completion times."""
    import pyarrow as pa

    from flywheel.filters import base
    from flywheel.filters import recipe as recipes
    from flywheel.filters.decode import decode

    r = recipes.load("stage1", skip=set(SKIP.split(",")))
    ops = [base.get(s.name)(s.params) for s in r.steps]
    for op in ops:
        op.setup()
    files = sorted(root.rglob("*.jpg"))
    done: list[float] = []
    t0 = time.perf_counter()
    for i in range(0, len(files), batch):
        chunk = files[i:i + batch]
        ids, works, widths, heights, captions = [], [], [], [], []
        for f in chunk:
            b = f.read_bytes()
            ids.append(hashlib.sha256(b).hexdigest())
            captions.append(f.with_suffix(".txt").read_text())
            d = decode(b, "jpg", r.work_size, 89_478_485)
            works.append(d.work)
            widths.append(d.width)
            heights.append(d.height)
        t = pa.table({"id": ids, "source": [str(f) for f in chunk], "caption": captions,
                      "width": pa.array(widths, pa.int32()), "height": pa.array(heights, pa.int32()),
                      "exif_orientation": pa.array([1] * len(chunk), pa.int8())})
        for op in ops:
            op.score(t, works)
        now = time.perf_counter() - t0
        done.extend([now] * len(chunk))
    return {"rows": len(files), "wall": time.perf_counter() - t0, "blocks": [[t, 1] for t in done]}


# -- process-tree memory -----------------------------------------------------------------------

def tree_pss_mb(root_pid: int) -> float:
    import psutil

    try:
        procs = [psutil.Process(root_pid)] + psutil.Process(root_pid).children(recursive=True)
    except psutil.Error:
        return 0.0
    return sum(soak_pss_kb(p.pid) for p in procs) / 1024


def run_measured(cmd: list[str], env: dict, cwd: str | None = None) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = [0.0]

    def watch():
        while proc.poll() is None:
            peak[0] = max(peak[0], tree_pss_mb(proc.pid))
            time.sleep(0.25)

    th = threading.Thread(target=watch, daemon=True)
    th.start()
    _, err = proc.communicate()
    wall = time.perf_counter() - t0
    th.join()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:3])} failed:\n{err.decode(errors='replace')[-3000:]}")
    return {"wall": wall, "peak_pss_mb": peak[0]}


# -- (b) flywheel curate -----------------------------------------------------------------------

def curate(inp: Path, work: Path, workers: int) -> dict:
    tag = f"{workers}-{time.time_ns()}"
    home, out = work / f"home-{tag}", work / f"out-{tag}"
    # a self-contained run each time (no runtime server left behind to compete with the next arm)
    env = {**os.environ, "FLYWHEEL_HOME": str(home), "DO_NOT_TRACK": "1", "FLYWHEEL_SERVER": "off"}
    env.pop("RAY_ADDRESS", None)
    m = run_measured([FLYWHEEL, "curate", "--recipe", "stage1", "--input", str(inp), "--output", str(out),
                      "--skip", SKIP, "--workers", str(workers)], env)
    stats = json.loads((out / "stats.json").read_text())
    timing = stats["timing"]
    blocks = timing.pop("blocks", None) or []
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(home, ignore_errors=True)
    return {**m, "rows": stats["rows"], "blocks": blocks, "timing": timing}


# -- (c) Data-Juicer ---------------------------------------------------------------------------

DJ_RECIPE = """
dataset_path: {jsonl}
export_path: {out}/result.jsonl
np: 2
image_key: images
text_keys: text
process:
  - image_shape_filter: {{min_width: 64, min_height: 64}}
  - image_aspect_ratio_filter: {{min_ratio: 0.1667, max_ratio: 6.0}}
  - image_size_filter: {{min_size: "1KB", max_size: "100MB"}}
  - image_deduplicator: {{method: phash}}
"""


def ensure_peer(venv: Path, spec: str) -> Path | None:
    exe = venv / "bin" / "dj-process"
    if exe.exists():
        return exe
    print(f"installing {spec} into {venv} (its own virtualenv, once) ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    r = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", *spec.split()], capture_output=True, text=True)
    if r.returncode != 0 or not exe.exists():
        print(f"peer: could not install {spec}: {r.stderr[-800:]}", flush=True)
        return None
    return exe


def data_juicer(exe: Path, inp: Path, work: Path) -> dict:
    tag = time.time_ns()
    jsonl, out = work / f"dj-{tag}.jsonl", work / f"dj-out-{tag}"
    out.mkdir(parents=True)
    with jsonl.open("w") as f:
        for p in sorted(inp.rglob("*.jpg")):
            f.write(json.dumps({"images": [str(p)], "text": p.with_suffix(".txt").read_text()}) + "\n")
    cfg = work / f"dj-{tag}.yaml"
    cfg.write_text(DJ_RECIPE.format(jsonl=jsonl, out=out))
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "DO_NOT_TRACK": "1",
           "HF_HOME": str(work / "dj-hf")}
    m = run_measured([str(exe), "--config", str(cfg)], env, cwd=str(work))
    kept = sum(1 for _ in (out / "result.jsonl").open()) if (out / "result.jsonl").exists() else None
    shutil.rmtree(out, ignore_errors=True)
    return {**m, "kept": kept}


# -- figures -----------------------------------------------------------------------------------

def steady(blocks: list) -> float | None:
    from flywheel.curation.pipeline import steady_rate

    return steady_rate([(t, n) for t, n in blocks])


def med(xs: list[float]) -> str:
    xs = [x for x in xs if x is not None]
    if not xs:
        return "n/a"
    return f"{statistics.median(xs):.1f} (min {min(xs):.1f}, max {max(xs):.1f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--workdir", default=None, help="keeps the corpus between invocations")
    ap.add_argument("--allow-load", action="store_true", help="measure even when the machine is busy (figures marked)")
    ap.add_argument("--no-peer", action="store_true", help="skip the Data-Juicer comparison")
    ap.add_argument("--peer-venv", default=str(Path(tempfile.gettempdir()) / "flywheel-bench-dj"))
    # Data-Juicer 1.6.1 imports aiohttp without declaring it
    ap.add_argument("--peer-spec", default="py-data-juicer==1.6.1 aiohttp")
    a = ap.parse_args()

    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} cores", flush=True)
    busy = ""
    if load[0] > 0.5:
        if not a.allow_load:
            raise SystemExit("refusing to measure: the 1-minute load average is above 0.5. Stop other work "
                             "(or pass --allow-load for a rough look; its figures are marked BUSY).")
        busy = " [BUSY MACHINE]"

    work = Path(a.workdir or tempfile.mkdtemp(prefix="fw-bench-"))
    big, small = work / f"corpus-{a.n}", work / "corpus-20"
    if not big.exists():
        print(f"making {a.n} JPEGs in {big} ...", flush=True)
        make_corpus(big, a.n)
    if not small.exists():
        make_corpus(small, 20, seed=1)

    fl = [fused_loop(big) for _ in range(a.runs)]
    fused_steady = [steady(r["blocks"]) for r in fl]
    fused_e2e = [r["rows"] / r["wall"] for r in fl]
    print(f"(a) fused loop, 1 process: steady {med(fused_steady)} img/s; end to end {med(fused_e2e)} img/s{busy}",
          flush=True)

    res: dict[int, dict] = {}
    for w in (1, 2):
        starts = [curate(small, work, w) for _ in range(a.runs)]
        bigs = [curate(big, work, w) for _ in range(a.runs)]
        res[w] = {"steady": [steady(b["blocks"]) for b in bigs], "e2e": [b["rows"] / b["wall"] for b in bigs],
                  "start": [s["wall"] for s in starts], "pss": [b["peak_pss_mb"] for b in bigs],
                  "cpu": bigs[-1]["timing"].get("operator_cpu_s", {}), "rows": bigs[-1]["rows"]}
        op_ms = {k: round(1000 * v / max(1, res[w]["rows"]), 2) for k, v in res[w]["cpu"].items()}
        print(f"(b) curate, {w} worker(s): start-up (whole run on 20 images) {med(res[w]['start'])} s; "
              f"steady {med(res[w]['steady'])} img/s; end to end {med(res[w]['e2e'])} img/s; "
              f"peak PSS {med(res[w]['pss'])} MB; operator CPU ms/img {op_ms}{busy}", flush=True)

    def ratio(x, y):
        xs, ys = [v for v in x if v], [v for v in y if v]
        return statistics.median(xs) / statistics.median(ys) if xs and ys else float("nan")

    print(f"ratios (steady state, medians): 2 workers / fused loop = {ratio(res[2]['steady'], fused_steady):.2f}x "
          f"(goal >= 1.7x); 2 workers / 1 worker = {ratio(res[2]['steady'], res[1]['steady']):.2f}x (goal >= 1.7x){busy}")
    if a.no_peer:
        return
    exe = ensure_peer(Path(a.peer_venv), a.peer_spec)
    if exe is None:
        return
    dj = [data_juicer(exe, big, work) for _ in range(a.runs)]
    dj_e2e = [a.n / r["wall"] for r in dj]
    print(f"(c) Data-Juicer {a.peer_spec}, np=2 (shape, aspect, size, phash dedup): end to end {med(dj_e2e)} img/s "
          f"(kept {dj[-1]['kept']}); peak PSS {med([r['peak_pss_mb'] for r in dj])} MB{busy}")
    print(f"ratio end to end: flywheel 2 workers / Data-Juicer = {ratio(res[2]['e2e'], dj_e2e):.2f}x (goal >= 4x){busy}")


if __name__ == "__main__":
    main()

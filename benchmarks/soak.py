"""Memory soak: is a curation run's peak memory flat in its input size?

  .venv/bin/python benchmarks/soak.py --sizes 10000,50000[,200000] [--workers 2] [--recipe stage1]

For each size: N generated 128x128 JPEGs (each a different smooth random pattern plus noise, so
dedup keeps them apart) are written as WebDataset tar shards of --shard images into a temporary
folder (~5 KB an image; deleted after the run, so 200k never means 200k files), then
`flywheel curate` runs on them as a fresh process in the embedded mode (its own local Ray and
Prefect, FLYWHEEL_SERVER=off), with its own FLYWHEEL_HOME.

What is measured is the memory of the run's OWN processes, never every Ray process on the
machine: the tree under the `flywheel curate` process, followed by pid (and start time, so a
reused pid is never counted) every --interval seconds; a process stays tracked after its parent
dies. Per sample, the PSS of every tracked live process (`/proc/PID/smaps_rollup`: shared pages,
the object store's included, are divided among the processes that map them, so they are counted
once) is summed; the peak over samples is reported, with the split by role (driver, Ray's
raylet/GCS/helpers, Ray workers, Prefect's server) at that sample. The object store is reported
on its own as the raylet's resident bytes of its plasma mapping (its high-water mark of touched
pages). The dedup index is reported apart: the bytes per image of the table the dedup barrier
holds in memory for every row (the columns it reads, less the thumbnail and ORB features it reads
for candidate rows only; measured over the run's output datasets), the one part of a run's memory
that must grow with its size. The whole peak's ratio, nothing taken apart, is printed too.

The target (issue 18): peak within 20% from 10k to 200k images, the dedup index apart. The
script prints each size's figures and the ratio of the largest to the smallest.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

FLYWHEEL = str(Path(sys.executable).parent / "flywheel")


def write_shards(root: Path, n: int, per_shard: int, seed: int = 0) -> int:
    """N distinct 128x128 JPEGs with captions into tar shards under `root`; returns bytes written."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    total, i = 0, 0
    while i < n:
        path = root / f"shard-{i // per_shard:05d}.tar"
        with tarfile.open(path, "w") as tar:
            for _ in range(min(per_shard, n - i)):
                coarse = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
                im = Image.fromarray(coarse).resize((128, 128), Image.BICUBIC)
                arr = np.asarray(im, dtype=np.int16) + rng.integers(-12, 13, (128, 128, 3))
                b = io.BytesIO()
                Image.fromarray(arr.clip(0, 255).astype(np.uint8)).save(b, "JPEG", quality=85)
                for name, data in ((f"{i:08d}.jpg", b.getvalue()), (f"{i:08d}.txt", f"a generated pattern {i}".encode())):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
                i += 1
        total += path.stat().st_size
    return total


def _stat(pid: int) -> tuple[int, int] | None:
    """(ppid, start time in clock ticks) of a live process."""
    try:
        s = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    f = s[s.rindex(")") + 2:].split()
    return int(f[1]), int(f[19])


def _pss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _plasma_kb(pid: int) -> int:
    """Resident kB of the plasma (object store) mappings of one process."""
    kb, inside = 0, False
    try:
        with open(f"/proc/{pid}/smaps") as f:
            for line in f:
                if "-" in line.split(" ", 1)[0] and not line[0].isupper():
                    inside = "plasma" in line
                elif inside and line.startswith("Rss:"):
                    kb += int(line.split()[1])
    except OSError:
        pass
    return kb


def _cmd(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _role(pid: int, root: int, cmd: str) -> str:
    if pid == root:
        return "driver"
    if "prefect" in cmd or "uvicorn" in cmd:
        return "prefect"
    if "default_worker.py" in cmd or cmd.startswith("ray::"):
        return "ray_workers"
    return "ray_system"  # raylet, gcs_server, dashboard agents, log monitor


class TreeSampler:
    """Samples the PSS of a process tree (by pid + start time) every `interval` seconds."""

    def __init__(self, root: int, interval: float):
        self.root, self.interval = root, interval
        self.tracked: dict[int, int] = {}  # pid -> start time
        st = _stat(root)
        if st:
            self.tracked[root] = st[1]
        self.peak = {"total_kb": 0}
        self.peak_plasma_kb = 0
        self.samples = 0
        self.max_procs = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _grow(self) -> None:
        live = {}
        for d in os.listdir("/proc"):
            if d.isdigit():
                st = _stat(int(d))
                if st:
                    live[int(d)] = st
        changed = True
        while changed:
            changed = False
            for pid, (ppid, start) in live.items():
                if pid not in self.tracked and ppid in self.tracked and live.get(ppid, (0, -1))[1] == self.tracked[ppid]:
                    self.tracked[pid] = start
                    changed = True
        # forget pids that died (or were reused by someone else's process)
        self.tracked = {p: s for p, s in self.tracked.items() if live.get(p, (0, -1))[1] == s}

    def sample(self) -> None:
        self._grow()
        by_role: dict[str, int] = {}
        plasma = 0
        for pid in list(self.tracked):
            cmd = _cmd(pid)
            role = _role(pid, self.root, cmd)
            by_role[role] = by_role.get(role, 0) + _pss_kb(pid)
            if "raylet" in cmd and self.samples % 4 == 0:  # smaps walks every mapping: every 4th sample
                plasma = max(plasma, _plasma_kb(pid))
        total = sum(by_role.values())
        self.samples += 1
        self.max_procs = max(self.max_procs, len(self.tracked))
        self.peak_plasma_kb = max(self.peak_plasma_kb, plasma)
        if total > self.peak["total_kb"]:
            self.peak = {"total_kb": total, **{f"{k}_kb": v for k, v in by_role.items()}, "procs": len(self.tracked)}

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def dedup_bytes_per_image(out: Path, recipe: str) -> float | None:
    """Bytes per row of the table the dedup barrier holds for every row (the columns it reads, less the
    deferred thumbnail and ORB features, which it reads for candidate rows only), over both datasets.
    (Until 2026-12-05 this counted the deferred columns too: 2,657 B/image, of which they were ~2,500.)"""
    import pyarrow.dataset as pads

    from flywheel.filters import base

    op = base.get("dedup")()
    need = [c for c in dict.fromkeys([*op.decide_reads, *op.writes, *op.reads]) if c not in op.deferred]
    files = sorted(str(p) for p in out.glob("*/data/*.parquet"))
    if not files:
        return None
    ds = pads.dataset(files, format="parquet")
    t = ds.to_table(columns=[c for c in need if c in ds.schema.names])
    return t.nbytes / max(1, t.num_rows)


def run_size(n: int, args, work: Path) -> dict:
    inp, home, out = work / f"in-{n}", work / f"home-{n}", work / f"out-{n}"
    t0 = time.perf_counter()
    nbytes = write_shards(inp, n, args.shard)
    gen_s = time.perf_counter() - t0
    env = {**os.environ, "FLYWHEEL_HOME": str(home), "FLYWHEEL_SERVER": "off", "DO_NOT_TRACK": "1"}
    cmd = [FLYWHEEL, "curate", "--recipe", args.recipe, "--input", str(inp), "--output", str(out),
           "--workers", str(args.workers), "--skip", args.skip]
    t0 = time.perf_counter()
    ru0 = os.times()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sampler = TreeSampler(proc.pid, args.interval)
    sampler.start()
    log = proc.communicate()[0]
    sampler.stop()
    wall = time.perf_counter() - t0
    ru1 = os.times()
    if proc.returncode:
        print(log[-3000:])
        raise SystemExit(f"curate failed at n={n} (rc {proc.returncode})")
    stats = json.loads((out / "stats.json").read_text())
    res = {
        "n": n, "input_mb": nbytes / 2**20, "generate_s": gen_s, "wall_s": wall,
        "cpu_s_children": (ru1.children_user - ru0.children_user) + (ru1.children_system - ru0.children_system),
        "rows": stats["rows"], "images_per_s": stats["timing"].get("images_per_s"),
        "peak_pss_mb": sampler.peak["total_kb"] / 1024,
        "peak_split_mb": {k[:-3]: v / 1024 for k, v in sampler.peak.items() if k.endswith("_kb") and k != "total_kb"},
        "object_store_peak_mb": sampler.peak_plasma_kb / 1024,
        "dedup_index_bytes_per_image": dedup_bytes_per_image(out, args.recipe),
        "samples": sampler.samples, "max_processes": sampler.max_procs,
    }
    res["dedup_index_mb"] = (res["dedup_index_bytes_per_image"] or 0) * n / 2**20
    res["peak_minus_dedup_mb"] = res["peak_pss_mb"] - res["dedup_index_mb"]
    for p in (inp, out, home):
        shutil.rmtree(p, ignore_errors=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,50000,200000")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--recipe", default="stage1")
    ap.add_argument("--skip", default="nsfw,rotation,clip",
                    help="operators to skip; the default keeps stage 1's CPU operators (as benchmarks/curate_cpu.py "
                         "does). --skip clip adds the NSFW and rotation models (the actor path), ~15 images/s on "
                         "this 2-core machine, so 200k takes hours")
    ap.add_argument("--shard", type=int, default=2000, help="images per tar shard")
    ap.add_argument("--interval", type=float, default=0.5, help="seconds between memory samples")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; recipe {args.recipe} --skip {args.skip}, "
          f"{args.workers} workers", flush=True)
    results = []
    work = Path(tempfile.mkdtemp(prefix="fw-soak-"))
    try:
        for n in [int(s) for s in args.sizes.split(",") if s]:
            r = run_size(n, args, work)
            results.append(r)
            split = ", ".join(f"{k} {v:.0f}" for k, v in sorted(r["peak_split_mb"].items()))
            print(f"n={n:>7}: peak PSS {r['peak_pss_mb']:.0f} MB ({split}); object store {r['object_store_peak_mb']:.0f} MB; "
                  f"dedup index {r['dedup_index_bytes_per_image']:.0f} B/image = {r['dedup_index_mb']:.1f} MB; "
                  f"peak without it {r['peak_minus_dedup_mb']:.0f} MB; {r['wall_s']:.0f} s wall, "
                  f"{r['cpu_s_children']:.0f} s CPU, {r['images_per_s'] or 0:.0f} img/s; "
                  f"{r['samples']} samples, up to {r['max_processes']} processes", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if len(results) > 1:
        lo, hi = results[0], results[-1]
        ratio = hi["peak_minus_dedup_mb"] / lo["peak_minus_dedup_mb"]
        print(f"peak (dedup index apart) at {hi['n']} / at {lo['n']}: {ratio:.2f} "
              f"({'within' if abs(ratio - 1) <= 0.2 else 'OUTSIDE'} the 20% target); "
              f"whole peak, nothing apart: {hi['peak_pss_mb'] / lo['peak_pss_mb']:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

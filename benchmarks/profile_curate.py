"""CPU profile of one `flywheel curate --recipe stage1` run (issue 18): py-spy samples of the
driver and every process it starts (Ray workers included, `--subprocesses`), plus each process's
own CPU seconds (user+sys from /proc, polled until it exits). CPU time, not wall time: the
figures hold on a busy machine.

  .venv/bin/python benchmarks/profile_curate.py --input DIR --out benchmarks/profiles/NAME [--workers 2]

Writes NAME.txt (CPU seconds per process kind, the workers' samples by category, the driver's
top frames) and NAME.svg (py-spy's flame graph). Needs py-spy (`pip install py-spy`).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")
FLYWHEEL = str(Path(sys.executable).parent / "flywheel")

# innermost matching frame wins: where a worker's time went
CATEGORIES = [
    ("read_shard", "read inputs"), ("_atomic_write", "part write (Parquet)"), ("_summary", "block summary"),
    ("_set_column", "arrow columns"), ("Scorer._decode", "op: decode"), ("Dedup.score", "op: dedup"),
    ("Entropy.score", "op: entropy"), ("TokenLength.score", "op: token_length"), ("_safe_score", "op: other"),
    ("Scorer.__call__", "scorer bookkeeping"), ("_find_and_load", "imports"), ("_score_shard_group", "engine other"),
    ("main_loop", "ray worker loop (native)"),
]


def _env_has(pid: int, needle: bytes) -> bool:
    try:
        return needle in Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False


def _cpu(pid: int) -> tuple[float, str] | None:
    try:
        s = Path(f"/proc/{pid}/stat").read_text()
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None
    f = s[s.rindex(")") + 2:].split()
    return (int(f[11]) + int(f[12])) / TICK, cmd  # utime + stime of the process itself


def kind_of(cmd: str) -> str:
    if "py-spy" in cmd:
        return "py-spy"
    if "default_worker.py" in cmd or cmd.startswith("ray::"):
        return "ray workers"
    if "flywheel curate" in cmd:
        return "driver"
    if "raylet" in cmd or "gcs_server" in cmd:
        return "raylet + gcs"
    if "uvicorn" in cmd or "prefect" in cmd:
        return "prefect server"
    return "ray helpers"


def watch(needle: bytes, stop: threading.Event, seen: dict) -> None:
    """Last CPU reading of every process whose environment carries this run's FLYWHEEL_HOME."""
    while not stop.is_set():
        for d in os.listdir("/proc"):
            if d.isdigit() and (int(d) in seen or _env_has(int(d), needle)):
                c = _cpu(int(d))
                if c:  # an exited process (a zombie) has no command line: keep the one seen alive
                    seen[int(d)] = (c[0], c[1] or seen.get(int(d), (0, ""))[1])
        time.sleep(0.2)


def categorize(raw: Path) -> tuple[dict, dict, collections.Counter]:
    per: dict = collections.defaultdict(collections.Counter)
    driver_frames: collections.Counter = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        fr = stack.split(";")
        pi = max(i for i, f in enumerate(fr) if f.startswith("process "))
        proc, fr = fr[pi], fr[pi + 1:]
        k = kind_of(proc)
        s = ";".join(fr)
        if k == "ray workers":
            best, pos = "other", -1
            for key, name in CATEGORIES:
                i = s.rfind(key)
                if i > pos:
                    best, pos = name, i
            per[k][best] += int(n)
        else:
            per[k]["imports" if "_find_and_load" in s else "other"] += int(n)
            if k == "driver":
                for f in set(fr):
                    if "flywheel/" in f:
                        driver_frames[f] += int(n)
    return per, {}, driver_frames


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", required=True)
    ap.add_argument("--out", required=True, help="path prefix for NAME.txt and NAME.svg")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rate", type=int, default=40, help="py-spy samples per second")
    ap.add_argument("--skip", default="nsfw,rotation,clip")
    ap.add_argument("--keep-raw", help="also keep py-spy's collapsed stacks here")
    ap.add_argument("--no-spy", action="store_true", help="CPU seconds per process only (start-up of a small run)")
    a = ap.parse_args()
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    work = Path(tempfile.mkdtemp(prefix="flywheel-prof-"))
    home, out, raw = work / "home", work / "out", work / "profile.raw"
    env = {**os.environ, "FLYWHEEL_HOME": str(home), "FLYWHEEL_SERVER": "off", "DO_NOT_TRACK": "1"}
    env.pop("RAY_ADDRESS", None)
    stop, seen = threading.Event(), {}
    th = threading.Thread(target=watch, args=(f"FLYWHEEL_HOME={home}\0".encode(), stop, seen), daemon=True)
    th.start()
    cmd = [FLYWHEEL, "curate", "--recipe", "stage1", "--input", a.input, "--output", str(out), "--skip", a.skip,
           "--workers", str(a.workers)]
    t0 = time.perf_counter()
    spy = [] if a.no_spy else [pyspy, "record", "--subprocesses", "-r", str(a.rate), "-f", "raw", "-o", str(raw), "--"]
    subprocess.run([*spy, *cmd], env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if a.no_spy:
        raw.write_text("")
    wall = time.perf_counter() - t0
    stop.set()
    th.join()
    stats = json.loads((out / "stats.json").read_text())
    timing = stats["timing"]
    cpu: collections.Counter = collections.Counter()
    for c, cmdline in seen.values():
        cpu[kind_of(cmdline)] += c
    per, _, driver_frames = categorize(raw)
    procs = sorted(((c, pid, cmdline) for pid, (c, cmdline) in seen.items()), reverse=True)
    rows = stats["rows"]
    ops = timing.get("operator_cpu_s") or {}
    lines = [f"# flywheel curate --recipe stage1 --skip {a.skip} --workers {a.workers}: {rows} rows, "
             f"load average {os.getloadavg()[0]:.1f}, wall {wall:.1f} s ({'no py-spy' if a.no_spy else 'under py-spy'}; "
             "wall is not the figure on a busy machine)",
             "## CPU seconds per process kind (user+sys)"]
    lines += [f"  {k:16s} {v:8.1f} s  ({1000 * v / max(1, rows):.2f} ms/image)" for k, v in cpu.most_common()]
    lines.append(f"  {'operators':16s} {sum(ops.values()):8.1f} s  ({1000 * sum(ops.values()) / max(1, rows):.2f} "
                 f"ms/image; their own thread CPU: {', '.join(f'{k} {v:.1f}' for k, v in ops.items())})")
    lines += [f"    {c:7.1f} s  pid {pid}  {cmdline[:110]}" for c, pid, cmdline in procs if c >= 0.5]
    lines.append("## phases (s, wall): " + ", ".join(f"{k} {timing[k]:.1f}" for k in
                 ("plan_s", "prepare_s", "prefect_startup_s", "ray_startup_s", "score_s", "barrier_s", "finalize_s")
                 if isinstance(timing.get(k), (int, float))))
    for k, c in per.items():
        tot = sum(c.values())
        lines.append(f"## py-spy samples, {k}: {tot} ({tot / a.rate:.1f} s active)")
        lines += [f"  {v:6d} {100 * v / tot:5.1f}%  {name}" for name, v in c.most_common()]
    lines.append("## driver: flywheel frames (inclusive samples)")
    lines += [f"  {v:6d}  {f[:140]}" for f, v in driver_frames.most_common(25)]
    Path(a.out + ".txt").write_text("\n".join(lines) + "\n")
    if not a.no_spy:
        _flamegraph(raw, Path(a.out + ".svg"))
    print("\n".join(lines))
    if a.keep_raw:
        shutil.copy(raw, a.keep_raw)
    shutil.rmtree(work, ignore_errors=True)


def _flamegraph(raw: Path, svg: Path, min_share: float = 0.004) -> None:
    """A small flame graph from py-spy's collapsed stacks (inferno's flamegraph, when installed, is
    not needed): stacks under `min_share` of all samples are folded away to keep the file small."""
    stacks = collections.Counter()
    for line in raw.read_text().splitlines():
        s, _, n = line.rpartition(" ")
        fr = s.split(";")
        pi = max(i for i, f in enumerate(fr) if f.startswith("process "))
        stacks[tuple([kind_of(fr[pi])] + [f.split(" (")[0] + " " + f.split("/")[-1].rstrip(")") if "(" in f else f
                                          for f in fr[pi + 1:]])] += int(n)
    total = sum(stacks.values()) or 1
    tree: dict = {}
    for st, n in stacks.items():
        node = tree
        for f in st:
            node = node.setdefault(f, {"_n": 0, "_c": {}})
            node["_n"] += n
            node = node["_c"]
    width, row = 1600.0, 16
    rects = []

    def walk(children: dict, x: float, depth: int) -> int:
        maxd = depth
        for name, node in sorted(children.items(), key=lambda kv: -kv[1]["_n"]):
            w = width * node["_n"] / total
            if node["_n"] / total >= min_share:
                rects.append((x, depth, w, name, node["_n"]))
                maxd = max(maxd, walk(node["_c"], x, depth + 1))
            x += w
        return maxd

    maxd = walk(tree, 0.0, 0)
    h = (maxd + 2) * row
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{int(width)}" height="{h}" font-family="monospace" font-size="10">']
    for x, d, w, name, n in rects:
        y = h - (d + 1) * row
        hue = 20 + (hash(name) % 40)
        label = name if len(name) * 6 < w else name[: max(0, int(w / 6) - 1)]
        esc = lambda s: s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")  # noqa: E731
        out.append(f'<g><title>{esc(name)} ({n} samples, {100 * n / total:.1f}%)</title>'
                   f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{row - 1}" fill="hsl({hue},80%,60%)"/>'
                   f'<text x="{x + 2:.1f}" y="{y + 11}">{esc(label)}</text></g>')
    out.append("</svg>")
    svg.write_text("\n".join(out))


if __name__ == "__main__":
    main()

"""Start-up of `flywheel curate` (issue 18 item 2): cold, warm and per-command modes, each with a
real Ray and a real Prefect flow run, with the run record's phase times.

  .venv/bin/python benchmarks/startup.py [--n 20] [--demo]

Scenarios, each `flywheel curate --recipe stage1 --skip clip` on the same N JPEGs as a fresh
process, with a new --output each time:
  first   FLYWHEEL_SERVER=auto, a new FLYWHEEL_HOME (the local server starts, its Prefect
          database is created)
  cold    auto, the server stopped first (no process the tool started is alive)
  warm    auto, right after cold (the server is reused)
  off     FLYWHEEL_SERVER=off twice (Prefect's temporary server and Ray started by the command,
          side by side, and ended with it)
With --demo, `flywheel demo` on a new FLYWHEEL_HOME as well (what `make demo` runs after install).

Wall time depends on the machine's load, so each line also gives CPU seconds: the command's own
(user+sys, its reaped children included) plus what the local server's process tree spent
during the command (the runner, Ray's workers and actors are the server's). Work = the
operators' CPU seconds (stats.json `operator_cpu_s`) over the workers that had blocks; overhead =
wall - work. "(runner)": the local server's runner ran the flow (`flywheel.cli.runner`). The
load average is printed first.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FLYWHEEL = str(Path(sys.executable).parent / "flywheel")
TICK = os.sysconf("SC_CLK_TCK")


def make_input(root: Path, n: int) -> None:
    import numpy as np
    from PIL import Image
    from skimage import data

    root.mkdir(parents=True, exist_ok=True)
    photos = ["astronaut", "coffee", "chelsea", "rocket", "camera", "horse", "brick", "grass"]
    rng = np.random.default_rng(0)
    for i in range(n):
        im = Image.fromarray(getattr(data, photos[i % len(photos)])()).convert("RGB")
        w, h = im.size
        c = int(rng.integers(0, 60))
        im.crop((c, c, w - c, h - c)).resize((300 + 13 * i, 280 + 11 * i)).save(root / f"img{i:03d}.jpg", quality=88)
        (root / f"img{i:03d}.txt").write_text(f"a photo, number {i}")


def tree_cpu(root_pid: int | None) -> float:
    """CPU seconds of a live process tree: each live member's own time plus its reaped children's."""
    if not root_pid:
        return 0.0
    procs = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                s = Path(f"/proc/{d}/stat").read_text()
            except OSError:
                continue
            f = s[s.rindex(")") + 2:].split()
            procs[int(d)] = (int(f[1]), sum(int(x) for x in f[11:15]) / TICK)
    inside, changed = {root_pid} if root_pid in procs else set(), True
    while changed:
        changed = False
        for pid, (ppid, _) in procs.items():
            if pid not in inside and ppid in inside:
                inside.add(pid)
                changed = True
    return sum(procs[p][1] for p in inside)


def server_pid(home: Path) -> int | None:
    try:
        return json.loads((home / "server" / "server.json").read_text())["pid"]
    except (OSError, ValueError, KeyError):
        return None


def run(args: list[str], home: Path, mode: str, check: bool = True) -> dict:
    env = {**os.environ, "FLYWHEEL_HOME": str(home), "FLYWHEEL_SERVER": mode, "DO_NOT_TRACK": "1", "COLUMNS": "200"}
    spid = server_pid(home)
    before = tree_cpu(spid)
    t0 = time.perf_counter()
    p = subprocess.Popen([FLYWHEEL, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = p.communicate()[0]
    wall = time.perf_counter() - t0
    if p.returncode and check:
        print(out[-3000:])
        raise SystemExit(f"{' '.join(args)} failed")
    spid_after = server_pid(home)
    server_cpu = tree_cpu(spid_after) - (before if spid_after == spid else 0.0)
    return {"wall_s": wall, "server_cpu_s": server_cpu, "log": out}


def children_cpu() -> float:
    t = os.times()
    return t.children_user + t.children_system


def curate(inp: Path, work: Path, home: Path, mode: str, tag: str) -> dict:
    out = work / f"out-{tag}"
    c0 = children_cpu()
    r = run(["curate", "--recipe", "stage1", "--input", str(inp), "--output", str(out), "--skip", "clip"], home, mode)
    r["command_cpu_s"] = children_cpu() - c0
    tm = json.loads((out / "stats.json").read_text())["timing"]
    r["timing"] = tm
    # the operators' own work, as wall time: their CPU seconds spread over the workers that had
    # blocks to score (20 images in one folder are one shard: one worker)
    cpu = sum((tm.get("operator_cpu_s") or {}).values())
    r["work_s"] = cpu / max(1, min(2, len(tm.get("blocks") or [1])))
    r["overhead_s"] = r["wall_s"] - r["work_s"]
    return r


def show(tag: str, r: dict) -> None:
    tm = r.get("timing", {})
    keys = ("plan_s", "runtime_s", "server_wait_s", "ray_startup_s", "prefect_startup_s", "flow_start_s", "score_s",
            "first_block_s", "barrier_s", "finalize_s", "report_s", "after_flow_s", "total_s")
    phases = " ".join(f"{k[:-2]}={tm[k]:.1f}" for k in keys if isinstance(tm.get(k), (int, float)))
    print(f"{tag:>6}: wall {r['wall_s']:5.1f}s  cpu {r['command_cpu_s'] + r['server_cpu_s']:5.1f}s "
          f"(command {r['command_cpu_s']:.1f} + server {r['server_cpu_s']:.1f})  work {r.get('work_s', 0):.1f}s "
          f"overhead {r.get('overhead_s', 0):.1f}s{' (runner)' if tm.get('runner') else ''} | {phases}",
          flush=True)


def main() -> None:
    global FLYWHEEL
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--demo", action="store_true", help="also time `flywheel demo` on a new FLYWHEEL_HOME")
    ap.add_argument("--only", default="first,cold,warm,off", help="scenarios to run")
    ap.add_argument("--flywheel", default=FLYWHEEL, help="the flywheel command to time (another checkout's, for a before/after)")
    args = ap.parse_args()
    FLYWHEEL = args.flywheel
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs", flush=True)
    work = Path(tempfile.mkdtemp(prefix="fw-startup-"))
    home = work / "home"
    only = args.only.split(",")
    try:
        inp = work / "in"
        make_input(inp, args.n)
        if "first" in only:
            show("first", curate(inp, work, home, "auto", "first"))
        if "cold" in only:
            run(["server", "stop"], home, "auto", check=False)
            show("cold", curate(inp, work, home, "auto", "cold"))
        if "warm" in only:
            show("warm", curate(inp, work, home, "auto", "warm"))
            show("warm2", curate(inp, work, home, "auto", "warm2"))
        if "off" in only:
            run(["server", "stop"], home, "auto", check=False)
            show("off", curate(inp, work, home, "off", "off"))
            show("off2", curate(inp, work, home, "off", "off2"))
        if args.demo:
            dh = work / "demo-home"
            c0 = children_cpu()
            r = run(["demo", "--out", str(work / "demo")], dh, "auto")
            r["command_cpu_s"] = children_cpu() - c0
            run_dir = next((work / "demo").glob("run-*"))
            r["timing"] = json.loads((run_dir / "stats.json").read_text())["timing"]
            show("demo", r)
            run(["server", "stop"], dh, "auto", check=False)
    finally:
        for h in (home, work / "demo-home"):
            if h.exists():
                subprocess.run([FLYWHEEL, "server", "stop"], env={**os.environ, "FLYWHEEL_HOME": str(h)}, capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

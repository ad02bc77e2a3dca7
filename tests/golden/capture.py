"""Golden outputs of the main commands, to compare a refactor against.

    python tests/golden/capture.py OUT_DIR [--only curate|captions|train]   # run the commands, write OUT_DIR/*.json
    python tests/golden/capture.py --compare A B    # what differs between two captures

Captured: stage-1 and stage-4 rows and reasons on the demo input (tiny random CLIP and aesthetic
models where the real weights are missing), offline captions of the demo's pages, the losses of a
2-step training run, and the routes and review queue of `flywheel loop --demo --small`. Scores are
rounded so that thread-count noise in float sums does not read as a change.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

FLYWHEEL = str(Path(sys.executable).with_name("flywheel"))


def sh(*args: str, env: dict, cwd: Path) -> None:
    print("+", " ".join(args), flush=True)
    subprocess.run(args, check=True, env=env, cwd=cwd)


def rows(dataset_dir: Path, extra: tuple[str, ...] = ()) -> list[dict]:
    import pyarrow.parquet as pq

    out = []
    for part in sorted((dataset_dir / "data").glob("*.parquet")):
        t = pq.read_table(part)
        for r in t.to_pylist():
            d = {"source": r["source"], "id": r["id"], "reject_reason": r.get("reject_reason"),
                 "reject_reasons": r.get("reject_reasons"), "dedup_of": r.get("dedup_of")}
            for k, v in r.items():
                if "__" in k and isinstance(v, float):
                    d[k] = round(v, 3)
                elif "__" in k and isinstance(v, (int, str, bool)) or k in extra:
                    d[k] = v
            out.append(d)
    return sorted(out, key=lambda d: (d["source"], d["id"]))


def capture(out: Path, only: str = "all") -> None:
    """`only`: all | curate | captions | train | loop."""
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="golden-"))
    env = dict(os.environ, FLYWHEEL_HOME=str(work / "home"), DO_NOT_TRACK="1", OMP_NUM_THREADS="1")
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: builders.py, the tiny models
    from builders import tiny_aesthetic, tiny_clip

    from flywheel.demos import sample_data as demo

    inp = work / "in" / "raw"
    demo.generate(inp)
    clip_dir = tiny_clip(work / "tiny-clip")
    aes_dir = tiny_aesthetic(work / "tiny-aes", dim=32)
    sh(FLYWHEEL, "models", "add", "tiny-clip", "--from", str(clip_dir), env=env, cwd=work)
    sh(FLYWHEEL, "models", "add", "tiny-aes", "--from", str(aes_dir), env=env, cwd=work)

    s1 = work / "s1"
    sh(FLYWHEEL, "curate", "--recipe", "stage1", "--input", str(inp), "--output", str(s1), "--name", "gold",
       "--reject-uncaptioned", "--set", "clip.model=tiny-clip", env=env, cwd=work)
    s4 = work / "s4"
    sh(FLYWHEEL, "curate", "--recipe", "stage4", "--input", str(inp), "--output", str(s4), "--name", "gold4",
       "--reject-uncaptioned", "--set", "clip.model=tiny-clip", "--set", "aesthetic.model=tiny-aes", "--set", "aesthetic.clip_model=tiny-clip",
       env=env, cwd=work)
    for stage, d in (("stage1", s1), ("stage4", s4)):
        res = {"accepted": rows(d / "accepted"), "rejected": rows(d / "rejected"),
               "counts": json.loads((d / "stats.json").read_text()).get("counts")}
        (out / f"{stage}.json").write_text(json.dumps(res, indent=1, sort_keys=True, default=str))

    if only == "curate":
        return
    cap = work / "cap"
    sh(FLYWHEEL, "caption", "--input", str(s1 / "accepted"), "--output", str(cap), "--backend", "offline",
       "--workers", "0", env=env, cwd=work)
    caps = [{"source": r["source"], "captions": r["captions"], "caption_errors": r.get("caption_errors")}
            for r in rows(cap, extra=("captions", "caption_errors")) if "/pages/" in r["source"]]
    (out / "captions.json").write_text(json.dumps(caps, indent=1, sort_keys=True, ensure_ascii=False))

    if only == "captions":
        return
    ck = work / "ckpt"
    sh(FLYWHEEL, "train", "--stage", "pretrain", "--preset", "tiny", "--dataset", str(s1 / "accepted"), "--steps", "2",
       "--out", str(ck), "--batch-size", "2", "--device", "cpu", "--resolution", "64", env=env, cwd=work)
    losses = [json.loads(line) for line in (ck / "metrics.jsonl").read_text().splitlines()]
    (out / "train.json").write_text(json.dumps([{k: (round(v, 4) if isinstance(v, float) else v) for k, v in m.items()
                                                if k in ("step", "loss", "lr")} for m in losses], indent=1))

    if only == "train":
        return
    loop = work / "loop"
    sh(FLYWHEEL, "loop", "--demo", "--small", "--out", str(loop), env=env, cwd=work)
    import sqlite3

    con = sqlite3.connect(work / "home" / "catalog.db")
    routes = [dict(zip(("signal_id", "track"), r)) for r in con.execute("SELECT signal_id, track FROM routes ORDER BY signal_id")]
    queue = [dict(zip(("queue", "sample_id", "source", "status"), r)) for r in
             con.execute("SELECT queue, sample_id, source, status FROM review_items ORDER BY queue, sample_id, source")]
    (out / "loop.json").write_text(json.dumps({"routes": routes, "queue": queue}, indent=1))
    print(f"captured into {out} (work dir {work})")


def compare(a: Path, b: Path) -> int:
    bad = 0
    for f in sorted(a.glob("*.json")):
        other = b / f.name
        if not other.exists():
            print(f"{f.name}: missing in {b}")
            bad += 1
            continue
        x, y = json.loads(f.read_text()), json.loads(other.read_text())
        if x == y:
            print(f"{f.name}: same")
            continue
        bad += 1
        print(f"{f.name}: DIFFERS")
        _diff(x, y, f.stem)
    return bad


def _diff(x, y, path: str, limit: list = [40]) -> None:
    if limit[0] <= 0:
        return
    if isinstance(x, dict) and isinstance(y, dict):
        for k in sorted(set(x) | set(y)):
            if x.get(k) != y.get(k):
                _diff(x.get(k), y.get(k), f"{path}.{k}")
    elif isinstance(x, list) and isinstance(y, list) and len(x) == len(y):
        for i, (p, q) in enumerate(zip(x, y)):
            if p != q:
                _diff(p, q, f"{path}[{i}]")
    else:
        limit[0] -= 1
        print(f"  {path}: {str(x)[:150]!s} -> {str(y)[:150]!s}")


if __name__ == "__main__":
    if sys.argv[1] == "--compare":
        sys.exit(1 if compare(Path(sys.argv[2]), Path(sys.argv[3])) else 0)
    capture(Path(sys.argv[1]), sys.argv[3] if len(sys.argv) > 3 and sys.argv[2] == "--only" else "all")

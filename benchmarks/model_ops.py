"""Batched vs one-by-one throughput of the model-backed operators, measured in the same run.

    python benchmarks/model_ops.py [--n 64] [--ops nsfw,clip,aesthetic,image_quality,distribution,rotation]
                                   [--threads 1] [--clip MODEL]   # default: a tiny random open_clip

Each operator scores the same n working copies (scikit-image / scikit-learn photos cut into
256 px crops) twice: with its batch size and with batch size 1, after one warm-up call. Prints
images/s for both and the ratio. CLIP and the aesthetic head use tiny random-weight models built
from their configs (no weights can be downloaded here) unless --clip names an installed model.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa


def images(n: int, size: int = 256) -> list[np.ndarray]:
    import sklearn
    from PIL import Image
    from skimage import data

    srcs = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]
    srcs += [np.asarray(Image.open(Path(sklearn.__file__).parent / "datasets" / "images" / f).convert("RGB")) for f in ("china.jpg", "flower.jpg")]
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        s = srcs[i % len(srcs)]
        h, w = s.shape[:2]
        c = min(h, w, size + 64)
        y, x = rng.integers(0, h - c + 1), rng.integers(0, w - c + 1)
        out.append(np.asarray(Image.fromarray(s[y:y + c, x:x + c]).resize((size, size))))
    return out


def timed(fn, repeat: int = 1) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--ops", default="nsfw,clip,aesthetic,image_quality,distribution,rotation")
    ap.add_argument("--threads", type=int, default=1, help="torch/onnxruntime threads (CPU)")
    ap.add_argument("--clip", default="", help="installed CLIP model-store name (default: a tiny random one)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=3, help="best of R timed passes per side (the machine is shared)")
    args = ap.parse_args()

    os.environ.setdefault("FLYWHEEL_HOME", tempfile.mkdtemp(prefix="bench-models-"))
    os.environ["FLYWHEEL_ORT_THREADS"] = str(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    from flywheel.filters.base import Work, get
    from flywheel.models import clip, store

    clip_name, aes_name = args.clip, "laion-aesthetic-v2"
    if not clip_name:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tiny models are test code
        from builders import tiny_aesthetic, tiny_clip

        tmp = Path(tempfile.mkdtemp())
        store.add("bench-tiny-clip", tiny_clip(tmp / "clip"))
        store.add("bench-tiny-aes", tiny_aesthetic(tmp / "aes", dim=32))
        clip_name, aes_name = "bench-tiny-clip", "bench-tiny-aes"

    imgs = images(args.n)
    work = [Work(rgb=im, width=im.shape[1], height=im.shape[0]) for im in imgs]
    caps = [f"a photo of thing number {i} on a table" for i in range(args.n)]
    B = args.batch
    configs = {
        "nsfw": ({"batch_size": B}, {"batch_size": 1}),
        "clip": ({"model": clip_name, "batch_size": B}, {"model": clip_name, "batch_size": 1}),
        "aesthetic": ({"model": aes_name, "clip_model": clip_name, "batch_size": B}, {"model": aes_name, "clip_model": clip_name, "batch_size": 1}),
        "image_quality": ({}, {}),
        "distribution": ({"batch_size": B}, {"batch_size": 1}),
        "rotation": ({}, {}),
    }
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"device {dev}, threads {args.threads}, n={args.n} images of 256x256, batch {B} vs 1 (same run)")
    print(f"{'operator':<14} {'batched img/s':>14} {'1-by-1 img/s':>13} {'ratio':>7}")
    for name in args.ops.split(","):
        op_cls = get(name)
        pb, p1 = configs[name]
        ob, o1 = op_cls(pb), op_cls(p1)
        ob.setup(), o1.setup()

        embs = None
        if "clip__embedding" in ob.reads:  # aesthetic scores the embeddings clip wrote: the head alone is timed
            embs = clip.shared(store.path(clip_name)).images([w.rgb for w in work]).tolist()

        def run(op, size):
            for s in range(0, args.n, size):
                ids = [f"{name}-{size}-{i}" for i in range(s, min(args.n, s + size))]
                t = pa.table({"id": ids, "caption": caps[s:s + size]})
                if embs is not None:
                    t = t.append_column("clip__embedding", pa.array(embs[s:s + size], pa.list_(pa.float32())))
                op.score(t, work[s:s + size])

        if name in ("image_quality", "rotation"):
            # no batch-size param: batched = one call with the whole list, 1-by-1 = n calls
            run(ob, args.n)  # warm-up
            tb = timed(lambda: run(ob, args.n), args.repeat)
            t1 = timed(lambda: run(o1, 1), args.repeat)
        else:
            run(ob, B)  # warm-up
            run(o1, 1) if args.n <= 8 else run(o1, args.n)  # warm-up
            tb = timed(lambda: run(ob, args.n), args.repeat)
            t1 = timed(lambda: run(o1, args.n), args.repeat)  # batch_size=1 inside the op
        print(f"{name:<14} {args.n / tb:>14.1f} {args.n / t1:>13.1f} {t1 / tb:>6.2f}x")
        sys.stdout.flush()


if __name__ == "__main__":
    main()

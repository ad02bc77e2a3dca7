"""Per-image cost of the `entropy` (stage 1) and `image_quality` (stage 4) scores, in ms/img.

    python benchmarks/quality_cost.py [--n 48] [--repeat 3]

Working copies as the engine makes them (`filters.decode` at the stage's work size: 256 for
entropy, 512 for image_quality) of scikit-image / scikit-learn photos and a few flat images
(a page, a gradient); best of R passes (the machine is shared). BRISQUE (`brisque: true`, the
former stage-4 score) is timed beside it for comparison.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def works(n: int, size: int) -> list:
    import sklearn
    from PIL import Image, ImageDraw
    from skimage import data

    from flywheel.filters.decode import decode

    srcs = [Image.fromarray(getattr(data, k)()) for k in ("astronaut", "chelsea", "coffee", "rocket")]
    srcs += [Image.open(Path(sklearn.__file__).parent / "datasets" / "images" / f).convert("RGB") for f in ("china.jpg", "flower.jpg")]
    page = Image.new("RGB", (1700, 2200), "white")
    ImageDraw.Draw(page).text((200, 200), "a sparse page " * 5, fill="black")
    g = np.tile(np.linspace(40, 200, 1280, dtype=np.float32), (800, 1)).astype(np.uint8)
    srcs += [page, Image.fromarray(np.stack([g] * 3, -1))]
    out = []
    for i in range(n):
        im = srcs[i % len(srcs)]
        f = max(1.0, 1024 / min(im.size))  # files larger than the work size, as most inputs are
        im = im.resize((round(im.size[0] * f), round(im.size[1] * f)))
        b = io.BytesIO()
        im.save(b, "PNG")
        out.append(decode(b.getvalue(), "png", size, 10**9).work)
    return out


def ms_per_image(op, ws, repeat: int) -> float:
    t = pa.table({"x": list(range(len(ws)))})
    op.score(t, ws[:2])  # warm-up (imports, model load)
    best = float("inf")
    for _ in range(repeat):
        for w in ws:
            w._gray = None  # the shared luma is computed once per row by the first operator that asks
        s = time.perf_counter()
        op.score(t, ws)
        best = min(best, time.perf_counter() - s)
    return best / len(ws) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=48)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    from flywheel.filters.entropy import Entropy
    from flywheel.filters.image_quality import ImageQuality

    w256, w512 = works(a.n, 256), works(a.n, 512)
    print(f"entropy at 256 (stage 1):            {ms_per_image(Entropy(), w256, a.repeat):6.1f} ms/img")
    print(f"image_quality at 512 (stage 4):      {ms_per_image(ImageQuality(), w512, a.repeat):6.1f} ms/img")
    print(f"  with brisque: true (former score): {ms_per_image(ImageQuality({'brisque': True}), w512, a.repeat):6.1f} ms/img")


if __name__ == "__main__":
    main()

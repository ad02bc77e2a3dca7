"""Training samples from emitted datasets, read through their Parquet contract only
(`DIR/manifest.json` + `DIR/data/part-*.parquet`, columns documented in flywheel/datasets.py).

What a step sees is a pure function of (seed, step, rank): the task (T2I or TI2I, Bresenham-interleaved
at the stage's ratio), the batch (per task, epochs over aspect-ratio buckets shuffled per epoch), each
sample's caption type (drawn with the configured probabilities among the types the row has). So a
resumed run sees exactly the batches an uninterrupted one would, and DDP ranks see disjoint batches.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

COLUMNS = ["id", "task", "image", "caption", "captions", "source_images", "instruction", "width", "height"]
CAPTION_TYPES = ("general", "text", "knowledge", "structured", "original")
DEFAULT_CAPTION_PROBS = {"general": 0.5, "text": 0.1, "knowledge": 0.1, "structured": 0.1, "original": 0.2}
ASPECTS = (1 / 2, 2 / 3, 3 / 4, 1.0, 4 / 3, 3 / 2, 2.0)


@dataclass
class Sample:
    id: str
    task: str  # t2i | ti2i
    row: int  # row in Samples.table
    prompt: str
    caption_type: str
    size: tuple[int, int]  # (w, h) of the bucket
    n_sources: int = 0


@dataclass
class Samples:
    """The usable rows of one or more datasets (rejected rows skipped), held as one Arrow table."""

    table: "object"  # pa.Table
    refs: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, paths: list[str | Path]) -> "Samples":
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        tables, refs = [], []
        for p in paths:
            p = Path(p)
            mf = p / "manifest.json"
            if not mf.exists():
                raise FileNotFoundError(f"{p} is not a dataset directory (no manifest.json); pass what `flywheel curate` or `flywheel emit` wrote")
            m = json.loads(mf.read_text())
            refs.append(f"{m.get('name')}@v{m.get('version')}")
            for part in sorted((p / "data").glob("part-*.parquet")):
                names = pq.read_schema(part).names
                missing = {"id", "image", "width", "height"} - set(names)
                if missing:
                    raise ValueError(f"{part} lacks columns {sorted(missing)} of the dataset contract")
                t = pq.read_table(part, columns=[c for c in COLUMNS + ["reject_reason"] if c in names])
                if "reject_reason" in t.column_names:
                    t = t.filter(pc.is_null(t["reject_reason"])).drop(["reject_reason"])
                for c in COLUMNS:
                    if c not in t.column_names:
                        t = t.append_column(c, pa.nulls(len(t), _TYPES()[c]))
                tables.append(t.select(COLUMNS).cast(pa.schema([(c, _TYPES()[c]) for c in COLUMNS])))
        if not tables or sum(len(t) for t in tables) == 0:
            raise ValueError(f"no usable rows in {[str(p) for p in paths]}; check the datasets are not empty or all rejected")
        return cls(pa.concat_tables(tables).combine_chunks(), refs)

    def __len__(self) -> int:
        return len(self.table)

    def column(self, name: str) -> list:
        return self.table.column(name).to_pylist()

    def image(self, row: int) -> bytes:
        return self.table.column("image")[row].as_py()

    def sources(self, row: int) -> list[bytes]:
        return self.table.column("source_images")[row].as_py() or []


def _TYPES():
    import pyarrow as pa

    captions = pa.struct([(t, pa.string()) for t in ("general", "text", "knowledge", "structured")])
    return {"id": pa.string(), "task": pa.string(), "image": pa.binary(), "caption": pa.string(), "captions": captions,
            "source_images": pa.list_(pa.binary()), "instruction": pa.string(), "width": pa.int32(), "height": pa.int32()}


def buckets(resolution: int, multiple: int = 32) -> list[tuple[int, int]]:
    """(w, h) sizes of about resolution^2 pixels for the aspect ratios in ASPECTS, multiples of `multiple`."""
    out = []
    for r in ASPECTS:
        w = max(multiple, round(math.sqrt(resolution * resolution * r) / multiple) * multiple)
        h = max(multiple, round(math.sqrt(resolution * resolution / r) / multiple) * multiple)
        if (w, h) not in out:
            out.append((w, h))
    return out


def nearest_bucket(width: int, height: int, sizes: list[tuple[int, int]]) -> tuple[int, int]:
    r = math.log(max(width, 1) / max(height, 1))
    return min(sizes, key=lambda s: abs(math.log(s[0] / s[1]) - r))


class Batches:
    """Deterministic batches: `get(step, rank, world)` -> list[Sample]."""

    def __init__(self, samples: Samples, batch_size: int, seed: int, ti2i_ratio: float,
                 caption_probs: dict[str, float] | None = None, multiple: int = 32):
        self.s = samples
        self.batch_size = batch_size
        self.seed = seed
        self.multiple = multiple
        self.caption_probs = dict(caption_probs or DEFAULT_CAPTION_PROBS)
        unknown = set(self.caption_probs) - set(CAPTION_TYPES)
        if unknown:
            raise ValueError(f"unknown caption types {sorted(unknown)}; use {CAPTION_TYPES}")
        tasks = self.s.column("task")
        has_src = [bool(x) for x in self.s.table.column("source_images").to_pylist()]
        self.pools = {"t2i": [i for i, t in enumerate(tasks) if t != "ti2i"],
                      "ti2i": [i for i, t in enumerate(tasks) if t == "ti2i" and has_src[i]]}
        if not self.pools["t2i"]:
            ti2i_ratio = 1.0
        elif not self.pools["ti2i"]:
            ti2i_ratio = 0.0
        self.ti2i_ratio = ti2i_ratio
        self.widths, self.heights = self.s.column("width"), self.s.column("height")
        self.captions, self.originals = self.s.column("captions"), self.s.column("caption")
        self.instructions, self.ids = self.s.column("instruction"), self.s.column("id")
        self.n_sources = [len(x or []) for x in self.s.table.column("source_images").to_pylist()]
        self._epochs: dict = {}
        self._keys: dict = {}  # resolution -> bucket key per row

    def task_of(self, g: int) -> tuple[str, int]:
        """Task of global batch g and its index k within that task's stream (exact ratio, no state)."""
        r = self.ti2i_ratio
        n_ti2i_before = math.floor(g * r)
        if math.floor((g + 1) * r) > n_ti2i_before:
            return "ti2i", n_ti2i_before
        return "t2i", g - n_ti2i_before

    def epoch(self, task: str, resolution: int, e: int) -> list[list[int]]:
        key = (task, resolution, e)
        if key not in self._epochs:
            import numpy as np

            rng = np.random.default_rng([self.seed, 0 if task == "t2i" else 1, resolution, e])
            keys = self.keys(resolution)
            groups: dict = {}
            for i in self.pools[task]:
                groups.setdefault(keys[i], []).append(i)
            batches = []
            for k in sorted(groups):
                idx = list(rng.permutation(groups[k]))
                batches += [[int(x) for x in idx[j:j + self.batch_size]] for j in range(0, len(idx), self.batch_size)]
            order = rng.permutation(len(batches))
            self._epochs = {kk: v for kk, v in self._epochs.items() if kk[2] >= e - 1}  # keep memory flat
            self._epochs[key] = [batches[o] for o in order]
        return self._epochs[key]

    def keys(self, resolution: int) -> list[tuple]:
        """(w, h, number of source images) per row at this resolution: rows batch together only when they match."""
        if resolution not in self._keys:
            sizes = buckets(resolution, self.multiple)
            self._keys[resolution] = [(*nearest_bucket(w or 1, h or 1, sizes), n)
                                      for w, h, n in zip(self.widths, self.heights, self.n_sources)]
        return self._keys[resolution]

    def batches_per_epoch(self, task: str, resolution: int) -> int:
        return len(self.epoch(task, resolution, 0))

    def get(self, step: int, resolution: int, rank: int = 0, world: int = 1) -> list[Sample]:
        import numpy as np

        g = step * world + rank
        task, k = self.task_of(g)
        nb = self.batches_per_epoch(task, resolution)
        rows = self.epoch(task, resolution, k // nb)[k % nb]
        keys = self.keys(resolution)
        rng = np.random.default_rng([self.seed, step, rank, 7])
        out = []
        for i in rows:
            prompt, ctype = self.prompt(i, task, rng)
            w, h, n_src = keys[i]
            out.append(Sample(self.ids[i], task, i, prompt, ctype, (w, h), n_src))
        return out

    def prompt(self, i: int, task: str, rng) -> tuple[str, str]:
        """The row's text: an edit's instruction, else a caption type drawn among those the row has."""
        if task == "ti2i" and self.instructions[i]:
            return self.instructions[i], "instruction"
        caps = dict(self.captions[i] or {})
        caps["original"] = self.originals[i]
        have = [(t, p) for t, p in self.caption_probs.items() if p > 0 and caps.get(t)]
        if not have:
            return "", "none"
        import numpy as np

        types, probs = zip(*have)
        p = np.asarray(probs, dtype=float)
        t = types[int(rng.choice(len(types), p=p / p.sum()))]
        return caps[t], t


def load_image(data: bytes, size: tuple[int, int], channels: int = 4):
    """Encoded bytes -> (C, H, W) float tensor in [-1, 1] at `size` (cover-resize, centre crop), as the
    pipelines give images to the VAE: RGBA with alpha 1 where the source had none, or RGB composited on white."""
    import numpy as np
    import torch
    from PIL import Image, ImageOps

    im = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
    im = im.convert("RGBA")
    if channels == 3:
        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(bg, im).convert("RGB")
    w, h = size
    scale = max(w / im.width, h / im.height)
    nw, nh = max(w, round(im.width * scale)), max(h, round(im.height * scale))
    im = im.resize((nw, nh), Image.BICUBIC)
    left, top = (nw - w) // 2, (nh - h) // 2
    im = im.crop((left, top, left + w, top + h))
    x = torch.from_numpy(np.asarray(im, dtype=np.float32)).permute(2, 0, 1) / 127.5 - 1.0
    return x


def to_pil(x):
    """(C, H, W) in [-1, 1] -> PIL RGB (alpha dropped)."""
    import numpy as np
    from PIL import Image

    a = ((x[:3].clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(np.ascontiguousarray(a), "RGB")

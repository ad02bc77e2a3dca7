"""open_clip image and text embeddings, loaded from the model store's `local-dir:` folders.

A CLIP model in the store is an open_clip `local-dir:` folder: `open_clip_config.json`
(`model_cfg`, `preprocess_cfg`) and `open_clip_model.safetensors`, the layout of the hub repos
open_clip publishes (ViT-L-14 / openai is `timm/vit_large_patch14_clip_224.openai`). The same
code path loads the real ViT-L-14 and the tiny random-weight models the tests build
(tests/builders.py).

Embeddings are L2-normalised float32; cosine similarity is their dot product (-1..1; CLIP
ViT-L-14 gives ~0.15-0.20 for unrelated and ~0.30+ for matching image-text pairs).

Embeddings are kept so nothing is embedded twice: per row in the `clip__embedding` column the
clip operator writes (the aesthetic head and the distribution filter read it), and per run in a side
dataset (`write_side`, `read_side`: Parquet parts of `id, image_emb, text_emb, model, revision`)
that the FAISS index reads.
"""

from __future__ import annotations

import json
import threading
import uuid
from pathlib import Path
from typing import Sequence

import numpy as np

SIDE_COLUMNS = ("id", "image_emb", "text_emb", "model", "revision")


def device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class Clip:
    """`images(list of RGB uint8)` and `texts(list of str)` -> (N, D) normalised embeddings."""

    def __init__(self, model_dir: Path | str, batch_size: int = 32, dev: str | None = None):
        import open_clip
        import torch

        self.dir = Path(model_dir)
        self.device = dev or device()
        ref = f"local-dir:{self.dir}"
        self.model, _, self.preprocess = open_clip.create_model_and_transforms(ref, device=self.device)
        self.model.eval()
        if self.device == "cuda":
            self.model.half()
        self.tokenizer = open_clip.get_tokenizer(ref)
        self.batch_size = max(1, batch_size)
        self.dtype = torch.float16 if self.device == "cuda" else torch.float32
        self.dim = int(self.model.text_projection.shape[1]) if getattr(self.model, "text_projection", None) is not None else None
        self._pil_steps, self._tensor_steps = split_preprocess(self.preprocess)

    def images(self, rgbs: Sequence[np.ndarray]) -> np.ndarray:
        import torch
        from PIL import Image

        out = []
        with torch.inference_mode():
            for s in range(0, len(rgbs), self.batch_size):
                chunk = rgbs[s:s + self.batch_size]
                if self._pil_steps is None:  # a transform we do not know how to split: open_clip's, image by image
                    x = torch.stack([self.preprocess(Image.fromarray(r)) for r in chunk])
                else:
                    px = np.stack([np.asarray(self._pil_steps(Image.fromarray(r)).convert("RGB")) for r in chunk])
                    x = self._tensor_steps(torch.from_numpy(px).permute(0, 3, 1, 2).float().div_(255))
                e = self.model.encode_image(x.to(self.device, self.dtype))
                out.append(torch.nn.functional.normalize(e.float(), dim=-1).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.dim or 0), np.float32)

    def texts(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        out = []
        with torch.inference_mode():
            for s in range(0, len(texts), self.batch_size):
                tok = self.tokenizer(list(texts[s:s + self.batch_size])).to(self.device)
                e = self.model.encode_text(tok)
                out.append(torch.nn.functional.normalize(e.float(), dim=-1).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.dim or 0), np.float32)


def split_preprocess(preprocess):
    """open_clip's eval transform cut where PIL ends: (the PIL steps, applied image by image: resize,
    crop, mode; the tensor steps after its to-tensor, applied once to the stacked batch: normalise).
    Same arithmetic as the transform (to-tensor is uint8 / 255), one tensor op per batch instead of
    several per image, which is most of the per-image cost of a small model. (None, None) when the
    transform is not the shape we know; callers then run it whole, image by image."""
    from torchvision import transforms as T

    steps = list(getattr(preprocess, "transforms", []))
    cut = next((i for i, t in enumerate(steps) if type(t).__name__ in ("ToTensor", "MaybeToTensor")), None)
    if cut is None or not all(isinstance(t, T.Normalize) for t in steps[cut + 1:]):
        return None, None
    return T.Compose(steps[:cut]), T.Compose(steps[cut + 1:])


_models: dict[tuple[str, int], Clip] = {}
_lock = threading.Lock()


def shared(model_dir: Path | str, batch_size: int = 32) -> Clip:
    """One loaded CLIP per folder per process (CLIP and aesthetic in one worker share it)."""
    key = (str(Path(model_dir).resolve()), batch_size)
    with _lock:
        if key not in _models:
            _models[key] = Clip(model_dir, batch_size)
        return _models[key]


def write_side(side_dir: Path | str, ids: Sequence[str], image_emb: np.ndarray, text_emb: np.ndarray | None,
               model: str, revision: str) -> Path:
    """One Parquet part of the embeddings side dataset (each worker writes its own parts)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    d = Path(side_dir)
    d.mkdir(parents=True, exist_ok=True)
    dim = image_emb.shape[1]
    t = pa.table({
        "id": pa.array(list(ids), pa.string()),
        "image_emb": pa.FixedSizeListArray.from_arrays(pa.array(image_emb.astype(np.float32).ravel()), dim),
        "text_emb": (pa.FixedSizeListArray.from_arrays(pa.array(text_emb.astype(np.float32).ravel()), dim)
                     if text_emb is not None else pa.nulls(len(ids), pa.list_(pa.float32(), dim))),
        "model": pa.array([model] * len(ids), pa.string()),
        "revision": pa.array([revision] * len(ids), pa.string()),
    })
    p = d / f"part-{uuid.uuid4().hex[:12]}.parquet"
    tmp = p.with_suffix(".tmp")
    pq.write_table(t, tmp, compression="zstd")
    tmp.rename(p)
    if not (d / "_meta.json").exists():
        (d / "_meta.json").write_text(json.dumps({"columns": list(SIDE_COLUMNS), "dim": dim, "model": model,
                                                  "revision": revision, "key": "id (sample id)"}))
    return p


def read_side(side_dir: Path | str):
    """The embeddings side dataset as one Arrow table (duplicates of an id: the first kept)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    parts = sorted(Path(side_dir).glob("part-*.parquet"))
    if not parts:
        return pa.table({c: [] for c in SIDE_COLUMNS})
    t = pa.concat_tables([pq.read_table(p) for p in parts])
    seen, keep = set(), []
    for i, sid in enumerate(t.column("id").to_pylist()):
        if sid not in seen:
            seen.add(sid)
            keep.append(i)
    return t.take(keep)

"""Thumbnails for the review pages, read only from where the catalog says the sample is: its
row in a registered dataset (`name@vN`, id and source) or the signal image store
(`flywheel.loop.blobs`). Nothing a caller puts in an item's payload is opened (issue 19: any API
token could make reviewers see its own image, or any file, for a real sample).

The cache is keyed by the SHA-256 of the bytes the thumbnail was made from: a file
`<sha>_<size>.jpg` is only ever written from bytes that hash to `<sha>`, so a cache hit for an
item's content hash shows that content and nothing else. A sample's id is the hash of its image
bytes (the dataset contract), which is what lets a hit skip reading the dataset."""

from __future__ import annotations

import hashlib
import io
import os
import re
import threading
from pathlib import Path

SIZES = (128, 256, 512)
FULL = 2048  # "w=0": the image at its real size, up to this many pixels on the longer side
_SHA = re.compile(r"^[0-9a-f]{64}$")
MAX_FILE_BYTES = 64 << 20  # a dataset row's image_uri is opened only up to this size


def pick_size(w: int | None) -> int:
    """The smallest cached size at least `w` wide (the page asks for what it shows); 0 = real size."""
    if w == 0:
        return FULL
    for s in SIZES:
        if (w or SIZES[1]) <= s:
            return s
    return SIZES[-1]


def content_key(item: dict) -> str | None:
    """The content hash an item's thumbnail is cached under, before reading any bytes."""
    facts = item.get("sample") or {}
    key = facts.get("sha256") if facts.get("kind") == "blob" else item.get("sample_id")
    return key if isinstance(key, str) and _SHA.match(key) else None


def _image_bytes(item: dict, catalog) -> bytes | None:
    """The sample's image: the stored signal image it names, else its dataset row."""
    from flywheel.loop import blobs

    facts = item.get("sample") or {}
    if facts.get("kind") == "blob" or not item.get("dataset"):
        return blobs.read(catalog, facts.get("sha256") or item.get("sample_id") or "")
    import pyarrow.compute as pc

    from flywheel.datasets import Dataset

    try:  # a catalog reference only: a directory path in `dataset` is not followed
        ds = Dataset(catalog.resolve_dataset(str(item["dataset"])))
    except (KeyError, FileNotFoundError, ValueError):
        return None
    cond = pc.field("id") == item.get("sample_id")
    if item.get("source") is not None:
        cond = cond & (pc.field("source") == item["source"])
    cols = [c for c in ("image", "image_uri") if c in ds.schema().names]
    t = ds.to_table(columns=cols, filter=cond)
    if t.num_rows == 0:
        return None
    row = t.slice(0, 1).to_pylist()[0]
    if row.get("image"):
        return row["image"]
    uri = row.get("image_uri")  # written by curation into the dataset, not by a caller
    if uri and "://" not in uri:
        p = Path(uri)
        try:
            if p.is_file() and p.stat().st_size <= MAX_FILE_BYTES:
                return p.read_bytes()
        except OSError:
            return None
    return None


def _cached(key: str, size: int) -> Path:
    from flywheel.config import cache_dir

    # "sha256/": thumbnails cached by an earlier version under caller-chosen ids are never read
    return cache_dir("thumbs") / "sha256" / key[:2] / f"{key}_{'full' if size == FULL else size}.jpg"


def thumbnail(item: dict, width: int, catalog=None) -> Path | None:
    """Path of the cached JPEG thumbnail `width` wide at most (0: the real size), made on first
    use; None when the sample's image cannot be found in the catalog's places."""
    size = pick_size(width)
    key = content_key(item)
    if key is not None and _cached(key, size).exists():
        return _cached(key, size)
    data = _image_bytes(item, catalog)
    if data is None:
        return None
    out = _cached(hashlib.sha256(data).hexdigest(), size)
    if out.exists():
        return out
    from PIL import Image, ImageOps

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.seek(0)
            im = ImageOps.exif_transpose(im)
            im.thumbnail((size, size))
            if im.mode in ("RGBA", "LA", "P"):
                im = im.convert("RGBA")
                bg = Image.new("RGB", im.size, (255, 255, 255))
                bg.paste(im, mask=im.getchannel("A"))
                im = bg
            elif im.mode != "RGB":
                im = im.convert("RGB")
            out.parent.mkdir(parents=True, exist_ok=True)
            # per process and thread: the server makes thumbnails in a thread pool
            tmp = out.with_suffix(f".{os.getpid()}-{threading.get_ident()}.tmp")
            im.save(tmp, "JPEG", quality=85)
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    os.replace(tmp, out)  # atomic: a concurrent request never serves half a file
    return out

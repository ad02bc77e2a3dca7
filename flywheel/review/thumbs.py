"""Thumbnails for the review pages: each sample is decoded and resized once per size, then served
from `cache_dir("thumbs")`. The cache key is the sample id (the SHA-256 of the image bytes), so
a sample queued for several signals is resized once."""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

SIZES = (128, 256, 512)
_SAFE = re.compile(r"^[0-9a-zA-Z_-]{1,128}$")
# A payload may name a local image file; only image files of a sane size are opened, so a queued
# item cannot make the server read arbitrary files.
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
MAX_FILE_BYTES = 64 << 20


def pick_size(w: int | None) -> int:
    """The smallest cached size at least `w` wide (the page asks for what it shows)."""
    for s in SIZES:
        if (w or SIZES[1]) <= s:
            return s
    return SIZES[-1]


def _image_bytes(item: dict, catalog) -> bytes | None:
    """The sample's image: a local file named in the payload, else its row in the dataset."""
    payload = item.get("payload") or {}
    thumb = payload.get("thumbnail") if isinstance(payload.get("thumbnail"), dict) else {}
    for key in ("path", "image_path", "image_uri"):
        p = thumb.get(key) or payload.get(key)
        if isinstance(p, str) and p.startswith("file://"):
            p = p[7:]
        if isinstance(p, str) and "://" not in p and _readable_image(Path(p)):
            return Path(p).read_bytes()
    ref = thumb.get("dataset") or item.get("dataset")
    if not ref or not item.get("sample_id"):
        return None
    import pyarrow.compute as pc

    from flywheel.catalog import open_dataset

    try:
        ds = open_dataset(ref, catalog=catalog)
    except (KeyError, FileNotFoundError):
        return None
    cond = pc.field("id") == item["sample_id"]
    if item.get("source"):
        cond = cond & (pc.field("source") == item["source"])
    cols = [c for c in ("image", "image_uri") if c in ds.schema().names]
    t = ds.to_table(columns=cols, filter=cond)
    if t.num_rows == 0 and item.get("source"):
        t = ds.to_table(columns=cols, filter=pc.field("id") == item["sample_id"])
    if t.num_rows == 0:
        return None
    row = t.slice(0, 1).to_pylist()[0]
    if row.get("image"):
        return row["image"]
    uri = row.get("image_uri")
    if uri and "://" not in uri and _readable_image(Path(uri)):
        return Path(uri).read_bytes()
    return None


def _readable_image(p: Path) -> bool:
    try:
        return p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and p.stat().st_size <= MAX_FILE_BYTES
    except OSError:
        return False


def thumbnail(item: dict, width: int, catalog=None) -> Path | None:
    """Path of the cached JPEG thumbnail `width` wide at most, made on first use; None when the
    sample's image cannot be found."""
    from flywheel.config import cache_dir

    key = item.get("sample_id") or f"item{item['item_id']}"
    if not _SAFE.match(key):
        key = f"item{int(item['item_id'])}"
    size = pick_size(width)
    out = cache_dir("thumbs") / key[:2] / f"{key}_{size}.jpg"
    if out.exists():
        return out
    data = _image_bytes(item, catalog)
    if data is None:
        return None
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
            tmp = out.with_suffix(f".{os.getpid()}.tmp")
            im.save(tmp, "JPEG", quality=85)
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    os.replace(tmp, out)  # atomic: a concurrent request never serves half a file
    return out

"""The image store: images that arrive with signals (a feedback signal's `image_b64`), kept as
content-addressed files `<catalog dir>/blobs/<sha[:2]>/<sha256>` (FLYWHEEL_HOME/blobs for the
default catalog) and registered in the catalog's `blobs` table.

The signal stored in the catalog names the image by its hash instead of carrying its bytes, so a
batch of large images does not grow the catalog. Only decodable images within `max_bytes()`
(`FLYWHEEL_BLOB_MAX_BYTES`, default 8 MiB) and `MAX_PIXELS` are stored. Reading checks the bytes
against their name, so a file swapped on disk is not shown as the registered image.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import time
from pathlib import Path

FORMATS = {"JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"}
MAX_PIXELS = 50_000_000
_SHA = re.compile(r"^[0-9a-f]{64}$")


class BlobRefused(ValueError):
    """Bytes the store does not keep; the message says why."""


def max_bytes() -> int:
    return int(os.environ.get("FLYWHEEL_BLOB_MAX_BYTES", 8 << 20))


def inspect(data: bytes) -> dict:
    """Size, format and dimensions of an image, or `BlobRefused`."""
    limit = max_bytes()
    if len(data) > limit:
        raise BlobRefused(f"the image is {len(data):,} bytes; the store keeps images up to {limit:,} bytes")
    if not data:
        raise BlobRefused("the image is empty")
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt, (w, h) = im.format, im.size
    except (OSError, ValueError, Image.DecompressionBombError, SyntaxError):
        raise BlobRefused("the bytes are not an image this server can decode") from None
    if fmt not in FORMATS:
        raise BlobRefused(f"image format {fmt} is not accepted; send one of {', '.join(sorted(FORMATS))}")
    if w * h > MAX_PIXELS:
        raise BlobRefused(f"the image is {w}x{h} pixels; at most {MAX_PIXELS:,} pixels are accepted")
    return {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "format": fmt, "width": w, "height": h}


def root(cat) -> Path:
    return Path(cat.path).absolute().parent / "blobs"


def path(cat, sha: str) -> Path:
    if not _SHA.match(sha or ""):
        raise BlobRefused(f"{sha!r} is not a SHA-256 hex digest")
    return root(cat) / sha[:2] / sha


def write(cat, data: bytes) -> dict:
    """Write the file (atomically, once per content); returns `inspect`'s facts. Registration in
    the catalog is `register`, inside the caller's transaction."""
    facts = inspect(data)
    p = path(cat, facts["sha256"])
    if not p.exists():
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, p)
    return facts


def register(con, facts: dict, signal_id: str | None) -> None:
    con.execute("INSERT INTO blobs (sha256, size, format, width, height, signal_id, created_at)"
                " VALUES (?,?,?,?,?,?,?) ON CONFLICT DO NOTHING", (facts["sha256"], facts["size"], facts["format"], facts["width"],
                                            facts["height"], signal_id, time.time()))


def lookup(cat, sha: str) -> dict | None:
    """The registered facts of a stored image, or None."""
    if not _SHA.match(sha or ""):
        return None
    rows = cat.execute("SELECT * FROM blobs WHERE sha256 = ?", (sha,))
    return dict(rows[0]) if rows else None


def read(cat, sha: str) -> bytes | None:
    """A registered image's bytes, only when they still hash to their name."""
    if lookup(cat, sha) is None:
        return None
    try:
        data = path(cat, sha).read_bytes()
    except OSError:
        return None
    return data if hashlib.sha256(data).hexdigest() == sha else None

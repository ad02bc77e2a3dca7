"""Decode once: header facts and one EXIF-transposed RGB working copy per image.

Decoding is the engine's first step, not a registered operator, yet it judges like one: `Decode`
(named `broken_file`, for its reasons `broken_file:<rule>` and its recipe entry and `--set
broken_file.<param>` overrides) rejects what cannot be decoded whole and converts what can.
Rejected: zero bytes, not an image, extension/content mismatch, truncated data, decode errors,
decompression bombs (pixel limit), modes that cannot become RGB, unreadable bytes, files above
`max_bytes` (never read: ingest checks the size first), metadata blocks above `max_metadata_bytes`. Converted, not
rejected: CMYK, 16-bit, palette and alpha images. Animated images keep their first frame and are
flagged (`broken_file__frames` > 1); only that frame is decoded (Pillow counts GIF frames by
skipping their data, and APNG/WebP from their headers), so thousands of frames cost no more. Report section 2.3, stage 1, "Broken Files Filter".

Every later operator reads the `Work` this module makes; none of them decodes again. The working
copy is reduced with JPEG draft mode (DCT scaling, so a 4000 px JPEG is never decoded at full
size) and then resized so its short side is at most `work_size`.

Pillow's `Image.verify()` passes truncated JPEGs; only a full decode (`load()`) catches them, so
we always load. Conversely `load()` ignores PNG chunk CRCs, so PNGs are also verified (cheap: no
decompression). We never set `ImageFile.LOAD_TRUNCATED_IMAGES`.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError
from pydantic import Field

from flywheel.filters.base import Operator, Params, Rule, Work

assert not ImageFile.LOAD_TRUNCATED_IMAGES, "never decode truncated images as if they were whole"

# Extensions we accept as images, and the Pillow formats each may hold.
EXT_FORMATS: dict[str, set[str]] = {
    "jpg": {"JPEG", "MPO"},
    "jpeg": {"JPEG", "MPO"},
    "jpe": {"JPEG", "MPO"},
    "jfif": {"JPEG", "MPO"},
    "mpo": {"MPO", "JPEG"},  # multi-picture JPEG (stereo and multi-lens cameras); Pillow reads the first frame
    "png": {"PNG"},
    "apng": {"PNG"},
    "webp": {"WEBP"},
    "bmp": {"BMP", "DIB"},
    "dib": {"BMP", "DIB"},
    "tif": {"TIFF"},
    "tiff": {"TIFF"},
    "gif": {"GIF"},
    "heic": {"HEIF", "HEIC"},
    "heif": {"HEIF", "HEIC"},
    "avif": {"AVIF", "HEIF"},
    "jp2": {"JPEG2000"},
    "j2k": {"JPEG2000"},
    "jxl": {"JXL"},
    "ppm": {"PPM"},
    "pgm": {"PPM"},
    "pbm": {"PPM"},
    "tga": {"TGA"},
    "ico": {"ICO"},
    "psd": {"PSD"},
}
# The one list of image extensions: folders, tar shards and manifests all ingest by it.
IMAGE_EXTS = frozenset(EXT_FORMATS)

_heif_registered = False


def _register_plugins() -> None:
    """HEIC/AVIF from phones are ordinary photos; pillow-heif decodes them where installed."""
    global _heif_registered
    if _heif_registered:
        return
    _heif_registered = True
    try:
        import pillow_heif  # type: ignore

        pillow_heif.register_heif_opener()
    except Exception:  # noqa: BLE001 - optional plugin; without it HEIC is `not_image`
        pass


@dataclass
class Decoded:
    """Header facts of one file, the working copy, or the rule it broke."""

    format: str | None = None
    width: int | None = None  # after EXIF transpose
    height: int | None = None
    mode: str | None = None
    frames: int | None = None
    exif_orientation: int | None = None
    has_alpha: bool | None = None
    work: Work | None = None
    error: str | None = None  # broken_file rule
    detail: str | None = None


def metadata_bytes(im: Image.Image) -> int:
    """Bytes of the metadata blocks Pillow parsed into `info` (ICC profile, EXIF, XMP, text chunks,
    comments): none of it is pixels, and a hostile file can carry megabytes of it."""
    return sum(len(v) for v in im.info.values() if isinstance(v, (bytes, bytearray, str)))


def _to_rgb(im: Image.Image) -> tuple[Image.Image, bool]:
    """Convert any decodable mode to RGB; alpha is composited over white. Returns (rgb, had_alpha)."""
    mode = im.mode
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in im.info)
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.asarray(im, dtype=np.float64)
        lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
        if mode.startswith("I;16") and hi <= 65535 and lo >= 0:
            a = a / 257.0  # true 16-bit scale, not stretched
        elif hi > lo:
            a = (a - lo) * (255.0 / (hi - lo))
        else:
            a = np.zeros_like(a)
        im = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "L")
    if has_alpha:
        rgba = im.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(bg, rgba).convert("RGB"), True
    return (im if im.mode == "RGB" else im.convert("RGB")), False


def decode(data: bytes | None, ext: str | None, work_size: int, max_pixels: int, check_ext: bool = True,
           max_metadata_bytes: int | None = None) -> Decoded:
    """Decode one image's bytes. Never raises for bad data: the failure is `Decoded.error`."""
    _register_plugins()
    d = Decoded()
    if data is None or len(data) == 0:
        d.error, d.detail = "zero_bytes", "file is empty"
        return d
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            if data[:8] == b"\x89PNG\r\n\x1a\n":
                # load() skips chunk CRCs (a corrupted IDAT can decode to silent garbage); verify()
                # checks them without decompressing. It consumes its image, so on a separate open.
                Image.open(io.BytesIO(data)).verify()
            im = Image.open(io.BytesIO(data))
            d.format = im.format
            d.mode = im.mode
            d.frames = int(getattr(im, "n_frames", 1) or 1)
            w, h = im.size
            try:
                d.exif_orientation = int(im.getexif().get(0x0112, 1) or 1)
            except Exception:  # noqa: BLE001 - a broken EXIF block is not a broken image
                d.exif_orientation = 1
            if d.exif_orientation in (5, 6, 7, 8):
                w, h = h, w
            d.width, d.height = w, h
            if check_ext and ext and ext.lower() in EXT_FORMATS and d.format not in EXT_FORMATS[ext.lower()]:
                d.error, d.detail = "ext_mismatch", f"extension .{ext} but content is {d.format}"
                return d
            if w * h > max_pixels:
                d.error, d.detail = "bomb", f"{w}x{h}={w * h} pixels > max_pixels={max_pixels}"
                return d
            meta = metadata_bytes(im)
            if max_metadata_bytes is not None and meta > max_metadata_bytes:
                d.error, d.detail = "metadata_too_large", f"{meta} bytes of metadata (ICC, EXIF, text) > max_metadata_bytes={max_metadata_bytes}"
                return d
            if w <= 0 or h <= 0:
                d.error, d.detail = "decode_error", f"image size {w}x{h}"
                return d
            short = min(w, h)
            if im.format == "JPEG" and short > work_size:
                f = work_size / short
                # draft keeps the result >= the requested size, so the resize below is a true reduction
                im.draft("RGB", (max(1, int(im.size[0] * f)), max(1, int(im.size[1] * f))))
            im.load()  # the full decode: catches truncated files that verify() passes
    except UnidentifiedImageError:
        d.error, d.detail = "not_image", "no image format recognises these bytes"
        return d
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        d.error, d.detail = "bomb", str(e)[:200]
        return d
    except (EOFError, SyntaxError, OSError, ValueError, IndexError, TypeError, ZeroDivisionError, MemoryError, struct_error()) as e:
        msg = str(e)
        if isinstance(e, EOFError) or "truncated" in msg.lower() or "broken data stream" in msg or "premature end" in msg.lower():
            d.error = "truncated"
        elif "MAX_TEXT_CHUNK" in msg or "MAX_TEXT_MEMORY" in msg:  # Pillow's own cap on PNG iCCP/text/eXIf chunks
            d.error = "metadata_too_large"
        else:
            d.error = "decode_error"
        d.detail = f"{type(e).__name__}: {msg[:200]}"
        return d
    quant = getattr(im, "quantization", None) if d.format in ("JPEG", "MPO") else None
    try:
        im = ImageOps.exif_transpose(im)
    except Exception:  # noqa: BLE001 - keep the pixels as stored when the EXIF block is unusable
        pass
    try:
        rgb, alpha = _to_rgb(im)
    except (ValueError, OSError, TypeError) as e:
        d.error, d.detail = "unsupported_mode", f"mode {d.mode}: {type(e).__name__}: {str(e)[:120]}"
        return d
    d.has_alpha = alpha
    short = min(rgb.size)
    if short > work_size:
        f = work_size / short
        rgb = rgb.resize((max(1, round(rgb.size[0] * f)), max(1, round(rgb.size[1] * f))), Image.BILINEAR, reducing_gap=2.0)
    info = {"format": d.format}
    if quant:
        info["quantization"] = {int(k): list(v) for k, v in quant.items()}
    d.work = Work(rgb=np.asarray(rgb, dtype=np.uint8), width=d.width, height=d.height, info=info)
    return d


def struct_error() -> type[Exception]:
    import struct

    return struct.error


def ext_of(name: str | None) -> str | None:
    if not name or "." not in name.rsplit("/", 1)[-1]:
        return None
    return name.rsplit(".", 1)[-1].lower()


class DecodeParams(Params):
    max_pixels: int = Field(89_478_485, gt=0, description="decompression-bomb limit (Pillow's default)")
    check_extension: bool = Field(True, description="reject files whose extension names another format")
    reject_animated: bool = Field(False, description="reject animated images instead of using the first frame")
    max_bytes: int = Field(256 << 20, gt=0, description="files larger than this are never read (too_large): bounds "
                           "worker memory and keeps each row under Arrow's 2 GiB binary limit")
    max_metadata_bytes: int = Field(4 << 20, gt=0, description="ICC profile, EXIF, XMP and text chunks together above this "
                                    "are rejected (metadata_too_large); real profiles are a few KB")


# `decode` sets `broken_file__error` to one of these; the engine sets "unreadable" when the bytes
# could not be read at all (a missing file, an I/O error, not a regular file, a symlink loop) and
# "too_large" when ingest left a file above `max_bytes` unread.
ERRORS = ("zero_bytes", "not_image", "ext_mismatch", "truncated", "decode_error", "bomb", "unsupported_mode",
          "unreadable", "too_large", "metadata_too_large")


class Decode(Operator):
    """The decode step's contract: its parameters, stored columns and rules (never registered;
    the engine runs `decode` itself before every operator)."""

    name = "broken_file"
    Params = DecodeParams
    reads = ("image", "source")
    writes = ("broken_file__error", "broken_file__detail", "broken_file__frames")
    types = {"broken_file__error": pa.string(), "broken_file__detail": pa.string(), "broken_file__frames": pa.int32()}
    rules = tuple(Rule(e, "broken_file__error", "==", value=e, context=("broken_file__detail",), detail="{broken_file__detail}")
                  for e in ERRORS) + (
        Rule("animated", "broken_file__frames", ">", value=1, when="reject_animated",
             detail="frames={value} > 1 and reject_animated=true"),
    )
    cards = {
        "broken_file__error": "the rule the file broke while decoding, null when it decoded whole",
        "broken_file__frames": "frame count; > 1 is an animated image whose first frame is used",
    }

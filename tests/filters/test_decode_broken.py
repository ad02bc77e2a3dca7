"""broken_file / decode: exact reasons on real bytes; conversions that must not reject."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from flywheel.filters.decode import Decode, decode


def jpeg(im: Image.Image, **kw) -> bytes:
    b = io.BytesIO()
    im.save(b, "JPEG", **kw)
    return b.getvalue()


def png(im: Image.Image) -> bytes:
    b = io.BytesIO()
    im.save(b, "PNG")
    return b.getvalue()


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    from skimage import data

    return Image.fromarray(data.astronaut())


def test_good_jpeg_decodes_with_draft_reduction(photo):
    d = decode(jpeg(photo, quality=90), "jpg", work_size=128, max_pixels=10**9)
    assert d.error is None and (d.width, d.height) == (512, 512) and d.format == "JPEG"
    assert min(d.work.rgb.shape[:2]) == 128  # reduced to the stage's working size
    assert "quantization" in d.work.info


@pytest.mark.parametrize(
    "make,ext,rule",
    [
        (lambda p: b"", "jpg", "zero_bytes"),
        (lambda p: b"%PDF-1.4 not an image", "pdf", "not_image"),
        (lambda p: png(p), "jpg", "ext_mismatch"),
        (lambda p: jpeg(p, quality=90)[:9000], "jpg", "truncated"),
        (lambda p: png(p)[:20000], "png", "truncated"),
        (lambda p: png(Image.new("1", (10000, 10000))), "png", "bomb"),
    ],
    ids=["zero", "pdf", "mislabelled", "truncated-jpeg", "truncated-png", "bomb"],
)
def test_broken_rules(photo, make, ext, rule):
    d = decode(make(photo), ext, work_size=256, max_pixels=89_478_485)
    assert d.error == rule, d.detail
    assert d.work is None


def test_truncated_jpeg_passes_verify_but_not_decode(photo):
    data = jpeg(photo, quality=95)
    cut = data[: int(len(data) * 0.7)]
    Image.open(io.BytesIO(cut)).verify()  # Pillow's verify() does not see the truncation ...
    assert decode(cut, "jpg", 256, 10**9).error == "truncated"  # ... the full decode does


def test_corrupt_middle_is_decode_error_or_truncated(photo):
    data = bytearray(png(photo))
    data[200:260] = b"\x00" * 60  # breaks the first IDAT chunk's zlib stream / CRC
    d = decode(bytes(data), "png", 256, 10**9)
    assert d.error in ("decode_error", "truncated")


@pytest.mark.parametrize("mode", ["CMYK", "I;16", "P", "RGBA", "LA", "L", "1", "I", "F"])
def test_modes_are_converted_not_rejected(photo, mode):
    if mode == "I;16":
        im = Image.fromarray((np.asarray(photo.convert("L"), dtype=np.uint16) * 257).astype("<u2"))
        assert im.mode.startswith("I;16")
    elif mode in ("I", "F"):
        im = photo.convert("L").convert(mode)
    else:
        im = photo.convert(mode)
    fmt = "TIFF" if mode in ("CMYK", "I;16", "I", "F") else "PNG"
    b = io.BytesIO()
    im.save(b, fmt)
    d = decode(b.getvalue(), fmt.lower(), 256, 10**9)
    assert d.error is None, (mode, d.detail)
    assert d.work.rgb.dtype == np.uint8 and d.work.rgb.shape[2] == 3
    assert d.has_alpha == (mode in ("RGBA", "LA"))
    assert d.work.rgb.std() > 5  # real content survived the conversion


def test_alpha_is_composited_over_white():
    im = Image.new("RGBA", (300, 300), (255, 0, 0, 0))  # fully transparent red
    d = decode(png(im), "png", 256, 10**9)
    assert d.has_alpha and d.work.rgb.min() == 255


def test_animated_gif_uses_first_frame_and_is_flagged():
    frames = [Image.new("RGB", (300, 300), c) for c in ((255, 0, 0), (0, 0, 255))]
    b = io.BytesIO()
    frames[0].save(b, "GIF", save_all=True, append_images=frames[1:])
    d = decode(b.getvalue(), "gif", 256, 10**9)
    assert d.error is None and d.frames == 2
    r, g, bl = d.work.rgb[0, 0]
    assert r > 200 and bl < 50  # the first frame
    t = pa.table({"broken_file__error": [None], "broken_file__detail": [None], "broken_file__frames": [2]})
    assert Decode().reject(t) == [[]]
    fails = Decode({"reject_animated": True}).reject(t)
    assert [(f.rule, f.detail) for f in fails[0]] == [("animated", "frames=2 > 1 and reject_animated=true")]


def test_exif_orientation_is_applied(photo):
    wide = photo.resize((600, 300))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored pixels must be turned 90 degrees to be shown upright
    d = decode(jpeg(wide, exif=exif.tobytes()), "jpg", 1000, 10**9)
    assert d.exif_orientation == 6
    assert (d.width, d.height) == (300, 600)
    assert d.work.rgb.shape[:2] == (600, 300)


def test_reject_uses_stored_error_and_vocabulary():
    t = pa.table({"broken_file__error": ["truncated", None], "broken_file__detail": ["cut", None],
                  "broken_file__frames": [None, 1]})
    fails = Decode().reject(t)
    assert [[(f.rule, f.detail) for f in x] for x in fails] == [[("truncated", "cut")], []]
    assert all(f.rule in Decode.rule_names() for x in fails for f in x)


def test_decode_is_the_engines_step_not_a_registered_operator():
    from flywheel.filters import base

    assert "broken_file" not in base.registry()
    assert "unreadable" in Decode.rule_names()  # the engine's reason for bytes it could not read

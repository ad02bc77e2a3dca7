"""Caption inputs as the models see them: EXIF-upright RGB, transparency flattened onto white."""

from __future__ import annotations

import io


def open_image(data: bytes):
    from PIL import Image, ImageOps

    im = Image.open(io.BytesIO(data))
    im = ImageOps.exif_transpose(im)
    if im.mode != "RGB":
        if "A" in im.getbands() or im.mode == "P":
            im = im.convert("RGBA")
            bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
            im = Image.alpha_composite(bg, im)
        im = im.convert("RGB")
    return im

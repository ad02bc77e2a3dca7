"""broken_file: the decode step. Rejects what cannot be decoded whole; converts what can.

Rejected: zero bytes, not an image, extension/content mismatch, truncated data, decode errors,
decompression bombs (pixel limit), modes that cannot become RGB. Converted, not rejected: CMYK,
16-bit, palette and alpha images. Animated images keep their first frame and are flagged
(`broken_file__frames` > 1). Report section 2.3, stage 1, "Broken Files Filter".
"""

from __future__ import annotations

from typing import Any, Sequence

import pyarrow as pa
from pydantic import Field

from flywheel.filters.base import Fail, Operator, Params, Work, register


class BrokenFileParams(Params):
    max_pixels: int = Field(89_478_485, gt=0, description="decompression-bomb limit (Pillow's default)")
    check_extension: bool = Field(True, description="reject files whose extension names another format")
    reject_animated: bool = Field(False, description="reject animated images instead of using the first frame")


@register
class BrokenFile(Operator):
    name = "broken_file"
    Params = BrokenFileParams
    reads = ("image", "source")
    writes = ("broken_file__error", "broken_file__detail", "broken_file__frames")
    types = {"broken_file__error": pa.string(), "broken_file__detail": pa.string(), "broken_file__frames": pa.int32()}
    rules = ("zero_bytes", "not_image", "ext_mismatch", "truncated", "decode_error", "bomb", "unsupported_mode", "animated")
    cards = {
        "broken_file__error": "the rule the file broke while decoding, null when it decoded whole",
        "broken_file__frames": "frame count; > 1 is an animated image whose first frame is used",
    }

    def score(self, batch: pa.Table, work: Sequence[Work | None]) -> dict[str, Sequence[Any]]:
        raise RuntimeError("broken_file is the decode step; the engine calls flywheel.filters.decode directly")

    def reject(self, table: pa.Table, params: BrokenFileParams) -> list[list[Fail]]:
        errors = table.column("broken_file__error").to_pylist()
        details = table.column("broken_file__detail").to_pylist()
        frames = table.column("broken_file__frames").to_pylist()
        out = []
        for e, d, f in zip(errors, details, frames):
            if e:
                out.append([self.fail(e, d or "")])
            elif params.reject_animated and (f or 1) > 1:
                out.append([self.fail("animated", f"frames={f} > 1 and reject_animated=true")])
            else:
                out.append([])
        return out

"""compression_quality: heavily compressed, artifact-laden images (report 2.3, stage 4).

JPEG: the quality factor (1-100) is estimated from the luminance quantisation table read from the
header during decode, against the IJG standard table that libjpeg/Pillow/most encoders scale:
scale = mean(q / q_standard) * 100; quality = (200 - scale) / 2 when scale <= 100 else 5000 / scale.
Other formats, the stated rule: lossless formats (PNG, BMP, TIFF, GIF, PPM, TGA...) score 100;
formats whose loss cannot be read from the header (WebP, HEIF, AVIF, JPEG 2000) score null and
are never rejected by this operator (the image_quality operator still sees their artifacts).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pyarrow as pa
from pydantic import Field

from flywheel.filters.base import Operator, Params, Rule, Work, register

# IJG standard luminance table (JPEG Annex K, Table K.1), in natural order; Pillow reports
# quantisation tables in zigzag order, so compare as a multiset-independent mean ratio over both orders.
_STD_LUMA = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99], dtype=np.float64)
_ZIGZAG = np.array([
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20, 13, 6, 7, 14, 21,
    28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59, 52, 45, 38, 31, 39, 46, 53, 60, 61,
    54, 47, 55, 62, 63])
_STD_LUMA_ZZ = _STD_LUMA[_ZIGZAG]
LOSSLESS = {"PNG", "BMP", "DIB", "TIFF", "GIF", "PPM", "TGA", "ICO", "PSD", "PCX", "SGI", "IM", "QOI"}


def _ijg_table(quality: int, std: np.ndarray) -> np.ndarray:
    scale = 5000.0 / quality if quality < 50 else 200.0 - 2.0 * quality
    return np.clip(np.floor((std * scale + 50.0) / 100.0), 1, 255)


_IJG = {order: np.stack([_ijg_table(q, std) for q in range(1, 101)])
        for order, std in (("zigzag", _STD_LUMA_ZZ), ("natural", _STD_LUMA))}


def jpeg_quality(table: list[int]) -> float:
    """The IJG quality (1-100) whose scaled standard table is closest to `table`.

    Matching against every IJG table (with libjpeg's clamping to 1..255) stays exact at very low
    qualities, where a mean-ratio estimate is biased by the clamped entries. Tables from other
    encoders (custom tables) get the closest IJG equivalent.
    """
    q = np.asarray(table[:64], dtype=np.float64)
    best = min((np.abs(np.log(tabs) - np.log(np.maximum(q, 1))).sum(axis=1).min(), order) for order, tabs in _IJG.items())
    tabs = _IJG[best[1]]
    return float(np.argmin(np.abs(np.log(tabs) - np.log(np.maximum(q, 1))).sum(axis=1)) + 1)


class CompressionParams(Params):
    min_quality: float = Field(30.0, ge=1, le=100, description="estimated JPEG quality below which a file is rejected")


@register
class CompressionQuality(Operator):
    name = "compression_quality"
    Params = CompressionParams
    writes = ("compression_quality__quality",)
    rules = (Rule("low_quality", "compression_quality__quality", "<", "min_quality", calibrated=True),)
    cards = {"compression_quality__quality": "estimated encoder quality 1-100 (JPEG from quantisation tables; lossless = 100; null = unknown); higher is better"}

    def score(self, batch: pa.Table, work: Sequence[Work | None]) -> dict[str, Sequence[Any]]:
        out = []
        for w in work:
            if w is None:
                out.append(None)
                continue
            fmt = w.info.get("format")
            quant = w.info.get("quantization")
            if fmt in ("JPEG", "MPO") and quant:
                out.append(jpeg_quality(quant[min(quant)]))
            elif fmt in LOSSLESS:
                out.append(100.0)
            else:
                out.append(None)
        return {"compression_quality__quality": out}

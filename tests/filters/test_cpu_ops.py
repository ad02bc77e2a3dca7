"""The CPU operators on tiny tables: exact reasons, evidence, and the score/reject split."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image, ImageDraw, ImageFont

from flywheel.filters import base
from flywheel.filters.compression_quality import CompressionQuality
from flywheel.filters.decode import decode
from flywheel.filters.entropy import Entropy
from flywheel.filters.resolution import Resolution
from flywheel.filters.token_length import TokenLength
from flywheel.models.tokenizer import count_tokens


def work_of(im: Image.Image, fmt="PNG", size=256, **kw):
    b = io.BytesIO()
    im.save(b, fmt, **kw)
    d = decode(b.getvalue(), fmt.lower(), size, 10**9)
    assert d.error is None
    return d.work


def rules(fails):
    return [[f.rule for f in row] for row in fails]


def test_every_operator_declares_a_valid_contract():
    for name, op in base.registry().items():
        assert op.name == name
        assert op.rules, name
        assert all(c.startswith(name + "__") for c in op.writes)
        with pytest.raises(Exception):
            op.Params(no_such_param=1)  # typos fail fast


def test_resolution_buckets_and_rejects_only_below_min():
    t = pa.table({"width": [100, 300, 600, 1500, 4000, 2100, None], "height": [100, 300, 500, 1100, 600, 2100, None]})
    op = Resolution()
    s = op.score(t, [None] * t.num_rows)
    assert s["resolution__bucket"] == [0, 256, 256, 1024, 512, 2048, None]
    t2 = t.append_column("resolution__bucket", pa.array(s["resolution__bucket"], pa.int32()))
    t2 = t2.append_column("resolution__short_side", pa.array(s["resolution__short_side"], pa.int32()))
    t2 = t2.append_column("resolution__aspect", pa.array(s["resolution__aspect"]))
    assert rules(op.reject(t2)) == [["too_small"], [], [], [], ["aspect"], [], []]  # 4000x600: 6.7 > 6
    strict = Resolution.Params(min_bucket=512, max_aspect=3.0)
    assert rules(Resolution(strict).reject(t2)) == [["too_small"], ["too_small"], ["too_small"], [], ["aspect"], [], []]
    area = Resolution({"by": "area"}).score(pa.table({"width": [2000], "height": [300]}), [None])
    assert area["resolution__bucket"] == [512]  # sqrt(600k) = 774 -> 512 by area, 256 by short side


def _page(text="The quick brown fox jumps over the lazy dog.", lines=3) -> Image.Image:
    im = Image.new("RGB", (900, 1200), "white")
    d = ImageDraw.Draw(im)
    f = ImageFont.truetype("/usr/share/fonts/truetype/noto/NotoSans-Regular.ttf", 26)
    for i in range(lines):
        d.text((60, 120 + 52 * i), text, fill="black", font=f)
    return im


def test_entropy_rejects_flat_gradient_blank_noise_and_keeps_photo_and_sparse_page():
    # a bare gradient has nothing on it: near-blank (a smooth illustration has soft outlines, kept)
    from skimage import data

    rng = np.random.default_rng(0)
    g = np.tile(np.linspace(0, 255, 800), (600, 1)).astype(np.uint8)
    imgs = {
        "solid": Image.new("RGB", (640, 480), (30, 120, 200)),
        "gradient": Image.fromarray(np.stack([g, g, g], -1)),
        "blank_scan": Image.fromarray(np.clip(rng.normal(246, 2, (1100, 850)), 0, 255).astype(np.uint8)),
        "noise": Image.fromarray(rng.integers(0, 256, (512, 512, 3), dtype=np.uint8)),
        "photo": Image.fromarray(data.astronaut()),
        "texture": Image.fromarray(data.grass()),
        "sparse_page": _page(lines=2),
    }
    works = [work_of(im) for im in imgs.values()]
    op = Entropy()
    t = pa.table({k: pa.array(v) for k, v in op.score(pa.table({"x": list(imgs)}), works).items()})
    got = dict(zip(imgs, rules(op.reject(t))))
    assert got["solid"] == ["flat", "near_blank"]
    assert got["gradient"] == ["near_blank"]
    assert got["blank_scan"] == ["near_blank", "noise"]  # its grain is white noise
    assert got["noise"] == ["noise"]
    assert got["photo"] == [] and got["texture"] == [] and got["sparse_page"] == []


@pytest.mark.parametrize("q", [5, 10, 30, 50, 75, 90, 98])
def test_jpeg_quality_estimate(q):
    from skimage import data

    w = work_of(Image.fromarray(data.coffee()), "JPEG", quality=q)
    est = CompressionQuality().score(pa.table({"x": [1]}), [w])["compression_quality__quality"][0]
    assert abs(est - q) <= 3, (q, est)


def test_compression_rule_and_lossless_formats():
    from skimage import data

    im = Image.fromarray(data.coffee())
    works = [work_of(im, "JPEG", quality=8), work_of(im, "JPEG", quality=85), work_of(im, "PNG")]
    op = CompressionQuality()
    t = pa.table({k: pa.array(v) for k, v in op.score(pa.table({"x": [1, 2, 3]}), works).items()})
    assert t.column("compression_quality__quality").to_pylist()[2] == 100.0
    assert rules(op.reject(t)) == [["low_quality"], [], []]


def test_token_length_exact_qwen_counts_and_rules():
    # Exact Qwen BPE counts (qwen.tiktoken + Qwen's pre-tokenizer pattern).
    assert count_tokens(["hello world", "Hello, world!", "你好，世界", "   ", None]) == [2, 4, 3, None, None]
    t = pa.table({
        "task": ["t2i", "t2i", "t2i", "ti2i", "t2i"],
        "caption": ["a cat", None, "word " * 600, None, "  "],
        "instruction": [None, None, None, "make the sky red", None],
    })
    op = TokenLength()
    s = op.score(t, [None] * 5)
    assert s["token_length__tokens"][0] == 2 and s["token_length__tokens"][3] == 4
    t = t.append_column("token_length__tokens", pa.array(s["token_length__tokens"], pa.int32()))
    assert rules(op.reject(t)) == [[], ["missing"], ["too_long"], [], ["missing"]]
    assert rules(TokenLength(TokenLength.Params(min_tokens=3)).reject(t)) == [["too_short"], ["missing"], ["too_long"], [], ["missing"]]
    f = op.reject(t)[2][0]
    assert "token_length__tokens=601 > max_tokens=512" in f.detail


def test_dedup_confirmation_separates_copies_from_pages_sharing_a_layout():
    """Re-encodes, resizes and brightness edits are near copies; distinct text pages in one layout,
    whose hashes are within 6 bits, are not (the confirmation keeps them apart)."""
    from PIL import ImageEnhance
    from skimage import data

    from flywheel.demos.sample_data import render_page
    from flywheel.filters.dedup import Dedup

    photo = Image.fromarray(data.astronaut())
    texts = ["The quick brown fox jumps over the lazy dog. Data curation decides what a model learns.",
             "Sphinx of black quartz, judge my vow. The five boxing wizards jump quickly."]
    imgs = [work_of(photo, "JPEG", quality=95), work_of(photo, "JPEG", quality=10),
            work_of(photo.resize((400, 400)), "JPEG", quality=90),
            work_of(ImageEnhance.Brightness(photo).enhance(1.15), "JPEG", quality=90),
            work_of(render_page(texts[0], "NotoSans-Regular.ttf", seed=1)),
            work_of(render_page(texts[1], "NotoSans-Regular.ttf", seed=1)),
            work_of(Image.new("RGB", (400, 400), (200, 0, 0))), work_of(Image.new("RGB", (400, 400), (0, 0, 200)))]
    n = len(imgs)
    op = Dedup()
    t = pa.table({"id": [f"i{k}" for k in range(n)], "source": [f"{k}.png" for k in range(n)], "task": ["t2i"] * n,
                  "width": [512, 512, 400, 512, 900, 900, 400, 400], "height": [512, 512, 400, 512, 1200, 1200, 400, 400]})
    s = op.score(t, imgs)
    for c in op.writes:
        t = t.append_column(c, pa.array(s[c], op.column_type(c)))
    d = op.decide(t)
    kinds = d["dedup__kind"]
    assert kinds[:4] == [None, "near", "near", "near"], kinds  # one photo family, the original kept
    assert kinds[4:] == [None, None, None, None], kinds  # two pages, two solid colours: all kept

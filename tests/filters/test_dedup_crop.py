"""Crop-robust near duplicates: real edits of scikit-image sample photos merge into one family
with one survivor; distinct photos and consecutive pages of one layout stay apart; the barrier
decides from stored features alone."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image, ImageEnhance

from flywheel.filters.decode import decode
from flywheel.filters.dedup import Dedup


def encoded(im: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    b = io.BytesIO()
    im.save(b, fmt, **kw)
    return b.getvalue()


def crop10(im: Image.Image) -> Image.Image:
    w, h = im.size
    return im.crop((round(w * 0.1), round(h * 0.1), round(w * 0.9), round(h * 0.9)))


def edits(photo: Image.Image) -> dict[str, bytes]:
    w, h = photo.size
    return {
        "orig.png": encoded(photo),
        "crop10.jpg": encoded(crop10(photo), "JPEG", quality=90),
        "q20.jpg": encoded(photo, "JPEG", quality=20),
        "half.png": encoded(photo.resize((w // 2, h // 2), Image.LANCZOS)),
        "bright.jpg": encoded(ImageEnhance.Brightness(photo).enhance(1.2), "JPEG", quality=90),
        "contrast.webp": encoded(ImageEnhance.Contrast(photo).enhance(0.8), "WEBP", quality=90),
    }


def decided(files: dict[str, bytes]) -> tuple[dict[str, dict], Dedup]:
    """Score and decide these files as one run; source -> decided columns."""
    op = Dedup()
    names = list(files)
    work, wh = [], []
    for n in names:
        d = decode(files[n], n.rsplit(".", 1)[1], 256, 10**9)
        assert d.error is None
        work.append(d.work), wh.append((d.width, d.height))
    t = pa.table({"id": [f"id-{n}" for n in names], "source": names, "task": ["t2i"] * len(names),
                  "width": [w for w, _ in wh], "height": [h for _, h in wh]})
    s = op.score(t, work)
    for c in op.writes:
        t = t.append_column(c, pa.array(s[c], op.column_type(c)))
    d = op.decide(t)
    t = t.append_column("dedup__kind", pa.array(d["dedup__kind"], pa.string()))
    for c in op.decided[1:]:
        t = t.append_column(c, pa.array(d[c], op.column_type(c)))
    fails = op.reject(t)
    return {n: {**{c: d[c][i] for c in op.decided}, "fails": fails[i]} for i, n in enumerate(names)}, op


@pytest.mark.parametrize("sample", ["astronaut", "coffee", "chelsea"])
def test_edited_copies_of_a_photo_are_one_family_with_one_survivor(sample):
    from skimage import data

    photo = Image.fromarray(getattr(data, sample)())
    dec, op = decided(edits(photo))
    kept = [n for n, r in dec.items() if r["dedup__kind"] is None]
    assert kept == ["orig.png"], {n: (r["dedup__kind"], r["dedup__match"]) for n, r in dec.items()}  # the most pixels
    for n, r in dec.items():
        if n == "orig.png":
            continue
        assert r["dedup__kind"] == "near" and r["dedup__of_source"] == "orig.png"
        assert [f.rule for f in r["fails"]] == ["near"]
        detail = r["fails"][0].detail
        assert detail.startswith(f"near copy of kept orig.png: matched {r['dedup__via_source']} by "), detail
        assert "aligned thumbnails" in detail and "view hashes" in detail
    assert op.last_stats["confirmed_pairs"] >= 5 and op.last_stats["families"] == 1 and op.last_stats["dropped"] == 5


def test_distinct_photos_and_consecutive_pages_stay_apart():
    from skimage import data

    from flywheel.demos.sample_data import render_page

    texts = ["The quick brown fox jumps over the lazy dog. Data curation decides what a model learns.",
             "Sphinx of black quartz, judge my vow. The five boxing wizards jump quickly.",
             "Pack my box with five dozen liquor jugs. How vexingly quick daft zebras jump."]
    files = {f"page{k}.png": encoded(render_page(t, "NotoSans-Regular.ttf", seed=1)) for k, t in enumerate(texts)}
    for name in ("astronaut", "coffee", "chelsea", "rocket", "camera"):
        files[f"{name}.png"] = encoded(Image.fromarray(getattr(data, name)()))
    dec, op = decided(files)
    assert all(r["dedup__kind"] is None and not r["fails"] for r in dec.values()), \
        {n: r["dedup__match"] for n, r in dec.items() if r["dedup__kind"]}
    assert op.last_stats["confirmed_pairs"] == 0


def test_a_crop_of_a_page_joins_its_page_not_the_next_one():
    from flywheel.demos.sample_data import render_page

    a = render_page("The quick brown fox jumps over the lazy dog. Data curation decides.", "NotoSans-Regular.ttf", seed=1)
    b = render_page("Sphinx of black quartz, judge my vow. The five boxing wizards jump.", "NotoSans-Regular.ttf", seed=1)
    dec, _ = decided({"a.png": encoded(a), "a_q30.jpg": encoded(a, "JPEG", quality=30), "b.png": encoded(b)})
    assert dec["a_q30.jpg"]["dedup__of_source"] == "a.png"
    assert dec["b.png"]["dedup__kind"] is None


def test_barrier_decides_from_stored_columns_without_the_images(ray_local, tmp_path, monkeypatch):
    """Scoring stores the features; the inputs are deleted and opening any image fails, yet the
    barrier finds the family (and the report says how many pairs it checked)."""
    import cv2
    import PIL.Image
    from skimage import data

    from flywheel.curation import pipeline

    inp = tmp_path / "in"
    inp.mkdir()
    for n, b in edits(Image.fromarray(data.astronaut())).items():
        (inp / n).write_bytes(b)
    (inp / "other.png").write_bytes(encoded(Image.fromarray(data.coffee())))
    plan = pipeline.prepare("stage1", str(inp), str(tmp_path / "out"), workers=1,
                            skip=["nsfw", "rotation", "clip", "entropy", "token_length", "resolution"])
    pipeline.score(plan["state"])
    for f in inp.iterdir():
        f.unlink()

    def no_images(*a, **k):
        raise AssertionError("the dedup barrier opened an image")

    with monkeypatch.context() as m:
        m.setattr(PIL.Image, "open", no_images)
        m.setattr(cv2, "imread", no_images)
        m.setattr(cv2, "imdecode", no_images)
        info = pipeline.barrier(plan["state"])
    assert info["dedup"]["candidate_pairs"] >= 5 and info["dedup"]["confirmed_pairs"] >= 5
    stats = pipeline.finalize(plan["state"])
    assert stats["reject_reason"] == {"dedup:near": 5}
    assert stats["barrier"]["dedup"]["dropped"] == 5
    import pyarrow.dataset as pads

    rej = pads.dataset(str(tmp_path / "out" / "rejected" / "data")).to_table(
        columns=["source", "dedup__of_source", "reject_reasons"]).to_pylist()
    assert {r["dedup__of_source"] for r in rej} == {"orig.png"}
    assert np.all([r["reject_reasons"] == ["dedup:near"] for r in rej])


def test_parquet_rows_take_by_row_number_across_files_and_row_groups(tmp_path):
    """What the barrier uses to read features of candidate rows only: row numbers in the order
    pyarrow.dataset reads the files, returned in the order asked."""
    import pyarrow.dataset as pads
    import pyarrow.parquet as pq

    from flywheel.filters.base import ParquetRows

    files = []
    for k, n in enumerate((5, 0, 7)):
        f = tmp_path / f"part-{k}.parquet"
        pq.write_table(pa.table({"v": pa.array([f"{k}-{i}" for i in range(n)], pa.string())}), f, row_group_size=3)
        files.append(str(f))
    whole = pads.dataset(files).to_table().column("v").to_pylist()
    rows = np.array([11, 0, 5, 4, 5, 7])
    assert ParquetRows(files, ["v"]).take(rows).column("v").to_pylist() == [whole[i] for i in rows]
    with pytest.raises(IndexError):
        ParquetRows(files, ["v"]).take(np.array([12]))


def test_same_bytes_and_repeated_edit_pairs_are_exact_copies_of_their_first():
    """Rows with one id (the same bytes) join the first of them without a candidate; edit pairs
    (ti2i, no image features) with one pair id keep the first by `source` order."""
    op = Dedup()
    t = pa.table({"id": ["p1", "p1", "p2", "p1"], "source": ["e3", "e1", "e2", "e0"], "task": ["ti2i"] * 4,
                  "width": [None] * 4, "height": [None] * 4}, schema=pa.schema(
        [("id", pa.string()), ("source", pa.string()), ("task", pa.string()), ("width", pa.int64()), ("height", pa.int64())]))
    pairs = op.decide(t)
    assert pairs["dedup__kind"] == ["exact", "exact", None, None]
    assert pairs["dedup__of_source"] == ["e0", "e0", None, None]


def test_rows_with_one_id_join_its_first_row():
    from skimage import data

    photo = Image.fromarray(data.coffee())
    files = {"a.png": encoded(photo), "b.png": encoded(photo.resize((300, 200))), "c.png": encoded(photo)}
    op = Dedup()
    names = list(files)
    work = [decode(files[n], "png", 256, 10**9).work for n in names]
    t = pa.table({"id": ["same", "other", "same"], "source": names, "task": ["t2i"] * 3,
                  "width": [w.width for w in work], "height": [w.height for w in work]})
    s = op.score(t, work)
    for c in op.writes:
        t = t.append_column(c, pa.array(s[c], op.column_type(c)))
    d = op.decide(t)
    assert d["dedup__kind"] == [None, "near", "exact"] and d["dedup__of_source"][2] == "a.png"

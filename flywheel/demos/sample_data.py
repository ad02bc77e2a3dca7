"""`flywheel demo`: a small, varied sample set generated at run time, curated with stage 1.

Real photos from scikit-image with crops, resizes, re-encodes and exact copies; EXIF-rotated
photos; corrupt, truncated, zero-byte, mislabelled, tiny and decompression-bomb files; flat
fills and smooth gradients; rendered text pages in several scripts (Noto fonts); sidecar captions
(some missing, one far too long, one orphan); a WebDataset tar shard.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

PHOTOS = ["astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry", "retina",
          "camera", "brick", "grass", "gravel", "moon", "coins", "horse", "clock", "colorwheel"]

FONT_DIRS = ["/usr/share/fonts/truetype/noto", "/usr/share/fonts/opentype/noto"]
PAGES = {
    "english": ("NotoSans-Regular.ttf", "The quick brown fox jumps over the lazy dog. Data curation decides what a model learns."),
    "vietnamese": ("NotoSans-Regular.ttf", "Tiếng Việt có dấu: Hôm nay trời đẹp, chúng tôi đi dạo quanh hồ Hoàn Kiếm."),
    "russian": ("NotoSans-Regular.ttf", "Съешь же ещё этих мягких французских булок, да выпей чаю."),
    "greek": ("NotoSans-Regular.ttf", "Ξεσκεπάζω την ψυχοφθόρα βδελυγμία. Καλημέρα κόσμε."),
    "chinese": ("NotoSansCJK-Regular.ttc", "数据飞轮把模型的失败反馈到数据中。图像生成需要高质量的训练数据。"),
    "japanese": ("NotoSansCJK-Regular.ttc", "データの品質がモデルの能力を決めます。今日はいい天気ですね。"),
    "korean": ("NotoSansCJK-Regular.ttc", "데이터 품질이 모델의 능력을 결정합니다. 안녕하세요 세계."),
    "thai": ("NotoSansThai-Regular.ttf", "ข้อมูลที่มีคุณภาพช่วยให้โมเดลเรียนรู้ได้ดีขึ้น สวัสดีชาวโลก"),
    "arabic": ("NotoSansArabic-Regular.ttf", "جودة البيانات تحدد قدرة النموذج"),
}


def font(name: str, size: int):
    for d in FONT_DIRS:
        p = Path(d) / name
        if p.exists():
            return ImageFont.truetype(str(p), size)
    return ImageFont.load_default(size)


def render_page(text: str, font_name: str, size=(900, 1200), lines: int = 14, seed: int = 0) -> Image.Image:
    """A sparse document page: a title and wrapped paragraphs of `text` on white."""
    rng = np.random.default_rng(seed)
    im = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(im)
    d.text((60, 50), text[:24], fill="black", font=font(font_name, 44))
    f = font(font_name, 26)
    y = 140
    for i in range(lines):
        d.text((60, y), text[: int(rng.integers(min(20, len(text)), len(text) + 1))], fill=(20, 20, 20), font=f)
        y += 52
    return im


def _jpeg(im: Image.Image, q: int = 90, **kw) -> bytes:
    b = io.BytesIO()
    im.convert("RGB").save(b, "JPEG", quality=q, **kw)
    return b.getvalue()


def _png(im: Image.Image) -> bytes:
    b = io.BytesIO()
    im.save(b, "PNG")
    return b.getvalue()


def _photo(name: str) -> Image.Image:
    from skimage import data

    a = getattr(data, name)()
    if a.ndim == 2:
        return Image.fromarray(a).convert("RGB")
    return Image.fromarray(a[..., :3])


def _exif_rotated(im: Image.Image) -> bytes:
    """Pixels stored turned 90 degrees, with EXIF orientation 6 saying how to show them upright."""
    stored = im.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    return _jpeg(stored, 92, exif=exif.tobytes())


def generate(root: str | Path, n: int = 60, seed: int = 0) -> dict:
    root = Path(root)
    if root.exists() and any(root.iterdir()):
        info_file = root.parent / "input-info.json"
        return json.loads(info_file.read_text()) if info_file.exists() else {"files": 0, "kinds": {}}
    rng = np.random.default_rng(seed)
    kinds: Counter = Counter()
    files = 0

    def put(rel: str, data: bytes, caption: str | None = None, kind: str = "photo") -> None:
        nonlocal files
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        if caption is not None:
            p.with_suffix(".txt").write_text(caption, encoding="utf-8")
        kinds[kind] += 1
        files += 1

    photos = []
    for name in PHOTOS:
        try:
            photos.append((name, _photo(name)))
        except Exception:  # noqa: BLE001 - a sample missing from this scikit-image build
            continue
    per = max(1, n // 30)
    for name, im in photos:
        w, h = im.size
        scale = 1024 / min(w, h) if min(w, h) < 300 else 1.0
        big = im.resize((int(w * scale), int(h * scale)), Image.LANCZOS) if scale != 1.0 else im
        put(f"photos/{name}.jpg", _jpeg(big, 92), f"a photo: {name.replace('_', ' ')}")
        for k in range(per):
            bw, bh = big.size
            cw, ch = int(bw * rng.uniform(0.55, 0.8)), int(bh * rng.uniform(0.55, 0.8))
            x, y = int(rng.integers(0, bw - cw + 1)), int(rng.integers(0, bh - ch + 1))
            put(f"photos/{name}_crop{k}.jpg", _jpeg(big.crop((x, y, x + cw, y + ch)), 90), f"a crop of the {name} photo",
                "crop")
    for name, im in photos[:6]:
        big = im if min(im.size) >= 300 else im.resize((im.size[0] * 2, im.size[1] * 2))
        put(f"copies/{name}_resized.jpg", _jpeg(big.resize((int(big.size[0] * 0.8), int(big.size[1] * 0.8))), 85),
            f"{name} resized", "near_copy")
        put(f"copies/{name}_requality.jpg", _jpeg(big, 60), f"{name} re-encoded", "near_copy")
    first = root / "photos" / f"{photos[0][0]}.jpg"
    put("copies/exact_copy.jpg", first.read_bytes(), "an exact copy", "exact_copy")
    for name, im in photos[6:9]:
        put(f"rotated/{name}_exif6.jpg", _exif_rotated(im if min(im.size) >= 300 else im.resize((im.size[0] * 2, im.size[1] * 2))),
            f"{name}, EXIF-rotated", "exif_rotated")
    for lang, (fname, text) in PAGES.items():
        put(f"pages/{lang}.png", _png(render_page(text, fname, seed=len(lang))), f"a document page in {lang}", "text_page")
    # a screenshot-like UI
    ui = Image.new("RGB", (1280, 800), (245, 246, 248))
    d = ImageDraw.Draw(ui)
    d.rectangle((0, 0, 1280, 60), fill=(40, 60, 90))
    d.text((20, 14), "Flywheel dashboard — Review queue", fill="white", font=font("NotoSans-Regular.ttf", 28))
    for i in range(8):
        d.rectangle((40, 100 + i * 80, 1240, 160 + i * 80), outline=(200, 200, 210), fill="white")
        d.text((60, 115 + i * 80), f"item {i}: pending approval · signal s-{i:03d}", fill=(30, 30, 30),
               font=font("NotoSans-Regular.ttf", 22))
    put("pages/screenshot.png", _png(ui), "a screenshot of a review queue", "screenshot")
    # broken things
    good = _jpeg(photos[1][1], 90)
    put("broken/truncated.jpg", good[: len(good) // 2], "cut in half", "broken")
    put("broken/zero.jpg", b"", "empty file", "broken")
    put("broken/garbage.jpg", bytes(rng.integers(0, 256, 4000, dtype=np.uint8)), "random bytes", "broken")
    put("broken/mislabelled.png", good, "a JPEG named .png", "broken")
    put("broken/notes.pdf", b"%PDF-1.4\n1 0 obj << >> endobj\ntrailer\n%%EOF\n", None, "not_image")
    bomb = Image.new("1", (12000, 12000), 0)
    put("broken/bomb.png", _png(bomb), "a decompression bomb", "broken")
    # tiny, flat, gradient, noise
    put("small/tiny.jpg", _jpeg(photos[2][1].resize((120, 90))), "a tiny photo", "tiny")
    put("small/thumb.png", _png(photos[0][1].resize((200, 200))), "a thumbnail", "tiny")
    put("flat/solid.png", _png(Image.new("RGB", (800, 600), (90, 120, 160))), "a solid colour", "flat")
    g = np.tile(np.linspace(0, 255, 800, dtype=np.float64), (600, 1))
    put("flat/gradient.png", _png(Image.fromarray(np.stack([g, g * 0.8, 255 - g], -1).astype(np.uint8))), "a smooth gradient", "flat")
    scan = np.clip(rng.normal(245, 2.0, (1100, 850)), 0, 255).astype(np.uint8)
    put("flat/blank_scan.jpg", _jpeg(Image.fromarray(scan), 85), "a blank scanned page", "flat")
    put("flat/noise.png", _png(Image.fromarray(rng.integers(0, 256, (512, 512, 3), dtype=np.uint8))), "static noise", "noise")
    # captions: missing, far too long, orphan sidecar
    put("captions/no_caption.jpg", _jpeg(photos[3][1].rotate(3, expand=False)), None, "missing_caption")
    put("captions/long_caption.jpg", _jpeg(photos[4][1].crop((0, 0, 700, 700))), "a very long caption " * 400, "long_caption")
    (root / "captions" / "orphan.txt").write_text("a caption without its image")
    # a WebDataset shard
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for i, (name, im) in enumerate(photos[9:13]):
            big = im if min(im.size) >= 300 else im.resize((im.size[0] * 2, im.size[1] * 2))
            for ext, payload in (("jpg", _jpeg(big.transpose(Image.Transpose.FLIP_LEFT_RIGHT), 90)), ("txt", f"mirrored {name}".encode())):
                ti = tarfile.TarInfo(f"{i:06d}.{ext}")
                ti.size = len(payload)
                tf.addfile(ti, io.BytesIO(payload))
        ti = tarfile.TarInfo("../escape.jpg")
        ti.size = 3
        tf.addfile(ti, io.BytesIO(b"abc"))
    put("shards/shard-000000.tar", buf.getvalue(), None, "tar_shard")
    info = {"files": files, "kinds": dict(kinds)}
    (root.parent / "input-info.json").write_text(json.dumps(info))
    return info


def unavailable_operators(recipe: str) -> list[str]:
    """Operators of `recipe` that cannot run here: not installed, or their model is missing."""
    from flywheel.curation.preflight import missing_models
    from flywheel.filters import recipe as recipes

    r = recipes.load(recipe)
    out = [s.name for s in r.steps if s.op is None]
    for m in missing_models(r):
        out += [o for o in m.operators if o not in out]
    return out

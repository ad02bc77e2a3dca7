"""Synthetic scenes with known content, and prompts that describe them.

Two suites, GenEval-style (Ghosh et al. 2023) but rendered rather than detected, so every
attribute of every image is known exactly:
- `shapes`: one group of identical flat-coloured shapes (circle, square, triangle, star, cross,
  diamond) in one of eight colours, 1-4 of them; a single shape may be placed left, right, top,
  bottom or center and the prompt may say so.
- `text`: one word in one of several scripts (Latin, Cyrillic, Greek, Han, Kana, Hangul, Arabic,
  Devanagari, Thai, Hebrew) rendered with the Noto fonts, in one colour.

The images are the ground truth for the checker (`checker.py`), the evaluation prompts for
`evaluate.py`, the toy training set for the trainer, and stage 3's synthetic source for curation
(report section 2.3). Prompts are split into train/eval by a hash of the prompt string, so
evaluation prompts are never training prompts. A *gap* (one colour-shape combination kept nearly
absent from a split) plants a known scarcity for the closed loop to find.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image, ImageDraw, ImageFont

GENERATOR_VERSION = "flywheel.synthetic/1"
SUPERSAMPLE = 4  # render at 4x and downsample: anti-aliased edges like a real image

SHAPES = ("circle", "square", "triangle", "star", "cross", "diamond")
PLURAL = {"circle": "circles", "square": "squares", "triangle": "triangles", "star": "stars", "cross": "crosses", "diamond": "diamonds"}
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "orange": (245, 140, 20),
    "yellow": (235, 215, 30),
    "green": (40, 170, 60),
    "cyan": (30, 190, 210),
    "blue": (40, 80, 220),
    "purple": (140, 60, 190),
    "black": (25, 25, 25),
}
BACKGROUND = (255, 255, 255)
POSITIONS = ("left", "right", "top", "bottom", "center")
POSITION_CENTERS = {"left": (0.22, 0.5), "right": (0.78, 0.5), "top": (0.5, 0.22), "bottom": (0.5, 0.78), "center": (0.5, 0.5)}
COUNTS = (1, 2, 3, 4)  # what prompts ask for; the checker's classifier also knows 0 and 5
MAX_COUNT = 5
NUMBER_WORDS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five"}

POSITION_PHRASES = {
    "left": (" on the left", " on the left side", " at the left of the image"),
    "right": (" on the right", " on the right side", " at the right of the image"),
    "top": (" at the top", " near the top edge", " at the top of the image"),
    "bottom": (" at the bottom", " near the bottom edge", " at the bottom of the image"),
    "center": (" in the center", " in the middle", " at the center of the image"),
}
TEMPLATES = (
    "{np}{pos}{bg}",
    "a picture of {np}{pos}{bg}",
    "an image showing {np}{pos}{bg}",
    "a drawing of {np}{pos}{bg}",
    "a simple illustration of {np}{pos}{bg}",
    "there {be} {np}{pos}{bg}",
    "{np}{pos}{bg}, flat colours",
    "a flat icon-style image of {np}{pos}{bg}",
    "{np}{pos}{bg}, minimalist",
    "a render of {np}{pos}{bg}",
    "a clean graphic with {np}{pos}{bg}",
    "a diagram containing {np}{pos}{bg}",
)
BG_PHRASES = ("", " on a white background", " against a plain white background")

# (script, lang, font file, ttc index): words people would plausibly ask to see rendered
_NOTO = "/usr/share/fonts/truetype/noto/"
_CJK = "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc"
SCRIPTS: dict[str, tuple[str, str, int, tuple[str, ...]]] = {
    "en": ("Latin", _NOTO + "NotoSans-Regular.ttf", 0, ("hello", "river", "garden", "coffee", "open", "sale", "light", "music")),
    "es": ("Latin", _NOTO + "NotoSans-Regular.ttf", 0, ("hola", "playa", "libro", "cielo", "ciudad", "verde")),
    "ru": ("Cyrillic", _NOTO + "NotoSans-Regular.ttf", 0, ("привет", "река", "книга", "город", "мир", "кофе")),
    "el": ("Greek", _NOTO + "NotoSans-Regular.ttf", 0, ("γεια", "θάλασσα", "ήλιος", "φως", "βιβλίο")),
    "zh": ("Han", _CJK, 2, ("你好", "山水", "咖啡", "书店", "春天", "和平")),
    "ja": ("Kana", _CJK, 0, ("こんにちは", "さくら", "ありがとう", "すし", "カメラ")),
    "ko": ("Hangul", _CJK, 1, ("안녕", "사랑", "하늘", "바다", "커피")),
    "ar": ("Arabic", _NOTO + "NotoSansArabic-Regular.ttf", 0, ("مرحبا", "سلام", "كتاب", "قهوة", "شمس")),
    "hi": ("Devanagari", _NOTO + "NotoSansDevanagari-Regular.ttf", 0, ("नमस्ते", "पानी", "किताब", "सूरज")),
    "th": ("Thai", _NOTO + "NotoSansThai-Regular.ttf", 0, ("สวัสดี", "กาแฟ", "ทะเล", "หนังสือ")),
    "he": ("Hebrew", _NOTO + "NotoSansHebrew-Regular.ttf", 0, ("שלום", "ספר", "שמש", "ים")),
}
TEXT_TEMPLATES = (
    'the word "{w}" written in {c}',
    'a sign that says "{w}" in {c} letters',
    '{c} text reading "{w}"{bg}',
    'the text "{w}" in {c}{bg}',
    'a label with the word "{w}", {c} lettering',
    'a poster that says "{w}" in {c}',
)


@dataclass(frozen=True)
class ShapeSpec:
    """What a `shapes` prompt asks for; `position` only for a single shape."""

    shape: str
    color: str
    count: int = 1
    position: str | None = None

    def __post_init__(self):
        if self.shape not in SHAPES or self.color not in COLORS:
            raise ValueError(f"unknown shape/colour {self.shape}/{self.color}; choose from {SHAPES} and {tuple(COLORS)}")
        if not 0 <= self.count <= MAX_COUNT:
            raise ValueError(f"count {self.count} out of range 0..{MAX_COUNT}")
        if self.position is not None and (self.count != 1 or self.position not in POSITIONS):
            raise ValueError("a position is only for a single shape, one of " + ", ".join(POSITIONS))

    def to_dict(self) -> dict:
        return {"suite": "shapes", **asdict(self)}


@dataclass(frozen=True)
class TextSpec:
    word: str
    lang: str
    color: str

    def to_dict(self) -> dict:
        return {"suite": "text", **asdict(self), "script": SCRIPTS[self.lang][0]}


def spec_from_dict(d: dict) -> ShapeSpec | TextSpec:
    if d.get("suite", "shapes") == "text":
        return TextSpec(d["word"], d["lang"], d["color"])
    return ShapeSpec(d["shape"], d["color"], int(d.get("count", 1)), d.get("position"))


# ---------------------------------------------------------------- prompts and the split


def noun_phrase(spec: ShapeSpec) -> str:
    if spec.count == 1:
        return f"{'an' if spec.color == 'orange' else 'a'} {spec.color} {spec.shape}"
    return f"{NUMBER_WORDS[spec.count]} {spec.color} {PLURAL[spec.shape]}"


def prompt_for(spec: ShapeSpec | TextSpec, rng: np.random.Generator) -> str:
    bg = BG_PHRASES[rng.integers(len(BG_PHRASES))]
    if isinstance(spec, TextSpec):
        return TEXT_TEMPLATES[rng.integers(len(TEXT_TEMPLATES))].format(w=spec.word, c=spec.color, bg=bg)
    pos = "" if spec.position is None else POSITION_PHRASES[spec.position][rng.integers(3)]
    t = TEMPLATES[rng.integers(len(TEMPLATES))]
    return t.format(np=noun_phrase(spec), pos=pos, bg=bg, be="is" if spec.count == 1 else "are")


_WORD_COUNTS = {"a": 1, "an": 1, "one": 1, "single": 1, **{w: n for n, w in NUMBER_WORDS.items()}}
_POSITION_WORDS = {"left": "left", "right": "right", "top": "top", "bottom": "bottom", "center": "center", "middle": "center"}


def parse_prompt(prompt: str) -> ShapeSpec | None:
    """What a `shapes` prompt in the suite's words asks for: colour, shape, count and position, or None when it
    names no single colour and shape of the suite (or several). The inverse of `prompt_for`; the enhancer's
    rule-based constraint (a rewrite keeps every entity and adds none) and prompt files without specs use it."""
    words = [w.strip(".,;:!?\"'()").lower() for w in prompt.split()]
    colors = {w for w in words if w in COLORS}
    singular = {w for w in words if w in SHAPES}
    plural = {s for s, p in PLURAL.items() if p in words}
    shapes = singular | plural
    if len(colors) != 1 or len(shapes) != 1:
        return None
    counts = [_WORD_COUNTS[w] for w in words if w in _WORD_COUNTS and w not in ("a", "an")]
    count = counts[0] if len(set(counts)) == 1 else (1 if singular and not counts else None)
    if count is None or count > MAX_COUNT or (count == 1) != bool(singular):
        return None
    positions = {_POSITION_WORDS[w] for w in words if w in _POSITION_WORDS}
    if len(positions) > 1 or (positions and count != 1):
        return None
    return ShapeSpec(shapes.pop(), colors.pop(), count, positions.pop() if positions else None)


def prompt_split(prompt: str, eval_fraction: float = 0.2) -> str:
    """`train` or `eval`, fixed by the prompt string: the two prompt sets never meet."""
    h = int.from_bytes(hashlib.sha256(prompt.strip().lower().encode()).digest()[:8], "big")
    return "eval" if h / 2**64 < eval_fraction else "train"


@dataclass(frozen=True)
class Gap:
    """Keep `color` `shape` scenes only with probability `keep` (a planted scarcity). Without a
    shape the gap is the colour itself: every scene of that colour, whatever its shape."""

    color: str
    shape: str | None = None
    keep: float = 0.01

    def hits(self, spec) -> bool:
        return (isinstance(spec, (ShapeSpec, TextSpec)) and spec.color == self.color
                and (self.shape is None or (isinstance(spec, ShapeSpec) and spec.shape == self.shape)))

    @property
    def concept(self) -> str:
        """'red triangle', or the colour alone ('purple')."""
        return self.color if self.shape is None else f"{self.color} {self.shape}"

    @classmethod
    def parse(cls, s: str) -> "Gap":
        """`red-star`, `red-star:0.02`, or a colour alone: `purple`, `purple:0`."""
        name, _, keep = s.partition(":")
        color, _, shape = name.partition("-")
        if color not in COLORS or (shape and shape not in SHAPES):
            raise ValueError(f"gap {s!r}: write COLOR[-SHAPE][:KEEP], e.g. red-star:0.01 or purple:0 "
                             f"(colours: {', '.join(COLORS)}; shapes: {', '.join(SHAPES)})")
        return cls(color, shape or None, float(keep) if keep else 0.01)


def random_shape_spec(rng: np.random.Generator, color: str | None = None, shape: str | None = None) -> ShapeSpec:
    color = color or list(COLORS)[rng.integers(len(COLORS))]
    shape = shape or SHAPES[rng.integers(len(SHAPES))]
    count = int(COUNTS[rng.integers(len(COUNTS))])
    position = None
    if count == 1 and rng.random() < 0.6:
        position = POSITIONS[rng.integers(len(POSITIONS))]
    return ShapeSpec(shape, color, count, position)


def random_text_spec(rng: np.random.Generator) -> TextSpec:
    lang = list(SCRIPTS)[rng.integers(len(SCRIPTS))]
    words = SCRIPTS[lang][3]
    colors = [c for c in COLORS if c != "yellow"]  # yellow on white is hard to read even for OCR
    return TextSpec(words[rng.integers(len(words))], lang, colors[rng.integers(len(colors))])


def sample_prompts(
    n: int, split: str = "train", suite: str = "shapes", seed: int = 0, gap: Gap | None = None,
    text_fraction: float = 0.2, eval_fraction: float = 0.2, unique: bool = False,
) -> list[tuple[str, ShapeSpec | TextSpec]]:
    """`n` (prompt, spec) pairs from `split`. `shapes` prompts are stratified over colours and
    shapes (colour i % 8, shape i // 8 % 6), so every colour and shape gets an even share;
    `unique` asks for distinct prompt strings (evaluation)."""
    rng = np.random.default_rng(seed)
    out: list[tuple[str, ShapeSpec | TextSpec]] = []
    seen: set[str] = set()
    colors = list(COLORS)
    i = tries = 0
    while len(out) < n:
        tries += 1
        if tries > 200 * n + 10000:
            raise RuntimeError(f"could not draw {n} {'unique ' if unique else ''}{split} prompts; ask for fewer")
        if suite == "text" or (suite == "mixed" and rng.random() < text_fraction):
            spec = random_text_spec(rng)
        else:
            spec = random_shape_spec(rng, colors[i % len(colors)], SHAPES[(i // len(colors)) % len(SHAPES)])
        if gap is not None and gap.hits(spec) and rng.random() >= gap.keep:
            i += 1  # drop this concept's turn: the gap is the point
            continue
        prompt = prompt_for(spec, rng)
        if prompt_split(prompt, eval_fraction) != split or (unique and prompt in seen):
            continue
        seen.add(prompt)
        out.append((prompt, spec))
        i += 1
    return out


# ---------------------------------------------------------------- rendering


def _shape_polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]] | None:
    if shape == "triangle":
        return [(cx, cy - r), (cx + r * 0.95, cy + r * 0.8), (cx - r * 0.95, cy + r * 0.8)]
    if shape == "diamond":
        return [(cx, cy - r), (cx + r * 0.8, cy), (cx, cy + r), (cx - r * 0.8, cy)]
    if shape == "star":
        pts = []
        for k in range(10):
            a = -math.pi / 2 + k * math.pi / 5
            rr = r if k % 2 == 0 else r * 0.42
            pts.append((cx + rr * math.cos(a), cy + rr * math.sin(a)))
        return pts
    if shape == "cross":
        w = r * 0.36
        return [(cx - w, cy - r), (cx + w, cy - r), (cx + w, cy - w), (cx + r, cy - w), (cx + r, cy + w), (cx + w, cy + w),
                (cx + w, cy + r), (cx - w, cy + r), (cx - w, cy + w), (cx - r, cy + w), (cx - r, cy - w), (cx - w, cy - w)]
    return None


def _draw_shape(d: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, fill) -> None:
    poly = _shape_polygon(shape, cx, cy, r)
    if poly is not None:
        d.polygon(poly, fill=fill)
    elif shape == "circle":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    else:  # square
        s = r * 0.85
        d.rectangle([cx - s, cy - s, cx + s, cy + s], fill=fill)


def _layout(spec: ShapeSpec, size: int, rng: np.random.Generator) -> list[tuple[float, float, float]]:
    """Centres and radii (pixels), non-overlapping, inside the canvas."""
    if spec.count == 0:
        return []
    if spec.count == 1:
        r = size * rng.uniform(0.12, 0.16)
        if spec.position is not None:
            fx, fy = POSITION_CENTERS[spec.position]
            j = 0.03
            return [((fx + rng.uniform(-j, j)) * size, (fy + rng.uniform(-j, j)) * size, r)]
        return [(rng.uniform(r + 1, size - r - 1), rng.uniform(r + 1, size - r - 1), r)]
    for _ in range(1000):
        r = size * rng.uniform(0.085, 0.115)
        pts: list[tuple[float, float, float]] = []
        for _ in range(200):
            x, y = rng.uniform(r + 1, size - r - 1, 2)
            if all(max(abs(x - px), abs(y - py)) > 2.4 * r for px, py, _ in pts):  # bounding boxes apart: shapes never touch
                pts.append((float(x), float(y), r))
                if len(pts) == spec.count:
                    return pts
    raise RuntimeError(f"could not place {spec.count} shapes on a {size}px canvas")


def position_of(cx: float, cy: float) -> str:
    """The position word for a centroid in [0,1]^2; the same rule the checker applies."""
    dx, dy = cx - 0.5, cy - 0.5
    if max(abs(dx), abs(dy)) < 1 / 6:
        return "center"
    if abs(dx) >= abs(dy):
        return "left" if dx < 0 else "right"
    return "top" if dy < 0 else "bottom"


def render_shapes(spec: ShapeSpec, size: int, rng: np.random.Generator) -> tuple[Image.Image, list[dict]]:
    S = size * SUPERSAMPLE
    img = Image.new("RGB", (S, S), BACKGROUND)
    d = ImageDraw.Draw(img)
    objects = []
    for cx, cy, r in _layout(spec, size, rng):
        _draw_shape(d, spec.shape, cx * SUPERSAMPLE, cy * SUPERSAMPLE, r * SUPERSAMPLE, COLORS[spec.color])
        objects.append({"shape": spec.shape, "color": spec.color, "bbox": [round(cx - r, 1), round(cy - r, 1), round(cx + r, 1), round(cy + r, 1)],
                        "position": position_of(cx / size, cy / size)})
    return img.reduce(SUPERSAMPLE), objects


@lru_cache(maxsize=64)
def _font(path: str, index: int, px: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, px, index=index, layout_engine=ImageFont.Layout.RAQM)


def render_text(spec: TextSpec, size: int, rng: np.random.Generator) -> tuple[Image.Image, list[dict]]:
    _, path, index, _ = SCRIPTS[spec.lang]
    if not Path(path).exists():
        raise FileNotFoundError(f"font {path} is missing; install Debian's fonts-noto-core and fonts-noto-cjk")
    S = size * SUPERSAMPLE
    img = Image.new("RGB", (S, S), BACKGROUND)
    d = ImageDraw.Draw(img)
    px = int(S * 0.3)
    while px > 8:  # the largest size that fits 85% of the width
        font = _font(path, index, px)
        x0, y0, x1, y1 = d.textbbox((0, 0), spec.word, font=font, direction=None)
        if x1 - x0 <= 0.85 * S:
            break
        px = int(px * 0.9)
    cx = S / 2 + rng.uniform(-0.04, 0.04) * S
    cy = S / 2 + rng.uniform(-0.1, 0.1) * S
    d.text((cx, cy), spec.word, font=font, fill=COLORS[spec.color], anchor="mm")
    bbox = d.textbbox((cx, cy), spec.word, font=font, anchor="mm")
    return img.reduce(SUPERSAMPLE), [
        {"text": spec.word, "lang": spec.lang, "color": spec.color, "bbox": [round(v / SUPERSAMPLE, 1) for v in bbox]}
    ]


def render(spec: ShapeSpec | TextSpec, size: int, rng: np.random.Generator) -> tuple[Image.Image, list[dict]]:
    return render_text(spec, size, rng) if isinstance(spec, TextSpec) else render_shapes(spec, size, rng)


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


# ---------------------------------------------------------------- captions and rows


def captions_for(spec: ShapeSpec | TextSpec, objects: list[dict], size: int) -> dict[str, str]:
    """The four caption types (ARCHITECTURE.md, Captions), written from the ground truth."""
    knowledge = (f"A synthetic {size}x{size} image generated programmatically ({GENERATOR_VERSION}) with known content; "
                 "flat colours on a plain white background, no photographic content.")
    if isinstance(spec, TextSpec):
        script = SCRIPTS[spec.lang][0]
        general = f'The word "{spec.word}" written in {spec.color} {script} letters on a plain white background.'
        text = f'One line of {script} text ({spec.lang}), centered, {spec.color}: "{spec.word}".'
        structured = {"entities": [{"name": "text", "text": spec.word, "attributes": {"color": spec.color, "script": script, "lang": spec.lang}}],
                      "relations": [], "background": "white"}
        return {"general": general, "text": text, "knowledge": knowledge, "structured": json.dumps(structured, ensure_ascii=False)}
    np_ = noun_phrase(spec)
    where = f" {POSITION_PHRASES[spec.position][0].strip()}" if spec.position else ""
    general = f"{np_[0].upper() + np_[1:]}{where} on a plain white background."
    structured = {"entities": [{"name": spec.shape, "count": spec.count, "attributes": {"color": spec.color},
                                "positions": [o["position"] for o in objects]}], "relations": [], "background": "white"}
    return {"general": general, "text": "No visible text.", "knowledge": knowledge, "structured": json.dumps(structured)}


def make_row(spec: ShapeSpec | TextSpec, prompt: str, size: int, rng: np.random.Generator, split: str) -> dict:
    img, objects = render(spec, size, rng)
    data = png_bytes(img)
    lang = spec.lang if isinstance(spec, TextSpec) else "en"
    meta = {"generator": GENERATOR_VERSION, "split": split, "spec": spec.to_dict(), "objects": objects, "size": size}
    return {
        "id": hashlib.sha256(data).hexdigest(), "source": None, "task": "t2i", "image": data, "width": size, "height": size,
        "format": "PNG", "mode": "RGB", "frames": 1, "exif_orientation": None, "has_alpha": False,
        "caption": prompt, "captions": captions_for(spec, objects, size), "lang": lang, "meta": json.dumps(meta, ensure_ascii=False),
    }


def iter_rows(n: int, seed: int = 0, size: int = 64, split: str = "train", suite: str = "shapes", gap: Gap | None = None,
              text_fraction: float = 0.2) -> Iterator[dict]:
    """Rows of the dataset contract; `source` is `synthetic:<seed>:<index>`. Deterministic in `seed`."""
    prompts = sample_prompts(n, split=split, suite=suite, seed=seed, gap=gap, text_fraction=text_fraction)
    rng = np.random.default_rng([seed, 1])
    for i, (prompt, spec) in enumerate(prompts):
        row = make_row(spec, prompt, size, rng, split)
        row["source"] = f"synthetic:{seed}:{split}:{i}"
        yield row


def write_dataset(out: str | Path, n: int, seed: int = 0, size: int = 64, split: str = "train", suite: str = "shapes",
                  gap: Gap | None = None, text_fraction: float = 0.2, name: str = "synthetic", catalog=None,
                  progress: bool = False, batch_rows: int = 512):
    """Emit `n` scenes as a dataset (kind `synthetic`); returns the manifest."""
    import pyarrow as pa

    from flywheel.datasets import BASE_SCHEMA, DatasetWriter

    extra = {"generator": GENERATOR_VERSION, "seed": seed, "size": size, "split": split, "suite": suite,
             "gap": asdict(gap) if gap else None, "text_fraction": text_fraction}
    rows = iter_rows(n, seed=seed, size=size, split=split, suite=suite, gap=gap, text_fraction=text_fraction)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n, desc="synth", unit="img")
    with DatasetWriter(out, name=name, kind="synthetic", catalog=catalog, extra=extra, schema=BASE_SCHEMA) as w:
        buf: list[dict] = []
        for row in rows:
            buf.append(row)
            if len(buf) >= batch_rows:
                w.write(pa.Table.from_pylist(buf, schema=BASE_SCHEMA))
                bar and bar.update(len(buf))
                buf = []
        if buf:
            w.write(pa.Table.from_pylist(buf, schema=BASE_SCHEMA))
            bar and bar.update(len(buf))
        counts = {"rows": n}
        manifest = w.close(counts=counts)
    if bar:
        bar.close()
    return manifest

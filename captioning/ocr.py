"""Offline OCR in reading order, routed by detected script to the engine that reads it.

The `rapidocr` wheel (PP-OCR models, onnxruntime) reads Chinese, Japanese and English well; its
recogniser has no Cyrillic, Greek, Thai, Hangul or Vietnamese diacritics, where Debian's
`tesseract-ocr` language packs are far better. So: Tesseract's orientation-and-script detection
(`--psm 0`, the `osd` pack) names the script; Han / Japanese go to rapidocr, the rest to
Tesseract with that script's language packs. When OSD cannot decide (little text), rapidocr reads
the page and the script of what it read picks again.
"""

from __future__ import annotations

import functools
import io
import re
import shutil
import subprocess
import threading
import unicodedata

import numpy as np

# OSD script name -> Tesseract languages (None: rapidocr).
SCRIPT_ENGINES: dict[str, str | None] = {
    "Han": None, "Japanese": None, "Hiragana": None, "Katakana": None,
    "Latin": "eng+vie",  # vie's model also reads plain English; eng alone drops Vietnamese diacritics
    "Cyrillic": "rus+ukr", "Greek": "ell", "Thai": "tha", "Hangul": "kor", "Korean": "kor",
    "Arabic": "ara", "Devanagari": "hin",
}
# Page segmentation per script: Tesseract's layout analysis (psm 3) breaks Hangul lines into
# fragments (a rendered Korean page: 34-77% of characters at psm 3, 98% at psm 6, one text block).
SCRIPT_PSM = {"Hangul": "6", "Korean": "6"}
# `lang` column (ISO 639-1) -> OSD script name, a hint that skips detection.
LANG_SCRIPT = {"zh": "Han", "ja": "Japanese", "en": "Latin", "vi": "Latin", "fr": "Latin", "de": "Latin",
               "es": "Latin", "ru": "Cyrillic", "uk": "Cyrillic", "el": "Greek", "th": "Thai", "ko": "Hangul",
               "ar": "Arabic", "hi": "Devanagari"}

_rapid_lock = threading.Lock()


@functools.lru_cache(maxsize=1)
def _rapid():
    import logging

    from rapidocr import RapidOCR

    engine = RapidOCR()
    logging.getLogger("RapidOCR").setLevel(logging.ERROR)  # "detection result is empty" on blank images
    return engine


@functools.lru_cache(maxsize=1)
def tesseract_version() -> str | None:
    exe = shutil.which("tesseract")
    if exe is None:
        return None
    out = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout
    return out.split()[1] if out else "unknown"


@functools.lru_cache(maxsize=1)
def tesseract_langs() -> frozenset[str]:
    if not tesseract_version():
        return frozenset()
    out = subprocess.run(["tesseract", "--list-langs"], capture_output=True, text=True).stdout
    return frozenset(line.strip() for line in out.splitlines()[1:] if line.strip())


def _png(im) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def _prepare(im):
    """Grayscale, upscaled so small text reaches the ~30 px line height both engines expect."""
    g = im.convert("L")
    if min(g.size) < 600:
        f = 600 / min(g.size)
        g = g.resize((round(g.width * f), round(g.height * f)))
    return g


def detect_script(im) -> str | None:
    """Tesseract OSD's script name, or None when it cannot tell (too little text, no osd pack)."""
    if "osd" not in tesseract_langs():
        return None
    r = subprocess.run(["tesseract", "stdin", "stdout", "--psm", "0"], input=_png(im), capture_output=True,
                       timeout=120)
    m = re.search(rb"Script:\s*(\w+)", r.stdout)
    conf = re.search(rb"Script confidence:\s*([\d.]+)", r.stdout)
    if not m or (conf and float(conf.group(1)) < 0.5):
        return None
    return m.group(1).decode()


def tesseract(im, langs: str, psm: str = "3") -> str:
    have = tesseract_langs()
    use = "+".join(lang for lang in langs.split("+") if lang in have)
    if not use:
        raise RuntimeError(f"tesseract language packs {langs} are not installed; apt-get install "
                           + " ".join(f"tesseract-ocr-{lang}" for lang in langs.split("+")))
    r = subprocess.run(["tesseract", "stdin", "stdout", "-l", use, "--psm", psm], input=_png(im),
                       capture_output=True, timeout=300)
    text = r.stdout.decode("utf-8", "replace")
    lines = [ln.rstrip() for ln in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def rapid(im) -> str:
    """rapidocr lines, put in reading order: rows by vertical overlap, then left to right."""
    with _rapid_lock:
        res = _rapid()(np.asarray(im.convert("RGB")))
    if res is None or res.boxes is None or res.txts is None:
        return ""
    items = []
    for box, txt in zip(res.boxes, res.txts):
        b = np.asarray(box)
        items.append((b[:, 1].min(), b[:, 1].max(), b[:, 0].min(), txt))
    items.sort(key=lambda t: (t[0], t[2]))
    rows: list[list] = []
    for it in items:
        if rows:
            top, bot = min(r[0] for r in rows[-1]), max(r[1] for r in rows[-1])
            overlap = min(bot, it[1]) - max(top, it[0])
            if overlap > 0.5 * min(bot - top, it[1] - it[0]):
                rows[-1].append(it)
                continue
        rows.append([it])
    return "\n".join(" ".join(t[3] for t in sorted(r, key=lambda t: t[2])) for r in rows).strip()


def script_of_text(text: str) -> str | None:
    """The dominant script of OCR output, named as OSD names it."""
    counts: dict[str, int] = {}
    for ch in text:
        if not ch.isalpha():
            continue
        name = unicodedata.name(ch, "")
        if "HIRAGANA" in name or "KATAKANA" in name:
            s = "Japanese"
        elif "CJK" in name:
            s = "Han"
        else:
            s = name.split(" ")[0].capitalize()
        counts[s] = counts.get(s, 0) + 1
    if not counts:
        return None
    if counts.get("Japanese"):
        return "Japanese"
    return max(counts, key=counts.get)


def read_text(im, lang: str | None = None) -> tuple[str, str]:
    """(text in reading order, "engine:script") for a PIL image; `lang` (ISO 639-1) skips detection."""
    g = _prepare(im)
    script = LANG_SCRIPT.get((lang or "").split("-")[0].lower()) or detect_script(g)
    if script is None:
        text = rapid(g)
        script = script_of_text(text)
        if script in (None, "Han", "Japanese", "Latin"):
            if script == "Latin" and "vie" in tesseract_langs():
                return tesseract(g, SCRIPT_ENGINES["Latin"]), "tesseract:Latin"
            return text, f"rapidocr:{script or 'none'}"
    engine = SCRIPT_ENGINES.get(script, "eng")
    if engine is None:
        return rapid(g), f"rapidocr:{script}"
    return tesseract(g, engine, SCRIPT_PSM.get(script, "3")), f"tesseract:{script}"

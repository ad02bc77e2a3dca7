"""Offline OCR in reading order, routed by the script seen on the page image.

Two engines ship offline: the `rapidocr` wheel (PP-OCR models on onnxruntime) reads Chinese,
Japanese and English well but has no Cyrillic, Greek, Thai, Hangul, Arabic or Indic recogniser;
Debian's Tesseract reads those with its per-language packs. Routing one engine's output by the
script of what it read fails on real pages (a Cyrillic page read by an English model comes out as
Latin look-alikes, "lIperoBop" for "Предговор"; Korean as Latin), and Tesseract's own script
detection (OSD, `--psm 0`) confuses Latin, Cyrillic, Greek and Armenian on pages that mix LaTeX
into the text. So the script is decided from the image by a probe:

1. a band of up to `PROBE_LINES` text lines is cut from the middle of the page (ink profile);
2. each script's probe pack reads the band (Tesseract, loaded once per process through its C
   API), and rapidocr reads it for Han/Japanese; a reading scores the width of the words it read
   in its own script times their confidence: the pack that reads the page's script reads wide
   spans with high confidence, a wrong one reads garbage with low confidence or nothing;
3. the best-scoring script's reader reads the page (`SCRIPT_READERS`: a Tesseract pack list, or
   rapidocr). When the runner-up scores within `UNSURE_RATIO` of the best, both read the page and
   the reading with the higher page score is kept.

`read_text` returns the text and which engine, pack and script read it ("tesseract:rus+eng:Cyrillic").
Thread limits: Tesseract runs single-threaded (`OMP_THREAD_LIMIT=1`, set before the library loads)
and onnxruntime with `intra_op_threads()` threads, so parallel caption workers do not oversubscribe
the cores; `thread_settings()` says what is in force.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import shutil
import subprocess
import threading
import unicodedata
from dataclasses import dataclass

import numpy as np

# Script -> the probe pack that tells whether a page is in that script (one per script).
PROBE_PACKS: dict[str, str] = {
    "Latin": "eng", "Cyrillic": "rus", "Greek": "ell", "Armenian": "hye", "Arabic": "ara", "Devanagari": "hin",
    "Bengali": "ben", "Hangul": "kor", "Thai": "tha", "Hebrew": "heb", "Georgian": "kat", "Tamil": "tam",
    "Han": "chi_sim", "Japanese": "jpn",  # both go to rapidocr: confusing them costs nothing
}
PROBE_SCRIPTS = {"Japanese": {"Han", "Japanese"}}  # the letters a probe counts, when more than its own script
# Script -> the reader of the whole page: Tesseract packs ("+"-joined, those installed are used) or
# None for rapidocr. Pages mix English (LaTeX, code, names) into every script, so the script's
# packs are joined by eng; the packs of one script together read its languages (Bulgarian,
# Ukrainian and Mongolian letters beyond Russian; Persian and Arabic; Marathi and Hindi).
SCRIPT_READERS: dict[str, str | None] = {
    "Han": None, "Japanese": None,
    # Latin: rapidocr read the tuning split's Finnish and Slovenian pages at word F1 0.94/0.88 where
    # Tesseract eng reached 0.72/0.79; Vietnamese (stacked tone marks) goes to Tesseract's eng+vie.
    "Latin": None,
    "Cyrillic": "rus+bul+ukr+mon+eng", "Greek": "ell+eng", "Armenian": "hye+eng", "Arabic": "ara+fas+eng",
    "Devanagari": "hin+mar+eng", "Bengali": "ben+eng", "Hangul": "kor+eng", "Thai": "tha+eng",
    "Hebrew": "heb+eng", "Georgian": "kat+eng", "Tamil": "tam+eng",
}
# Page segmentation per script: Tesseract's layout analysis (psm 3) breaks Hangul lines into
# fragments (a rendered Korean page: 34-77% of characters at psm 3, 98% at psm 6, one text block).
SCRIPT_PSM = {"Hangul": 6}
# `lang` column (ISO 639-1) -> script, a hint that skips detection.
LANG_SCRIPT = {"zh": "Han", "ja": "Japanese", "en": "Latin", "vi": "Latin", "fr": "Latin", "de": "Latin",
               "es": "Latin", "nl": "Latin", "tr": "Latin", "fi": "Latin", "ru": "Cyrillic", "uk": "Cyrillic",
               "bg": "Cyrillic", "mn": "Cyrillic", "el": "Greek", "th": "Thai", "ko": "Hangul", "ar": "Arabic",
               "fa": "Arabic", "hi": "Devanagari", "mr": "Devanagari", "hy": "Armenian", "bn": "Bengali",
               "he": "Hebrew", "ka": "Georgian", "ta": "Tamil"}
LANG_PACKS = {"vi": "eng+vie", "bg": "bul+rus+eng", "uk": "ukr+rus+eng", "mn": "mon+rus+eng", "fa": "fas+ara+eng",
              "mr": "mar+hin+eng"}  # a known language narrows its script's reader
VIETNAMESE_READER = "eng+vie"  # vie's model also reads plain English; eng alone drops the tone marks
# Marks only Vietnamese writes among Latin-script languages: hook above, dot below, horn; and ă, đ.
VIETNAMESE_MARKS = {"\u0309", "\u0323", "\u031b", "\u0306", "\u0111"}
PROBE_LINES = 6
UNSURE_RATIO = 1.3  # runner-up within this factor of the best probe score: both read the page
TEXT_MIN_SCORE = 0.02  # best probe score (fraction of the band's width x lines read) below this: no text

_lock = threading.Lock()


def intra_op_threads() -> int:
    """onnxruntime intra-op threads for rapidocr: FLYWHEEL_OCR_THREADS, else 1 (the caption workers
    are the parallelism; more threads per worker fight them for the cores)."""
    return max(1, int(os.environ.get("FLYWHEEL_OCR_THREADS", "1")))


def thread_settings() -> dict:
    return {"tesseract_omp_thread_limit": os.environ.get("OMP_THREAD_LIMIT"),
            "onnxruntime_intra_op_threads": intra_op_threads(), "onnxruntime_inter_op_threads": 1}


# -- rapidocr ----------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _rapid():
    import logging

    from rapidocr import RapidOCR

    n = intra_op_threads()
    engine = RapidOCR(params={"EngineConfig.onnxruntime.intra_op_num_threads": n,
                              "EngineConfig.onnxruntime.inter_op_num_threads": 1, "Global.log_level": "error"})
    logging.getLogger("RapidOCR").setLevel(logging.ERROR)  # "detection result is empty" on blank images
    return engine


_rapid_lock = threading.Lock()


def _rapid_lines(g: np.ndarray) -> list[tuple[float, float, float, float, str, float]]:
    """(top, bottom, left, right, text, score) per line rapidocr read."""
    with _rapid_lock:
        res = _rapid()(np.stack([g] * 3, axis=-1))
    if res is None or res.boxes is None or res.txts is None:
        return []
    out = []
    for box, txt, sc in zip(res.boxes, res.txts, res.scores):
        b = np.asarray(box)
        out.append((float(b[:, 1].min()), float(b[:, 1].max()), float(b[:, 0].min()), float(b[:, 0].max()), txt,
                    float(sc)))
    return out


def _reading_order(items) -> str:
    """rapidocr lines in reading order: rows by vertical overlap, then left to right."""
    items = sorted(items, key=lambda t: (t[0], t[2]))
    rows: list[list] = []
    for it in items:
        if rows:
            top, bot = min(r[0] for r in rows[-1]), max(r[1] for r in rows[-1])
            overlap = min(bot, it[1]) - max(top, it[0])
            if overlap > 0.5 * min(bot - top, it[1] - it[0]):
                rows[-1].append(it)
                continue
        rows.append([it])
    return "\n".join(" ".join(t[4] for t in sorted(r, key=lambda t: t[2])) for r in rows).strip()


# -- Tesseract through its C API (models loaded once per process) -------------------------------
@functools.lru_cache(maxsize=1)
def _capi():
    name = ctypes.util.find_library("tesseract") or "libtesseract.so.5"
    # Tesseract's OpenMP: one thread per worker process (read when libgomp loads, i.e. now); the
    # caption workers are the parallelism, and OpenMP threads on top of them fight for the cores.
    os.environ.setdefault("OMP_THREAD_LIMIT", "1")
    lib = ctypes.CDLL(name)
    P, I, C = ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p
    sig = {"TessBaseAPICreate": ([], P), "TessBaseAPIInit3": ([P, C, C], I), "TessBaseAPIDelete": ([P], None),
           "TessBaseAPISetPageSegMode": ([P, I], None), "TessBaseAPISetImage": ([P, P, I, I, I, I], None),
           "TessBaseAPISetRectangle": ([P, I, I, I, I], None), "TessBaseAPIRecognize": ([P, P], I),
           "TessBaseAPIGetUTF8Text": ([P], P), "TessBaseAPIGetTsvText": ([P, I], P), "TessDeleteText": ([P], None),
           "TessBaseAPISetSourceResolution": ([P, I], None), "TessBaseAPISetVariable": ([P, C, C], I),
           "TessBaseAPIClear": ([P], None)}
    for fn, (args, res) in sig.items():
        f = getattr(lib, fn)
        f.argtypes, f.restype = args, res
    return lib


def _take_text(lib, ptr) -> str:
    if not ptr:
        return ""
    try:
        return ctypes.string_at(ptr).decode("utf-8", "replace")
    finally:
        lib.TessDeleteText(ptr)


class _Tess:
    """One initialised TessBaseAPI for a pack list; not thread-safe, so calls hold its lock."""

    def __init__(self, langs: str):
        self.lib = _capi()
        self.api = self.lib.TessBaseAPICreate()
        if self.lib.TessBaseAPIInit3(self.api, None, langs.encode()) != 0:
            raise RuntimeError(f"tesseract could not load {langs}")
        self.lock = threading.Lock()

    def read(self, g: np.ndarray, psm: int, rect: tuple[int, int, int, int] | None = None) -> tuple[str, list]:
        """(text, words as (text, conf 0-1, width)) for a uint8 grayscale array."""
        g = np.ascontiguousarray(g, dtype=np.uint8)
        lib = self.lib
        with self.lock:
            lib.TessBaseAPISetPageSegMode(self.api, psm)
            lib.TessBaseAPISetImage(self.api, g.ctypes.data, g.shape[1], g.shape[0], 1, g.shape[1])
            lib.TessBaseAPISetSourceResolution(self.api, 70)  # what the CLI assumes for a PNG without dpi
            if rect:
                lib.TessBaseAPISetRectangle(self.api, *rect)
            if lib.TessBaseAPIRecognize(self.api, None) != 0:
                lib.TessBaseAPIClear(self.api)
                return "", []
            text = _take_text(lib, lib.TessBaseAPIGetUTF8Text(self.api))
            tsv = _take_text(lib, lib.TessBaseAPIGetTsvText(self.api, 0))
            lib.TessBaseAPIClear(self.api)
        words = []
        for line in tsv.splitlines():
            p = line.split("\t")
            if len(p) >= 12 and p[0] == "5" and p[11].strip():
                words.append((p[11], max(0.0, float(p[10])) / 100, int(p[8])))
        return text, words


_tess: dict[str, _Tess] = {}


def _tess_for(langs: str) -> _Tess:
    with _lock:
        t = _tess.get(langs)
        if t is None:
            t = _tess[langs] = _Tess(langs)
        return t


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


def preload() -> None:
    """Load the models a page may need once, in this worker: rapidocr and every installed probe pack
    (readers of the page load on first use: a handful per worker)."""
    _rapid()
    for pack in PROBE_PACKS.values():
        if pack in tesseract_langs():
            _tess_for(pack)


def installed(packs: str) -> str:
    """The installed packs of a "+"-joined list, in order ("" when none is)."""
    have = tesseract_langs()
    return "+".join(p for p in packs.split("+") if p in have)


# -- scripts -----------------------------------------------------------------------------------
def char_script(ch: str) -> str | None:
    if not ch.isalpha():
        return None
    name = unicodedata.name(ch, "")
    if "HIRAGANA" in name or "KATAKANA" in name:
        return "Japanese"
    if "CJK" in name:
        return "Han"
    if name.startswith("HANGUL"):
        return "Hangul"
    return name.split(" ")[0].capitalize() or None


def script_of_text(text: str) -> str | None:
    """The dominant script of a text (kana anywhere makes it Japanese)."""
    counts: dict[str, int] = {}
    for ch in text:
        s = char_script(ch)
        if s:
            counts[s] = counts.get(s, 0) + 1
    if not counts:
        return None
    if counts.get("Japanese"):
        return "Japanese"
    return max(counts, key=counts.get)


def _in_script(word: str, scripts: set[str]) -> bool:
    ss = [char_script(ch) for ch in word]
    ss = [s for s in ss if s]
    return bool(ss) and sum(s in scripts for s in ss) * 2 > len(ss)


def _score(words, scripts: set[str], norm: float) -> float:
    """Width of the words read in these scripts times their confidence, over `norm`."""
    return sum(c * w for t, c, w in words if _in_script(t, scripts)) / max(norm, 1.0)


# -- page geometry -----------------------------------------------------------------------------
def _prepare(im) -> np.ndarray:
    """Grayscale, upscaled so small text reaches the ~30 px line height both engines expect."""
    g = im.convert("L")
    if min(g.size) < 600:
        f = 600 / min(g.size)
        g = g.resize((round(g.width * f), round(g.height * f)))
    return np.asarray(g)


def text_lines(g: np.ndarray) -> list[tuple[int, int]]:
    """(top, bottom) of the ink rows of a page: runs of rows holding dark pixels."""
    dark = g < min(128, int(np.median(g)) - 40) if g.size else g
    rows = dark.sum(axis=1) > max(2, g.shape[1] // 400)
    lines, start = [], None
    for y, on in enumerate(np.append(rows, False)):
        if on and start is None:
            start = y
        elif not on and start is not None:
            if 4 <= y - start <= g.shape[0] // 8:
                lines.append((start, y))
            start = None
    return lines


def probe_band(g: np.ndarray) -> tuple[int, int] | None:
    """Rows of up to PROBE_LINES text lines from the middle of the page's lines."""
    lines = text_lines(g)
    if not lines:
        return None
    i = max(0, len(lines) // 2 - PROBE_LINES // 2)
    sel = lines[i:i + PROBE_LINES]
    pad = 6
    return max(0, sel[0][0] - pad), min(g.shape[0], sel[-1][1] + pad)


@dataclass
class Reading:
    text: str
    engine: str  # "tesseract:<packs>:<script>" or "rapidocr:<script>"
    score: float  # confident width of the words read in the script's own letters (`_own`)


def probe(g: np.ndarray) -> dict[str, float]:
    """Script -> probe score on a band of the page's text lines (empty when the page has no lines)."""
    band = probe_band(g)
    if band is None:
        return {}
    top, bot = band
    crop = np.ascontiguousarray(g[top:bot])
    norm = crop.shape[1] * max(1, len(text_lines(crop)))
    scores: dict[str, float] = {}
    for script, pack in PROBE_PACKS.items():
        if pack not in tesseract_langs():
            continue
        _, words = _tess_for(pack).read(crop, 6)
        scores[script] = _score(words, PROBE_SCRIPTS.get(script, {script}), norm)
    return scores


def is_vietnamese(g: np.ndarray) -> bool:
    """A Latin page is Vietnamese when Tesseract's vie pack, reading the probe band, finds
    Vietnamese-only marks in at least 15% of the words it reads with confidence."""
    band = probe_band(g)
    if band is None or "vie" not in tesseract_langs():
        return False
    _, words = _tess_for("vie").read(np.ascontiguousarray(g[band[0]:band[1]]), 6)
    sure = [t for t, c, _ in words if c >= 0.5 and any(ch.isalpha() for ch in t)]
    viet = sum(any(m in unicodedata.normalize("NFD", t.lower()) for m in VIETNAMESE_MARKS) for t in sure)
    return bool(sure) and viet >= 0.15 * len(sure)


def _own(script: str) -> set[str]:
    """The letters a page reading is scored on: its script's own. Readers join eng to their packs,
    so the English on a page reads alike in both readers and cannot tell them apart."""
    return {"Han", "Japanese"} if script in ("Han", "Japanese") else {script}


def read_as(g: np.ndarray, script: str, packs: str | None = None) -> Reading:
    """The page read by `script`'s reader, with its page score."""
    packs = packs if packs is not None else SCRIPT_READERS.get(script, "eng")
    norm = g.shape[1] * max(1, len(text_lines(g)))
    if packs is None or not installed(packs):
        lines = _rapid_lines(g)
        if packs is None:
            words = [(t, s, r - l) for _, _, l, r, t, s in lines]
            return Reading(_reading_order(lines), f"rapidocr:{script}", _score(words, _own(script), norm))
        raise RuntimeError(f"tesseract language packs {packs} are not installed; apt-get install "
                           + " ".join(f"tesseract-ocr-{p}" for p in packs.split("+")))
    use = installed(packs)
    text, words = _tess_for(use).read(g, SCRIPT_PSM.get(script, 3))
    lines = [ln.rstrip() for ln in text.splitlines()]
    import re

    text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
    return Reading(text, f"tesseract:{use}:{script}", _score(words, _own(script), norm))


def read_text(im, lang: str | None = None) -> tuple[str, str]:
    """(text in reading order, "engine:packs:script" that read it) for a PIL image; `lang` (ISO
    639-1) skips detection."""
    g = _prepare(im)
    code = (lang or "").split("-")[0].lower()
    if code in LANG_SCRIPT:
        script = LANG_SCRIPT[code]
        r = read_as(g, script, LANG_PACKS.get(code, SCRIPT_READERS.get(script)))
        return r.text, r.engine
    scores = probe(g)
    ranked = sorted(scores.items(), key=lambda kv: -kv[1])
    if not ranked or ranked[0][1] < TEXT_MIN_SCORE:
        r = read_as(g, "Han")  # little or no text: rapidocr finds what there is (signs, captions)
        return r.text, r.engine.replace("Han", "none")
    script = ranked[0][0]
    best = read_as(g, script, VIETNAMESE_READER if script == "Latin" and is_vietnamese(g) else None)
    if len(ranked) > 1 and ranked[1][1] * UNSURE_RATIO >= ranked[0][1]:
        other = read_as(g, ranked[1][0])
        if other.score > best.score:
            best = other
    return best.text, best.engine


def tesseract(im, langs: str, psm: int = 3) -> str:
    """One Tesseract reading of a PIL image (benchmarks compare single engines with it)."""
    return _tess_for(installed(langs) or langs).read(_prepare(im), psm)[0].strip()


def rapid(im) -> str:
    return _reading_order(_rapid_lines(_prepare(im)))

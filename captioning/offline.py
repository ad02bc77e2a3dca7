"""The offline backend's captions: what local code can honestly say without a VLM.

- text: OCR in reading order (`flywheel.captioning.ocr`, routed by script).
- knowledge: the sample's metadata restated (source, title, alt text, EXIF, edit instruction);
  nothing is added that the metadata does not give.
- general: the original caption plus measured image facts (size, orientation, dominant colours,
  brightness, transparency).
- structured: the same facts as a `StructuredCaption` JSON.

Each caption starts with "[offline]" so nobody mistakes it for a VLM's description.
"""

from __future__ import annotations

import json

import numpy as np

from flywheel.captioning.types import Entity, StructuredCaption, clean_instruction, row_meta

OFFLINE_VERSION = "3"  # bump when OCR routing or composition changes: it is the offline revision
LABEL = "[offline]"

# Named colours for the dominant-colour facts (sRGB).
COLOURS = {
    "black": (0, 0, 0), "white": (255, 255, 255), "gray": (128, 128, 128), "red": (200, 30, 30),
    "orange": (240, 140, 20), "yellow": (240, 220, 40), "green": (40, 160, 60), "blue": (30, 80, 200),
    "sky blue": (120, 180, 240), "purple": (130, 50, 160), "pink": (240, 150, 190), "brown": (120, 80, 40),
    "beige": (225, 210, 170), "dark green": (20, 70, 30), "navy": (20, 30, 90),
}


def offline_revision() -> str:
    from flywheel.captioning.ocr import tesseract_version

    try:
        from importlib.metadata import version

        rapid = version("rapidocr")
    except Exception:
        rapid = "none"
    return f"offline-v{OFFLINE_VERSION}+rapidocr-{rapid}+tesseract-{tesseract_version() or 'none'}"


def image_facts(im, row: dict) -> dict:
    w, h = row.get("width") or im.width, row.get("height") or im.height
    orient = "square" if abs(w - h) <= 0.05 * max(w, h) else ("landscape" if w > h else "portrait")
    small = np.asarray(im.convert("RGB").resize((48, 48))).reshape(-1, 3).astype(np.float32)
    names = list(COLOURS)
    ref = np.array([COLOURS[n] for n in names], np.float32)
    nearest = np.argmin(((small[:, None, :] - ref[None]) ** 2).sum(-1), axis=1)
    counts = np.bincount(nearest, minlength=len(names)) / len(nearest)
    dominant = [names[i] for i in np.argsort(-counts) if counts[i] >= 0.1][:3]
    luma = float((small @ np.array([0.299, 0.587, 0.114], np.float32)).mean() / 255)
    return {"width": int(w), "height": int(h), "orientation": orient, "colours": dominant,
            "brightness": "dark" if luma < 0.2 else ("bright" if luma > 0.75 else "mid-tone"),
            "format": row.get("format"), "transparent": bool(row.get("has_alpha"))}


def _facts_sentence(f: dict) -> str:
    colours = ", ".join(f["colours"]) or "mixed"
    s = f"A {f['orientation']} {f['width']}x{f['height']} image, {f['brightness']}, mostly {colours}"
    if f.get("transparent"):
        s += ", with a transparent background"
    return s + "."


def compose(ctype: str, images: list[bytes], row: dict, ocr: bool = True) -> str:
    return compose_with_meta(ctype, images, row, ocr)[0]


def compose_with_meta(ctype: str, images: list[bytes], row: dict, ocr: bool = True) -> tuple[str, str | None]:
    """(caption, meta): meta is the OCR engine that read a text caption ("tesseract:rus+eng:Cyrillic",
    "rapidocr:Han"), None for the other types."""
    from flywheel.captioning.images import open_image

    im = open_image(images[-1])
    if ctype == "text":
        if not ocr:
            raise RuntimeError("OCR is off (--no-ocr); the offline text caption needs it")
        from flywheel.captioning.ocr import read_text

        text, engine = read_text(im, row.get("lang"))
        return f"{LABEL} " + (text if text else "No text."), engine
    return _compose(ctype, im, row), None


def _compose(ctype: str, im, row: dict) -> str:
    if ctype == "knowledge":
        meta = row_meta(row)
        parts = [f"{k}: {v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)}"
                 for k, v in sorted(meta.items()) if v not in (None, "", [], {})]
        if row.get("instruction"):
            parts.append(f"edit instruction: {clean_instruction(row['instruction']).rstrip('.')}")
        if row.get("caption"):
            parts.append(f"original caption: {row['caption']}")
        if not parts:
            return f"{LABEL} No metadata is known about this image."
        return f"{LABEL} Known from metadata: " + "; ".join(p.rstrip(".") for p in parts) + "."
    facts = image_facts(im, row)
    caption = (row.get("caption") or "").strip()
    if ctype == "general":
        if row.get("task") == "ti2i" and row.get("instruction"):
            caption = f"Edited image: {clean_instruction(row['instruction'])}"
        return f"{LABEL} " + (f"{caption.rstrip('.')}. " if caption else "") + _facts_sentence(facts)
    if ctype == "structured":
        cap = StructuredCaption(
            summary=f"{LABEL} " + (caption or _facts_sentence(facts)),
            entities=[Entity(name="image", attributes=[facts["orientation"], facts["brightness"], *facts["colours"]])],
            style=f"{facts['width']}x{facts['height']} {facts.get('format') or 'image'}",
        )
        return cap.model_dump_json(exclude_none=True)
    raise ValueError(f"unknown caption type {ctype!r}")

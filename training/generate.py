"""Images from a checkpoint the trainer wrote (or a released `QwenImage21Pipeline` directory), through the
same `rectified_flow.sample` and `Denoiser` the trainer trains with. `flywheel sample` and `flywheel eval` use it.

    gen = Generator("runs/toy")
    images = gen(["three red circles"], width=64, height=64, steps=30, guidance=4.0, seed=0)
"""

from __future__ import annotations

import json
from pathlib import Path


class Generator:
    def __init__(self, ckpt: str | Path, device: str | None = None, use_ema: bool = True):
        import torch

        from flywheel.models import qwen_image as qi
        from flywheel.models.text_encoders import load_from_checkpoint, load_text_encoder

        self.ckpt = Path(ckpt)
        if not (self.ckpt / "transformer" / "config.json").exists():
            raise FileNotFoundError(f"{self.ckpt} holds no transformer/; pass the --out directory of `flywheel train`")
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if (self.ckpt / "flywheel.json").exists():
            self.meta = json.loads((self.ckpt / "flywheel.json").read_text())
            self.encoder = load_from_checkpoint(self.ckpt, device=str(self.device))
        else:  # a released pipeline directory
            self.meta = {}
            self.encoder = load_text_encoder(str(self.ckpt), device=str(self.device))
        self.transformer = qi.load_transformer(self.ckpt).to(self.device).eval()
        self.vae = qi.load_vae(self.ckpt).to(self.device).eval()
        self.denoise = qi.Denoiser(self.transformer)
        self.scale = qi.vae_scale(self.vae)
        self.mean, self.std = (s.to(self.device) for s in qi.latent_stats(self.vae))
        self._uncond = None

    def _text(self, prompts: list[str]):
        import torch

        enc = [self.encoder.encode(p) for p in prompts]
        L = max(e.embeds.shape[0] for e in enc)
        text = torch.stack([torch.cat([e.embeds, e.embeds.new_zeros(L - len(e.embeds), e.embeds.shape[1])]) for e in enc])
        mask = torch.stack([torch.arange(L) < len(e.embeds) for e in enc])
        return text.to(self.device), mask.to(self.device)

    @property
    def defaults(self) -> dict:
        """Steps and guidance the checkpoint samples with unless told: a distilled student records its own
        (`sampling` in flywheel.json: 4 steps, guidance 1), everything else 30 steps at guidance 4."""
        return {"steps": 30, "guidance": 4.0, **self.meta.get("sampling", {})}

    def __call__(self, prompts: list[str], width: int = 256, height: int = 256, steps: int | None = None,
                 guidance: float | None = None, seed: int = 0, progress: bool = False) -> list:
        import torch

        steps = steps or self.defaults["steps"]
        guidance = self.defaults["guidance"] if guidance is None else guidance
        from flywheel.models import qwen_image as qi
        from flywheel.training import rectified_flow as rf
        from flywheel.training.data import to_pil

        h, w = qi.grid_for(width, height, self.scale)
        b = len(prompts)
        text, mask = self._text(prompts)
        utext, umask = self._text([""] * b)
        g = torch.Generator().manual_seed(seed)
        noise = torch.randn(b, h * w, qi.z_dim(self.vae), generator=g).to(self.device)

        prediction = self.meta.get("prediction", "v")

        def velocity(x, t, cond):
            tx, m = (text, mask) if cond else (utext, umask)
            return rf.to_velocity(self.denoise(x, t, (h, w), tx, m).float(), x, t, prediction)

        bar = None
        if progress:
            from tqdm.auto import tqdm
            bar = lambda it: tqdm(it, desc="sample", unit="step")  # noqa: E731
        z = rf.sample(velocity, noise, steps, rf.calculate_shift((width // 16) * (height // 16)), guidance, bar)
        z = z.transpose(1, 2).reshape(b, -1, 1, h, w) * self.std + self.mean  # (B, z, 1, h, w)
        with torch.no_grad():
            x = self.vae.decode(z.to(next(self.vae.parameters()).dtype)).sample[:, :, 0]  # (B, C, H, W)
        return [to_pil(xi.float()) for xi in x]

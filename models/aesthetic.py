"""LAION improved-aesthetic-predictor: an MLP over L2-normalised CLIP ViT-L/14 image embeddings.

The published checkpoint (`sac+logos+ava1-l14-linearMSE.pth`, a plain state dict) is
`layers.{0,2,4,6,7}` of Linear(768,1024) Dropout Linear(1024,128) Dropout Linear(128,64)
Dropout Linear(64,16) Linear(16,1), no activations (the "linearMSE" variant), trained with MSE
on AVA / LAION-Logos / SAC ratings: the output is on their native 1-10 scale, higher is more
aesthetic (LAION-Aesthetics used 4.5, 5, 6, 6.5 as cut-offs). The input width is read from the
state dict, so a tiny head over a tiny CLIP (tests/builders.py) loads through the same code.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

HEAD_FILE = "sac+logos+ava1-l14-linearMSE.pth"


def mlp(dim: int):
    import torch.nn as nn

    return nn.Sequential(
        nn.Linear(dim, 1024), nn.Dropout(0.2), nn.Linear(1024, 128), nn.Dropout(0.2),
        nn.Linear(128, 64), nn.Dropout(0.1), nn.Linear(64, 16), nn.Linear(16, 1),
    )


class AestheticHead:
    def __init__(self, model_dir: Path | str, file: str = HEAD_FILE):
        import torch

        state = torch.load(Path(model_dir) / file, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        state = {k.removeprefix("model."): v for k, v in state.items()}
        self.dim = int(state["layers.0.weight"].shape[1])
        net = mlp(self.dim)
        net.load_state_dict({k.removeprefix("layers."): v for k, v in state.items()}, strict=True)
        self.net = net.eval()

    def score(self, image_emb: np.ndarray) -> np.ndarray:
        """(N, D) image embeddings (normalised again here, as the reference does) -> (N,) scores."""
        import torch

        x = np.asarray(image_emb, dtype=np.float32)
        x = x / np.clip(np.linalg.norm(x, axis=1, keepdims=True), 1e-12, None)
        with torch.inference_mode():
            return self.net(torch.from_numpy(x)).squeeze(1).numpy().astype(np.float64)

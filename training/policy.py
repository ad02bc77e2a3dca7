"""The image model as something RL and distillation drive: prompts in, velocities and images out.

What grpo.py and distill.py share, so that neither re-implements conditioning or decoding:
- `read_prompts(spec)`: prompts with what they ask for, from the router's `rl_prompts` dataset (its
  `expected` column), another dataset's captions, or a file (plain lines, or JSONL `prompt`/`expected`);
  a prompt without `expected` is read by the suite's parser (`synthetic.parse_prompt`).
- `Text`: prompt embeddings through the frozen text encoder, cached per prompt, padded per batch.
- `velocity(denoise, prediction, grid)`: the network's output as a velocity (`rectified_flow.to_velocity`),
  `cfg(v_u, v_c, w)`: classifier-free guidance, and `decode`: latents to PIL images through the VAE.
"""

from __future__ import annotations

import json
from pathlib import Path


def read_prompts(spec: str | Path) -> list[tuple[str, dict | None]]:
    """[(prompt, expected)]: `expected` is the suite spec as a dict (`ShapeSpec.to_dict`), or None."""
    from flywheel.training import synthetic as syn

    p = Path(spec)
    rows: list[dict] = []
    if (p / "manifest.json").exists():
        from flywheel.datasets import open_dataset

        t = open_dataset(p).to_table()
        cols = set(t.column_names)
        for r in t.to_pylist():
            exp = r.get("expected") if "expected" in cols else None
            rows.append({"prompt": r.get("prompt") or r.get("caption"), "expected": json.loads(exp) if isinstance(exp, str) else exp})
    elif p.is_file():
        for line in p.read_text().splitlines():
            if line.strip():
                rows.append(json.loads(line) if line.lstrip().startswith("{") else {"prompt": line.strip()})
    else:
        raise FileNotFoundError(f"prompts {spec}: no dataset directory or file there")
    out = []
    for r in rows:
        try:  # the router's `expected` may name only some attributes (a signal's); then the parser reads the prompt
            exp = syn.spec_from_dict(r["expected"]).to_dict() if r.get("expected") else None
        except (KeyError, TypeError, ValueError):
            exp = None
        if exp is None:
            s = syn.parse_prompt(r["prompt"])
            exp = s.to_dict() if s is not None else None
        out.append((r["prompt"], exp))
    if not out:
        raise ValueError(f"prompts {spec}: no prompts")
    return out


class Text:
    """`(prompts) -> (text (B, L, D), mask (B, L))` on `device`, each prompt encoded once."""

    def __init__(self, encoder, device, length: int | None = None):
        self.encoder, self.device, self.length = encoder, device, length  # length: pad to a fixed L (torch.compile)
        self.cache: dict[str, object] = {}

    def __call__(self, prompts: list[str]):
        import torch

        emb = []
        for p in prompts:
            if p not in self.cache:
                self.cache[p] = self.encoder.encode(p).embeds
            emb.append(self.cache[p])
        L = self.length or max(e.shape[0] for e in emb)
        text = torch.stack([torch.cat([e[:L], e.new_zeros(max(0, L - len(e)), e.shape[1])]) for e in emb])
        mask = torch.stack([torch.arange(L) < len(e) for e in emb])
        return text.to(self.device), mask.to(self.device)


def velocity(denoise, prediction: str, grid):
    """v(x (B, N, z), t (B,), text, mask) -> (B, N, z) float velocity."""
    from flywheel.training import rectified_flow as rf

    def v(x, t, text, mask):
        return rf.to_velocity(denoise(x, t, grid, text, mask).float(), x, t, prediction)

    return v


def cfg(v_u, v_c, w: float):
    """Classifier-free guidance: v_u + w (v_c - v_u)."""
    return v_c if w == 1.0 else v_u + w * (v_c - v_u)


def decode(vae, z, grid) -> list:
    """(B, N, z) normalised latent tokens -> PIL images."""
    import torch

    from flywheel.models import qwen_image as qi
    from flywheel.training.data import to_pil

    h, w = grid
    mean, std = (s.to(z.device) for s in qi.latent_stats(vae))
    z = z.transpose(1, 2).reshape(z.shape[0], -1, 1, h, w) * std + mean  # (B, z, 1, h, w)
    with torch.no_grad():
        x = vae.decode(z.to(next(vae.parameters()).dtype)).sample[:, :, 0]  # (B, C, H, W)
    return [to_pil(xi.float()) for xi in x]


def trainable_ema(params, ema, step: int, decay: float) -> None:
    """EMA of the trained weights with a short memory early (an EMA of the untrained start is the start)."""
    import torch

    d = min(decay, (1 + step) / (10 + step))
    with torch.no_grad():
        torch._foreach_lerp_(ema, [p.detach().float() for p in params], 1 - d)


class Budget:
    """`--max-seconds` on `--budget-clock`, and `--deadline`, read as the flow trainer reads them: the loop
    checkpoints and stops at the first step boundary past either."""

    def __init__(self, cfg):
        import time

        self.cfg, self.clock = cfg, (time.process_time if cfg.budget_clock == "cpu" else time.time)
        self.t0 = self.clock()

    def over(self) -> bool:
        import time

        c = self.cfg
        return ((c.max_seconds is not None and self.clock() - self.t0 > c.max_seconds)
                or (c.deadline is not None and time.time() > c.deadline))


def step_end(cfg, step: int, budget: Budget, rec: dict, log_path: Path) -> tuple[bool, bool]:
    """The end of one step of the RL and distillation loops: log `rec` when due and say
    (checkpoint now, stop now). A loop past its budget checkpoints at this boundary, then stops."""
    out_of_time = budget.over()
    last = step + 1 == cfg.steps or out_of_time
    if (step + 1) % cfg.log_every == 0 or last:
        with open(log_path, "a") as f:
            f.write(json.dumps(rec) + "\n")
    return (step + 1) % cfg.ckpt_every == 0 or last, out_of_time

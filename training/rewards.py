"""Rewards over (images, prompts): components, calibrated to one scale, combined with weights that move.

Report section 4.2: "all reward models are calibrated to operate on comparable scales, and their weights
are dynamically adjusted throughout training". Here:

- components (`COMPONENTS`): `checker` (the share of asked attributes the suite's checker confirms) and
  `checker.<attr>` for one attribute (color, shape, count, position; a prompt that does not ask for it
  scores None); `clip` (CLIP image-text cosine, open_clip local-dir); `aesthetic` (the LAION head over CLIP
  image embeddings). Models a component needs are checked before training starts (`Rewards.preflight`),
  and a missing one is named with its install command, never discovered mid-run.
- calibration: each component's raw value becomes its percentile on a reference set (mid-rank for ties)
  the run draws from the starting model, so 0.5 means "as good as the starting model's median" for every
  component; a None (attribute not asked) is 0.5, the neutral value.
- weights: `weights` at step 0 move linearly to `weights_end` over `ramp` steps (`weights_at`); a step's
  log holds every component's raw mean, calibrated mean and weight.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

ATTRS = ("color", "shape", "count", "position")
COMPONENTS = ("checker", *(f"checker.{a}" for a in ATTRS), "clip", "aesthetic")
UNCALIBRATED = ("text",)  # rule-based 0/1 constraints (enhancer): already on the [0, 1] scale


class Rewards:
    def __init__(self, weights: dict[str, float], weights_end: dict[str, float] | None = None, ramp: int = 0,
                 clip_dir: str | None = None, aesthetic_dir: str | None = None, extra: tuple[str, ...] = ()):
        names = set(weights) | set(weights_end or {})
        unknown = names - set(COMPONENTS) - set(extra)
        if unknown:
            raise ValueError(f"unknown reward components {sorted(unknown)}; use {', '.join((*COMPONENTS, *extra))}")
        self.weights, self.weights_end, self.ramp = dict(weights), dict(weights_end or weights), ramp
        self.names = sorted(names)
        self.clip_dir, self.aesthetic_dir = clip_dir, aesthetic_dir
        self.reference: dict[str, list[float]] = {}
        self._checker = self._clip = self._head = None

    # -- models, checked before the run starts ------------------------------------------------------
    def preflight(self) -> None:
        """Raise ModelMissing naming every component whose weights are not installed."""
        from flywheel.models import store

        missing = []
        if any(n in ("clip", "aesthetic") for n in self.names) and not self.clip_dir:
            missing += [str(m) for m in store.preflight({"clip-vit-l-14": ["reward clip/aesthetic"]})]
        if "aesthetic" in self.names and not self.aesthetic_dir:
            missing += [str(m) for m in store.preflight({"laion-aesthetic-v2": ["reward aesthetic"]})]
        if missing:
            raise store.ModelMissing("reward models missing: " + "; ".join(missing)
                                     + " (or pass --reward-clip/--reward-aesthetic DIR, or drop the component)")

    def setup(self) -> "Rewards":
        self.preflight()
        if any(n.startswith("checker") for n in self.names):
            from flywheel.training.checker import Checker

            self._checker = Checker.load()
        if any(n in ("clip", "aesthetic") for n in self.names):
            from flywheel.models import clip, store

            self._clip = clip.Clip(self.clip_dir or store.path("clip-vit-l-14"))
        if "aesthetic" in self.names:
            from flywheel.models import store
            from flywheel.models.aesthetic import AestheticHead

            self._head = AestheticHead(self.aesthetic_dir or store.path("laion-aesthetic-v2"))
        return self

    # -- raw values ---------------------------------------------------------------------------------
    def raw(self, images: list, prompts: list[str], specs: list[dict | None], extra: dict | None = None) -> dict[str, np.ndarray]:
        """name -> (N,) raw values, NaN where a component does not apply."""
        n = len(images)
        out: dict[str, np.ndarray] = {}
        if self._checker is not None:
            scored = [s for s in specs]
            idx = [i for i, s in enumerate(scored) if s]
            res = self._checker.score([images[i] for i in idx], [scored[i] for i in idx]) if idx else []
            for name in (x for x in self.names if x.startswith("checker")):
                v = np.full(n, np.nan)
                for i, r in zip(idx, res):
                    if name == "checker":
                        asked = [r[a] for a in ATTRS if r.get(a) is not None]
                        v[i] = np.mean(asked) if asked else np.nan
                    elif r.get(name.split(".")[1]) is not None:
                        v[i] = float(r[name.split(".")[1]])
                out[name] = v
        if self._clip is not None:
            rgb = [np.asarray(im.convert("RGB")) for im in images]
            emb = self._clip.images(rgb)
            if "clip" in self.names:
                out["clip"] = (emb * self._clip.texts(prompts)).sum(1).astype(np.float64)
            if "aesthetic" in self.names:
                out["aesthetic"] = self._head.score(emb)
        for k, v in (extra or {}).items():
            out[k] = np.asarray(v, dtype=np.float64)
        return out

    # -- calibration --------------------------------------------------------------------------------
    def calibrate(self, raw: dict[str, np.ndarray]) -> None:
        """Keep the reference values (the starting model's) that percentiles are read against."""
        self.reference = {k: sorted(float(x) for x in v if np.isfinite(x)) for k, v in raw.items() if k not in UNCALIBRATED}

    def percentile(self, name: str, v: np.ndarray) -> np.ndarray:
        if name in UNCALIBRATED:
            return np.where(np.isfinite(v), v, 0.5)
        ref = np.asarray(self.reference.get(name) or [])
        if ref.size == 0:
            raise RuntimeError(f"reward {name} is not calibrated; call calibrate() on a reference set first")
        lo, hi = np.searchsorted(ref, v, "left"), np.searchsorted(ref, v, "right")
        return np.where(np.isfinite(v), (lo + hi) / 2 / ref.size, 0.5)

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps({"reference": self.reference}))

    def load(self, path: Path) -> bool:
        if not Path(path).exists():
            return False
        self.reference = json.loads(Path(path).read_text())["reference"]
        return True

    # -- the combination ----------------------------------------------------------------------------
    def weights_at(self, step: int) -> dict[str, float]:
        f = 1.0 if self.ramp == 0 else min(1.0, step / self.ramp)
        return {k: (1 - f) * self.weights.get(k, 0.0) + f * self.weights_end.get(k, 0.0) for k in self.names}

    def __call__(self, images, prompts, specs, step: int, extra: dict | None = None) -> tuple[np.ndarray, dict]:
        """(total (N,), log): total is the weighted sum of calibrated components, divided by the weights' sum."""
        raw = self.raw(images, prompts, specs, extra)
        w = self.weights_at(step)
        total = np.zeros(len(images))
        log: dict[str, float] = {}
        for k in self.names:
            cal = self.percentile(k, raw[k])
            total += w[k] * cal
            finite = raw[k][np.isfinite(raw[k])]
            log[f"reward/{k}/raw"] = float(finite.mean()) if finite.size else float("nan")
            log[f"reward/{k}/calibrated"] = float(cal.mean())
            log[f"reward/{k}/weight"] = w[k]
        total /= max(1e-8, sum(abs(x) for x in w.values()))
        log["reward/total"] = float(total.mean())
        return total, log

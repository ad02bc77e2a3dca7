"""Rectified flow: the training objective and the sampler, in one module that everything imports.

    x_t = (1 - t) x0 + t * noise          t ~ logit-normal, shifted for resolution
    v   = noise - x0                      the transformer predicts v
    x_{t'} = x_t + (t' - t) v             Euler step from t=1 (noise) to 0 (data)

The timestep shift is the Qwen-Image scheduler's: an exponential shift whose `mu` grows linearly with
the number of latent tokens (`calculate_shift`), so larger images spend more steps at high noise. Sampling
reuses diffusers' `FlowMatchEulerDiscreteScheduler` with the same config, so what the trainer optimises
and what `QwenImage21Pipeline` samples agree. Timesteps reach the transformer as t in [0, 1] (the
pipelines pass `timestep / 1000`).
"""

from __future__ import annotations

import math

# Qwen-Image's scheduler (scheduler/scheduler_config.json of the released pipelines).
SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000, shift=1.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=0.9,
    base_image_seq_len=256, max_image_seq_len=8192, shift_terminal=0.02, time_shift_type="exponential",
)


def make_scheduler():
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(**SCHEDULER_CONFIG)


def calculate_shift(image_seq_len: int, cfg: dict = SCHEDULER_CONFIG) -> float:
    """mu for an image of `image_seq_len` latent tokens (one token per 16x16 pixels); as the pipelines compute it."""
    base, top = cfg["base_image_seq_len"], cfg["max_image_seq_len"]
    m = (cfg["max_shift"] - cfg["base_shift"]) / (top - base)
    return image_seq_len * m + cfg["base_shift"] - m * base


def shift(t, mu: float):
    """Exponential time shift (the scheduler's `time_shift` with sigma=1): t -> e^mu / (e^mu + 1/t - 1)."""
    return math.exp(mu) / (math.exp(mu) + (1 / t - 1))


def sample_t(n: int, mu: float, generator=None, mean: float = 0.0, std: float = 1.0, device="cpu"):
    """Logit-normal t (SD3's choice; more weight on mid-range noise), then the resolution shift."""
    import torch

    u = torch.randn(n, generator=generator, device=device) * std + mean
    t = torch.sigmoid(u)
    return shift(t, mu)


def interpolate(x0, noise, t):
    """x_t = (1 - t) x0 + t noise; t is (B,) and broadcasts over the remaining dims."""
    t = t.view(-1, *([1] * (x0.dim() - 1)))
    return (1 - t) * x0 + t * noise


def target(x0, noise):
    return noise - x0


T_MIN = 0.05  # floor on t when converting an x0 prediction to a velocity (Li & He 2025, "JiT")


def to_velocity(out, xt, t, prediction: str = "v"):
    """The network's output as a velocity. "v": it is one (Qwen-Image, and what the pipelines sample).
    "x0": it predicts the clean sample and v = (x_t - x0_hat) / t. x0-prediction is what lets a network whose
    width is below the token's dimension work in pixel space (toy runs with PixelCodec): a 1024-d patch of
    noise cannot pass through a 128-d bottleneck, a clean flat-coloured patch can (JiT, arXiv 2511.13720)."""
    if prediction == "v":
        return out
    if prediction != "x0":
        raise ValueError(f"unknown prediction {prediction!r}; use v or x0")
    tt = t.clamp(min=T_MIN).view(-1, *([1] * (xt.dim() - 1)))
    return (xt - out) / tt


def loss_per_sample(pred, x0, noise):
    """Mean squared error to the velocity, one value per sample (B,): the per-sample losses feed bad-case mining."""
    return (pred.float() - target(x0, noise).float()).pow(2).flatten(1).mean(1)


def loss(predict, x0, noise, t, prediction: str = "v"):
    """The training objective, per sample (B,): the network sees x_t at time t and is scored on the velocity.

    predict(x_t, t) -> the network's output, shaped as x0; `prediction` says whether that output is a
    velocity or a clean sample (`to_velocity`). The trainer and the benchmarks call this one function."""
    xt = interpolate(x0, noise, t)
    pred = to_velocity(predict(xt, t).float(), xt, t, prediction)
    return loss_per_sample(pred, x0, noise)


def timestep_bins(t, losses, n_bins: int = 10) -> dict[int, tuple[float, int]]:
    """Sum of losses and counts per t-bin (minRF's diagnostic: which noise levels the model has not learnt)."""
    out: dict[int, tuple[float, int]] = {}
    for ti, li in zip(t.tolist(), losses.tolist()):
        b = min(int(ti * n_bins), n_bins - 1)
        s, c = out.get(b, (0.0, 0))
        out[b] = (s + li, c + 1)
    return out


def sigmas(steps: int, mu: float):
    """The noise levels `sample` visits, (steps + 1,) from 1 down to 0: the scheduler's, so RL rollouts and a
    distilled student's fixed timesteps are exactly the ones `flywheel sample --steps N` uses."""
    import numpy as np

    sched = make_scheduler()
    sched.set_timesteps(sigmas=np.linspace(1.0, 1 / steps, steps), mu=mu)
    return sched.sigmas.float()


def sample(velocity, noise, steps: int, mu: float, guidance: float = 1.0, progress=None):
    """Euler from pure noise to data with classifier-free guidance.

    velocity(x, t, cond: bool) -> v, with t a (B,) tensor in [0, 1]; when guidance > 1 the unconditional
    branch is `velocity(x, t, False)` and v = v_u + guidance * (v_c - v_u)."""
    import numpy as np
    import torch

    sched = make_scheduler()
    sched.set_timesteps(sigmas=np.linspace(1.0, 1 / steps, steps), mu=mu, device=noise.device)
    x = noise
    for ts in progress(sched.timesteps) if progress else sched.timesteps:
        t = (ts / 1000).expand(x.shape[0]).to(x.dtype)
        with torch.no_grad():
            v = velocity(x, t, True)
            if guidance != 1.0:
                vu = velocity(x, t, False)
                v = vu + guidance * (v - vu)
        x = sched.step(v, ts, x, return_dict=False)[0]
    return x

"""Flow-GRPO for the rectified-flow model, with the report's hybrid CFG (section 4.2).

An ODE sampler has no log-probability, so rollouts run the marginal-preserving SDE instead (Flow-GRPO,
Liu et al. 2025): with x_t = (1 - t) x0 + t noise and velocity v,

    sigma_t  = a * sqrt(t / (1 - t))                                    a ~ 0.7
    mean     = x_t + [v + sigma_t^2 / (2t) * (x_t + (1 - t) v)] dt      dt = t' - t < 0
    x_t'     = mean + sigma_t * sqrt(-dt) * eps                         Euler-Maruyama
    log p    = Gaussian log-density of x_t' around mean, averaged over dimensions

has the ODE's marginals, so each step is a Gaussian policy. Per prompt, G images share the initial noise
and differ only by the SDE's noise; their rewards (rewards.py) are normalised within the group and clipped
to +-adv_clip. The objective per step is PPO's clipped ratio (ratio clipped to 1 +- clip_range), plus
beta * KL to the reference model (the starting weights; for Gaussians with one std, ||mean - mean_ref||^2 / 2std^2).

Hybrid CFG: rollouts sample with guidance w (better images, more reliable rewards); in the objective only
the conditional branch carries gradient: v = v_u + w (v_c - v_u) with v_u the rollout's unconditional
prediction, detached and reused (so no unconditional forward pass is ever repeated or optimised).

    flywheel train --stage rl --init CKPT --prompts rl_prompts@v3 --out runs/rl [--lora-rank 16]
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

from flywheel.training.config import TrainConfig


def sde_step(x, v, t: float, t_next: float, t_max: float, a: float, eps=None):
    """One Euler-Maruyama step from t to t_next < t: (x_next, mean, std). sigma_t uses min(t, t_max): at t=1
    the SDE's sigma is infinite (Flow-GRPO clamps it at the second noise level)."""
    dt = t_next - t
    ts = min(t, t_max)
    sigma = a * math.sqrt(ts / (1 - ts))
    mean = x + (v + sigma**2 / (2 * t) * (x + (1 - t) * v)) * dt
    std = sigma * math.sqrt(-dt)
    return (mean if eps is None else mean + std * eps), mean, std


def log_prob(x_next, mean, std: float):
    """(B,) Gaussian log-density of x_next around mean, averaged over the remaining dimensions."""
    lp = -((x_next.detach() - mean) ** 2) / (2 * std**2) - math.log(std) - 0.5 * math.log(2 * math.pi)
    return lp.flatten(1).mean(1)


def advantages(rewards, clip: float):
    """(P, G) rewards -> group-normalised advantages, clipped to +-clip."""
    a = (rewards - rewards.mean(1, keepdim=True)) / (rewards.std(1, keepdim=True) + 1e-4)
    return a.clamp(-clip, clip)


def flat_share(rewards) -> float:
    """Share of the (P, G) rewards' groups whose members all scored the same: their advantages are all
    zero, so they teach nothing (image GRPO and the enhancer's GRPO log it as `flat_groups`)."""
    return float((rewards.max(1).values - rewards.min(1).values <= 1e-9).float().mean())


@dataclass
class Rollout:
    xs: "object"  # (T+1, B, N, z) the states visited, noise first
    vu: "object"  # (T, B, N, z) the unconditional predictions (detached; reused in the objective)
    logp: "object"  # (T, B) log-probabilities of the rollout's own steps
    sigmas: "object"  # (T+1,) noise levels


def rollout(v_cond, v_uncond, noise, sigmas, guidance: float, a: float, gen) -> Rollout:
    """Sample with the SDE and CFG; v_cond/v_uncond(x, t (B,)) -> (B, N, z)."""
    import torch

    from flywheel.training.policy import cfg

    x, xs, vus, lps = noise, [noise], [], []
    T = len(sigmas) - 1
    with torch.no_grad():
        for j in range(T):
            t = sigmas[j].expand(x.shape[0]).to(x)
            vu = v_uncond(x, t) if guidance != 1.0 else torch.zeros_like(x)
            v = cfg(vu, v_cond(x, t), guidance)
            eps = torch.randn(x.shape, generator=gen).to(x)
            x, mean, std = sde_step(x, v, float(sigmas[j]), float(sigmas[j + 1]), float(sigmas[1]), a, eps)
            xs.append(x), vus.append(vu), lps.append(log_prob(x, mean, std))
    return Rollout(torch.stack(xs), torch.stack(vus), torch.stack(lps), sigmas)


def step_loss(v_cond, v_ref, ro: Rollout, j: int, idx, adv, guidance: float, a: float, clip_range: float, beta: float):
    """The objective at rollout step j for samples idx: (loss, stats). v_cond carries gradient; v_ref (or None)
    is the reference model's conditional branch; the unconditional branch is the rollout's, detached."""
    import torch

    from flywheel.training.policy import cfg

    s, x, x_next = ro.sigmas, ro.xs[j, idx], ro.xs[j + 1, idx]
    vu = ro.vu[j, idx].detach()  # hybrid CFG: the unconditional branch is a constant of the objective
    t = s[j].expand(len(idx)).to(x)
    step = lambda v: sde_step(x, cfg(vu, v, guidance), float(s[j]), float(s[j + 1]), float(s[1]), a)  # noqa: E731
    _, mean, std = step(v_cond(x, t))
    ratio = torch.exp(log_prob(x_next, mean, std) - ro.logp[j, idx])
    clipped = ratio.clamp(1 - clip_range, 1 + clip_range)
    loss = torch.maximum(-adv * ratio, -adv * clipped).mean()
    kl = torch.zeros(())
    if beta > 0 and v_ref is not None:
        with torch.no_grad():
            _, mean_ref, _ = step(v_ref(x, t))
        kl = ((mean - mean_ref) ** 2).flatten(1).mean(1).mean() / (2 * std**2)
        loss = loss + beta * kl
    r = ratio.detach()
    return loss, dict(kl=float(kl.detach()), clipfrac=float(((r - 1).abs() > clip_range).float().mean()), ratio=float(r.mean()))


# attention and MLP projections of both transformer generations (2.1 single stream, 1.0 MMDiT)
LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out",
                "img_mlp.gate_layer", "img_mlp.proj", "img_mlp.out", "img_mlp.net.0.proj", "img_mlp.net.2")


def add_lora(model, rank: int):
    """LoRA adapters (peft) on the attention and MLP projections; only they train."""
    from peft import LoraConfig

    linear = [n for n, m in model.named_modules() if type(m).__name__ == "Linear"]
    targets = [t for t in LORA_TARGETS if any(n.endswith("." + t) for n in linear)]
    model.requires_grad_(False)
    model.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=targets))
    return model


def plain_copy(raw, trainable, ema):
    """A copy of the transformer with the EMA weights in place and any LoRA merged into them, as the plain
    diffusers class: what the checkpoint holds, so sampling never needs peft."""
    import copy

    import torch

    model = copy.deepcopy(raw).cpu()
    src = dict(model.named_parameters())
    with torch.no_grad():
        for (name, _), e in zip(((n, p) for n, p in raw.named_parameters() if p.requires_grad), ema or []):
            src[name].copy_(e.to(src[name].dtype))
    if not any("lora_" in n for n in src):
        return model
    for m in model.modules():
        if hasattr(m, "merge") and hasattr(m, "lora_A"):
            m.merge()
    sd = {k.replace(".base_layer", ""): v for k, v in model.state_dict().items() if "lora_" not in k}
    plain = type(raw).from_config(raw.config)
    plain.load_state_dict(sd)
    return plain


def main(cfg: TrainConfig) -> dict:
    import copy

    import numpy as np
    import torch

    from flywheel.models import qwen_image as qi
    from flywheel.training import checkpoint as ck
    from flywheel.training import policy as pol
    from flywheel.training import rectified_flow as rf
    from flywheel.training.rewards import Rewards

    rewards = Rewards(cfg.reward_weights, cfg.reward_weights_end, cfg.reward_ramp, cfg.reward_clip, cfg.reward_aesthetic)
    rewards.preflight()  # missing reward weights are named before any model loads
    device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)

    # -- models: the policy (LoRA or every weight), the frozen reference, encoders ---------------------
    prediction = ck.resolve_prediction(cfg.prediction, cfg.init)
    encoder = ck.load_text_encoder(cfg, device)
    vae = ck.load_vae(cfg).to(device).eval().requires_grad_(False)
    raw = ck.load_transformer(cfg, qi.z_dim(vae), encoder.dim).to(device)
    ref = None
    if cfg.lora_rank:
        raw = add_lora(raw, cfg.lora_rank)
    elif cfg.kl_beta > 0:
        ref = copy.deepcopy(raw).eval().requires_grad_(False)
    raw.train()
    model = torch.compile(raw) if cfg.compile else raw
    params = [p for p in raw.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.schedule.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    ema = [p.detach().clone().float() for p in params] if cfg.ema_decay > 0 else None
    start, history = ck.load_state(out / "state", raw, opt, ema, device) if cfg.resume else (0, [])

    size = cfg.resolution or cfg.schedule.resolution_at(0, 1)
    grid = qi.grid_for(size, size, qi.vae_scale(vae))
    sigmas = rf.sigmas(cfg.sample_steps, rf.calculate_shift((size // 16) ** 2))
    text = pol.Text(encoder, device)
    prompts = pol.read_prompts(cfg.prompts)

    def autocast():
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16)

    def branch(net, tx, mask):
        v = pol.velocity(qi.Denoiser(net, arch=qi.arch_of(raw)), prediction, grid)

        def f(x, t):
            with autocast():
                return v(x, t, tx, mask)
        return f

    def reference():  # the starting weights: a frozen copy, or the LoRA model with its adapters off
        if ref is not None:
            return ref
        return _AdaptersOff(raw) if cfg.lora_rank else None

    def sample_batch(step: int, P: int, gen):
        order = np.random.default_rng([cfg.seed, step, 2]).permutation(len(prompts))[:P]
        chosen = [prompts[i] for i in order]
        expanded = [c for c in chosen for _ in range(cfg.group_size)]  # (P*G,) G per prompt
        noise = torch.randn(P, grid[0] * grid[1], qi.z_dim(vae), generator=gen).repeat_interleave(cfg.group_size, 0).to(device)
        tx, m = text([p for p, _ in expanded])
        ux, um = text([""] * len(expanded))
        raw.eval()
        ro = rollout(branch(model, tx, m), branch(model, ux, um), noise, sigmas, cfg.guidance, cfg.sde_a, gen)
        raw.train()
        return expanded, ro, pol.decode(vae, ro.xs[-1], grid), (tx, m)

    # -- calibration: percentiles against the starting model's own images ---------------------------
    rewards.setup()
    if not rewards.load(out / "reward_calibration.json"):
        imgs, ps, specs = [], [], []
        g = torch.Generator().manual_seed(cfg.seed + 7)
        for k in range(math.ceil(cfg.reward_reference / (cfg.batch_size * cfg.group_size))):
            ex, _, im, _ = sample_batch(10**9 + k, cfg.batch_size, g)  # prompt draws no training step uses
            imgs += im
            ps += [p for p, _ in ex]
            specs += [s for _, s in ex]
        rewards.calibrate(rewards.raw(imgs, ps, specs))
        rewards.save(out / "reward_calibration.json")

    # -- the loop: rollouts, rewards, advantages, clipped policy steps ---------------------------------
    log_path = out / "metrics.jsonl"
    step, t0, budget = start - 1, time.time(), pol.Budget(cfg)
    for step in range(start, cfg.steps):
        gen = torch.Generator().manual_seed(int(np.random.default_rng([cfg.seed, step, 1]).integers(2**62)))
        t_roll = time.time()
        expanded, ro, images, (tx, m) = sample_batch(step, cfg.batch_size, gen)
        t_roll = time.time() - t_roll
        r, rlog = rewards(images, [p for p, _ in expanded], [s for _, s in expanded], step)
        r = torch.tensor(r, dtype=torch.float32)
        if cfg.shuffle_rewards:  # the control arm: same steps, KL and EMA, rewards carrying no information
            r = r[torch.randperm(len(r), generator=gen)]
        grouped = r.view(cfg.batch_size, cfg.group_size)
        flat = flat_share(grouped)
        adv = advantages(grouped, cfg.adv_clip).flatten().to(device)  # (B,)
        for g in opt.param_groups:
            g["lr"] = cfg.schedule.lr * min(1.0, (step + 1) / max(1, cfg.warmup))
        stats: dict[str, list] = {}
        T, n = len(sigmas) - 1, len(expanded)
        for idx in torch.randperm(n, generator=gen).chunk(cfg.minibatches):
            idx = idx.to(device)
            opt.zero_grad(set_to_none=True)
            refm = reference()
            for j in range(T):
                loss, st = step_loss(branch(model, tx[idx], m[idx]), branch(refm, tx[idx], m[idx]) if refm is not None else None,
                                     ro, j, idx, adv[idx], cfg.guidance, cfg.sde_a, cfg.clip_range, cfg.kl_beta)
                (loss / T).backward()
                for k, v in dict(loss=float(loss.detach()), **st).items():
                    stats.setdefault(k, []).append(v)
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
        if ema is not None:
            pol.trainable_ema(params, ema, step, cfg.ema_decay)
        history.append(float(np.mean(stats["loss"])))
        rec = dict(step=step + 1, **{k: float(np.mean(v)) for k, v in stats.items()}, **rlog, flat_groups=flat,
                   lr=opt.param_groups[0]["lr"], rollout_s=t_roll, sec=time.time() - t0)
        if cfg.progress:
            print(f"rl step {step + 1}/{cfg.steps} reward {rlog['reward/total']:.3f} kl {rec['kl']:.2e}", flush=True)
        save_now, out_of_time = pol.step_end(cfg, step, budget, rec, log_path)
        if save_now:
            ck.save_state(out / "state", raw, opt, ema, step + 1, history, cfg)
            ck.save_checkpoint(out, plain_copy(raw, params, ema), None, vae, encoder, cfg, step + 1, prediction,
                               extra=dict(ema=ema is not None, lora_rank=cfg.lora_rank, init=cfg.init))
        if out_of_time:
            break
    return dict(losses=history, step=step + 1, out=str(out), loss=history[-1] if history else float("nan"))


class _AdaptersOff:
    """The LoRA model with its adapters disabled for one call: the reference policy, without a second copy."""

    def __init__(self, model):
        self.model = model

    def __call__(self, *a, **kw):
        import torch

        self.model.disable_adapters()
        try:
            with torch.no_grad():
                return self.model(*a, **kw)
        finally:
            self.model.enable_adapters()

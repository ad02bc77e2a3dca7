"""Few-step distillation by distribution matching (DMD, Yin et al. 2024; DMD2; report section 4.3, eq. 4-5).

A student G_theta samples in K fixed steps (the sampler's own noise levels for `--steps K`, so the checkpoint
samples through `flywheel sample --steps K`). DMD2's backward simulation gives x_theta: run the student k
steps from noise without gradient (k uniform in 0..K-1), then predict the clean state from there with
gradient. Then, with fresh noise zeta and t from the training distribution (eq. 5):

    x_t = (1 - t) x_theta + t zeta
    grad = (x0_fake(x_t) - x0_real(x_t)) / mean|x_theta - x0_real(x_t)|     (eq. 4, normalised as in DMD)
    loss = 0.5 * || x_theta - sg(x_theta - grad) ||^2                       d loss / d x_theta = grad

x0_real is the teacher's clean-state prediction with its CFG (the score s_real, up to the factor that the
normalisation removes); x0_fake comes from the fake-score model, a copy of the teacher trained by flow
matching on the student's current samples (`fake_updates` steps per student step: DMD2's two time-scale
rule). A regression term to the teacher's own `teacher_steps` ODE samples from the same noise is optional
and off by default (`regression_weight`); DMD2's GAN term is not implemented.

    flywheel train --stage distill --teacher runs/toy/ckpt --prompts prompts.txt --out runs/student
    flywheel sample --ckpt runs/student --steps 4 ...   (guidance 1: the teacher's CFG is distilled in)
"""

from __future__ import annotations

import time
from pathlib import Path

from flywheel.training.config import TrainConfig


def student_sample(v_student, noise, sigmas, k: int):
    """x_theta: k Euler steps of the student without gradient, then its clean-state prediction at level k
    with gradient. v_student(x, t (B,)) -> (B, N, z). Returns (x_theta, x_k)."""
    import torch

    x = noise
    with torch.no_grad():
        for j in range(k):
            t = sigmas[j].expand(x.shape[0]).to(x)
            x = x + (sigmas[j + 1] - sigmas[j]) * v_student(x, t)
    t = sigmas[k].expand(x.shape[0]).to(x)
    return x - sigmas[k] * v_student(x, t), x


def dmd_loss(x_theta, v_real, v_fake, t, zeta):
    """The distribution-matching loss whose gradient in x_theta is eq. 4's normalised score difference.
    v_real/v_fake(x_t, t) -> velocities (teacher with CFG; fake-score model)."""
    import torch

    from flywheel.training import rectified_flow as rf

    xt = rf.interpolate(x_theta.detach(), zeta, t)  # eq. 5
    tt = t.view(-1, *([1] * (xt.dim() - 1)))
    with torch.no_grad():
        x0_real = xt - tt * v_real(xt, t)
        x0_fake = xt - tt * v_fake(xt, t)
        weight = (x_theta.detach() - x0_real).abs().flatten(1).mean(1).clamp(min=1e-6).view_as(tt)
        grad = (x0_fake - x0_real) / weight
    return 0.5 * ((x_theta - (x_theta - grad).detach()) ** 2).flatten(1).mean(1).mean()


def main(cfg: TrainConfig) -> dict:
    import copy

    import numpy as np
    import torch

    from flywheel.models import qwen_image as qi
    from flywheel.training import checkpoint as ck
    from flywheel.training import policy as pol
    from flywheel.training import rectified_flow as rf

    device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)

    # -- models: frozen teacher; student and fake-score model start as copies of it ---------------------
    tcfg = cfg.model_copy(update=dict(init=cfg.teacher))
    prediction = ck.resolve_prediction(cfg.prediction, cfg.teacher)
    encoder = ck.load_text_encoder(tcfg, device)
    vae = ck.load_vae(tcfg).to(device).eval().requires_grad_(False)
    teacher = ck.load_transformer(tcfg, qi.z_dim(vae), encoder.dim).to(device).eval().requires_grad_(False)
    student = (ck.load_transformer(cfg, qi.z_dim(vae), encoder.dim) if cfg.init else copy.deepcopy(teacher)).to(device)
    fake = copy.deepcopy(teacher).to(device)
    for m in (student, fake):
        m.requires_grad_(True).train()
    opt = torch.optim.AdamW(student.parameters(), lr=cfg.schedule.lr, betas=(0.0, 0.999), weight_decay=cfg.weight_decay)
    fopt = torch.optim.AdamW(fake.parameters(), lr=cfg.schedule.lr, betas=(0.0, 0.999), weight_decay=cfg.weight_decay)
    params = list(student.parameters())
    ema = [p.detach().clone().float() for p in params] if cfg.ema_decay > 0 else None
    start, history = ck.load_state(out / "state", student, opt, ema, device) if cfg.resume else (0, [])
    for name, obj in (("fake", fake), ("fake_optim", fopt)):
        sd = ck.load_extra(out / "state", name, device) if cfg.resume else None
        if sd is not None:
            obj.load_state_dict(sd)

    size = cfg.resolution or cfg.schedule.resolution_at(0, 1)
    grid = qi.grid_for(size, size, qi.vae_scale(vae))
    mu = rf.calculate_shift((size // 16) ** 2)
    sigmas = rf.sigmas(cfg.sample_steps, mu).to(device)  # the student's fixed noise levels
    text = pol.Text(encoder, device)
    prompts = pol.read_prompts(cfg.prompts)

    def net(m, tx, mask):
        v = pol.velocity(qi.Denoiser(m, arch=qi.arch_of(m)), prediction, grid)
        return lambda x, t: v(x, t, tx, mask)

    # -- the loop: fake-score updates, then one student update --------------------------------------
    log_path = out / "metrics.jsonl"
    step, t0, budget = start - 1, time.time(), pol.Budget(cfg)
    for step in range(start, cfg.steps):
        gen = torch.Generator().manual_seed(int(np.random.default_rng([cfg.seed, step, 1]).integers(2**62)))
        rng = np.random.default_rng([cfg.seed, step, 2])
        batch = [prompts[i][0] for i in rng.integers(len(prompts), size=cfg.batch_size)]
        tx, m = text(batch)
        ux, um = text([""] * len(batch))
        B, shape = len(batch), (len(batch), grid[0] * grid[1], qi.z_dim(vae))
        for g in (*opt.param_groups, *fopt.param_groups):
            g["lr"] = cfg.schedule.lr * min(1.0, (step + 1) / max(1, cfg.warmup))

        fake_losses = []
        for _ in range(cfg.fake_updates):  # the fake score follows the student's current distribution
            with torch.no_grad():
                x_s, _ = student_sample(net(student, tx, m), torch.randn(shape, generator=gen).to(device), sigmas,
                                        int(rng.integers(cfg.sample_steps)))
            t = rf.sample_t(B, mu, gen, cfg.logit_mean, cfg.logit_std).to(device)
            fl = rf.loss(lambda x, tt: qi.Denoiser(fake)(x, tt, grid, tx, m), x_s, torch.randn(shape, generator=gen).to(device),
                         t, prediction).mean()
            fopt.zero_grad(set_to_none=True)
            fl.backward()
            torch.nn.utils.clip_grad_norm_(fake.parameters(), cfg.grad_clip)
            fopt.step()
            fake_losses.append(float(fl.detach()))

        noise = torch.randn(shape, generator=gen).to(device)
        x_theta, _ = student_sample(net(student, tx, m), noise, sigmas, int(rng.integers(cfg.sample_steps)))
        t = rf.sample_t(B, mu, gen, cfg.logit_mean, cfg.logit_std).to(device).clamp(0.02, 0.98)
        vt_c, vt_u = net(teacher, tx, m), net(teacher, ux, um)
        real = lambda x, tt: pol.cfg(vt_u(x, tt), vt_c(x, tt), cfg.guidance)  # noqa: E731
        loss = dmd_loss(x_theta, real, net(fake, tx, m), t, torch.randn(shape, generator=gen).to(device))
        reg = torch.zeros((), device=device)
        if cfg.regression_weight > 0:  # the student's full trajectory against the teacher's ODE from the same noise
            with torch.no_grad():
                target = rf.sample(lambda x, tt, c: (vt_c if c else vt_u)(x, tt), noise, cfg.teacher_steps, mu, cfg.guidance)
            x_full, _ = student_sample(net(student, tx, m), noise, sigmas, cfg.sample_steps - 1)
            reg = ((x_full - target) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        (loss + cfg.regression_weight * reg).backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        if ema is not None:
            pol.trainable_ema(params, ema, step, cfg.ema_decay)
        history.append(float(loss.detach()))
        rec = dict(step=step + 1, dmd_loss=history[-1], fake_loss=float(np.mean(fake_losses)), regression=float(reg),
                   lr=opt.param_groups[0]["lr"], sec=time.time() - t0)
        if cfg.progress:
            print(f"distill step {step + 1}/{cfg.steps} dmd {rec['dmd_loss']:.4f} fake {rec['fake_loss']:.4f}", flush=True)
        save_now, out_of_time = pol.step_end(cfg, step, budget, rec, log_path)
        if save_now:
            ck.save_state(out / "state", student, opt, ema, step + 1, history, cfg,
                          extra={"fake": fake.state_dict(), "fake_optim": fopt.state_dict()})
            ck.save_checkpoint(out, student, ema, vae, encoder, cfg, step + 1, prediction,
                               extra=dict(teacher=cfg.teacher, sampling=dict(steps=cfg.sample_steps, guidance=1.0)))
        if out_of_time:
            break
    return dict(losses=history, step=step + 1, out=str(out), loss=history[-1] if history else float("nan"))

"""GRPO rollouts and DMD steps on a GPU: seconds per rollout / update / DMD step at fixed-shape buckets.

What it times, with random-weight transformers of the preset's size (no weights needed, only shapes matter):
- rl_rollout: one Flow-GRPO rollout (grpo.rollout: SDE with CFG, --sample-steps steps) of B prompts x G images;
- rl_update: the policy objective over that rollout (grpo.step_loss per step, backward, AdamW step);
- dmd_step: one fake-score flow-matching update and one student DMD update (distill.student_sample + dmd_loss).
Fixed shapes, so torch.compile compiles once per bucket: every image side in --buckets is its own shape, the
text is padded to --text-len tokens, B and G are fixed; the first --warmup iterations (compilation) are not
timed. bf16 autocast with --bf16.

    python benchmarks/stages_gpu.py --device cuda --preset small --bf16 --compile --buckets 512,1024
    python benchmarks/stages_gpu.py --device cpu --tiny          (what the test runs: it works before a GPU is lent)
"""

from __future__ import annotations

import argparse
import json
import time


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--preset", default="small", choices=["tiny", "small", "full"])
    ap.add_argument("--tiny", action="store_true", help="tiny preset, 32px, B=1, G=2, 2 steps, 1 iteration: a smoke run")
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--buckets", default="512", help="image sides, comma-separated (multiples of 32)")
    ap.add_argument("--batch", type=int, default=2, help="prompts per rollout (B)")
    ap.add_argument("--group", type=int, default=8, help="images per prompt (G)")
    ap.add_argument("--sample-steps", type=int, default=10)
    ap.add_argument("--student-steps", type=int, default=4)
    ap.add_argument("--text-len", type=int, default=64)
    ap.add_argument("--text-dim", type=int, default=384)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--out", default=None, help="write the timings here (JSON)")
    a = ap.parse_args(argv)
    if a.tiny:
        a.preset, a.buckets, a.batch, a.group, a.sample_steps, a.student_steps, a.iters, a.warmup = "tiny", "32", 1, 2, 2, 2, 1, 0
        a.text_len = 8

    import torch

    from flywheel.models import qwen_image as qi
    from flywheel.training import distill, grpo
    from flywheel.training import rectified_flow as rf
    from flywheel.training.policy import cfg as guide

    dev = torch.device(a.device)
    z = 64  # the f16c64 VAE's latent channels
    torch.manual_seed(0)

    def net():
        m = qi.build_transformer("2.1", a.preset, z, a.text_dim).to(dev)
        return torch.compile(m) if a.compile else m

    policy, ref = net(), net()
    student, fake, teacher = policy, ref, net()
    opt = torch.optim.AdamW(policy.parameters(), lr=1e-6)
    fopt = torch.optim.AdamW(fake.parameters(), lr=1e-6)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    results = {}
    for side in (int(s) for s in a.buckets.split(",")):
        grid = qi.grid_for(side, side, 16)
        n = a.batch * a.group
        text = torch.randn(n, a.text_len, a.text_dim, device=dev)
        mask = torch.ones(n, a.text_len, dtype=torch.bool, device=dev)
        utext = torch.zeros_like(text)
        sig = rf.sigmas(a.sample_steps, rf.calculate_shift(grid[0] * grid[1])).to(dev)

        def v(m, tx):
            d = qi.Denoiser(m, arch="2.1")

            def f(x, t):
                with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=a.bf16):
                    return d(x, t, grid, tx[: len(x)], mask[: len(x)]).float()
            return f

        timings = {"rl_rollout": [], "rl_update": [], "dmd_step": []}
        for it in range(a.warmup + a.iters):
            gen = torch.Generator().manual_seed(it)
            noise = torch.randn(a.batch, grid[0] * grid[1], z, generator=gen).repeat_interleave(a.group, 0).to(dev)
            sync()
            t0 = time.perf_counter()
            ro = grpo.rollout(v(policy, text), v(policy, utext), noise, sig, 4.0, 0.7, gen)
            sync()
            t1 = time.perf_counter()
            adv = torch.randn(n, device=dev)
            opt.zero_grad(set_to_none=True)
            idx = torch.arange(n, device=dev)
            for j in range(a.sample_steps):
                loss, _ = grpo.step_loss(v(policy, text), v(ref, text), ro, j, idx, adv, 4.0, 0.7, 1e-4, 0.04)
                (loss / a.sample_steps).backward()
            opt.step()
            sync()
            t2 = time.perf_counter()
            ssig = rf.sigmas(a.student_steps, rf.calculate_shift(grid[0] * grid[1])).to(dev)
            with torch.no_grad():
                xs, _ = distill.student_sample(v(student, text), noise, ssig, a.student_steps - 1)
            t = rf.sample_t(n, 0.5, gen).to(dev)
            fl = rf.loss(lambda x, tt: qi.Denoiser(fake, arch="2.1")(x, tt, grid, text, mask), xs, torch.randn_like(xs), t).mean()
            fopt.zero_grad(set_to_none=True)
            fl.backward()
            fopt.step()
            x_theta, _ = distill.student_sample(v(student, text), noise, ssig, it % a.student_steps)
            real = lambda x, tt: guide(v(teacher, utext)(x, tt), v(teacher, text)(x, tt), 4.0)  # noqa: E731
            dl = distill.dmd_loss(x_theta, real, v(fake, text), t.clamp(0.02, 0.98), torch.randn_like(x_theta))
            opt.zero_grad(set_to_none=True)
            dl.backward()
            opt.step()
            sync()
            t3 = time.perf_counter()
            if it >= a.warmup:
                timings["rl_rollout"].append(t1 - t0)
                timings["rl_update"].append(t2 - t1)
                timings["dmd_step"].append(t3 - t2)
        results[side] = {k: sum(x) / len(x) for k, x in timings.items()}
        results[side]["images_per_rollout"] = n
        print(f"{side}px: " + ", ".join(f"{k} {s:.3f}s" for k, s in results[side].items() if k != "images_per_rollout"), flush=True)
    rec = {"device": str(dev), "gpu": torch.cuda.get_device_name() if dev.type == "cuda" else None, "preset": a.preset,
           "bf16": a.bf16, "compile": a.compile, "B": a.batch, "G": a.group, "sample_steps": a.sample_steps, "buckets": results}
    if a.out:
        with open(a.out, "w") as f:
            json.dump(rec, f, indent=2)
    return rec


if __name__ == "__main__":
    main()

"""The stages after SFT (rl, distill, enhancer-sft, enhancer-rl): the maths of each module on cases with a
known answer, then each stage end to end on a tiny pixel-space checkpoint: a run of N steps stopped at k
and resumed equals the uninterrupted run bit for bit, and the checkpoint is in diffusers format and samples
through the same Generator (a student with its own 4 steps)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from flywheel.training import synthetic as syn
from flywheel.training.config import TrainConfig
from flywheel.training.trainer import main


# -- the maths ---------------------------------------------------------------------------------------
def test_sde_keeps_the_marginals_of_the_flow():
    """1-D: x0 ~ N(0, s^2), x_t = (1-t) x0 + t noise. With the exact velocity E[noise - x0 | x_t], the SDE
    started from noise must end with variance s^2, whatever a (Flow-GRPO's marginal-preserving property);
    a sign error in the correction term ends far from it."""
    from flywheel.training.grpo import sde_step

    s2 = 0.25
    var = lambda t: (1 - t) ** 2 * s2 + t**2  # noqa: E731
    v = lambda x, t: x * (t - (1 - t) * s2) / var(t)  # noqa: E731
    sig = np.linspace(1.0, 0.0, 401)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40000, generator=g, dtype=torch.float64)
    for j in range(400):
        t, tn = float(sig[j]), float(sig[j + 1])
        x, _, _ = sde_step(x, v(x, t), t, tn, t_max=float(sig[1]), a=0.7, eps=torch.randn(x.shape, generator=g, dtype=torch.float64))
        if j == 200:
            assert float(x.var()) == pytest.approx(var(tn), rel=0.05)
    assert float(x.var()) == pytest.approx(s2, rel=0.05)


def test_log_prob_is_the_gaussian_density():
    from flywheel.training.grpo import log_prob

    mean, std = torch.zeros(2, 3), 0.5
    x = torch.tensor([[0.0, 0.5, -1.0], [0.1, 0.2, 0.3]])
    want = torch.distributions.Normal(0.0, std).log_prob(x).mean(1)
    assert torch.allclose(log_prob(x, mean, std), want, atol=1e-6)


def test_advantages_are_group_normalised_and_clipped():
    from flywheel.training.grpo import advantages

    r = torch.tensor([[1.0, 0.0, 0.0, 0.0], [5.0, 5.0, 5.0, 5.0]])
    a = advantages(r, clip=1.0)
    assert torch.allclose(a[1], torch.zeros(4))  # a group that all scored alike teaches nothing
    assert a[0, 0] == 1.0 and torch.all(a[0, 1:] < 0)  # clipped at +1 (unclipped it is 1.5)


def test_hybrid_cfg_gives_no_gradient_to_the_unconditional_branch():
    """The objective's gradient flows through v_cond only; the rollout's v_u is a constant."""
    from flywheel.training.grpo import Rollout, step_loss

    x = torch.randn(2, 4, 3)
    sig = torch.tensor([1.0, 0.5, 0.0])
    vu = torch.randn(1, 2, 4, 3, requires_grad=True)
    ro = Rollout(torch.stack([x, x * 0.5, x * 0.1]), vu, torch.zeros(2, 2), sig)
    w = torch.ones(3, requires_grad=True)
    loss, _ = step_loss(lambda x, t: x * w, None, ro, 0, torch.arange(2), torch.tensor([1.0, -1.0]), 4.0, 0.7, 1e-4, 0.0)
    loss.backward()
    assert w.grad is not None and w.grad.abs().sum() > 0
    assert vu.grad is None


def test_dmd_gradient_is_the_normalised_score_difference():
    from flywheel.training.distill import dmd_loss

    x = torch.randn(2, 5, 3, requires_grad=True)
    t, zeta = torch.tensor([0.3, 0.7]), torch.randn(2, 5, 3)
    v_real, v_fake = (lambda x, t: 0.5 * x), (lambda x, t: -0.2 * x)
    dmd_loss(x, v_real, v_fake, t, zeta).backward()
    xt = (1 - t.view(-1, 1, 1)) * x.detach() + t.view(-1, 1, 1) * zeta
    x0r, x0f = xt - t.view(-1, 1, 1) * v_real(xt, t), xt - t.view(-1, 1, 1) * v_fake(xt, t)
    weight = (x.detach() - x0r).abs().flatten(1).mean(1).view(-1, 1, 1)
    assert torch.allclose(x.grad, (x0f - x0r) / weight / x[0].numel() / 2, atol=1e-6)


def test_parse_prompt_reads_every_suite_prompt_and_refuses_two_colours():
    for p, s in syn.sample_prompts(300, "eval", seed=5):
        assert syn.parse_prompt(p) == s, p
    assert syn.parse_prompt("a red and blue circle") is None
    assert syn.parse_prompt("two red circle") is None  # count and number disagree


# -- rewards -----------------------------------------------------------------------------------------
def test_rewards_calibrate_to_percentiles_and_move_their_weights():
    from flywheel.training.rewards import Rewards

    r = Rewards({"checker": 1.0, "text": 0.0}, {"checker": 0.0, "text": 1.0}, ramp=10, extra=("text",))
    r.calibrate({"checker": np.array([0.0, 0.25, 0.5, 0.75, 1.0])})
    assert r.percentile("checker", np.array([0.5, 2.0, -1.0, np.nan])).tolist() == [0.5, 1.0, 0.0, 0.5]
    assert r.weights_at(0) == {"checker": 1.0, "text": 0.0}
    assert r.weights_at(5) == {"checker": 0.5, "text": 0.5}
    assert r.weights_at(50) == {"checker": 0.0, "text": 1.0}
    with pytest.raises(ValueError, match="unknown reward components"):
        Rewards({"beauty": 1.0})


def test_checker_reward_per_attribute_on_ground_truth_images():
    from flywheel.training.rewards import Rewards

    rows = syn.sample_prompts(12, "eval", seed=2)
    rng = np.random.default_rng(0)
    imgs = [syn.render(s, 64, rng)[0] for _, s in rows]
    specs = [s.to_dict() for _, s in rows]
    r = Rewards({"checker": 1.0, "checker.color": 1.0}).setup()
    raw = r.raw(imgs, [p for p, _ in rows], specs)
    assert np.nanmean(raw["checker.color"]) == 1.0 and np.nanmean(raw["checker"]) > 0.9
    wrong = [dict(s, color="black" if s["color"] != "black" else "red") for s in specs]
    assert np.nanmean(r.raw(imgs, [p for p, _ in rows], wrong)["checker.color"]) == 0.0
    r.calibrate(raw)
    total, log = r(imgs, [p for p, _ in rows], specs, step=0)
    assert total.shape == (12,) and {"reward/checker/raw", "reward/checker.color/calibrated", "reward/total"} <= set(log)


def test_missing_clip_weights_are_named_before_start():
    from flywheel.models.store import ModelMissing
    from flywheel.training.rewards import Rewards

    with pytest.raises(ModelMissing, match="clip-vit-l-14.*flywheel models"):
        Rewards({"checker": 1.0, "aesthetic": 0.5}).preflight()


def test_clip_and_aesthetic_rewards_through_tiny_models(tmp_path):
    from builders import tiny_aesthetic, tiny_clip

    from flywheel.training.rewards import Rewards

    clip_dir, head_dir = tiny_clip(tmp_path / "clip"), tiny_aesthetic(tmp_path / "aes", dim=32)
    r = Rewards({"clip": 1.0, "aesthetic": 1.0}, clip_dir=str(clip_dir), aesthetic_dir=str(head_dir)).setup()
    rng = np.random.default_rng(0)
    rows = syn.sample_prompts(4, "eval", seed=3)
    raw = r.raw([syn.render(s, 32, rng)[0] for _, s in rows], [p for p, _ in rows], [None] * 4)
    assert raw["clip"].shape == (4,) and np.all(np.abs(raw["clip"]) <= 1) and np.all(np.isfinite(raw["aesthetic"]))


# -- the stages end to end ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """A tiny pixel-space checkpoint (one training step: the stages need weights, not skill), prompt files."""
    d = tmp_path_factory.mktemp("stages")
    syn.write_dataset(d / "data", 8, seed=0, size=32, name="toy")
    main(TrainConfig(datasets=[str(d / "data")], out=str(d / "ckpt"), vae="pixel:8", text_encoder="minilm", resolution=32,
                     steps=1, batch_size=2, prediction="x0", ti2i_ratio=0.0, caption_probs={"original": 1.0},
                     cache_dir=str(d / "cache"), progress=False))
    (d / "prompts.txt").write_text("two red circles\na blue square on the left\nthree green stars\n")
    rng = np.random.default_rng(0)
    from flywheel.training.enhancer import canonical, paraphrase

    with open(d / "pairs.jsonl", "w") as f, open(d / "pe_prompts.jsonl", "w") as g:
        for _, s in syn.sample_prompts(12, "train", seed=1):
            q = paraphrase(s, rng)
            f.write(json.dumps({"prompt": q, "rewrite": canonical(s)}) + "\n")
            g.write(json.dumps({"prompt": q, "expected": s.to_dict()}) + "\n")
    return d


def _tensors(d: Path) -> dict:
    from safetensors.torch import load_file

    f = d / "transformer" / "diffusion_pytorch_model.safetensors"
    return load_file(f) if f.exists() else load_file(d / "model.safetensors")


def _stage(toy, out, stage, steps, **kw):
    base = dict(out=str(out), stage=stage, steps=steps, batch_size=2, resolution=32, progress=False, warmup=1, lr=1e-3, seed=0)
    if stage == "rl":
        base.update(init=str(toy / "ckpt"), prompts=str(toy / "prompts.txt"), group_size=2, sample_steps=2, reward_reference=4)
    elif stage == "distill":
        base.update(teacher=str(toy / "ckpt"), prompts=str(toy / "prompts.txt"), sample_steps=2, fake_updates=1)
    elif stage == "enhancer-sft":
        base.update(prompts=str(toy / "pairs.jsonl"))
    else:
        base.update(init=str(toy / "pe-sft"), image_model=str(toy / "ckpt"), prompts=str(toy / "pe_prompts.jsonl"), group_size=2,
                    sample_steps=2, reward_reference=4, reward_weights={"checker": 1.0, "text": 1.0}, max_new_tokens=8)
    base.update(kw)
    return main(TrainConfig(**base))


def _resumes_exactly(toy, tmp_path, stage, **kw):
    full = _stage(toy, tmp_path / "full", stage, 2, **kw)
    _stage(toy, tmp_path / "part", stage, 1, **kw)  # stopped after step 1, as a kill after its checkpoint
    resumed = _stage(toy, tmp_path / "part", stage, 2, **kw)
    assert resumed["losses"] == full["losses"]
    a, b = _tensors(tmp_path / "full"), _tensors(tmp_path / "part")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    start = _tensors(toy / "ckpt") if stage in ("rl", "distill") else None
    if start is not None:  # and the run changed the weights, so the comparison can fail
        assert any(not torch.equal(a[k], start[k]) for k in a)


def test_rl_resumes_exactly_and_samples(toy, tmp_path):
    from flywheel.training.generate import Generator

    _resumes_exactly(toy, tmp_path, "rl", kl_beta=0.1, shuffle_rewards=True)  # shuffled: the rewards surely differ
    m = [json.loads(x) for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert {"reward/checker/raw", "reward/total", "kl", "clipfrac", "flat_groups"} <= set(m[-1])
    assert all(0.0 <= r["flat_groups"] <= 1.0 for r in m)
    assert json.loads((tmp_path / "full" / "flywheel.json").read_text())["stage"] == "rl"
    assert len(Generator(tmp_path / "full")(["two red circles"], width=32, height=32, steps=2)) == 1


def test_rl_with_lora_saves_a_plain_merged_transformer(toy, tmp_path):
    _stage(toy, tmp_path / "lora", "rl", 1, lora_rank=2, shuffle_rewards=True)
    w = _tensors(tmp_path / "lora")
    assert not any("lora" in k or "base_layer" in k for k in w)
    assert w.keys() == _tensors(toy / "ckpt").keys()


def test_distill_resumes_exactly_and_the_student_samples_with_its_own_steps(toy, tmp_path):
    from flywheel.training.generate import Generator

    _resumes_exactly(toy, tmp_path, "distill")
    g = Generator(tmp_path / "full")
    assert g.defaults == {"steps": 2, "guidance": 1.0}
    assert g(["two red circles"], width=32, height=32)[0].size == (32, 32)


def test_enhancer_sft_then_rl_resume_exactly(toy, tmp_path):
    from flywheel.training.enhancer import Enhancer

    _resumes_exactly(toy, tmp_path, "enhancer-sft")
    _stage(toy, toy / "pe-sft", "enhancer-sft", 2)
    _resumes_exactly(toy, tmp_path / "rl", "enhancer-rl")
    out = Enhancer.load(tmp_path / "rl" / "full").rewrite(["a pair of crimson discs"], max_new_tokens=4)
    assert len(out) == 1 and isinstance(out[0], str)
    from flywheel.loop.router import TrainedEnhancer  # the router's prompt track with --enhancer enhancer:DIR

    text, info = TrainedEnhancer(toy / "pe-sft").rewrite("2 teal boxes")
    assert isinstance(text, str) and info["mode"].startswith("trained enhancer")


def test_group_spread_finds_groups_whose_rewards_carry_no_signal():
    """A converged SFT enhancer samples one rewrite per prompt: every group is flat and GRPO's advantages are
    zero. group_spread says so (the run warns when every step was flat)."""
    from flywheel.training.enhancer import group_spread

    texts = ["a", "a", "a", "b", "c", "c"]  # P=2 groups of G=3
    distinct, flat = group_spread(texts, torch.tensor([[0.5, 0.5, 0.5], [0.0, 1.0, 1.0]]))
    assert distinct == pytest.approx(3 / 6) and flat == 0.5
    assert group_spread(["x"] * 4, torch.tensor([[1.0, 1.0], [0.2, 0.2]]))[1] == 1.0


def test_stage_requirements_name_the_flags():
    with pytest.raises(ValueError, match="stage rl needs --init, --prompts"):
        TrainConfig(out="x", stage="rl")
    with pytest.raises(ValueError, match="stage distill needs --teacher"):
        TrainConfig(out="x", stage="distill", prompts="p")
    with pytest.raises(ValueError, match="needs --dataset"):
        TrainConfig(out="x")


@pytest.mark.slow
def test_cli_rl_killed_mid_run_resumes_to_the_uninterrupted_weights(toy, tmp_path):
    """A real kill (SIGKILL once the step-1 state is on disk) of `flywheel train --stage rl`, then the same command."""
    import os
    import signal
    import subprocess
    import sys
    import time

    cmd = [sys.executable, "-c", "from flywheel.cli import main; main()", "train", "--stage", "rl", "--init", str(toy / "ckpt"), "--prompts",
           str(toy / "prompts.txt"), "--steps", "3", "--batch-size", "2", "--group-size", "2", "--sample-steps", "2",
           "--reward-reference", "4", "--resolution", "32", "--ckpt-every", "1", "--lr", "1e-3", "--warmup", "1",
           "--shuffle-rewards", "--no-progress"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    subprocess.run([*cmd, "--out", str(tmp_path / "full")], check=True, env=env, capture_output=True)
    p = subprocess.Popen([*cmd, "--out", str(tmp_path / "part")], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    meta = tmp_path / "part" / "state" / "meta.json"
    while p.poll() is None and not (meta.exists() and json.loads(meta.read_text())["step"] >= 1):
        time.sleep(0.2)
    p.send_signal(signal.SIGKILL)
    p.wait()
    r = subprocess.run([*cmd, "--out", str(tmp_path / "part")], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    a, b = _tensors(tmp_path / "full"), _tensors(tmp_path / "part")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert math.isfinite(json.loads((tmp_path / "part" / "state" / "meta.json").read_text())["history"][-1])


def test_gpu_benchmark_runs_on_cpu_tiny(tmp_path, monkeypatch):
    """benchmarks/stages_gpu.py --device cpu --tiny: the GPU script's code path works before a GPU is lent."""
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "stages_gpu.py"
    spec = importlib.util.spec_from_file_location("stages_gpu", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rec = mod.main(["--device", "cpu", "--tiny", "--out", str(tmp_path / "t.json")])
    t = rec["buckets"][32]
    assert t["images_per_rollout"] == 2 and all(t[k] > 0 for k in ("rl_rollout", "rl_update", "dmd_step"))
    assert json.loads((tmp_path / "t.json").read_text())["preset"] == "tiny"


@pytest.mark.slow
def test_stages_from_the_cli(toy, tmp_path):
    """`flywheel train --stage rl --prompts rl_prompts@v1` (a catalog dataset, as the router writes it), a distilled
    student evaluated beside its teacher with a report page, the enhancer trained and used, and a missing reward
    model refused before anything loads."""
    import pyarrow as pa
    from typer.testing import CliRunner

    from flywheel import cli
    from flywheel.catalog import Catalog
    from flywheel.datasets import BASE_SCHEMA, DatasetWriter

    cli._register_all()
    run = lambda *a: CliRunner().invoke(cli.app, [str(x) for x in a])  # noqa: E731
    rows = [{"id": f"{i:064x}", "source": "signal:x", "task": "t2i", "caption": p, "prompt": p, "expected": json.dumps(s.to_dict())}
            for i, (p, s) in enumerate(syn.sample_prompts(4, "train", seed=9))]
    schema = BASE_SCHEMA.append(pa.field("prompt", pa.string())).append(pa.field("expected", pa.string()))
    with DatasetWriter(tmp_path / "rl", name="rl_prompts", kind="rl_prompts", catalog=Catalog(), schema=schema) as w:
        w.write(pa.Table.from_pylist(rows, schema=schema))
        ref = w.close(counts={"rows": 4}).ref
    small = ["--steps", 1, "--batch-size", 2, "--resolution", 32, "--no-progress"]
    r = run("train", "--stage", "rl", "--init", toy / "ckpt", "--prompts", ref, "--out", tmp_path / "rl-out", "--group-size", 2,
            "--sample-steps", 2, "--reward-reference", 4, *small)
    assert r.exit_code == 0, r.output
    assert "trained 1 steps (rl)" in r.output
    r = run("train", "--stage", "rl", "--init", toy / "ckpt", "--prompts", ref, "--out", tmp_path / "x",
            "--reward-weights", "checker=1,clip=0.5", *small)
    assert r.exit_code != 0 and "clip-vit-l-14" in str(r.exception or r.output)

    r = run("train", "--stage", "distill", "--teacher", toy / "ckpt", "--prompts", toy / "prompts.txt", "--out", tmp_path / "st",
            "--sample-steps", 2, "--fake-updates", 1, *small)
    assert r.exit_code == 0, r.output
    r = run("eval", "--ckpt", toy / "ckpt", "--ckpt", tmp_path / "st", "--n-prompts", 4, "--seeds", 0, "--report", tmp_path / "rep")
    assert r.exit_code == 0, r.output
    assert "s/image" in r.output and str(tmp_path / "st") in r.output
    page = (tmp_path / "rep" / "index.html").read_text()
    assert page.count("<img") == 8  # 4 prompts x 2 checkpoints

    r = run("train", "--stage", "enhancer-sft", "--prompts", toy / "pairs.jsonl", "--out", tmp_path / "pe", "--steps", 2, "--no-progress")
    assert r.exit_code == 0, r.output
    assert "flywheel enhance" in r.output
    r = run("enhance", "--model", tmp_path / "pe", "--max-new-tokens", 4, "a pair of crimson discs")  # two steps: any words
    assert r.exit_code == 0, r.output
    r = run("enhance", "--model", tmp_path / "nope", "x")
    assert r.exit_code != 0 and "holds no config.json" in str(r.exception or r.output)


def test_prompts_read_with_their_intent(tmp_path):
    from flywheel.training.policy import read_prompts

    f = tmp_path / "p.jsonl"
    f.write_text(json.dumps({"prompt": "two red circles", "expected": {"color": "red"}}) + "\n"  # partial: the parser reads it
                 + json.dumps({"prompt": "zzz", "expected": {"shape": "star", "color": "blue", "count": 3}}) + "\n"
                 + json.dumps({"prompt": "a sunset over the sea"}) + "\n")
    got = read_prompts(f)
    assert got[0][1] == syn.ShapeSpec("circle", "red", 2).to_dict()
    assert got[1][1] == syn.ShapeSpec("star", "blue", 3).to_dict()
    assert got[2] == ("a sunset over the sea", None)  # no intent: scored by the other reward components only

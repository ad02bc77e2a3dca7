"""The rectified-flow objective and sampler (training/rf.py)."""

from __future__ import annotations

import math

import pytest
import torch

from flywheel.training import rectified_flow as rf


def test_interpolation_endpoints_and_velocity():
    x0, noise = torch.randn(3, 5, 4), torch.randn(3, 5, 4)
    assert torch.equal(rf.interpolate(x0, noise, torch.zeros(3)), x0)
    assert torch.allclose(rf.interpolate(x0, noise, torch.ones(3)), noise)
    t = torch.tensor([0.2, 0.5, 0.9])
    xt = rf.interpolate(x0, noise, t)
    # moving along the target velocity from x_t by (1 - t) reaches the noise, by -t the data
    v = rf.target(x0, noise)
    assert torch.allclose(xt + (1 - t).view(-1, 1, 1) * v, noise, atol=1e-6)
    assert torch.allclose(xt - t.view(-1, 1, 1) * v, x0, atol=1e-6)
    assert torch.allclose(rf.loss_per_sample(v, x0, noise), torch.zeros(3))
    assert rf.loss_per_sample(v + 1, x0, noise).tolist() == pytest.approx([1.0, 1.0, 1.0])


def test_shift_matches_the_qwen_image_pipeline():
    from diffusers.pipelines.qwenimage.pipeline_qwenimage import calculate_shift

    c = rf.SCHEDULER_CONFIG
    for n in (16, 256, 1024, 4096):
        assert rf.calculate_shift(n) == pytest.approx(
            calculate_shift(n, c["base_image_seq_len"], c["max_image_seq_len"], c["base_shift"], c["max_shift"]))
    sched = rf.make_scheduler()
    t = torch.tensor([0.1, 0.5, 0.9])
    assert torch.allclose(rf.shift(t, 0.7), sched.time_shift(0.7, 1.0, t).float(), atol=1e-6)


def test_logit_normal_t_moves_with_resolution():
    g = torch.Generator().manual_seed(0)
    lo = rf.sample_t(20000, rf.calculate_shift(16), g)
    hi = rf.sample_t(20000, rf.calculate_shift(4096), g)
    assert 0 < float(lo.min()) and float(hi.max()) < 1
    # larger images: more noise on average (the exponential shift grows with the token count)
    assert float(hi.median()) > float(lo.median()) > 0.5
    assert float(lo.median()) == pytest.approx(rf.shift(torch.tensor(0.5), rf.calculate_shift(16)).item(), abs=0.02)


def test_euler_sampler_with_the_ideal_velocity_reaches_the_data():
    # one data point x0: the ideal velocity at x_t is (x_t - x0) / t; Euler from noise must land on x0
    x0 = torch.randn(2, 16, 8)
    noise = torch.randn(2, 16, 8, generator=torch.Generator().manual_seed(1))
    out = rf.sample(lambda x, t, cond: (x - x0) / t.view(-1, 1, 1), noise, steps=12, mu=rf.calculate_shift(16))
    assert torch.allclose(out, x0, atol=1e-4)


def test_classifier_free_guidance_extrapolates_from_the_unconditional():
    x0c, x0u = torch.ones(1, 4, 2), torch.zeros(1, 4, 2)
    noise = torch.randn(1, 4, 2, generator=torch.Generator().manual_seed(2))

    def v(x, t, cond):
        return (x - (x0c if cond else x0u)) / t.view(-1, 1, 1)

    plain = rf.sample(v, noise, steps=8, mu=0.5, guidance=1.0)
    guided = rf.sample(v, noise, steps=8, mu=0.5, guidance=3.0)
    assert torch.allclose(plain, x0c, atol=1e-4)
    # with guidance g the result is pushed past the conditional target, away from the unconditional one
    assert float(guided.mean()) > 1.5


def test_timestep_bins():
    bins = rf.timestep_bins(torch.tensor([0.05, 0.07, 0.95, 1.0]), torch.tensor([1.0, 3.0, 2.0, 4.0]), n_bins=10)
    assert bins == {0: (4.0, 2), 9: (6.0, 2)}
    assert math.isclose(bins[0][0] / bins[0][1], 2.0)


def test_x0_prediction_converts_to_the_velocity():
    x0, noise = torch.randn(3, 4, 8), torch.randn(3, 4, 8)
    t = torch.tensor([0.3, 0.6, 0.9])
    xt = rf.interpolate(x0, noise, t)
    # a perfect x0 prediction is a perfect velocity, so the same loss serves both parametrisations
    assert torch.allclose(rf.to_velocity(x0, xt, t, "x0"), rf.target(x0, noise), atol=1e-5)
    assert torch.equal(rf.to_velocity(noise, xt, t, "v"), noise)
    # t is floored so a prediction near t=0 cannot blow up
    v = rf.to_velocity(torch.zeros(1, 4, 8), torch.ones(1, 4, 8), torch.tensor([1e-6]), "x0")
    assert torch.allclose(v, torch.full((1, 4, 8), 1 / rf.T_MIN))
    with pytest.raises(ValueError, match="unknown prediction"):
        rf.to_velocity(x0, xt, t, "eps")


def test_loss_scores_the_prediction_as_a_velocity():
    x0, noise = torch.randn(3, 4, 8), torch.randn(3, 4, 8)
    t = torch.tensor([0.3, 0.6, 0.9])
    # an oracle that knows x0 and the noise scores zero under either parametrisation
    assert torch.allclose(rf.loss(lambda xt, t: rf.target(x0, noise), x0, noise, t, "v"), torch.zeros(3), atol=1e-10)
    assert torch.allclose(rf.loss(lambda xt, t: x0, x0, noise, t, "x0"), torch.zeros(3), atol=1e-8)
    # predicting zero velocity costs the squared target, sample by sample
    want = rf.target(x0, noise).pow(2).flatten(1).mean(1)
    assert torch.allclose(rf.loss(lambda xt, t: torch.zeros_like(xt), x0, noise, t), want)

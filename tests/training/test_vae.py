"""VAE training: the semantic-alignment terms (values and gradients), the strong-then-relaxed weight,
the RGBA input the pipeline gives, a few CPU steps with a tiny *random-weight* open_clip encoder
(no real encoder weights exist here: this checks the mechanics, not the benefit), diffusers-format
output that fine-tuning starts from, held-out PSNR/SSIM, and `flywheel train-vae`."""

from __future__ import annotations

import json

import pytest
import torch

from flywheel.training import vae as tv


def _cfg(**kw) -> tv.VAETrainConfig:
    base = dict(datasets=[], out="out", steps=100, align_weight_start=1.0, align_weight_end=0.1, align_relax_from=0.25, align_relax_to=0.75)
    base.update(kw)
    return tv.VAETrainConfig(**base)


def test_alignment_losses():
    torch.manual_seed(0)
    f = torch.randn(2, 8, 4, 4)
    assert tv.margin_cosine_loss(f * 3.0, f, 0.5) == 0  # same direction: inside the margin
    assert tv.margin_cosine_loss(-f, f, 0.5) == pytest.approx(1.5)  # opposite: 1 - 0.5 - (-1)
    assert tv.distance_matrix_loss(f * 2.0, f, 0.25) == 0  # same self-similarity
    z = torch.randn(2, 8, 4, 4, requires_grad=True)
    loss = tv.margin_cosine_loss(z, f, 0.0) + tv.distance_matrix_loss(z, f, 0.0)
    loss.backward()
    assert loss > 0 and z.grad.abs().sum() > 0
    # a projection trained on these terms alone pulls an unrelated latent towards the features
    proj = torch.nn.Conv2d(8, 8, 1)
    opt = torch.optim.Adam(proj.parameters(), lr=0.05)
    zz = torch.randn(2, 8, 4, 4)
    f2 = torch.nn.functional.conv2d(zz, torch.randn(8, 8, 1, 1))
    first = None
    for _ in range(60):
        l = tv.margin_cosine_loss(proj(zz), f2, 0.0) + tv.distance_matrix_loss(proj(zz), f2, 0.0)
        first = first if first is not None else l.item()
        opt.zero_grad()
        l.backward()
        opt.step()
    assert l.item() < 0.3 * first


def test_alignment_weight_is_strong_early_relaxed_later():
    cfg = _cfg()
    w = [tv.align_weight(s, 100, cfg) for s in range(101)]
    assert w[0] == w[25] == 1.0 and w[75] == w[100] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(w, w[1:]))


def test_ssim_torch_matches_identity_and_drops_with_noise():
    a = torch.rand(2, 3, 32, 32)
    assert tv.ssim_torch(a, a).item() == pytest.approx(1.0, abs=1e-5)
    assert tv.ssim_torch((a + 0.3 * torch.randn_like(a)).clamp(0, 1), a).item() < 0.8


def test_psnr_ssim_metric():
    x = torch.rand(3, 4, 32, 32) * 2 - 1
    m = tv.psnr_ssim(x, x)
    assert m["psnr"] > 90 and m["ssim"] == pytest.approx(1.0)
    y = (x + 0.1).clamp(-1, 1)
    assert 20 < tv.psnr_ssim(x, y)["psnr"] < 30  # 0.05 in [0,1] units -> ~26 dB


@pytest.fixture
def data(tmp_path):
    from flywheel.training import synthetic as syn

    syn.write_dataset(tmp_path / "syn", n=24, seed=0, size=32, suite="mixed", text_fraction=0.3)
    syn.write_dataset(tmp_path / "held", n=4, seed=1, size=32, split="eval")
    return tmp_path


def test_train_vae_with_random_open_clip_alignment(data):
    """Three steps: RGBA in, every loss term finite and logged, weights move, output reloads."""
    from builders import tiny_clip

    from flywheel.models import qwen_image as qi

    torch.set_num_threads(1)
    enc_dir = tiny_clip(data / "tiny_clip", image_size=32)  # random weights: mechanics only
    cfg = tv.VAETrainConfig(datasets=[str(data / "syn")], heldout=str(data / "held"), out=str(data / "out"), resolution=32,
                            steps=3, batch_size=2, lr=1e-3, align_encoder=f"open_clip:{enc_dir}", perceptual="encoder",
                            progress=False, threads=1)
    ref = qi.build_vae("2.1", "tiny")
    assert ref.config.in_channels == 4  # the pipeline feeds RGBA
    r = tv.main(cfg)
    hist = json.loads((data / "out" / "metrics.json").read_text())["history"]
    assert len(hist) == 3
    for k in ("rec", "kl", "perceptual", "align_mcos", "align_mdms"):
        assert all(k in h and h[k] == h[k] for h in hist), k
    assert hist[0]["align_w"] == 1.0
    assert r["before"]["n"] == 4 and "psnr" in r["after"]
    vae = qi.load_vae(data / "out" / "vae")
    assert type(vae).__name__ == "AutoencoderKLQwenImage21"
    torch.manual_seed(0)
    fresh = qi.build_vae("2.1", "tiny")
    assert any(not torch.equal(a, b) for a, b in zip(vae.state_dict().values(), fresh.state_dict().values()))
    assert (data / "out" / "align_proj.safetensors").exists()


def test_finetune_starts_from_init_and_reports_same_before(data):
    torch.set_num_threads(1)
    a = tv.main(tv.VAETrainConfig(datasets=[str(data / "syn")], heldout=str(data / "held"), out=str(data / "a"), resolution=32,
                                  steps=2, batch_size=2, lr=1e-3, progress=False, threads=1))
    b = tv.main(tv.VAETrainConfig(datasets=[str(data / "syn")], heldout=str(data / "held"), out=str(data / "b"), resolution=32,
                                  steps=1, batch_size=2, lr=1e-3, progress=False, threads=1, init=str(data / "a" / "vae"),
                                  perceptual="none"))
    assert b["before"] == pytest.approx(a["after"])  # the fine-tune starts exactly where the first run ended


@pytest.mark.slow
def test_reconstruction_improves_on_heldout(data):
    torch.set_num_threads(2)
    r = tv.main(tv.VAETrainConfig(datasets=[str(data / "syn")], heldout=str(data / "held"), out=str(data / "o"), resolution=32,
                                  steps=60, batch_size=4, lr=1e-3, progress=False))
    # measured with 2000 scenes: 3.7 -> 18.3 dB by step 50 (a random VAE learning the white background first)
    assert r["after"]["psnr"] > r["before"]["psnr"] + 3


def test_cli_train_vae(data):
    from typer.testing import CliRunner

    from flywheel.cli import _register_all, app

    torch.set_num_threads(1)
    _register_all()
    r = CliRunner().invoke(app, ["train-vae", "--dataset", str(data / "syn"), "--heldout", str(data / "held"), "--out",
                                 str(data / "cli"), "--resolution", "32", "--steps", "1", "--batch-size", "2"])
    assert r.exit_code == 0, r.output
    assert "PSNR" in r.output and (data / "cli" / "vae" / "config.json").exists()
    bad = CliRunner().invoke(app, ["train-vae", "--dataset", str(data / "syn"), "--out", str(data / "x"), "--resolution", "40", "--steps", "1"])
    assert bad.exit_code != 0


def test_qwen3vl_vision_tower_features(tmp_path):
    """A tiny random Qwen3-VL (from its config, as the trainer tests build it): its vision tower
    gives one feature per merged 2x2 patch block, frozen, differentiable in the input image."""
    from builders import tiny_qwen3vl_encoder

    torch.set_num_threads(1)
    d = tiny_qwen3vl_encoder(tmp_path / "q")
    enc = tv.AlignEncoder(f"qwen3vl:{d}", torch.device("cpu"))
    x = torch.rand(2, 3, 64, 64, requires_grad=True)
    f = enc(x)
    assert f.shape == (2, enc.dim, 4, 4)  # 128 px input / 16 px patches / 2x2 merge
    assert not torch.allclose(f[0], f[1])
    f.sum().backward()
    assert x.grad.abs().sum() > 0 and all(p.grad is None for p in enc.model.parameters())
    with pytest.raises(FileNotFoundError, match="open_clip:DIR"):
        tv.AlignEncoder("dinov2:/nonexistent", torch.device("cpu"))


def test_dinov2_patch_features(tmp_path):
    """A tiny random DINOv2 saved with save_pretrained and loaded by directory, as a real one would be."""
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, image_size=32,
                             patch_size=8)).save_pretrained(tmp_path / "dino")
    enc = tv.AlignEncoder(f"dinov2:{tmp_path / 'dino'}", torch.device("cpu"))
    f = enc(torch.rand(3, 3, 48, 48))
    assert f.shape == (3, 32, 4, 4)  # the CLS token dropped, 4x4 patches of the 32 px input

"""The trainer end to end on CPU: two steps per stage, exact resume, caches, checkpoints that diffusers'
QwenImage21Pipeline and `flywheel sample` load, DDP with two gloo processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from flywheel.training.config import STAGES, TrainConfig
from flywheel.training.trainer import main


def _cfg(ds, out, **kw):
    base = dict(datasets=[str(ds)], out=str(out), steps=2, batch_size=2, resolution=64, progress=False,
                cache_dir=str(Path(out).parent / "cache"), warmup=10)
    base.update(kw)
    return TrainConfig(**base)


def _metrics(out):
    return [json.loads(l) for l in (Path(out) / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("stage", [s for s, row in STAGES.items() if row.kind == "flow"])  # the others: test_stages.py
def test_two_steps_per_stage(toy_dataset, tmp_path, stage):
    from flywheel.models.qwen_image import load_transformer

    out = tmp_path / stage
    r = main(_cfg(toy_dataset, out, stage=stage, log_every=1, ti2i_ratio=0.5))
    assert len(r["losses"]) == 2 and all(0 < l < 10 for l in r["losses"])
    m = _metrics(out)
    assert [x["lr"] for x in m] == pytest.approx([STAGES[stage].lr * k / 10 for k in (1, 2)])
    assert all(x["loss_by_t_bin"] for x in m)
    assert all(0 < x["cpu_sec_per_step"] and 0 < x["sec_per_step"] for x in m)  # the timings benchmarks/train_step.py reads
    losses = pq.read_table(out / "sample_losses").to_pylist()
    ids = set(pq.read_table(Path(toy_dataset) / "data", columns=["id"]).column("id").to_pylist())
    assert len(losses) == 4 and {x["id"] for x in losses} <= ids
    assert {x["task"] for x in losses} == {"t2i", "ti2i"}  # one batch of each at ratio 0.5
    assert type(load_transformer(out)).__name__ == "QwenImage21Transformer2DModel"


def test_resumed_run_matches_an_uninterrupted_one(toy_dataset, tmp_path):
    from safetensors.torch import load_file

    full = main(_cfg(toy_dataset, tmp_path / "full", steps=4, ckpt_every=100, ti2i_ratio=0.3))
    main(_cfg(toy_dataset, tmp_path / "part", steps=2, ti2i_ratio=0.3))
    resumed = main(_cfg(toy_dataset, tmp_path / "part", steps=4, ti2i_ratio=0.3))
    assert resumed["losses"] == full["losses"]  # step for step, bit for bit
    a = load_file(tmp_path / "full" / "transformer" / "diffusion_pytorch_model.safetensors")
    b = load_file(tmp_path / "part" / "transformer" / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    # and a run with another seed differs, so the comparison can fail
    other = main(_cfg(toy_dataset, tmp_path / "other", steps=4, seed=1, ti2i_ratio=0.3))
    assert other["losses"] != full["losses"]


def test_second_epoch_encodes_nothing(toy_dataset, tmp_path):
    kw = dict(caption_probs={"general": 1.0}, ti2i_ratio=0.0, uncond_dropout=0.0, steps=4)  # 4 steps = one T2I epoch
    first = main(_cfg(toy_dataset, tmp_path / "a", **kw))
    assert first["latent_cache"][1] == 8 and first["text_cache"][1] == 8  # every sample encoded once
    second = main(_cfg(toy_dataset, tmp_path / "b", **kw))
    assert second["latent_cache"][1] == 0 and second["text_cache"][1] == 0
    assert second["losses"] == first["losses"]  # cached values are the values


def test_init_starts_from_local_weights(toy_dataset, tmp_path):
    from safetensors.torch import load_file

    main(_cfg(toy_dataset, tmp_path / "base", ema_decay=0.0))
    main(_cfg(toy_dataset, tmp_path / "ft", init=str(tmp_path / "base"), steps=1, lr=0.0, ema_decay=0.0, stage="sft"))
    a = load_file(tmp_path / "base" / "transformer" / "diffusion_pytorch_model.safetensors")
    b = load_file(tmp_path / "ft" / "transformer" / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((tmp_path / "ft" / "flywheel.json").read_text())["stage"] == "sft"


def test_qwen3vl_checkpoint_is_a_qwenimage21_pipeline(toy_dataset, tiny_qwen3vl, tmp_path):
    from diffusers import QwenImage21Pipeline

    out = tmp_path / "vl"
    r = main(_cfg(toy_dataset, out, text_encoder=str(tiny_qwen3vl), vae="tiny", ti2i_ratio=0.5))
    assert all(0 < l < 10 for l in r["losses"])
    pipe = QwenImage21Pipeline.from_pretrained(out)
    pipe.set_progress_bar_config(disable=True)
    img = pipe("a red square", height=64, width=64, num_inference_steps=2, output_type="np",
               generator=torch.Generator().manual_seed(0)).images
    assert img.shape[:3] == (1, 64, 64) and bool((img >= 0).all() and (img <= 1).all())
    from PIL import Image

    edit = pipe("make the square yellow", image=Image.new("RGB", (64, 64), (200, 30, 30)), output_resolution=64,
                num_inference_steps=2, output_type="np").images
    assert edit.shape[1:3] == (64, 64)


def test_minilm_checkpoint_samples_through_the_cli(toy_dataset, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from flywheel import cli
    from flywheel.models import qwen_image as qi

    cli._register_all()
    runner = CliRunner()
    out = tmp_path / "run"
    res = runner.invoke(cli.app, ["train", "--dataset", str(toy_dataset), "--out", str(out), "--steps", "2",
                                  "--batch-size", "2", "--resolution", "64", "--vae", "pixel:8",
                                  "--prediction", "x0"])
    assert res.exit_code == 0, res.output
    assert json.loads((out / "flywheel.json").read_text())["prediction"] == "x0"
    monkeypatch.delitem(qi.__dict__, "PixelCodec", raising=False)  # as in a fresh process
    res = runner.invoke(cli.app, ["sample", "--ckpt", str(out), "--prompt", "a red square", "--prompt", "a blue circle",
                                  "--out", str(tmp_path / "png"), "--steps", "3"])
    assert res.exit_code == 0, res.output
    pngs = sorted((tmp_path / "png").glob("*.png"))
    assert len(pngs) == 2
    from PIL import Image

    assert Image.open(pngs[0]).size == (64, 64)
    res = runner.invoke(cli.app, ["train", "--dataset", str(tmp_path / "nope"), "--out", str(out)])
    assert res.exit_code != 0 and "dataset directory or name@vN" in str(res.exception or res.output)
    # fine-tuning follows what the init was trained to output, and refuses the other parametrisation
    ft = tmp_path / "ft"
    res = runner.invoke(cli.app, ["train", "--dataset", str(toy_dataset), "--out", str(ft), "--steps", "1",
                                  "--batch-size", "2", "--resolution", "64", "--init", str(out)])
    assert res.exit_code == 0, res.output
    assert json.loads((ft / "flywheel.json").read_text())["prediction"] == "x0"
    res = runner.invoke(cli.app, ["train", "--dataset", str(toy_dataset), "--out", str(tmp_path / "ft2"), "--steps", "1",
                                  "--batch-size", "2", "--resolution", "64", "--init", str(out), "--prediction", "v"])
    assert res.exit_code != 0 and "trained to predict 'x0'" in str(res.exception or res.output)


def test_first_qwen_image_architecture_trains(toy_dataset, tmp_path):
    from flywheel.models.qwen_image import load_transformer

    r = main(_cfg(toy_dataset, tmp_path / "v1", arch="1.0", vae="tiny", ti2i_ratio=0.5))
    assert all(0 < l < 10 for l in r["losses"])
    assert type(load_transformer(tmp_path / "v1")).__name__ == "QwenImageTransformer2DModel"


@pytest.mark.slow
def test_ddp_two_cpu_processes(toy_dataset, tmp_path):
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
           "-m", "flywheel.training.trainer", "--dataset", str(toy_dataset), "--out", str(out), "--steps", "2",
           "--batch-size", "2", "--resolution", "64", "--ti2i-ratio", "0", "--no-progress",
           "--cache-dir", str(tmp_path / "cache")]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    rows = pq.read_table(out / "sample_losses").to_pylist()
    assert {r["rank"] for r in rows} == {0, 1} and len(rows) == 2 * 2 * 2
    for step in (0, 1):  # the two ranks trained on different samples at each step
        ids = [{r["id"] for r in rows if r["step"] == step and r["rank"] == k} for k in (0, 1)]
        assert not ids[0] & ids[1]
    assert (out / "transformer" / "config.json").exists()


def test_config_is_saved_with_the_checkpoint(toy_dataset, tmp_path):
    out = tmp_path / "run"
    cfg = _cfg(toy_dataset, out, steps=1, stage="sft", betas=(0.8, 0.95), caption_probs={"general": 0.6, "original": 0.4},
               ema_decay=0.0, ti2i_ratio=0.0, vae="pixel:8", prediction="x0")
    main(cfg)
    assert TrainConfig.load(out) == cfg
    assert TrainConfig.model_validate(json.loads((out / "state" / "meta.json").read_text())["config"]) == cfg
    assert TrainConfig.load(out) != cfg.model_copy(update={"seed": 1})  # the comparison can fail

"""TrainConfig is the one place an option is written: `flywheel train` and the torchrun parser are built
from its fields, and bad names or values are refused with the allowed ones named."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from flywheel.training.config import STAGES, TrainConfig, argparser, from_args, options

# options that scripts and docs already use; generation must keep their names
LEGACY_FLAGS = ["--dataset", "--out", "--stage", "--preset", "--arch", "--steps", "--init", "--batch-size", "--text-encoder",
                "--vae", "--resolution", "--lr", "--warmup", "--ti2i-ratio", "--caption-probs", "--uncond-dropout",
                "--prediction", "--ema-decay", "--bf16", "--compile", "--device", "--seed", "--ckpt-every", "--resume",
                "--no-resume", "--no-progress", "--cache-dir", "--max-seconds", "--budget-clock", "--log-every"]


def _flat(text: str) -> str:
    """Rich's help and error boxes, without the box and the line wrapping."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())


def _has_flag(text: str, flag: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text) is not None


def _app():
    from flywheel import cli

    cli._register_all()
    return cli.app


def test_every_field_is_an_option_of_flywheel_train():
    from typer.testing import CliRunner

    res = CliRunner().invoke(_app(), ["train", "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    text = _flat(res.output)
    opts = options()
    assert {o.field for o in opts} == set(TrainConfig.model_fields)
    for o in opts:
        assert _has_flag(text, o.flag), o.flag
        for c in o.choices or ():
            assert c in text, (o.flag, c)
    for flag in LEGACY_FLAGS:
        assert _has_flag(text, flag), flag
    assert "Optimizer steps." in text  # help comes from the field's description


def test_every_field_is_an_option_of_the_torchrun_parser():
    flags = set(argparser()._option_string_actions)
    for o in options():
        assert o.flag in flags, o.flag
    for flag in LEGACY_FLAGS:
        assert flag in flags, flag
    assert argparser()._option_string_actions["--stage"].choices == tuple(STAGES)


def test_torchrun_parser_builds_the_config():
    cfg = from_args(["--dataset", "a", "--dataset", "b", "--out", "o", "--stage", "sft", "--batch-size", "3",
                     "--betas", "0.8", "0.95", "--caption-probs", "general=0.7,original=0.3", "--no-resume", "--bf16",
                     "--lr", "2e-4", "--prediction", "x0"])
    assert cfg == TrainConfig(datasets=["a", "b"], out="o", stage="sft", batch_size=3, betas=(0.8, 0.95),
                              caption_probs={"general": 0.7, "original": 0.3}, resume=False, bf16=True, lr=2e-4, prediction="x0")
    assert from_args(["--dataset", "a", "--out", "o"]) == TrainConfig(datasets=["a"], out="o")  # defaults are the config's


@pytest.mark.parametrize("argv, message", [
    (["--stage", "ppo"], "argument --stage: invalid choice: 'ppo' (choose from 'pretrain', 'continual', 'sft', 'rl', 'distill', 'enhancer-sft', 'enhancer-rl')"),
    (["--stage", "rl"], "config: Value error, stage rl needs --init, --prompts"),  # a stage names the flags it needs
    (["--preset", "huge"], "choose from 'tiny', 'small', 'full'"),
    (["--bogus", "1"], "unrecognized arguments: --bogus"),
    (["--caption-probs", "nope=1"], "--caption-probs: Value error, unknown caption types ['nope']"),
    (["--batch-size", "0"], "--batch-size: Input should be greater than or equal to 1"),
])
def test_torchrun_parser_refuses(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        from_args(["--dataset", "a", "--out", "o", *argv])
    assert e.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--stage", "ppo"], "Invalid value for '--stage': Value error, 'ppo' is not one of 'pretrain', 'continual', 'sft', 'rl', 'distill', 'enhancer-sft', 'enhancer-rl'"),
    (["--prediction", "eps"], "'eps' is not one of 'v', 'x0'"),
    (["--bogus", "1"], "No such option: --bogus"),
    (["--caption-probs", "general=x"], "--caption-probs: Value error, 'general=x' is not TYPE=P"),
])
def test_flywheel_train_refuses(argv, message, toy_dataset, tmp_path):
    from typer.testing import CliRunner

    res = CliRunner().invoke(_app(), ["train", "--dataset", str(toy_dataset), "--out", str(tmp_path / "o"), *argv])
    assert res.exit_code != 0
    assert message in _flat(res.output + str(res.exception or ""))
    assert not (tmp_path / "o").exists()  # refused before anything ran


def test_config_refuses_unknown_keys_and_values():
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        TrainConfig(datasets=["a"], out="o", batchsize=3)
    with pytest.raises(ValidationError, match="'pretrain', 'continual', 'sft', 'rl', 'distill', 'enhancer-sft' or 'enhancer-rl'"):
        TrainConfig(datasets=["a"], out="o", stage="ppo")
    cfg = TrainConfig(datasets=["a"], out="o")
    with pytest.raises(ValidationError):  # an edit is checked too
        cfg.budget_clock = "sundial"


def test_schedule_is_the_stage_row_with_overrides():
    cfg = TrainConfig(datasets=["a"], out="o", stage="continual")
    plan = cfg.schedule
    assert (plan.lr, plan.ti2i_ratio) == (STAGES["continual"].lr, STAGES["continual"].ti2i_ratio)
    assert [plan.resolution_at(s, 100) for s in (0, 39, 40, 79, 80, 99)] == [512, 512, 1024, 1024, 2048, 2048]
    plan = TrainConfig(datasets=["a"], out="o", stage="continual", lr=3e-3, ti2i_ratio=0.0, resolution=64).schedule
    assert (plan.lr, plan.ti2i_ratio, plan.resolution_at(99, 100)) == (3e-3, 0.0, 64)

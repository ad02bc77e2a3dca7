"""The trainer's configuration: one typed model, the only place an option is written down.

`flywheel train` (flywheel/cli/train.py) and the torchrun entry (`python -m flywheel.training.trainer`)
build their options from `TrainConfig`'s fields through `options()`: the flag, the type, the default, the
help (the field's description), the choices of a `Literal`. A typo fails fast (`extra="forbid"`) and a
wrong value names the allowed ones. The config is saved with every checkpoint (`flywheel.json`) and
resume state, and `TrainConfig.load(dir)` reads it back.

Stages are rows of `STAGES` (Table 2 of the report, then RL, distillation and the prompt enhancer): a
stage is a row there (its loop, learning rate, T2I/TI2I ratio and resolution curriculum) plus the fields
only it reads (a teacher checkpoint, prompts), required for that stage's loop by `REQUIRED`; never a
second config.
"""

from __future__ import annotations

import json
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class Stage(BaseModel):
    """What a stage sets by default; the config's `lr`, `ti2i_ratio` and `resolution` override it. `kind` says
    which loop runs it (trainer.main dispatches on it) and so which fields it requires."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["flow", "rl", "distill", "enhancer-sft", "enhancer-rl"] = Field(
        "flow", description="flow: rectified flow on datasets (trainer.py); rl: Flow-GRPO (grpo.py); distill: DMD "
                            "(distill.py); enhancer-*: the prompt enhancer LM (enhancer.py).")
    lr: float = Field(description="Peak learning rate (after linear warm-up).")
    ti2i_ratio: float = Field(description="Share of TI2I (edit) batches.")
    resolutions: tuple[tuple[int, float], ...] = Field(
        description="The resolution curriculum: (image side, from this fraction of the run on).")

    def resolution_at(self, step: int, steps: int) -> int:
        return [side for side, frac in self.resolutions if step >= frac * steps][-1]


STAGES: dict[str, Stage] = {
    "pretrain": Stage(lr=1e-4, ti2i_ratio=0.1, resolutions=((256, 0.0), (512, 0.5))),
    "continual": Stage(lr=2e-5, ti2i_ratio=0.3, resolutions=((512, 0.0), (1024, 0.4), (2048, 0.8))),
    "sft": Stage(lr=1e-5, ti2i_ratio=0.3, resolutions=((512, 0.0), (1024, 0.4), (2048, 0.8))),
    # Section 4.2-4.3 and 3.3: after SFT. Learning rates are Flow-GRPO's (LoRA 3e-4 there; full fine-tuning lower),
    # DMD2's, and for the enhancer a from-scratch toy LM (SFT) then its RL.
    "rl": Stage(kind="rl", lr=1e-5, ti2i_ratio=0.0, resolutions=((512, 0.0),)),
    "distill": Stage(kind="distill", lr=2e-6, ti2i_ratio=0.0, resolutions=((512, 0.0),)),
    "enhancer-sft": Stage(kind="enhancer-sft", lr=1e-3, ti2i_ratio=0.0, resolutions=((512, 0.0),)),
    "enhancer-rl": Stage(kind="enhancer-rl", lr=1e-4, ti2i_ratio=0.0, resolutions=((512, 0.0),)),
}
# what each loop needs besides --out (checked when the config is built, with the flag to pass)
REQUIRED = {"flow": ("datasets",), "rl": ("init", "prompts"), "distill": ("teacher", "prompts"),
            "enhancer-sft": ("prompts",), "enhancer-rl": ("init", "prompts", "image_model")}
StageName = Literal[tuple(STAGES)]  # the choices of --stage are the rows of the table


class TrainConfig(BaseModel):
    """Everything a training run reads. Defaults of None are filled from the stage or the --init checkpoint."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    datasets: list[str] = Field(default_factory=list, json_schema_extra={"flag": "dataset"},
                                description="Emitted dataset directory (name@vN through `flywheel train`); repeat to mix several. "
                                            "Required by the flow stages (pretrain, continual, sft).")
    out: str = Field(description="Output directory: checkpoint (diffusers layout), state to resume, metrics, per-sample losses.")
    stage: StageName = Field("pretrain", description="Training stage: its learning rate, T2I/TI2I ratio and resolution "
                                                     "curriculum (Table 2 of the report).")
    preset: Literal["tiny", "small", "full"] = Field(
        "tiny", description="Model size: tiny (CPU), small (one GPU), full (released sizes).")
    arch: Literal["2.1", "1.0"] = Field("2.1", description="2.1 (Qwen-Image 2.x single stream) or 1.0 (first Qwen-Image MMDiT).")
    steps: int = Field(100, ge=0, description="Optimizer steps.")
    batch_size: int = Field(4, ge=1, description="Samples per step (per process under torchrun).")
    init: Optional[str] = Field(None, description="Start from local weights: a diffusers pipeline directory or a previous --out.")
    text_encoder: Optional[str] = Field(
        None, description="minilm (offline) or a Qwen3-VL directory. Default: the --init's, else minilm.")
    vae: Optional[str] = Field(
        None, description="VAE preset, directory, or pixel:P (pixel space, P-pixel patches). Default: the --init's, else the preset's.")
    resolution: Optional[int] = Field(None, ge=16, description="Fixed image side instead of the stage's resolution curriculum.")
    lr: Optional[float] = Field(None, ge=0, description="Peak learning rate; default: the stage's.")
    warmup: int = Field(100, ge=0, description="Linear warm-up steps.")
    weight_decay: float = Field(0.001, ge=0, description="AdamW weight decay (not on norms' gains and biases).")
    betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW betas.")
    grad_clip: float = Field(1.0, gt=0, description="Gradient-norm clipping.")
    uncond_dropout: float = Field(0.1, ge=0, le=1, description="Probability of training a sample without its text (for guidance).")
    ti2i_ratio: Optional[float] = Field(None, ge=0, le=1, description="Share of TI2I (edit) batches; default: the stage's.")
    caption_probs: Optional[dict[str, float]] = Field(
        None, description="Caption type probabilities, TYPE=P,... e.g. general=0.5,text=0.1,knowledge=0.1,structured=0.1,original=0.2.")
    ema_decay: float = Field(0.999, ge=0, lt=1, description="EMA decay of the saved weights; 0 saves the raw weights.")
    prediction: Optional[Literal["v", "x0"]] = Field(
        None, description="v (velocity, as Qwen-Image) or x0 (clean sample; for pixel-space --vae pixel:P). "
                          "Default: the --init checkpoint's, else v.")
    logit_mean: float = Field(0.0, description="Mean of the logit-normal timestep distribution.")
    logit_std: float = Field(1.0, gt=0, description="Standard deviation of the logit-normal timestep distribution.")
    bf16: bool = Field(False, description="bf16 autocast.")
    compile: bool = Field(False, description="torch.compile the transformer.")
    device: Optional[str] = Field(None, description="cpu | cuda | cuda:N; default: cuda when available.")
    seed: int = Field(0, description="Seed of batches, caption choice, dropout, noise and timesteps.")
    ckpt_every: int = Field(500, ge=1, description="Write the checkpoint and resume state every N steps.")
    log_every: int = Field(10, ge=1, description="Append a metrics.jsonl record every N steps.")
    resume: bool = Field(True, description="Continue from OUT/state when present.")
    max_seconds: Optional[float] = Field(None, description="Stop (and checkpoint) after this much time on --budget-clock.")
    deadline: Optional[float] = Field(None, description="Stop (and checkpoint) at this Unix time, whatever the budget says.")
    budget_clock: Literal["wall", "cpu"] = Field(
        "wall", description="Clock of --max-seconds: wall, or cpu (this process's CPU seconds, all threads; fair on a shared machine).")
    cache_dir: Optional[str] = Field(None, description="Text-embedding and latent caches; default: FLYWHEEL_HOME/cache/train.")
    progress: bool = Field(True, description="Show a progress bar.")

    # -- rl, distill and the enhancer (grpo.py, distill.py, enhancer.py) ---------------------------
    prompts: Optional[str] = Field(None, description="rl/distill/enhancer-rl: prompts, as a dataset (rl_prompts@vN, a directory) "
                                                     "or a file (one prompt per line, or JSONL with prompt and expected); "
                                                     "enhancer-sft: rewrite pairs (prompt_enhancer_pairs@vN or JSONL prompt,rewrite).")
    teacher: Optional[str] = Field(None, description="distill: the multi-step teacher checkpoint (the student starts from it "
                                                     "unless --init).")
    image_model: Optional[str] = Field(None, description="enhancer-rl: the frozen image checkpoint that renders the rewrites.")
    guidance: float = Field(4.0, ge=1, description="rl: CFG scale of the rollouts; distill: the teacher's CFG in the real score.")
    sample_steps: int = Field(10, ge=1, description="rl: SDE steps of a rollout; distill: steps of the student (4).")
    group_size: int = Field(8, ge=2, description="rl, enhancer-rl: samples per prompt (G), one group; rl groups share the initial noise.")
    sde_a: float = Field(0.7, gt=0, description="rl: noise level a of the marginal-preserving SDE, sigma_t = a*sqrt(t/(1-t)).")
    clip_range: float = Field(1e-4, gt=0, description="rl: the per-step ratio is clipped to 1 +- this (Flow-GRPO's 1e-4).")
    adv_clip: float = Field(5.0, gt=0, description="rl: group-normalised advantages are clipped to +- this.")
    kl_beta: float = Field(0.04, ge=0, description="rl, enhancer-rl: weight of the KL term to the reference (the starting) model.")
    minibatches: int = Field(2, ge=1, description="rl: optimizer steps per rollout batch (ratios move from 1 after the first).")
    lora_rank: int = Field(0, ge=0, description="rl: LoRA rank through peft; 0 fine-tunes every weight.")
    reward_weights: dict[str, float] = Field(
        default_factory=lambda: {"checker": 1.0},
        description="rl, enhancer-rl: reward components and weights, NAME=W,...: checker, checker.ATTR (color, shape, count, "
                    "position), clip, aesthetic, text (enhancer's rule-based constraints).")
    reward_weights_end: Optional[dict[str, float]] = Field(
        None, description="Weights reached linearly at step --reward-ramp (the report adjusts them during training).")
    reward_ramp: int = Field(0, ge=0, description="Steps over which --reward-weights move to --reward-weights-end.")
    reward_reference: int = Field(64, ge=4, description="Images (rl) or rewrites (enhancer-rl) in the percentile calibration set.")
    reward_clip: Optional[str] = Field(None, description="open_clip local-dir of the clip/aesthetic rewards; default: the store's clip-vit-l-14.")
    reward_aesthetic: Optional[str] = Field(None, description="Aesthetic head directory; default: the store's laion-aesthetic-v2.")
    shuffle_rewards: bool = Field(False, description="rl: permute rewards within the batch before advantages (the control arm).")
    fake_updates: int = Field(5, ge=1, description="distill: fake-score updates per student update (DMD2's two time-scale rule).")
    regression_weight: float = Field(0.0, ge=0, description="distill: weight of the regression loss to teacher ODE samples (off by default).")
    teacher_steps: int = Field(40, ge=1, description="distill: teacher steps for the regression pairs and the evaluation.")
    max_new_tokens: int = Field(32, ge=1, description="enhancer: longest rewrite in tokens.")

    @field_validator("caption_probs", mode="before")
    @classmethod
    def _parse_caption_probs(cls, v: Any) -> Any:
        """A command line gives `general=0.6,original=0.4` (or JSON); Python callers give a dict."""
        if not isinstance(v, str):
            return v
        if v.strip().startswith("{"):
            return json.loads(v)
        try:
            return {k.strip(): float(p) for k, p in (item.split("=") for item in v.split(",") if item.strip())}
        except ValueError:
            raise ValueError(f"{v!r} is not TYPE=P,...; e.g. general=0.6,structured=0.2,original=0.2") from None

    @field_validator("caption_probs")
    @classmethod
    def _known_caption_types(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        from flywheel.training.data import CAPTION_TYPES

        unknown = set(v or {}) - set(CAPTION_TYPES)
        if unknown:
            raise ValueError(f"unknown caption types {sorted(unknown)}; use {', '.join(CAPTION_TYPES)}")
        return v

    @field_validator("reward_weights", "reward_weights_end", mode="before")
    @classmethod
    def _parse_weights(cls, v: Any) -> Any:
        if not isinstance(v, str):
            return v
        if v.strip().startswith("{"):
            return json.loads(v)
        try:
            return {k.strip(): float(w) for k, w in (item.split("=") for item in v.split(",") if item.strip())}
        except ValueError:
            raise ValueError(f"{v!r} is not NAME=W,...; e.g. checker=1,clip=0.5") from None

    @model_validator(mode="after")
    def _stage_needs(self) -> "TrainConfig":
        kind = STAGES[self.stage].kind
        missing = [f for f in REQUIRED[kind] if not getattr(self, f)]
        if missing:
            flags = ", ".join("--" + ("dataset" if f == "datasets" else f.replace("_", "-")) for f in missing)
            raise ValueError(f"stage {self.stage} needs {flags}")
        return self

    @property
    def kind(self) -> str:
        return STAGES[self.stage].kind

    @property
    def schedule(self) -> Stage:
        """The stage's row with this run's overrides applied."""
        s = STAGES[self.stage]
        return Stage(kind=s.kind, lr=s.lr if self.lr is None else self.lr,
                     ti2i_ratio=s.ti2i_ratio if self.ti2i_ratio is None else self.ti2i_ratio,
                     resolutions=((self.resolution, 0.0),) if self.resolution else s.resolutions)

    @classmethod
    def load(cls, run_dir: str | Path) -> "TrainConfig":
        """The config a run was trained with, from the `flywheel.json` of its checkpoint."""
        meta = json.loads((Path(run_dir) / "flywheel.json").read_text())
        if "config" not in meta:
            raise ValueError(f"{run_dir}/flywheel.json records no training config")
        return cls.model_validate(meta["config"])


# -- command-line options, generated from the fields ---------------------------------------------------


@dataclass(frozen=True)
class Option:
    """One field as a command-line option; `flywheel train` (typer) and the torchrun parser build from these."""

    field: str  # TrainConfig field
    flag: str  # --name
    type: type  # element type: str, int, float or bool
    default: Any
    help: str
    required: bool = False
    choices: tuple[str, ...] | None = None
    multiple: bool = False  # repeat the flag for each item (list fields)
    nargs: int = 1  # values per flag (tuple fields)


def options() -> list[Option]:
    """TrainConfig's fields in command-line terms: `Literal` gives choices, `list` a repeated flag, `tuple` a
    flag with several values, `dict` a TYPE=P,... string."""
    out = []
    for name, f in TrainConfig.model_fields.items():
        ann = _strip_optional(f.annotation)
        flag = "--" + ((f.json_schema_extra or {}).get("flag") or name).replace("_", "-")
        default = None if f.is_required() else f.get_default(call_default_factory=True)
        kw: dict = dict(field=name, flag=flag, default=default, help=f.description or "", required=f.is_required())
        origin, args = typing.get_origin(ann), typing.get_args(ann)
        if origin is Literal:
            kw.update(type=str, choices=tuple(str(a) for a in args))
        elif origin is list:
            kw.update(type=args[0], multiple=True)
        elif origin is tuple:
            kw.update(type=args[0], nargs=len(args))
        elif origin is dict:
            kw.update(type=str)  # TYPE=P,... parsed by the field's validator, the default written the same way
            if isinstance(default, dict):
                kw["default"] = ",".join(f"{k}={v:g}" for k, v in default.items())
        elif ann in (str, int, float, bool):
            kw.update(type=ann)
        else:
            raise TypeError(f"TrainConfig.{name}: no command-line form for {ann}")
        out.append(Option(**kw))
    return out


def _strip_optional(ann):
    if typing.get_origin(ann) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(ann) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return ann


def argparser(description: str = ""):
    """argparse for the torchrun entry, one argument per field."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m flywheel.training.trainer", description=description, allow_abbrev=False)
    for o in options():
        kw: dict = dict(dest=o.field, help=o.help, default=o.default, required=o.required)
        if o.type is bool:
            kw["action"] = argparse.BooleanOptionalAction
        else:
            kw.update(type=o.type, choices=o.choices, metavar=None if o.choices else o.field.upper())
            if o.multiple:
                kw["action"] = "append"
                kw["default"] = None
            if o.nargs > 1:
                kw["nargs"] = o.nargs
        p.add_argument(o.flag, **kw)
    return p


def from_args(argv: list[str] | None = None, description: str = "") -> TrainConfig:
    """Parse a command line into a TrainConfig; exits with argparse's message on a bad option or value."""
    from pydantic import ValidationError

    p = argparser(description)
    a = vars(p.parse_args(argv))
    try:
        return TrainConfig(**{k: v for k, v in a.items() if v is not None})
    except ValidationError as e:
        p.error(explain(e))


def explain(e) -> str:
    """A pydantic ValidationError of TrainConfig in command-line terms: `--flag: what is wrong` per error."""
    flags = {o.field: o.flag for o in options()}
    return "; ".join(f"{flags.get(x['loc'][0], x['loc'][0]) if x['loc'] else 'config'}: {x['msg']}" for x in e.errors())

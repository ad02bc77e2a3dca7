"""The operator contract: score (expensive, stored) apart from reject (cheap, re-runnable).

An operator is pure code over Arrow batches. It never imports ray or prefect; the Ray adapter
(`flywheel.curation.engine`) turns it into a `map_batches` stage: a task when it is stateless, an actor
when it has `setup()` (a model to load once per worker).

Images are decoded once per sample (`flywheel.filters.decode`) into a `Work` object that every
operator reads; an operator never decodes image bytes again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Sequence

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict


class Params(BaseModel):
    """Base of every operator's parameters: unknown keys are an error, never ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class Resources:
    """What one worker of the operator needs; the Ray adapter maps these to map_batches."""

    num_cpus: float = 1.0
    num_gpus: float = 0.0
    batch_size: int = 64


@dataclass
class Work:
    """The decoded working copy of one image, shared by every operator of a run.

    `rgb` is the EXIF-transposed RGB image reduced (JPEG draft mode, then a resize) so its short
    side is at most the stage's working size; `scale` is working size / original size.
    """

    rgb: np.ndarray  # (H, W, 3) uint8
    width: int  # original width after EXIF transpose
    height: int
    info: dict = field(default_factory=dict)  # header facts: format, JPEG quantization tables
    _gray: np.ndarray | None = field(default=None, repr=False)

    @property
    def gray(self) -> np.ndarray:
        """ITU-R 601 luma as float32 (H, W), computed once and shared."""
        if self._gray is None:
            r, g, b = (self.rgb[..., i].astype(np.float32) for i in range(3))
            self._gray = 0.299 * r + 0.587 * g + 0.114 * b
        return self._gray

    @property
    def scale(self) -> float:
        return self.rgb.shape[1] / max(1, self.width)


@dataclass(frozen=True)
class Fail:
    """One failing rule of one row: the rule name and the evidence (score against threshold)."""

    rule: str
    detail: str


def below(value: Any, threshold: float, name: str, limit_name: str) -> Fail | None:
    """A `Fail` when value < threshold (null scores never fail: the row failed earlier)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if value < threshold:
        return Fail("", f"{name}={_fmt(value)} < {limit_name}={_fmt(threshold)}")
    return None


def above(value: Any, threshold: float, name: str, limit_name: str) -> Fail | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if value > threshold:
        return Fail("", f"{name}={_fmt(value)} > {limit_name}={_fmt(threshold)}")
    return None


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


class Operator:
    """Base class. Subclasses set the class attributes and implement `score` and `reject`.

    - `name` is the registry key and the reason prefix (`<name>:<rule>`).
    - `writes` are the stored score columns, each `<name>__<metric>`.
    - `rules` is the fixed reason vocabulary; `reject` may only return these (tests assert it).
    - `reads` are table columns the operator needs besides the working copy.
    - `needs_image`: score receives the decoded `Work` per row (None where decode failed).
    - `models`: model-store names that must be installed before a run starts (preflight).
    - `barrier`: scores are per batch but the decision needs the whole run (dedup, distribution).
    """

    name: ClassVar[str]
    Params: ClassVar[type[Params]] = Params
    reads: ClassVar[tuple[str, ...]] = ()
    writes: ClassVar[tuple[str, ...]] = ()
    rules: ClassVar[tuple[str, ...]] = ()
    needs_image: ClassVar[bool] = True
    models: ClassVar[tuple[str, ...]] = ()
    barrier: ClassVar[bool] = False
    resources: ClassVar[Resources] = Resources()
    # Arrow types of `writes`, in order; float64 unless given.
    types: ClassVar[dict[str, pa.DataType]] = {}
    # Short description of each score: model, scale, direction (the "threshold card").
    cards: ClassVar[dict[str, str]] = {}
    # Score column -> the param it is compared with (report threshold lines, calibration).
    limits: ClassVar[dict[str, str]] = {}

    def __init__(self, params: Params | dict | None = None):
        if params is None:
            params = {}
        self.params = params if isinstance(params, self.Params) else self.Params(**params)

    @classmethod
    def stateful(cls) -> bool:
        return cls.setup is not Operator.setup

    def setup(self) -> None:
        """Load models once per worker. Stateless operators leave this alone."""

    def score(self, batch: pa.Table, work: Sequence[Work | None]) -> dict[str, Sequence[Any]]:
        """Return one sequence per column in `writes`, aligned with the batch rows.

        A row whose `work` is None (broken file) gets None in every column.
        """
        raise NotImplementedError

    def reject(self, table: pa.Table, params: Params) -> list[list[Fail]]:
        """Failing rules per row from stored scores alone (never recomputes a score)."""
        raise NotImplementedError

    # -- helpers -----------------------------------------------------------------------------
    @classmethod
    def column_type(cls, column: str) -> pa.DataType:
        return cls.types.get(column, pa.float64())

    @classmethod
    def schema(cls) -> pa.Schema:
        return pa.schema([(c, cls.column_type(c)) for c in cls.writes])

    @classmethod
    def fail(cls, rule: str, detail: str = "") -> Fail:
        assert rule in cls.rules, f"{cls.name}: rule {rule!r} is not in its vocabulary {cls.rules}"
        return Fail(rule, detail)

    def check(self, rule: str, f: Fail | None) -> Fail | None:
        """Name a comparison result (from `below`/`above`) with one of this operator's rules."""
        return None if f is None else self.fail(rule, f.detail)


_REGISTRY: dict[str, type[Operator]] = {}


def register(cls: type[Operator]) -> type[Operator]:
    """Class decorator: one registry, keyed by the operator name (also the reason prefix)."""
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"operator {cls.name!r} is registered twice")
    for col in cls.writes:
        if not col.startswith(cls.name + "__"):
            raise ValueError(f"{cls.name}: score column {col!r} must start with '{cls.name}__'")
    _REGISTRY[cls.name] = cls
    return cls


# Operator modules, imported lazily by `registry()` so `flywheel --help` stays instant.
# A module that is missing here (a later issue's operator) is simply not registered yet.
OPERATOR_MODULES = (
    "flywheel.filters.broken_file",
    "flywheel.filters.resolution",
    "flywheel.filters.dedup",
    "flywheel.filters.nsfw",
    "flywheel.filters.rotation",
    "flywheel.filters.entropy",
    "flywheel.filters.clip",
    "flywheel.filters.aesthetic",
    "flywheel.filters.image_quality",
    "flywheel.filters.compression_quality",
    "flywheel.filters.token_length",
    "flywheel.filters.distribution",
)


def registry() -> dict[str, type[Operator]]:
    import importlib

    for mod in OPERATOR_MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name != mod:  # a real missing dependency inside an existing module
                raise
    return dict(_REGISTRY)


def get(name: str) -> type[Operator]:
    ops = registry()
    if name not in ops:
        raise KeyError(f"unknown operator {name!r}; known operators: {', '.join(sorted(ops))}")
    return ops[name]

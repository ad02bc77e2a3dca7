"""The operator contract: score (expensive, stored) apart from reject (cheap, re-runnable).

An operator is pure code over Arrow batches. It never imports ray or prefect; the Ray adapter
(`flywheel.curation.engine`) turns it into a `map_batches` stage: a task when it is stateless, an actor
when it has `setup()` (a model to load once per worker).

Images are decoded once per sample (`flywheel.filters.decode`, the engine's first step, whose
reasons are `broken_file:*`) into a `Work` object that every operator reads; an operator never
decodes image bytes again.

Thresholds are data: each `Rule` names the reason, the stored column, the comparison and the
parameter it compares with. `reject`, the report's threshold lines, `flywheel calibrate` and
`flywheel explain` are all derived from `rules`, so a threshold is declared once.

A new CPU operator is one file in this package plus a recipe line. For example
`filters/saturation.py`::

    class SaturationParams(Params):
        min_saturation: float = Field(0.05, ge=0, le=1)

    @register
    class Saturation(Operator):
        '''Grey-looking images: mean HSV saturation below `min_saturation`.'''
        name = "saturation"
        Params = SaturationParams
        writes = ("saturation__mean",)
        rules = (Rule("grey", "saturation__mean", "<", "min_saturation"),)

        def score(self, batch, work):
            return {"saturation__mean": [None if w is None else float(hsv(w.rgb)[..., 1].mean() / 255)
                                         for w in work]}

and in a recipe `- saturation: {min_saturation: 0.1}`. The registry finds modules of this package
by scanning it; operators shipped in another distribution declare an entry point in the
`flywheel.operators` group (`saturation = my_pkg.saturation:Saturation`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Sequence

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


Comparison = Literal["<", "<=", ">", ">=", "==", "is_null"]
_COMPARE = {
    "<": lambda v, t: v < t,
    "<=": lambda v, t: v <= t,
    ">": lambda v, t: v > t,
    ">=": lambda v, t: v >= t,
    "==": lambda v, t: v == t,
}


@dataclass(frozen=True)
class Rule:
    """One rejection rule as data: the row fails `<operator>:<name>` when `column <compare> threshold`.

    The threshold is the parameter `param` (a number a recipe or `--set` changes) or, for verdict
    columns a barrier wrote, the constant `value`. A null score never fails a comparison (the
    operator could not score the row; it failed earlier or has nothing to judge) except under
    `is_null`, which fails exactly the nulls. `when` names a boolean parameter that switches the
    rule on. `detail` formats the evidence: fields `{column}`, `{value}`, `{compare}`, `{param}`,
    `{threshold}`, every parameter by name and every column in `context`; the default reads
    `entropy__hist=0.01 < min_entropy=0.1`. `calibrated`: the threshold is on a model's scale, so
    `flywheel calibrate` fits it to data.
    """

    name: str
    column: str
    compare: Comparison
    param: str | None = None
    value: Any = None
    when: str | None = None
    context: tuple[str, ...] = ()
    detail: str | None = None
    calibrated: bool = False

    def threshold(self, params: BaseModel) -> Any:
        return getattr(params, self.param) if self.param else self.value

    def columns(self) -> tuple[str, ...]:
        return (self.column, *self.context)

    def text(self) -> str:
        """`entropy__hist < min_entropy`: what fails, for `flywheel ops` and `flywheel explain`."""
        when = f" (when {self.when})" if self.when else ""
        if self.compare == "is_null":
            return f"{self.column} is null{when}"
        rhs = self.param if self.param else repr(self.value)
        return f"{self.column} {self.compare} {rhs}{when}"

    def evaluate(self, params: BaseModel, columns: dict[str, list]) -> list[str | None]:
        """The detail of each failing row, None where the row passes."""
        n = len(columns[self.column])
        if self.when and not getattr(params, self.when):
            return [None] * n
        thr = self.threshold(params)
        vals = columns[self.column]
        out: list[str | None] = []
        for i in range(n):
            v = vals[i]
            missing = v is None or (isinstance(v, float) and math.isnan(v))
            if self.compare == "is_null":
                failed = missing
            else:
                failed = not missing and _COMPARE[self.compare](v, thr)
            out.append(self._detail(params, columns, i, v, thr) if failed else None)
        return out

    def _detail(self, params: BaseModel, columns: dict[str, list], i: int, v: Any, thr: Any) -> str:
        if self.detail is None:
            if self.compare == "is_null":
                return f"{self.column} is null"
            return f"{self.column}={_fmt(v)} {self.compare} {self.param or 'value'}={_fmt(thr)}"
        fields = {k: _fmt(x) if isinstance(x, float) else x for k, x in params.model_dump().items()}
        fields.update({c: _fmt(columns[c][i]) for c in self.context})
        fields.update(column=self.column, value=_fmt(v), compare=self.compare, param=self.param, threshold=_fmt(thr))
        return self.detail.format(**fields)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


class Operator:
    """Base class. Subclasses set the class attributes and implement `score`.

    - `name` is the registry key and the reason prefix (`<name>:<rule>`).
    - `writes` are the stored score columns, each `<name>__<metric>`.
    - `rules` is the fixed reason vocabulary, as `Rule` data; `reject` applies them.
    - `reads` are table columns the operator needs besides the working copy: the input's columns
      and earlier operators' `writes` must cover them when the plan is built.
    - `needs_image`: score receives the decoded `Work` per row (None where decode failed).
    - `required_models()`: model-store names that must be installed before a run starts.
    """

    name: ClassVar[str]
    Params: ClassVar[type[Params]] = Params
    reads: ClassVar[tuple[str, ...]] = ()
    writes: ClassVar[tuple[str, ...]] = ()
    rules: ClassVar[tuple[Rule, ...]] = ()
    needs_image: ClassVar[bool] = True
    resources: ClassVar[Resources] = Resources()
    # Arrow types of `writes`, in order; float64 unless given.
    types: ClassVar[dict[str, pa.DataType]] = {}
    # Short description of each score: model, scale, direction (the "threshold card").
    cards: ClassVar[dict[str, str]] = {}

    def __init__(self, params: Params | dict | None = None):
        if params is None:
            params = {}
        self.params = params if isinstance(params, self.Params) else self.Params(**params)

    @classmethod
    def stateful(cls) -> bool:
        return cls.setup is not Operator.setup

    def setup(self) -> None:
        """Load models once per worker. Stateless operators leave this alone."""

    def required_models(self) -> tuple[str, ...]:
        """Model-store names this operator loads with its params (the curate preflight checks them)."""
        return ()

    def check_upstream(self, writers: dict[str, "Operator"]) -> list[str]:
        """Problems with the operators that write the columns this one reads (`writers`: column ->
        operator), e.g. an embedding made by another model than the one this operator expects."""
        return []

    def score(self, batch: pa.Table, work: Sequence[Work | None]) -> dict[str, Sequence[Any]]:
        """Return one sequence per column in `writes`, aligned with the batch rows.

        A row whose `work` is None (broken file) gets None in every column.
        """
        raise NotImplementedError

    def reject(self, table: pa.Table) -> list[list[Fail]]:
        """Failing rules per row from stored scores alone (never recomputes a score), in `rules` order."""
        out: list[list[Fail]] = [[] for _ in range(table.num_rows)]
        cols: dict[str, list] = {}
        for r in self.rules:
            for c in r.columns():
                if c not in cols:
                    cols[c] = table.column(c).to_pylist() if c in table.column_names else [None] * table.num_rows
            for i, d in enumerate(r.evaluate(self.params, cols)):
                if d is not None:
                    out[i].append(Fail(r.name, d))
        return out

    # -- helpers -----------------------------------------------------------------------------
    @classmethod
    def rule_names(cls) -> tuple[str, ...]:
        return tuple(r.name for r in cls.rules)

    @classmethod
    def rule(cls, name: str) -> Rule:
        return next(r for r in cls.rules if r.name == name)

    @classmethod
    def thresholds(cls) -> dict[str, list[Rule]]:
        """Score column -> the rules comparing it with a numeric parameter (report threshold lines)."""
        out: dict[str, list[Rule]] = {}
        for r in cls.rules:
            if r.param and r.compare in ("<", "<=", ">", ">="):
                out.setdefault(r.column, []).append(r)
        return out

    @classmethod
    def decision_columns(cls) -> tuple[str, ...]:
        """Columns `reject` reads: stored scores, or verdicts a barrier wrote."""
        return tuple(dict.fromkeys(c for r in cls.rules for c in r.columns()))

    @classmethod
    def column_type(cls, column: str) -> pa.DataType:
        return cls.types.get(column, pa.float64())

    @classmethod
    def schema(cls) -> pa.Schema:
        return pa.schema([(c, cls.column_type(c)) for c in cls.writes])


class Barrier(Operator):
    """An operator whose scores are per batch but whose decision needs the whole run (dedup,
    distribution). The engine stores `writes` per batch; after scoring, the pipeline calls
    `decide` once over the run's stored score columns (`decide_reads` plus `writes`) and stores the
    `decided` columns, which `rules` then compare.

    `prior_columns`: columns the decision also wants from accepted datasets already in the
    catalog. When `uses_prior()`, `decide` receives their folders as paths (each holds
    `data/*.parquet`); it reads what it needs and skips datasets that lack the columns.

    `deferred`: large stored columns (per-image features) left out of `table`; `decide` is then
    called with `rows=`, a `ParquetRows` over the same parts, and reads them for the few rows it
    needs, so the whole run's features never sit in memory at once.
    """

    decided: ClassVar[tuple[str, ...]] = ()
    deferred: ClassVar[tuple[str, ...]] = ()
    decide_reads: ClassVar[tuple[str, ...]] = ("id", "source", "width", "height")
    prior_columns: ClassVar[tuple[str, ...]] = ()
    # fields of the dataset contract (`flywheel.datasets.DECISION_FIELDS`) the decision fills
    dataset_fields: ClassVar[tuple[str, ...]] = ()

    def uses_prior(self) -> bool:
        return bool(self.prior_columns)

    def dataset_columns(self, table: pa.Table) -> dict[str, pa.Array]:
        """Values of `dataset_fields` for decided rows (`table` holds the `decided` columns)."""
        return {}

    def decide(self, table: pa.Table, prior: Sequence[str] | None = None, rows: "ParquetRows | None" = None
               ) -> dict[str, list]:
        """The `decided` columns, aligned with `table` (this run's rows)."""
        raise NotImplementedError


class ParquetRows:
    """Random access by row number to some columns of Parquet files read as one table (file order,
    then row order, as `pyarrow.dataset` reads a list of files). `take` streams the files once
    and keeps only the rows asked for."""

    def __init__(self, files: Sequence[str], columns: Sequence[str]):
        self.files, self.columns = list(files), list(columns)

    def take(self, rows: np.ndarray, columns: Sequence[str] | None = None) -> pa.Table:
        """The columns (all of this reader's, or `columns` of them) at these row numbers, in the order given."""
        import pyarrow.parquet as pq

        columns = list(columns) if columns is not None else self.columns
        rows = np.asarray(rows, dtype=np.int64)
        order = np.argsort(rows, kind="stable")
        want = rows[order]
        pieces, start = [], 0
        for f in self.files:
            pf = pq.ParquetFile(f)
            for rg in range(pf.num_row_groups):
                n = pf.metadata.row_group(rg).num_rows
                lo, hi = np.searchsorted(want, [start, start + n])
                if hi > lo:
                    t = pf.read_row_group(rg, columns=columns)
                    pieces.append(t.take(pa.array(want[lo:hi] - start)))
                start += n
        if not len(rows):
            return pa.table({c: pa.array([], pa.binary()) for c in columns})
        got = pa.concat_tables(pieces) if pieces else pa.table({})
        if got.num_rows != len(rows):
            raise IndexError(f"asked for {len(rows)} rows, the files hold {got.num_rows} of them (last row {start - 1})")
        if np.all(order == np.arange(len(rows))):
            return got  # asked in file order: no reordering copy
        back = np.empty(len(rows), dtype=np.int64)
        back[order] = np.arange(len(rows))
        return got.take(pa.array(back))


_REGISTRY: dict[str, type[Operator]] = {}
ENTRY_POINT_GROUP = "flywheel.operators"


def register(cls: type[Operator]) -> type[Operator]:
    """Class decorator: one registry, keyed by the operator name (also the reason prefix)."""
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"operator {cls.name!r} is registered twice")
    _validate(cls)
    _REGISTRY[cls.name] = cls
    return cls


def _validate(cls: type[Operator]) -> None:
    for col in cls.writes + tuple(getattr(cls, "decided", ())):
        if not col.startswith(cls.name + "__"):
            raise ValueError(f"{cls.name}: score column {col!r} must start with '{cls.name}__'")
    names = [r.name for r in cls.rules]
    if len(set(names)) != len(names):
        raise ValueError(f"{cls.name}: rule names repeat: {names}")
    fields = cls.Params.model_fields
    for r in cls.rules:
        for p in (r.param, r.when):
            if p and p not in fields:
                raise ValueError(f"{cls.name}: rule {r.name} names parameter {p!r}, which {cls.Params.__name__} lacks")


_scanned = False


def registry() -> dict[str, type[Operator]]:
    """Every operator: modules of this package (found by scanning it, imported once) and classes
    other distributions declare in the `flywheel.operators` entry-point group."""
    global _scanned
    if not _scanned:
        import importlib
        import pkgutil
        from importlib.metadata import entry_points

        import flywheel.filters as pkg

        for m in pkgutil.iter_modules(pkg.__path__):
            if not m.name.startswith("_"):
                importlib.import_module(f"{pkg.__name__}.{m.name}")
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            cls = ep.load()
            if not (isinstance(cls, type) and issubclass(cls, Operator)):
                raise TypeError(f"entry point {ep.name} = {ep.value} ({ENTRY_POINT_GROUP}) is not an Operator class")
            if cls.name != ep.name:
                raise ValueError(f"entry point {ep.name} = {ep.value}: the class is named {cls.name!r}")
            register(cls)
        _scanned = True
    return dict(_REGISTRY)


def get(name: str) -> type[Operator]:
    if not _scanned and name not in _REGISTRY and name.isidentifier() and not name.startswith("_"):
        # A worker needs its recipe's operators only: the module named after the operator is
        # imported alone. The full scan imports every operator module (numba with the dedup
        # index, the model operators' code): seconds of CPU in every Ray worker process, on a
        # machine whose cores the workers share. Any other name falls back to the scan.
        import importlib
        import importlib.util

        mod = f"{__name__.rpartition('.')[0]}.{name}"
        if importlib.util.find_spec(mod) is not None:
            importlib.import_module(mod)
    if name in _REGISTRY:
        return _REGISTRY[name]
    ops = registry()
    if name not in ops:
        raise KeyError(f"unknown operator {name!r}; known operators: {', '.join(sorted(ops))}")
    return ops[name]

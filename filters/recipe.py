"""Stage recipes: YAML lists of `- operator: {params}` after report section 2.3.

Stages nest: `extends: stageN-1` includes every operator of the parent in its order; an entry for
an operator the parent has overrides (merges into) its params, a new one is appended. So
`--recipe stage4` on raw input does all that stage 4 needs.

The decode step is no operator but has an entry like one (`- broken_file: {max_pixels: ...}`,
`--set broken_file.max_pixels=...`): its params are `Recipe.decode`, validated by `DecodeParams`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from flywheel.filters import base
from flywheel.filters.decode import Decode

RECIPES_DIR = Path(__file__).parent / "recipes"


@dataclass
class Step:
    name: str
    params: dict[str, Any]
    op: type[base.Operator] | None  # None: the operator is not available in this install

    def instance(self) -> base.Operator:
        assert self.op is not None
        return self.op(self.params)


@dataclass
class Recipe:
    name: str
    description: str
    work_size: int
    tasks: list[str]
    steps: list[Step]
    synthetic: bool = False
    source: str = ""
    notes: list[str] = field(default_factory=list)
    decode: dict[str, Any] = field(default_factory=dict)  # params of the decode step (`broken_file:` entry)
    # model -> revision the thresholds were set for (`model_revisions:` of the recipe and its parents)
    model_revisions: dict[str, str] = field(default_factory=dict)

    @property
    def hash(self) -> str:
        """Identifies what the recipe does: operators, their validated params, work size."""
        body = {
            "work_size": self.work_size,
            "tasks": self.tasks,
            "steps": [[Decode.name, self.decode_params().model_dump(mode="json")]]
            + [[s.name, _validated(s)] for s in self.steps],
        }
        return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def decode_params(self):
        return Decode.Params(**self.decode)

    def step(self, name: str) -> Step | None:
        return next((s for s in self.steps if s.name == name), None)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "description": self.description,
            "work_size": self.work_size,
            "tasks": self.tasks,
            "synthetic": self.synthetic,
            "operators": [{Decode.name: self.decode_params().model_dump(mode="json")}]
            + [{s.name: _validated(s)} for s in self.steps],
        }


def _validated(s: Step) -> dict:
    if s.op is None:
        return dict(s.params)
    return s.op.Params(**s.params).model_dump(mode="json")


def available() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def _read(ref: str) -> tuple[dict, str]:
    p = Path(ref)
    if p.suffix in (".yaml", ".yml") and p.exists():
        return yaml.safe_load(p.read_text()) or {}, str(p.resolve())
    p = RECIPES_DIR / f"{ref}.yaml"
    if not p.exists():
        raise FileNotFoundError(f"no recipe {ref!r}; built-in recipes: {', '.join(available())} (or pass a .yaml path)")
    return yaml.safe_load(p.read_text()) or {}, str(p)


def _entries(doc: dict, where: str) -> list[tuple[str, dict]]:
    out = []
    for item in doc.get("operators") or []:
        if isinstance(item, str):
            item = {item: {}}
        if not isinstance(item, dict) or len(item) != 1:
            raise ValueError(f"{where}: each operator entry is `- name: {{params}}`, got {item!r}")
        (name, params), = item.items()
        out.append((name, dict(params or {})))
    return out


def load(
    ref: str,
    overrides: dict[str, dict[str, Any]] | None = None,
    skip: set[str] | None = None,
) -> Recipe:
    """Resolve `ref` (a built-in name or a YAML path), apply `--set` overrides and `--skip`.

    Unknown operators and unknown or mistyped params are errors that name the known ones.
    """
    chain: list[tuple[dict, str]] = []
    seen = set()
    cur = ref
    while cur:
        if cur in seen:
            raise ValueError(f"recipe {ref!r}: `extends` loops through {cur!r}")
        seen.add(cur)
        doc, where = _read(cur)
        chain.append((doc, where))
        cur = doc.get("extends")
    chain.reverse()

    ordered: dict[str, dict] = {}
    meta: dict[str, Any] = {"work_size": 256, "tasks": ["t2i"], "synthetic": False, "description": ""}
    revisions: dict[str, str] = {}
    for doc, where in chain:
        for k in ("work_size", "tasks", "synthetic", "description"):
            if k in doc:
                meta[k] = doc[k]
        revisions.update({str(k): str(v) for k, v in (doc.get("model_revisions") or {}).items()})
        for name, params in _entries(doc, where):
            ordered.setdefault(name, {}).update(params)
    top, top_where = chain[-1]

    registry = base.registry()
    decode = ordered.pop(Decode.name, {})
    for name, params in (overrides or {}).items():
        if name == Decode.name:
            decode.update(params)
            continue
        if name not in ordered:
            if name not in registry:
                raise ValueError(f"--set {name}.…: unknown operator; known: {', '.join(sorted(registry))}")
            raise ValueError(f"--set {name}.…: recipe {top.get('name', ref)} does not use {name}; it uses {', '.join(ordered)}")
        ordered[name].update(params)

    notes = []
    skip = set(skip or ())
    if Decode.name in skip:
        raise ValueError("--skip broken_file: the decode step cannot be skipped; every other operator reads its working copy")
    for s in sorted(skip):
        if s not in registry and s not in ordered:
            raise ValueError(f"--skip {s}: unknown operator; known: {', '.join(sorted(registry))}")
        if s not in ordered:
            notes.append(f"--skip {s}: recipe does not use it; ignored")
    try:
        Decode.Params(**decode)
    except Exception as e:  # pydantic ValidationError
        raise ValueError(f"recipe {top.get('name', ref)}: invalid params for the decode step {Decode.name}: {e}") from None

    steps = []
    for name, params in ordered.items():
        if name in skip:
            notes.append(f"{name}: skipped (--skip)")
            continue
        op = registry.get(name)
        if op is not None:
            try:
                op.Params(**params)
            except Exception as e:  # pydantic ValidationError: say which operator and which key
                raise ValueError(f"recipe {top.get('name', ref)}: invalid params for {name}: {e}") from None
        steps.append(Step(name, params, op))
    return Recipe(
        name=top.get("name", Path(ref).stem),
        description=meta["description"],
        work_size=int(meta["work_size"]),
        tasks=list(meta["tasks"]),
        synthetic=bool(meta["synthetic"]),
        steps=steps,
        source=top_where,
        notes=notes,
        decode=decode,
        model_revisions=revisions,
    )


def parse_sets(sets: list[str]) -> dict[str, dict[str, Any]]:
    """`["entropy.min_entropy=3.5", ...]` -> {"entropy": {"min_entropy": 3.5}} (YAML-typed values)."""
    out: dict[str, dict[str, Any]] = {}
    for s in sets:
        key, eq, value = s.partition("=")
        op, dot, param = key.partition(".")
        if not eq or not dot or not op or not param:
            raise ValueError(f"--set {s!r}: expected OPERATOR.PARAM=VALUE, e.g. entropy.min_entropy=3.5")
        out.setdefault(op.strip(), {})[param.strip()] = yaml.safe_load(value)
    return out

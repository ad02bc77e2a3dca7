"""Checks a recipe must pass before a run starts, in milliseconds and without loading a model:

- models: every model the recipe's operators declare (`Operator.required_models()`, which follows
  params such as `clip.model`) is installed (`flywheel.models.store.preflight` answers for the names);
- columns: every column an operator reads is in the input or written by an earlier operator
  (columns, not values: a null caption passes), and operators agree on what they pass each other
  (`Operator.check_upstream`).
"""

from __future__ import annotations

from flywheel.filters import base
from flywheel.filters.decode import Decode
from flywheel.models import store


def model_needs(recipe) -> dict[str, list[str]]:
    """model -> the recipe's operators that need it, in recipe order."""
    need: dict[str, list[str]] = {}
    for s in recipe.steps:
        if s.op is None:
            continue
        for m in s.instance().required_models():
            need.setdefault(m, []).append(s.name)
    return need


def missing_models(recipe) -> list[store.Missing]:
    return store.preflight(model_needs(recipe))


def revision_warnings(recipe, recipe_ref: str) -> list[str]:
    return store.revision_warnings(model_needs(recipe), recipe.model_revisions, recipe_ref)


def column_problems(recipe, input_columns) -> list[str]:
    """What is wrong with the columns the recipe's operators read, one sentence each (what to do included)."""
    have = set(input_columns) | set(Decode.writes)
    writers: dict[str, base.Operator] = {}
    known = base.registry()
    problems = []
    for s in recipe.steps:
        if s.op is None:
            continue
        op = s.instance()
        for c in op.reads:
            if c in have:
                continue
            by = [n for n, cls in known.items() if c in cls.writes and n != s.name]
            fix = (f"add {' or '.join(by)} before {s.name} in the recipe, or " if by else "") + f"leave it out with --skip {s.name}"
            problems.append(f"operator {s.name} reads column {c!r}, which neither the input nor an earlier operator "
                            f"of the recipe writes: {fix}")
        problems += op.check_upstream({c: writers[c] for c in op.reads if c in writers})
        for c in op.writes + tuple(getattr(op, "decided", ())):
            have.add(c)
            writers[c] = op
    return problems

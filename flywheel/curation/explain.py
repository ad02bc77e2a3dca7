"""`flywheel explain`: every row of an id or source, across every dataset of the catalog, with
the operator, rule, score and threshold that decided it."""

from __future__ import annotations

import json

from flywheel.catalog import Catalog


def explain_rows(key: str) -> list[str]:
    cat = Catalog()
    con_rows = cat.query(
        "SELECT s.dataset, s.id, s.source, s.reject_reason, s.reject_reasons, s.reject_details, s.run_id,"
        " s.dedup_of FROM samples s WHERE s.source = ? OR s.id = ? OR (length(?) >= 8 AND starts_with(s.id, ?))"
        " ORDER BY s.dataset",
        [key, key, key, key],
    ).to_pylist() if _has_column(cat, "dedup_of") else cat.query(
        "SELECT s.dataset, s.id, s.source, s.reject_reason, s.reject_reasons, s.reject_details, s.run_id"
        " FROM samples s WHERE s.source = ? OR s.id = ? OR (length(?) >= 8 AND starts_with(s.id, ?)) ORDER BY s.dataset",
        [key, key, key, key],
    ).to_pylist()
    runs = {r["run_id"]: r for r in cat.execute("SELECT run_id, recipe, recipe_hash, params_json FROM runs")}
    out = []
    for r in con_rows:
        run = runs.get(r.get("run_id"))
        head = (f"[bold]{r['dataset']}[/]  source={r['source']}  id={r['id'][:16]}…  "
                f"run={r.get('run_id')}  recipe={run['recipe'] + ' ' + run['recipe_hash'] if run else '?'}")
        if not r["reject_reason"]:
            out.append(head + "\n  [green]kept[/]: passed every operator of the recipe")
            continue
        lines = [head, f"  [red]dropped[/]: reject_reason = {r['reject_reason']}"]
        for reason, detail in zip(r["reject_reasons"] or [], r["reject_details"] or []):
            op, _, rule = reason.partition(":")
            when = rule_text(reason)
            lines.append(f"    operator={op} rule={rule}: {detail}" + (f"  (fails when {when})" if when else ""))
        if r.get("dedup_of"):
            lines.append(f"    dedup_of: id={r['dedup_of']['id'][:16]}… source={r['dedup_of']['source']}")
        if run and run["params_json"]:
            p = json.loads(run["params_json"])
            if p.get("sets"):
                lines.append(f"    overrides (--set): {p['sets']}")
        out.append("\n".join(lines))
    return out


def rule_text(reason: str) -> str | None:
    """`entropy:flat` -> `entropy__hist < min_entropy`, from the operator's rules (None for
    `<op>:error:*` and for operators this install does not have)."""
    from flywheel.filters import base
    from flywheel.filters.decode import Decode

    op_name, _, rule = reason.partition(":")
    rule = rule.removesuffix(":source")
    ops = {**base.registry(), Decode.name: Decode}
    op = ops.get(op_name)
    if op is None or rule not in op.rule_names():
        return None
    return op.rule(rule).text()


def _has_column(cat: Catalog, col: str) -> bool:
    try:
        cat.query(f"SELECT {col} FROM samples LIMIT 0")
        return True
    except Exception:  # noqa: BLE001
        return False

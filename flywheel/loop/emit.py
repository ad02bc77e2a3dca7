"""Emission and lineage (report section 2.4, stage 3: "aggregating ... new datasets").

`emit(from_ref, add_approved=True)` writes the next version of a training dataset: every kept row
of `from_ref` plus every reviewer-approved sample not yet in it, through `DatasetWriter`
(immutable, atomic, registered as `name@vN`). Two columns say why each row is there:
`lineage_item` (the review item that added it; null for rows inherited from the parent) and
`lineage_signal`. The manifest lists the parents, the signals, every approval (item, reviewer,
time) and the recipe hashes of every dataset the rows came from.

`lineage(id)` answers "where did this come from and why is it here" for a dataset (its chain of
parents back to the curated source and the recipe) or a sample (every dataset that holds it; for
each, inherited from which parent or added by which review decision, for which signal, routed by
which evidence).
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

LINEAGE_FIELDS = [pa.field("lineage_item", pa.int64()), pa.field("lineage_signal", pa.string())]


def emit(from_ref, add_approved: bool = True, name: str | None = None, catalog=None, out: str | Path | None = None,
         queue: str | None = None, actor: str = "emit") -> dict:
    """Write `name`@v(N+1) from `from_ref` plus approved samples. Returns a summary."""
    from flywheel import config
    from flywheel.catalog import Catalog, open_dataset
    from flywheel.datasets import DatasetWriter
    from flywheel.loop import queue as rq

    cat = catalog or Catalog()
    base = open_dataset(from_ref, catalog=cat)
    name = name or base.manifest.name
    parent_schema = base.schema()
    kept_filter = pc.field("reject_reason").is_null() if "reject_reason" in parent_schema.names else None
    parent_t = base.to_table(filter=kept_filter)
    have = set(zip(parent_t.column("id").to_pylist(), parent_t.column("source").to_pylist()))
    have_ids = set(parent_t.column("id").to_pylist())
    approved = rq.approved(cat, queue=queue) if add_approved else []
    # group approved items by the dataset they were retrieved from; one read per dataset
    add_rows: list[pa.Table] = []
    skipped, approvals, signals, sources = {"already_in": 0, "missing": 0, "duplicate": 0}, [], {}, {}
    by_ds: dict[str, list[dict]] = {}
    for it in approved:
        if (it["sample_id"], it["source"]) in have or it["sample_id"] in have_ids:
            skipped["already_in"] += 1
            continue
        by_ds.setdefault(it["dataset"], []).append(it)
    taken: set[str] = set()
    for ds_ref, items in by_ds.items():
        src = open_dataset(ds_ref, catalog=cat)
        sources[src.ref] = src.manifest.recipe_hash
        ids = list({it["sample_id"] for it in items})
        t = src.to_table(filter=pc.field("id").isin(ids))
        key_rows = {(i, s): n for n, (i, s) in enumerate(zip(t.column("id").to_pylist(), t.column("source").to_pylist()))}
        pick, item_col, sig_col = [], [], []
        for it in items:
            n = key_rows.get((it["sample_id"], it["source"]))
            if n is None:
                skipped["missing"] += 1
                continue
            if it["sample_id"] in taken:  # approved for two signals: one row, the first decision
                skipped["duplicate"] += 1
                continue
            taken.add(it["sample_id"])
            pick.append(n)
            item_col.append(it["item_id"])
            sig_col.append(it["signal_id"])
            approvals.append({"item_id": it["item_id"], "sample_id": it["sample_id"], "source": it["source"],
                              "dataset": src.ref, "signal_id": it["signal_id"], "decided_by": it["decided_by"],
                              "decided_at": it["decided_at"], "reason": it["reason"], "queue": it["queue"]})
            signals.setdefault(it["signal_id"], 0)
            signals[it["signal_id"]] += 1
        if pick:
            sub = t.take(pa.array(pick, pa.int64()))
            sub = sub.append_column(LINEAGE_FIELDS[0], pa.array(item_col, pa.int64()))
            sub = sub.append_column(LINEAGE_FIELDS[1], pa.array(sig_col, pa.string()))
            add_rows.append(sub)
    # one schema for the parent and the added rows: the parent's, then any columns only they have
    schema = _without_lineage(parent_schema)
    for t in add_rows:
        schema = pa.unify_schemas([schema, _without_lineage(t.schema)], promote_options="permissive")
    schema = pa.schema(list(schema) + LINEAGE_FIELDS)
    inherited = parent_t
    if "lineage_item" not in inherited.column_names:
        inherited = inherited.append_column(LINEAGE_FIELDS[0], pa.nulls(inherited.num_rows, pa.int64()))
        inherited = inherited.append_column(LINEAGE_FIELDS[1], pa.nulls(inherited.num_rows, pa.string()))
    run_id = "emit-" + uuid.uuid4().hex[:10]
    dest = Path(out) if out else config.home() / "datasets" / f"{name}-{run_id}"
    parents = [base.ref] + sorted(s for s in sources if s != base.ref)
    recipe_hashes = {base.ref: base.manifest.recipe_hash, **sources}
    for p in base.manifest.parents:
        recipe_hashes.setdefault(p, None)
    extra = {
        "emitted_from": base.ref, "inherited_rows": inherited.num_rows, "added_rows": len(approvals),
        "signals": signals, "approvals": approvals, "recipe_hashes": recipe_hashes, "skipped": skipped,
        "parent_rejected_rows_dropped": base.manifest.rows - parent_t.num_rows if kept_filter is not None else 0,
    }
    cat.start_run(run_id, "emit", input=base.ref, params={"add_approved": add_approved, "name": name, "queue": queue})
    with DatasetWriter(dest, name=name, kind="emitted", catalog=cat, parents=parents, recipe=base.manifest.recipe,
                       recipe_hash=base.manifest.recipe_hash, run_id=run_id, extra=extra, schema=schema) as w:
        for b in inherited.to_batches(max_chunksize=2048):
            w.write(b)
        for t in add_rows:
            w.write(t)
        m = w.close(counts={"inherited": inherited.num_rows, "added": len(approvals)})
    cat.finish_run(run_id, "done", {"rows": m.rows, "added": len(approvals)})
    cat.audit(actor, "emit", m.ref, {"from": base.ref, "added": len(approvals), "signals": len(signals)})
    return {"dataset": m.ref, "path": str(dest), "rows": m.rows, "inherited": inherited.num_rows,
            "added": len(approvals), "signals": len(signals), "skipped": skipped, "run_id": run_id}


def _without_lineage(s: pa.Schema) -> pa.Schema:
    return pa.schema([f for f in s if f.name not in ("lineage_item", "lineage_signal")])


# -- lineage -------------------------------------------------------------------------------------
def lineage(id_or_ref: str, catalog=None) -> dict:
    """Explain a dataset (`name@vN` or path) or a sample id (a full or unique-prefix sha256)."""
    from flywheel.catalog import Catalog

    cat = catalog or Catalog()
    if "@" in id_or_ref or Path(id_or_ref).exists():
        return {"of": "dataset", **dataset_lineage(id_or_ref, cat)}
    return {"of": "sample", **sample_lineage(id_or_ref, cat)}


def dataset_lineage(ref, cat, depth: int = 0) -> dict:
    from flywheel.catalog import open_dataset

    ds = open_dataset(ref, catalog=cat)
    m = ds.manifest
    node = {"dataset": m.ref, "kind": m.kind, "rows": m.rows, "recipe": m.recipe, "recipe_hash": m.recipe_hash,
            "run_id": m.run_id, "code_version": m.code_version, "created_at": m.created_at, "counts": m.counts}
    if m.kind == "emitted":
        ex = m.extra
        node["why"] = (f"emitted from {ex.get('emitted_from')}: {ex.get('inherited_rows')} rows inherited, "
                       f"{ex.get('added_rows')} added by review decisions for {len(ex.get('signals') or {})} signals")
        node["signals"] = ex.get("signals")
        node["reviewers"] = sorted({a["decided_by"] for a in ex.get("approvals") or [] if a.get("decided_by")})
    elif m.kind in ("accepted", "rejected", "scored"):
        node["why"] = f"curated with recipe {m.recipe} ({(m.recipe_hash or '')[:12]}) in run {m.run_id}"
    else:
        node["why"] = f"{m.kind} dataset" + (f" ({json.dumps({k: v for k, v in m.extra.items() if k in ('generator', 'seed', 'split', 'gap')})})" if m.extra else "")
    node["parents"] = []
    if depth < 20:
        for p in m.parents:
            try:
                node["parents"].append(dataset_lineage(p, cat, depth + 1))
            except (KeyError, FileNotFoundError):
                node["parents"].append({"dataset": p, "missing": True})
    return node


def sample_lineage(sample_id: str, cat) -> dict:
    sid = sample_id.strip().lower()
    if len(sid) < 8 or any(c not in "0123456789abcdef" for c in sid):
        raise ValueError(f"{sample_id!r} is neither a dataset (name@vN or a path) nor a sample id (hex sha256, 8+ characters)")
    con_rows = _sample_rows(cat, sid)
    if not con_rows:
        raise KeyError(f"no sample with id {sample_id} in any dataset of the catalog; check the id with `flywheel sql`")
    full = {r["id"] for r in con_rows}
    if len(full) > 1:
        raise ValueError(f"the prefix {sample_id} matches {len(full)} samples; give more characters")
    full_id = full.pop()
    appearances = []
    for r in con_rows:
        a = {"dataset": r["dataset"], "source": r["source"], "reject_reason": r.get("reject_reason")}
        if r.get("lineage_item") is not None:
            a["added_by"] = _decision(cat, int(r["lineage_item"]))
        else:
            a["origin"] = _origin(cat, r["dataset"])
        appearances.append(a)
    return {"id": full_id, "appearances": appearances}


def _sample_rows(cat, sid: str) -> list[dict]:
    cols = "dataset, id, source"
    probe = cat.query("SELECT * FROM samples LIMIT 0")
    names = probe.column_names
    for c in ("reject_reason", "lineage_item", "lineage_signal"):
        if c in names:
            cols += f", {c}"
    where = "id = ?" if len(sid) == 64 else "starts_with(id, ?)"
    return cat.query(f"SELECT {cols} FROM samples WHERE {where} ORDER BY dataset", [sid]).to_pylist()


def _origin(cat, ref: str) -> dict:
    """Where an inherited row comes from: walk an emitted dataset's parents to the first that is
    not emitted (the curated or generated source)."""
    from flywheel.catalog import open_dataset

    ds = open_dataset(ref, catalog=cat)
    chain = [ds.ref]
    while ds.manifest.kind == "emitted" and ds.manifest.parents:
        ds = open_dataset(ds.manifest.parents[0], catalog=cat)
        chain.append(ds.ref)
    m = ds.manifest
    return {"via": chain, "source_dataset": m.ref, "kind": m.kind, "recipe": m.recipe, "recipe_hash": m.recipe_hash,
            "run_id": m.run_id}


def _decision(cat, item_id: int) -> dict:
    from flywheel.loop import queue as rq
    from flywheel.loop import signals as sg

    it = rq.get_item(cat, item_id)
    sig = sg.get(cat, it["signal_id"]) if it.get("signal_id") else None
    route = cat.execute("SELECT track, evidence_json, run_id, created_at FROM routes WHERE signal_id=? ORDER BY route_id DESC LIMIT 1",
                        (it["signal_id"],)) if it.get("signal_id") else []
    out = {
        "review_item": item_id, "queue": it["queue"], "decision": it["status"], "reviewer": it["decided_by"],
        "decided_at": it["decided_at"], "reason": it["reason"], "retrieved_from": it["dataset"],
        "retrieval_score": (it.get("payload") or {}).get("score"),
    }
    if sig:
        out["signal"] = {"signal_id": sig["signal_id"], "kind": sig["kind"], "prompt": sig["prompt"],
                         "concept": sig.get("concept"), "attribute": sig.get("attribute"), "source": sig["source"]}
    if route:
        ev = json.loads(route[0]["evidence_json"] or "{}")
        out["route"] = {"track": route[0]["track"], "run_id": route[0]["run_id"], "reason": ev.get("reason"),
                        "density": {k: ev.get("density", {}).get(k) for k in ("near", "tau", "min_near", "searched")}}
    out["source_origin"] = _origin(cat, it["dataset"]) if it.get("dataset") else None
    return out


def describe_lineage(info: dict) -> list[str]:
    """Readable lines for `flywheel lineage`."""
    lines: list[str] = []
    if info["of"] == "dataset":
        def walk(n: dict, depth: int) -> None:
            pad = "  " * depth
            if n.get("missing"):
                lines.append(f"{pad}{n['dataset']} (not in the catalog)")
                return
            lines.append(f"{pad}{n['dataset']} [{n['kind']}, {n['rows']} rows]: {n.get('why', '')}")
            if n.get("reviewers"):
                lines.append(f"{pad}  reviewers: {', '.join(n['reviewers'])}; signals: {n.get('signals')}")
            for p in n.get("parents", []):
                walk(p, depth + 1)
        walk(info, 0)
        return lines
    lines.append(f"sample {info['id']}")
    for a in info["appearances"]:
        head = f"  in {a['dataset']} as {a['source']}"
        if a.get("reject_reason"):
            head += f" (rejected: {a['reject_reason']})"
        lines.append(head)
        if "added_by" in a:
            d = a["added_by"]
            lines.append(f"    added by review item {d['review_item']}: {d['decision']} by {d['reviewer']}"
                         f"{' (' + d['reason'] + ')' if d.get('reason') else ''}, retrieved from {d['retrieved_from']}"
                         f" (similarity {d.get('retrieval_score')})")
            if d.get("signal"):
                s = d["signal"]
                lines.append(f"    for signal {s['signal_id']} ({s['kind']}): {s['prompt']!r}, concept {s.get('concept')}, failed {s.get('attribute')}")
            if d.get("route"):
                lines.append(f"    routed to {d['route']['track']} ({d['route']['run_id']}): {d['route']['reason']}")
            if d.get("source_origin"):
                o = d["source_origin"]
                lines.append(f"    source: {o['source_dataset']} [{o['kind']}]" + (f", recipe {o['recipe']}" if o.get("recipe") else ""))
        else:
            o = a["origin"]
            via = " <- ".join(o["via"])
            lines.append(f"    inherited: {via}; source {o['source_dataset']} [{o['kind']}]" + (f", recipe {o['recipe']} ({(o['recipe_hash'] or '')[:12]})" if o.get("recipe") else "")
                         + (f", run {o['run_id']}" if o.get("run_id") else ""))
    return lines

"""The review queue: samples the pre-training track retrieved for a signal wait here until a
reviewer approves or rejects them (report section 2.4). The dashboard and the
HTTP API are thin layers over these functions; the emitter reads `approved()`.

Pure Python over the catalog's SQLite tables (`review_items`, `review_votes`, `review_batches`,
`audit_log`). Every write is one short `BEGIN IMMEDIATE` transaction, so a review server up for
days never holds the catalog against curation runs and flows.

Concurrency is optimistic: a decision is an UPDATE that applies only `WHERE status='pending'`
(and `version = expected_version` when the caller read one). Of two reviewers deciding one item,
the loser's UPDATE touches no row and they get `AlreadyDecided` naming who decided it and when.
Repeating one's own request (a double click, a retried POST) is answered with the stored result.
"""

from __future__ import annotations

import json
import random
import re
import sqlite3
import time
import uuid
from typing import Any, Iterable

from flywheel.stats import wilson

DECISIONS = ("approved", "rejected")
STATUSES = ("pending", "approved", "rejected")
# Reason codes the dashboard offers; the API accepts any short text.
REASONS = {
    "approved": ("relevant", "good_example", "other"),
    "rejected": ("off_concept", "low_quality", "caption_wrong", "duplicate", "unsafe", "watermark_or_text", "other"),
}
MAX_REASON = 500
_ACTION = {"approved": "review.approve", "rejected": "review.reject"}
_BULK_CHUNK = 500  # items per write transaction: a long bulk decision never holds the lock for long


class ReviewError(Exception):
    """Base of the queue's errors; messages say what to do next."""


class ItemNotFound(ReviewError, KeyError):
    def __init__(self, item_id: int):
        self.item_id = item_id
        super().__init__(f"no review item {item_id}; list items with list_items() or the queue page")

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


class AlreadyDecided(ReviewError):
    """Someone decided the item first (or this reviewer decided it differently before)."""

    def __init__(self, by: str, at: float, decision: str, item_id: int | None = None):
        self.by, self.at, self.decision, self.item_id = by, at, decision, item_id
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at)) if at else "earlier"
        super().__init__(f"item {item_id} was already {decision} by {by} at {when}; nothing changed, move on to the next item")


class VersionConflict(ReviewError):
    def __init__(self, item_id: int, expected: int, actual: int):
        self.item_id, self.expected, self.actual = item_id, expected, actual
        super().__init__(f"item {item_id} changed since it was read (version {actual}, expected {expected}); reload it and decide again")


# -- helpers -----------------------------------------------------------------------------------
# One vote per (item, reviewer); a later vote replaces the earlier one (portable upsert).
_VOTE_UPSERT = ("INSERT INTO review_votes VALUES (?,?,?,?,?,?) ON CONFLICT (item_id, reviewer) DO UPDATE SET"
                " decision = excluded.decision, reason = excluded.reason, kind = excluded.kind, at = excluded.at")


def _item(row: sqlite3.Row | None) -> dict | None:
    if row is None:
        return None
    d = dict(row)
    d["payload"] = json.loads(d.pop("payload_json") or "{}")
    d["sample"] = json.loads(d.pop("sample_json", None) or "null")
    return d


def _check_decision(decision: str, reason: str | None) -> None:
    if decision not in DECISIONS:
        raise ReviewError(f"decision must be one of {', '.join(DECISIONS)}, not {decision!r}")
    if reason is not None and len(reason) > MAX_REASON:
        raise ReviewError(f"reason is {len(reason)} characters; keep it under {MAX_REASON}")


def _where(queue: str | None, signal_id: str | None, status: str | None, track: str | None,
           after_id: int | None = None, max_id: int | None = None) -> tuple[str, list]:
    clauses, args = [], []
    for col, val in (("queue", queue), ("signal_id", signal_id), ("status", status), ("track", track)):
        if val is not None:
            clauses.append(f"{col} = ?")
            args.append(val)
    if after_id is not None:
        clauses.append("item_id > ?")
        args.append(int(after_id))
    if max_id is not None:
        clauses.append("item_id <= ?")
        args.append(int(max_id))
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", args


def _bump(con: sqlite3.Connection, counts: dict[tuple, int]) -> None:
    """Apply count changes {(queue, signal_id, track, status): delta} to `review_counts` inside
    the caller's transaction (every write to review_items in this module does)."""
    for (queue, signal_id, track, status), delta in counts.items():
        if delta:
            con.execute("INSERT INTO review_counts VALUES (?,?,?,?,?) ON CONFLICT (queue, signal_id, track, status)"
                        " DO UPDATE SET n = review_counts.n + excluded.n", (queue, signal_id or "", track or "", status, delta))


def recount(cat) -> int:
    """Rebuild `review_counts` from review_items (after rows were written around this module)."""
    with cat.tx() as con:
        con.execute("DELETE FROM review_counts")
        con.execute("INSERT INTO review_counts SELECT queue, COALESCE(signal_id, ''), COALESCE(track, ''), status,"
                    " COUNT(*) FROM review_items GROUP BY 1, 2, 3, 4")
        return con.execute("SELECT COUNT(*) FROM review_counts").fetchone()[0]


# -- what an item shows ------------------------------------------------------------------------
# Payload keys that once named a file for the thumbnail. Items reference samples, never paths:
# an item carrying one is refused rather than silently ignored.
PATH_KEYS = ("path", "image_path", "image_uri", "thumbnail", "image", "image_b64")
_DATASET_REF = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*@v[0-9]{1,9}$")


class SampleNotFound(ReviewError):
    """Items that name no dataset row or stored image; `problems` lists them by position."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        more = f" and {len(problems) - 10} more" if len(problems) > 10 else ""
        super().__init__("items must reference a sample in the catalog (a dataset row `name@vN`, id and source, or an "
                         "image stored with a signal, by its SHA-256), never a path: " + "; ".join(problems[:10]) + more)


def resolve_samples(cat, items: list[dict]) -> list[dict]:
    """The catalog's facts about each item's sample: a row of a ready dataset (exact `name@vN`,
    the row's `id` and `source`), or an image in the signal store (`dataset` empty, `sample_id`
    its SHA-256). Raises `SampleNotFound` naming every item that references neither, or that
    carries a path in its payload. Reads the id/source/width/height columns once per dataset."""
    import pyarrow.compute as pc

    from flywheel.datasets import Dataset
    from flywheel.loop import blobs

    problems: list[str] = []
    facts: list[dict | None] = [None] * len(items)
    by_ds: dict[str, list[int]] = {}
    for i, it in enumerate(items):
        bad = [k for k in PATH_KEYS if k in (it.get("payload") or {})]
        if bad:
            problems.append(f"item {i}: payload key(s) {', '.join(bad)} name a file; the image is read from the sample only")
        elif it.get("dataset"):
            if not _DATASET_REF.match(str(it["dataset"])):
                problems.append(f"item {i}: dataset {str(it['dataset'])[:100]!r} is not a `name@vN` reference")
            elif not it.get("source"):
                problems.append(f"item {i}: a dataset row is named by id and source; source is missing")
            else:
                by_ds.setdefault(it["dataset"], []).append(i)
        else:
            got = blobs.lookup(cat, str(it.get("sample_id") or ""))
            if got is None:
                problems.append(f"item {i}: no dataset given and {str(it.get('sample_id'))[:80]!r} is not an image in the "
                                "signal store")
            else:
                facts[i] = {"kind": "blob", "sha256": got["sha256"], "width": got["width"], "height": got["height"],
                            "format": got["format"]}
    for ref, idx in by_ds.items():
        try:
            ds = Dataset(cat.resolve_dataset(ref))
        except (KeyError, FileNotFoundError):
            problems += [f"item {i}: dataset {ref} is not in the catalog" for i in idx]
            continue
        names = ds.schema().names
        cols = [c for c in ("id", "source", "width", "height") if c in names]
        wanted = sorted({str(items[i]["sample_id"]) for i in idx})
        t = ds.to_table(columns=cols, filter=pc.field("id").isin(wanted)) if "id" in names else None
        rows = {(r["id"], r.get("source")): r for r in (t.to_pylist() if t is not None else [])}
        for i in idx:
            r = rows.get((items[i]["sample_id"], items[i]["source"]))
            if r is None:
                problems.append(f"item {i}: {ref} has no row with id {str(items[i]['sample_id'])[:80]!r} and source "
                                f"{str(items[i]['source'])[:200]!r}")
            else:
                facts[i] = {"kind": "dataset", "dataset": ref, "id": r["id"], "source": r.get("source"),
                            "width": r.get("width"), "height": r.get("height")}
    if problems:
        raise SampleNotFound(problems)
    return facts  # type: ignore[return-value]


# -- enqueue and read --------------------------------------------------------------------------
def enqueue(cat, queue: str, items: list[dict], actor: str = "router") -> list[int]:
    """Queue samples for review; returns their item ids in order. Idempotent per
    (queue, signal_id, sample_id, source): queueing a sample again returns the existing id.
    Item keys: signal_id, sample_id, source, dataset (`name@vN`), payload (dict), track, and
    `sample`: what `resolve_samples` verified (callers taking items from outside pass them
    through it first; the API does)."""
    if not queue or not isinstance(queue, str):
        raise ReviewError("queue must be a non-empty name such as 'pretrain'")
    now = time.time()
    rows = []
    for i, it in enumerate(items):
        if not it.get("sample_id"):
            raise ReviewError(f"item {i} has no sample_id; every queued item names the sample it shows")
        payload = it.get("payload") or {}
        rows.append((
            queue, it.get("signal_id"), it["sample_id"], it.get("source"), it.get("dataset"),
            json.dumps(payload, default=str), it.get("track") or payload.get("track"), now,
            json.dumps(it["sample"]) if it.get("sample") else None,
        ))
    ids: list[int] = []
    new = 0
    for start in range(0, len(rows), 5000):
        chunk = rows[start:start + 5000]
        with cat.tx() as con:
            added: dict[tuple, int] = {}
            for r in chunk:
                # portable (SQLite >= 3.35 and PostgreSQL): the new id comes back, an existing key none
                got = con.execute(
                    "INSERT INTO review_items (queue, signal_id, sample_id, source, dataset, payload_json,"
                    " track, created_at, sample_json) VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING"
                    " RETURNING item_id", r).fetchone()
                if got is not None:
                    ids.append(got[0])
                    new += 1
                    key = (r[0], r[1], r[6], "pending")
                    added[key] = added.get(key, 0) + 1
                else:
                    ids.append(con.execute(
                        "SELECT item_id FROM review_items WHERE queue = ? AND COALESCE(signal_id, '') = ?"
                        " AND COALESCE(sample_id, '') = ? AND COALESCE(source, '') = ?",
                        (r[0], r[1] or "", r[2] or "", r[3] or "")).fetchone()[0])
            _bump(con, added)
            if start + len(chunk) >= len(rows):
                cat.audit(actor, "review.enqueue", f"queue:{queue}", {"items": len(rows), "new": new}, con=con)
    return ids


def list_items(cat, queue: str | None = None, signal_id: str | None = None, status: str | None = "pending",
               after_id: int | None = None, limit: int = 50, track: str | None = None,
               max_id: int | None = None) -> list[dict]:
    """One page of items in id order, after `after_id` (keyset pagination: a page costs the same
    at item 10 and at item 1,000,000). `status=None` lists every status."""
    limit = max(1, min(int(limit), 1000))
    where, args = _where(queue, signal_id, status, track, after_id, max_id)
    rows = cat.execute(f"SELECT * FROM review_items{where} ORDER BY item_id LIMIT ?", (*args, limit))
    return [_item(r) for r in rows]


def count_items(cat, queue: str | None = None, signal_id: str | None = None, status: str | None = "pending",
                track: str | None = None, max_id: int | None = None, cap: int | None = None) -> int:
    """How many items match; with `cap`, stops counting there (a page shows "10000+")."""
    where, args = _where(queue, signal_id, status, track, None, max_id)
    if cap is None:
        return cat.execute(f"SELECT COUNT(*) AS n FROM review_items{where}", args)[0]["n"]
    return cat.execute(f"SELECT COUNT(*) AS n FROM (SELECT 1 FROM review_items{where} LIMIT ?) capped", (*args, int(cap)))[0]["n"]


def max_item_id(cat, queue: str | None = None, signal_id: str | None = None, status: str | None = "pending",
                track: str | None = None) -> int | None:
    where, args = _where(queue, signal_id, status, track)
    return cat.execute(f"SELECT MAX(item_id) AS m FROM review_items{where}", args)[0]["m"]


def get_item(cat, item_id: int) -> dict:
    item = _item(next(iter(cat.execute("SELECT * FROM review_items WHERE item_id = ?", (int(item_id),))), None))
    if item is None:
        raise ItemNotFound(item_id)
    return item


def groups(cat, status: str = "pending") -> list[dict]:
    """Counts per (queue, signal, track) for the queue index page (from `review_counts`)."""
    rows = cat.execute(
        "SELECT queue, NULLIF(signal_id, '') AS signal_id, NULLIF(track, '') AS track, n FROM review_counts"
        " WHERE status = ? AND n > 0 ORDER BY queue, signal_id, track", (status,))
    return [dict(r) for r in rows]


# -- decisions ---------------------------------------------------------------------------------
def _decide_in(con: sqlite3.Connection, cat, item_id: int, decision: str, reviewer: str, reason: str | None,
               expected_version: int | None, request_id: str | None, kind: str = "decide") -> dict:
    """The decision inside an open write transaction; returns the item plus `applied`."""
    now = time.time()
    sql = ("UPDATE review_items SET status = ?, reason = ?, decided_by = ?, decided_at = ?, request_id = ?,"
           " version = version + 1 WHERE item_id = ? AND status = 'pending'")
    args: list[Any] = [decision, reason, reviewer, now, request_id, int(item_id)]
    if expected_version is not None:
        sql += " AND version = ?"
        args.append(int(expected_version))
    cur = con.execute(sql, args)
    row = _item(con.execute("SELECT * FROM review_items WHERE item_id = ?", (int(item_id),)).fetchone())
    if row is None:
        raise ItemNotFound(item_id)
    if cur.rowcount == 0:
        if row["status"] == "pending":
            raise VersionConflict(item_id, expected_version, row["version"])
        same_request = request_id is not None and row["request_id"] == request_id
        if row["decided_by"] == reviewer and row["status"] == decision and (same_request or request_id is None or row["request_id"] is None):
            return {**row, "applied": False, "repeated": True}
        raise AlreadyDecided(row["decided_by"], row["decided_at"], row["status"], item_id)
    con.execute(_VOTE_UPSERT, (int(item_id), reviewer, decision, reason, kind, now))
    group = (row["queue"], row["signal_id"], row["track"])
    _bump(con, {(*group, "pending"): -1, (*group, decision): 1})
    cat.audit(reviewer, _ACTION[decision], f"review_item:{item_id}", {
        "item_id": int(item_id), "decision": decision, "reason": reason, "queue": row["queue"],
        "signal_id": row["signal_id"], "sample_id": row["sample_id"], "dataset": row["dataset"],
        "request_id": request_id, "kind": kind,
    }, con=con)
    return {**row, "applied": True, "repeated": False}


def decide(cat, item_id: int, decision: str, reviewer: str, reason: str | None = None,
           expected_version: int | None = None, request_id: str | None = None) -> dict:
    """Approve or reject one pending item. Raises `AlreadyDecided(by, at, decision)` when someone
    else got there first, `VersionConflict` when the item changed since `expected_version`.
    The audit row is written in the same transaction as the decision."""
    _check_decision(decision, reason)
    if not reviewer:
        raise ReviewError("a decision needs the reviewer's name")
    with cat.tx() as con:
        return _decide_in(con, cat, item_id, decision, reviewer, reason, expected_version, request_id)


def undo_window() -> float:
    """Seconds within which reviewers may take back their own decision (FLYWHEEL_UNDO_SECONDS)."""
    import os

    return float(os.environ.get("FLYWHEEL_UNDO_SECONDS", 60))


def undo(cat, item_id: int, reviewer: str, window: float | None = None) -> dict:
    """Take back one's own decision on one item within `window` seconds: the item is pending
    again (version bumped, so a page showing the old state conflicts), the vote is removed and
    the undo is audited with what it undid. Only the decider's own single decision can be undone:
    not someone else's, not a bulk or QA decision, not one another reviewer already checked."""
    window = undo_window() if window is None else window
    with cat.tx() as con:
        row = _item(con.execute("SELECT * FROM review_items WHERE item_id = ?", (int(item_id),)).fetchone())
        if row is None:
            raise ItemNotFound(item_id)
        if row["status"] == "pending":
            raise ReviewError(f"item {item_id} is pending; there is no decision to undo")
        if row["decided_by"] != reviewer:
            raise ReviewError(f"item {item_id} was decided by {row['decided_by']}; only they can undo it")
        vote = con.execute("SELECT kind FROM review_votes WHERE item_id = ? AND reviewer = ?", (int(item_id), reviewer)).fetchone()
        if vote is None or vote[0] != "decide":
            raise ReviewError(f"item {item_id} was decided by a {vote[0] if vote else 'bulk'} decision; only a single "
                              "decision can be undone")
        age = time.time() - (row["decided_at"] or 0)
        if age > window:
            raise ReviewError(f"the decision on item {item_id} is {age:.0f} s old; it can be undone within {window:.0f} s "
                              "only (ask an admin)")
        others = con.execute("SELECT reviewer FROM review_votes WHERE item_id = ? AND reviewer != ?",
                             (int(item_id), reviewer)).fetchone()
        if others is not None:
            raise ReviewError(f"{others[0]} already gave a second opinion on item {item_id}; it cannot be undone")
        con.execute("UPDATE review_items SET status = 'pending', reason = NULL, decided_by = NULL, decided_at = NULL,"
                    " request_id = NULL, version = version + 1 WHERE item_id = ?", (int(item_id),))
        con.execute("DELETE FROM review_votes WHERE item_id = ? AND reviewer = ?", (int(item_id), reviewer))
        group = (row["queue"], row["signal_id"], row["track"])
        _bump(con, {(*group, row["status"]): -1, (*group, "pending"): 1})
        cat.audit(reviewer, "review.undo", f"review_item:{item_id}", {
            "item_id": int(item_id), "undone": row["status"], "reason": row["reason"], "decided_at": row["decided_at"],
            "seconds_after": round(age, 1), "queue": row["queue"], "sample_id": row["sample_id"]}, con=con)
        return get_item_in(con, item_id)


def get_item_in(con: sqlite3.Connection, item_id: int) -> dict:
    item = _item(con.execute("SELECT * FROM review_items WHERE item_id = ?", (int(item_id),)).fetchone())
    if item is None:
        raise ItemNotFound(item_id)
    return item


def bulk_decide(cat, item_ids: Iterable[int], decision: str, reviewer: str, reason: str | None = None,
                kind: str = "bulk") -> dict:
    """Decide many items; each still applies only if pending. Returns counts. Set-based: one
    UPDATE ... RETURNING per chunk, then the votes, audit rows and counts of the items it changed,
    in the same transaction."""
    _check_decision(decision, reason)
    if not reviewer:
        raise ReviewError("a decision needs the reviewer's name")
    ids = list(dict.fromkeys(int(i) for i in item_ids))
    out = {"applied": 0, "already_decided": 0, "repeated": 0, "missing": 0, "applied_ids": []}
    for start in range(0, len(ids), _BULK_CHUNK):
        chunk = ids[start:start + _BULK_CHUNK]
        marks = ",".join("?" * len(chunk))
        with cat.tx() as con:
            now = time.time()
            changed = con.execute(
                "UPDATE review_items SET status = ?, reason = ?, decided_by = ?, decided_at = ?, request_id = NULL,"
                f" version = version + 1 WHERE item_id IN ({marks}) AND status = 'pending'"
                " RETURNING item_id, queue, signal_id, track, sample_id, dataset",
                (decision, reason, reviewer, now, *chunk)).fetchall()
            got = {r["item_id"] for r in changed}
            rest = [i for i in chunk if i not in got]
            if rest:
                seen = {r["item_id"]: r for r in con.execute(
                    f"SELECT item_id, status, decided_by FROM review_items WHERE item_id IN ({','.join('?' * len(rest))})", rest)}
                for i in rest:
                    r = seen.get(i)
                    if r is None:
                        out["missing"] += 1
                    elif r["decided_by"] == reviewer and r["status"] == decision:
                        out["repeated"] += 1
                    else:
                        out["already_decided"] += 1
            if not changed:
                continue
            con.executemany(_VOTE_UPSERT,
                            [(r["item_id"], reviewer, decision, reason, kind, now) for r in changed])
            cat.audit_many(
                [(now, reviewer, _ACTION[decision], f"review_item:{r['item_id']}", json.dumps({
                    "item_id": r["item_id"], "decision": decision, "reason": reason, "queue": r["queue"],
                    "signal_id": r["signal_id"], "sample_id": r["sample_id"], "dataset": r["dataset"],
                    "request_id": None, "kind": kind})) for r in changed], con=con)
            delta: dict[tuple, int] = {}
            for r in changed:
                g = (r["queue"], r["signal_id"], r["track"])
                delta[(*g, "pending")] = delta.get((*g, "pending"), 0) - 1
                delta[(*g, decision)] = delta.get((*g, decision), 0) + 1
            _bump(con, delta)
            out["applied"] += len(changed)
            out["applied_ids"] += sorted(got)
    return out


def bulk_decide_filter(cat, decision: str, reviewer: str, reason: str | None = None, *, queue: str | None = None,
                       signal_id: str | None = None, track: str | None = None, max_id: int | None = None,
                       exclude: Iterable[int] = ()) -> dict:
    """Decide every pending item matching a filter, up to `max_id` (the newest item the reviewer
    saw, so items queued after the page was rendered are never decided unseen)."""
    skip = set(int(i) for i in exclude)
    total = {"applied": 0, "already_decided": 0, "repeated": 0, "missing": 0, "applied_ids": []}
    after = None
    while True:
        where, args = _where(queue, signal_id, "pending", track, after, max_id)
        page = [r["item_id"] for r in cat.execute(f"SELECT item_id FROM review_items{where} ORDER BY item_id LIMIT 5000", args)]
        if not page:
            break
        after = page[-1]
        r = bulk_decide(cat, [i for i in page if i not in skip], decision, reviewer, reason)
        for k in ("applied", "already_decided", "repeated", "missing"):
            total[k] += r[k]
        total["applied_ids"] += r["applied_ids"]
    cat.audit(reviewer, "review.bulk", f"queue:{queue or '*'}", {
        "decision": decision, "reason": reason, "signal_id": signal_id, "track": track, "max_id": max_id,
        **{k: v for k, v in total.items() if k != "applied_ids"}})
    return total


def approved(cat, queue: str | None = None, signal_id: str | None = None) -> list[dict]:
    """Every approved item (for emission): sample, source, dataset, signal, reviewer, time."""
    where, args = _where(queue, signal_id, "approved", None)
    return [_item(r) for r in cat.execute(f"SELECT * FROM review_items{where} ORDER BY item_id", args)]


# -- second opinions (agreement) -----------------------------------------------------------------
def check(cat, item_id: int, reviewer: str, decision: str, reason: str | None = None) -> dict:
    """A second opinion on a decided item: recorded as a vote for agreement statistics, the
    item's decision is unchanged. A reviewer cannot check their own decision."""
    _check_decision(decision, reason)
    with cat.tx() as con:
        row = _item(con.execute("SELECT * FROM review_items WHERE item_id = ?", (int(item_id),)).fetchone())
        if row is None:
            raise ItemNotFound(item_id)
        if row["status"] == "pending":
            raise ReviewError(f"item {item_id} is still pending; decide it on the queue page instead")
        if row["decided_by"] == reviewer:
            raise ReviewError(f"item {item_id} was decided by you; a second opinion must come from another reviewer")
        cur = con.execute("INSERT INTO review_votes VALUES (?,?,?,?,?,?) ON CONFLICT DO NOTHING",
                          (int(item_id), reviewer, decision, reason, "check", time.time()))
        if cur.rowcount:
            cat.audit(reviewer, "review.check", f"review_item:{item_id}", {
                "item_id": int(item_id), "decision": decision, "reason": reason, "original": row["status"],
                "original_by": row["decided_by"]}, con=con)
        return {**row, "check": decision, "agrees": decision == row["status"], "applied": bool(cur.rowcount)}


def items_to_check(cat, reviewer: str, queue: str | None = None, n: int = 20, recent: int = 2000) -> list[dict]:
    """A random sample of the `recent` latest items others decided that `reviewer` has not voted
    on (bounded, so the page costs the same with a million decisions behind it)."""
    inner = "SELECT * FROM review_items WHERE status IN ('approved', 'rejected') AND decided_by != ?"
    args: list[Any] = [reviewer]
    if queue:
        inner += " AND queue = ?"
        args.append(queue)
    rows = cat.execute(
        f"SELECT r.* FROM ({inner} ORDER BY decided_at DESC LIMIT ?) r LEFT JOIN review_votes v"
        " ON v.item_id = r.item_id AND v.reviewer = ? WHERE v.item_id IS NULL ORDER BY RANDOM() LIMIT ?",
        (*args, int(recent), reviewer, int(n)))
    return [_item(r) for r in rows]


# -- sampled QA batches --------------------------------------------------------------------------
def create_batch(cat, created_by: str, *, queue: str | None = None, signal_id: str | None = None,
                 track: str | None = None, sample_size: int = 20, max_error: float = 0.1, seed: int | None = None) -> dict:
    """Freeze the pending items matching a filter as a batch and draw a random sample of it for
    review; the batch is accepted or rejected as a whole by the sample's error rate."""
    with cat.tx() as con:
        where, args = _where(queue, signal_id, "pending", track)
        ids = [r[0] for r in con.execute(f"SELECT item_id FROM review_items{where} ORDER BY item_id", args)]
        if not ids:
            raise ReviewError("no pending items match this filter; pick another queue or signal")
        sample = sorted(random.Random(seed).sample(ids, min(int(sample_size), len(ids))))
        batch_id = uuid.uuid4().hex[:12]
        flt = {"queue": queue, "signal_id": signal_id, "track": track, "max_id": ids[-1]}
        con.execute("INSERT INTO review_batches (batch_id, queue, filter_json, sample_json, size, max_error, created_by,"
                    " created_at) VALUES (?,?,?,?,?,?,?,?)",
                    (batch_id, queue, json.dumps(flt), json.dumps(sample), len(ids), float(max_error), created_by, time.time()))
        cat.audit(created_by, "review.qa_batch", f"batch:{batch_id}", {**flt, "size": len(ids), "sample": len(sample),
                                                                      "max_error": max_error}, con=con)
    return batch_status(cat, batch_id)


def batch_status(cat, batch_id: str) -> dict:
    rows = cat.execute("SELECT * FROM review_batches WHERE batch_id = ?", (batch_id,))
    if not rows:
        raise ReviewError(f"no QA batch {batch_id}; start one from the QA page")
    b = dict(rows[0])
    flt, sample = json.loads(b.pop("filter_json")), json.loads(b.pop("sample_json"))
    got = {r["item_id"]: r["status"] for r in cat.execute(
        f"SELECT item_id, status FROM review_items WHERE item_id IN ({','.join('?' * len(sample))})", sample)}
    reviewed = [i for i in sample if got.get(i) in DECISIONS]
    errors = sum(got[i] == "rejected" for i in reviewed)
    n = len(reviewed)
    rate = errors / n if n else None
    lo, hi = wilson(errors, n)  # 95%, for the error rate of the reviewed sample
    done = n == len(sample)
    recommend = None if not done else ("accept" if rate <= b["max_error"] else "reject")
    b["result"] = json.loads(b.pop("result_json") or "null")
    return {**b, "filter": flt, "sample": sample, "reviewed": n, "errors": errors, "error_rate": rate,
            "ci_low": lo, "ci_high": hi, "done": done, "recommend": recommend,
            "pending_sample": [i for i in sample if got.get(i) == "pending"]}


def close_batch(cat, batch_id: str, accept: bool, reviewer: str) -> dict:
    """Apply the batch decision to its unreviewed items (those frozen when it was created and still
    pending). Every sampled item must have been reviewed first."""
    st = batch_status(cat, batch_id)
    if st["status"] != "open":
        raise ReviewError(f"QA batch {batch_id} is already {st['status']}")
    if not st["done"]:
        raise ReviewError(f"review the {len(st['pending_sample'])} remaining sampled items before closing batch {batch_id}")
    decision = "approved" if accept else "rejected"
    reason = f"qa_batch:{batch_id} error_rate={st['error_rate']:.3f} n={st['reviewed']}"
    f = st["filter"]
    res = bulk_decide_filter(cat, decision, reviewer, reason, queue=f["queue"], signal_id=f["signal_id"],
                             track=f["track"], max_id=f["max_id"], exclude=st["sample"])
    result = {"decision": decision, "applied": res["applied"], "already_decided": res["already_decided"],
              "error_rate": st["error_rate"], "ci": [st["ci_low"], st["ci_high"]]}
    with cat.tx() as con:
        con.execute("UPDATE review_batches SET status = ?, decided_by = ?, decided_at = ?, result_json = ? WHERE batch_id = ?",
                    ("accepted" if accept else "rejected", reviewer, time.time(), json.dumps(result), batch_id))
        cat.audit(reviewer, "review.qa_close", f"batch:{batch_id}", result, con=con)
    return {**batch_status(cat, batch_id), "applied": res["applied"]}


def batches(cat, limit: int = 50) -> list[dict]:
    return [dict(r) for r in cat.execute(
        "SELECT batch_id, queue, size, max_error, status, created_by, created_at, decided_by FROM review_batches"
        " ORDER BY created_at DESC LIMIT ?", (limit,))]


# -- statistics --------------------------------------------------------------------------------
def stats(cat, since: float | None = None) -> dict:
    """Counts per queue and status; per reviewer: decisions, approvals, throughput (decisions per
    active hour: gaps over 10 minutes do not count as work) and agreement with other reviewers on
    the items both voted on (second opinions and QA)."""
    queues: dict[str, dict[str, int]] = {}
    for r in cat.execute("SELECT queue, status, SUM(n) AS n FROM review_counts GROUP BY queue, status"):
        queues.setdefault(r["queue"], {s: 0 for s in STATUSES})[r["status"]] = r["n"]
    since = since if since is not None else 0.0
    reviewers: dict[str, dict] = {}
    for r in cat.execute(
        "SELECT reviewer, COUNT(*) AS votes, SUM(CASE WHEN kind != 'check' THEN 1 ELSE 0 END) AS decisions,"
        " SUM(CASE WHEN kind = 'check' THEN 1 ELSE 0 END) AS checks,"
        " SUM(CASE WHEN kind != 'check' AND decision = 'approved' THEN 1 ELSE 0 END) AS approved,"
        " SUM(CASE WHEN kind != 'check' AND decision = 'rejected' THEN 1 ELSE 0 END) AS rejected, MIN(at) AS first_at, MAX(at) AS last_at, SUM(CASE WHEN gap < 600 THEN gap ELSE 0 END) AS active"
        " FROM (SELECT *, at - LAG(at) OVER (PARTITION BY reviewer ORDER BY at) AS gap FROM review_votes WHERE at >= ?) v"
        " GROUP BY reviewer ORDER BY reviewer", (since,)):
        d = dict(r)
        hours = max(d.pop("active") or 0.0, 60.0) / 3600.0  # at least a minute, so one decision is not infinite speed
        d["per_hour"] = d["votes"] / hours
        d["agreement"], d["compared"] = None, 0
        reviewers[d["reviewer"]] = d
    for r in cat.execute(
        "SELECT a.reviewer, COUNT(*) AS compared, SUM(CASE WHEN a.decision = b.decision THEN 1 ELSE 0 END) AS agreed FROM review_votes a"
        " JOIN review_votes b ON a.item_id = b.item_id AND a.reviewer != b.reviewer GROUP BY a.reviewer"):
        if r["reviewer"] in reviewers:
            reviewers[r["reviewer"]]["compared"] = r["compared"]
            reviewers[r["reviewer"]]["agreement"] = r["agreed"] / r["compared"]
    return {"queues": queues, "reviewers": reviewers,
            "pending": sum(q["pending"] for q in queues.values())}

"""Catalog operations on SQLite vs PostgreSQL (a throw-away cluster from tests/pg_fixtures.py):
enqueue, single decisions (one write transaction each, under the writer lock), a bulk decision,
audit verification and one `flywheel sql` query. Prints one JSON line per dialect.

    .venv/bin/python benchmarks/catalog_pg.py [--items 2000] [--decisions 300]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def run(location, items: int, decisions: int) -> dict:
    from flywheel.catalog import Catalog
    from flywheel.loop import queue as q

    out = {}
    t = time.perf_counter()
    cat = Catalog(location)
    out["open_s"] = time.perf_counter() - t
    rows = [{"signal_id": "s", "sample_id": f"{i:064x}", "source": f"p/{i}.png", "dataset": "pool@v1"} for i in range(items)]
    t = time.perf_counter()
    ids = q.enqueue(cat, "pretrain", rows)
    out["enqueue_items_per_s"] = items / (time.perf_counter() - t)
    t = time.perf_counter()
    for i in ids[:decisions]:
        q.decide(cat, i, "approved", "ann")
    out["decisions_per_s"] = decisions / (time.perf_counter() - t)
    t = time.perf_counter()
    q.bulk_decide(cat, ids[decisions:], "rejected", "bob")
    out["bulk_items_per_s"] = (items - decisions) / (time.perf_counter() - t)
    t = time.perf_counter()
    assert cat.audit_verify(use_saved_head=False).ok
    out["audit_verify_s"] = time.perf_counter() - t
    t = time.perf_counter()
    cat.query("SELECT status, COUNT(*) FROM review_items GROUP BY status")
    out["sql_query_s"] = time.perf_counter() - t
    return {k: round(v, 3) for k, v in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=2000)
    ap.add_argument("--decisions", type=int, default=300)
    a = ap.parse_args()
    from pg_fixtures import PgCluster

    os.environ["FLYWHEEL_HOME"] = tempfile.mkdtemp(prefix="fw-bench-")
    print(json.dumps({"dialect": "sqlite", **run(None, a.items, a.decisions)}))
    c = PgCluster()
    try:
        c.start()
        print(json.dumps({"dialect": "postgresql", **run(c.new_database(), a.items, a.decisions)}))
    finally:
        c.stop()


if __name__ == "__main__":
    main()

"""Review dashboard under load: with 1,000,000 pending items in the catalog,
the queue page's server time p95 < 200 ms and a decision < 50 ms.

Loopback only and bounded: fills a fresh catalog in a temporary FLYWHEEL_HOME through the queue
API (`enqueue`), starts a real `flywheel review serve` on 127.0.0.1, logs in, then requests
queue pages at random keyset positions (some filtered by signal and track) and posts decisions on
distinct items; first alone, then while another process keeps writing the catalog (as a curation
run or the router would). Server time is the app's own `Server-Timing` header; client wall time
over loopback HTTP is printed next to it.

    .venv/bin/python benchmarks/review_load.py                # 1,000,000 items
    .venv/bin/python benchmarks/review_load.py --items 100000 --requests 100

Soak mode (`--reviewers N --duration S`): N reviewers, each its own account, HTTP client and
thread, for S seconds: open a queue page at a random keyset position (a third filtered by signal
and track), decide one of its cards with the version it showed, fetch a thumbnail every fifth
round. Prints requests per second, p50/p95 per request kind (server time and client wall time),
errors (any response other than 200, or a 409 on a decision that is not another reviewer having
decided first), and checks that every decision is audited exactly once and the audit chain verifies.

    nice .venv/bin/python benchmarks/review_load.py --items 200000 --reviewers 20 --duration 600
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _payload(i: int, signal: str, track: str) -> dict:
    return {
        "track": track,
        "captions": {"general": f"a photo of object {i} in a street scene, daylight, several people in the background",
                     "text": f"SHOP {i % 997}", "knowledge": "Taken in a city centre; metadata says 2019.",
                     "structured": {"entities": [{"name": f"object {i}", "color": "red"}, {"name": "street"}]}},
        "scores": {"clip__score": 0.2 + (i % 100) / 1000, "aesthetic__score": 5.1, "nsfw__score": 0.01},
        "neighbours": [{"sample_id": f"{(i * 7 + k):064x}", "caption": f"training neighbour {k} of {i}",
                        "score": 0.8 - k / 20, "dataset": "train@v3"} for k in range(5)],
        "signal": {"prompt": f"prompt for {signal}"},
    }


def fill(cat, n: int, signals: int, via_api: int = 20_000) -> None:
    """The first `via_api` items go through `queue.enqueue` (its throughput is printed); the
    rest are inserted with executemany into the same table and indexes, with the payload JSON
    made from a template (json.dumps of a million payloads would dominate the run)."""
    from flywheel.loop import queue as q

    tracks = ("pretrain", "pretrain", "edit")

    def item(i):
        sig = f"sig-{i % signals:04d}"
        return sig, tracks[i % 3]

    k = min(n, via_api)
    t0 = time.perf_counter()
    for start in range(0, k, 5000):
        items = []
        for i in range(start, min(k, start + 5000)):
            sig, track = item(i)
            items.append({"signal_id": sig, "sample_id": f"{i:064x}", "source": f"reserve/{i}.jpg",
                          "dataset": "reserve@v1", "track": track, "payload": _payload(i, sig, track)})
        q.enqueue(cat, "pretrain", items)
    secs = time.perf_counter() - t0
    print(f"  queue.enqueue: {k:,} items in {secs:.1f} s ({k / secs:,.0f} items/s)")
    template = json.dumps(_payload(123456789, "SIG", "TRACK"))
    t0 = time.perf_counter()
    now = time.time()
    for start in range(k, n, 50_000):
        rows = []
        for i in range(start, min(n, start + 50_000)):
            sig, track = item(i)
            rows.append(("pretrain", sig, f"{i:064x}", f"reserve/{i}.jpg", "reserve@v1",
                         template.replace("123456789", str(i)).replace("SIG", sig).replace("TRACK", track), track, now))
        with cat.tx() as con:
            con.executemany("INSERT OR IGNORE INTO review_items (queue, signal_id, sample_id, source, dataset, payload_json,"
                            " track, created_at) VALUES (?,?,?,?,?,?,?,?)", rows)
        done = min(n, start + 50_000)
        print(f"\r  bulk insert {done:,}/{n:,} ({(done - k) / (time.perf_counter() - t0):,.0f} items/s)", end="",
              file=sys.stderr, flush=True)
    print(file=sys.stderr)
    q.recount(cat)  # the executemany rows bypassed the queue API's counts


def _writer(path: str, stop, counter) -> None:
    """Another process writing the catalog all the time: runs, stats and queued items."""
    from flywheel.catalog import Catalog
    from flywheel.loop import queue as q

    cat = Catalog(path)
    k = 0
    while not stop.is_set():
        cat.start_run(f"bench-{os.getpid()}-{k}", "curate", recipe="stage1")
        cat.record_op_stats(f"bench-{os.getpid()}-{k}", {"accepted": 100, "resolution:too_small": 3})
        q.enqueue(cat, "other", [{"signal_id": "w", "sample_id": f"w{k}-{j}"} for j in range(200)], actor="bench")
        k += 1
        counter.value = k
        time.sleep(0.02)


def _pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def _timing(resp) -> tuple[float, float]:
    """(server wall ms, server CPU ms) from the app's Server-Timing header."""
    app, cpu = (float(p.split("dur=")[1]) for p in resp.headers["server-timing"].split(","))
    return app, cpu


def _summary(name: str, server: list[tuple[float, float]], wall: list[float]) -> dict:
    s, c = [x[0] for x in server], [x[1] for x in server]
    r = {"p50": _pct(s, 50), "p95": _pct(s, 95), "max": max(s), "cpu_p50": _pct(c, 50), "cpu_p95": _pct(c, 95),
         "wall_p50": _pct(wall, 50), "wall_p95": _pct(wall, 95)}
    print(f"  {name:<30} server p50 {r['p50']:6.1f} p95 {r['p95']:6.1f} max {r['max']:6.1f} ms"
          f" | server CPU p50 {r['cpu_p50']:6.1f} p95 {r['cpu_p95']:6.1f} ms"
          f" | client wall p50 {r['wall_p50']:6.1f} p95 {r['wall_p95']:6.1f} ms (n={len(s)})")
    return r


def measure(client, ids: list[int], signals: int, requests: int, csrf: str, rng: random.Random, label: str) -> dict:
    lo, hi = ids[0], ids[-1]
    page_s, page_w, filt_s, filt_w, dec_s, dec_w = [], [], [], [], [], []
    for k in range(requests):
        after = rng.randint(lo, hi)
        url = f"/queue/pretrain?after={after}&limit=20"
        t = time.perf_counter()
        r = client.get(url)
        page_w.append((time.perf_counter() - t) * 1000)
        assert r.status_code == 200 and 'class="card pending"' in r.text, (r.status_code, r.text[:300])
        page_s.append(_timing(r))
        sig = f"sig-{rng.randrange(signals):04d}"
        url = f"/queue/pretrain?signal={sig}&track=pretrain&after={after}&limit=20"
        t = time.perf_counter()
        r = client.get(url)
        filt_w.append((time.perf_counter() - t) * 1000)
        assert r.status_code == 200
        filt_s.append(_timing(r))
        item = ids.pop(rng.randrange(len(ids)))
        t = time.perf_counter()
        r = client.post(f"/items/{item}/decide", data={"csrf": csrf, "decision": rng.choice(["approved", "rejected"]),
                                                       "reason": "relevant", "request_id": f"b{item}"},
                        headers={"X-Requested-With": "fetch"})
        dec_w.append((time.perf_counter() - t) * 1000)
        assert r.status_code == 200 and r.json()["ok"], r.text
        dec_s.append(_timing(r))
    print(f"{label}:")
    return {"page": _summary("queue page (keyset, 20 items)", page_s, page_w),
            "page_filtered": _summary("queue page by signal+track", filt_s, filt_w),
            "decision": _summary("decision (POST, audited)", dec_s, dec_w)}


def soak(base: str, cat, ids: list[int], signals: int, reviewers: int, duration: float) -> dict:
    """`reviewers` concurrent reviewers for `duration` seconds (see the module docstring)."""
    import threading

    import httpx

    from flywheel.review import auth

    for k in range(reviewers):
        if not cat.execute("SELECT 1 FROM users WHERE name = ?", (f"rev{k:02d}",)):
            auth.add_user(cat, f"rev{k:02d}", "reviewer", "bench-password")
    lo, hi = ids[0], ids[-1]
    lock = threading.Lock()
    lat: dict[str, list[tuple[float, float, float]]] = {"page": [], "decision": [], "thumb": []}
    counts = {"requests": 0, "decided": 0, "conflict": 0, "errors": 0}
    errors: list[str] = []
    start_evt = threading.Barrier(reviewers + 1)
    end = [0.0]

    def one(k: int) -> None:
        rng = random.Random(1000 + k)
        c = httpx.Client(base_url=base, timeout=60)
        page = c.get("/login")
        tok = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
        r = c.post("/login", data={"username": f"rev{k:02d}", "password": "bench-password", "csrf": tok, "next": "/queue"},
                   follow_redirects=True)
        csrf = re.search(r'name="csrf-token" content="([^"]+)"', r.text).group(1)
        start_evt.wait()
        n = 0

        def req(kind, method, url, **kw):
            t = time.perf_counter()
            try:
                resp = c.request(method, url, **kw)
            except httpx.HTTPError as e:
                with lock:
                    counts["requests"] += 1
                    counts["errors"] += 1
                    errors.append(f"{kind} {url}: {type(e).__name__} {e}")
                return None
            wall = (time.perf_counter() - t) * 1000
            with lock:
                counts["requests"] += 1
                if "server-timing" in resp.headers:
                    lat[kind].append((*_timing(resp), wall))
            return resp

        while time.time() < end[0]:
            n += 1
            after = rng.randint(lo, hi)
            url = f"/queue/pretrain?after={after}&limit=20"
            if n % 3 == 0:
                url = f"/queue/pretrain?signal=sig-{rng.randrange(signals):04d}&track=pretrain&after={after}&limit=20"
            r = req("page", "GET", url)
            if r is None:
                continue
            if r.status_code != 200:
                with lock:
                    counts["errors"] += 1
                    errors.append(f"page {url}: {r.status_code}")
                continue
            cards = re.findall(r'action="/items/(\d+)/decide">\s*<input type="hidden" name="csrf" value="[^"]+">\s*'
                               r'<input type="hidden" name="version" value="(\d+)">', r.text)
            if not cards:
                continue
            item, version = rng.choice(cards)
            d = req("decision", "POST", f"/items/{item}/decide", headers={"X-Requested-With": "fetch"},
                    data={"csrf": csrf, "decision": rng.choice(["approved", "rejected"]), "reason": "relevant",
                          "version": version, "request_id": f"soak-{k}-{n}"})
            if d is not None:
                with lock:
                    if d.status_code == 200 and d.json().get("ok"):
                        counts["decided"] += 1
                    elif d.status_code == 409 and (d.json().get("decided_by") or "changed since" in d.json().get("detail", "")):
                        counts["conflict"] += 1  # another reviewer decided it first: the expected answer
                    else:
                        counts["errors"] += 1
                        errors.append(f"decision {item}: {d.status_code} {d.text[:200]}")
            if n % 5 == 0:
                t = req("thumb", "GET", f"/thumb/{item}?w=256")
                if t is not None and t.status_code != 200:
                    with lock:
                        counts["errors"] += 1
                        errors.append(f"thumb {item}: {t.status_code}")
        c.close()

    threads = [threading.Thread(target=one, args=(k,), daemon=True) for k in range(reviewers)]
    for t in threads:
        t.start()
    t0 = time.time()
    end[0] = t0 + duration
    start_evt.wait()
    for t in threads:
        t.join(duration + 120)
    secs = time.time() - t0
    print(f"soak: {reviewers} reviewers for {secs:.0f} s: {counts['requests']:,} requests ({counts['requests'] / secs:.1f}/s),"
          f" {counts['decided']:,} decisions, {counts['conflict']:,} answered 'already decided', {counts['errors']} errors")
    for e in errors[:10]:
        print(f"  error: {e}")
    out = {"reviewers": reviewers, "seconds": round(secs, 1), **counts, "rps": round(counts["requests"] / secs, 1)}
    for kind, xs in lat.items():
        if xs:
            out[kind] = _summary(kind, [(a, c) for a, c, _ in xs], [w for _, _, w in xs])
    audited = cat.execute("SELECT COUNT(*) AS n, COUNT(DISTINCT target) AS d FROM audit_log WHERE actor LIKE 'rev%'"
                          " AND action IN ('review.approve', 'review.reject')")[0]
    decided = cat.execute("SELECT COUNT(*) AS n FROM review_items WHERE decided_by LIKE 'rev%'")[0]["n"]
    rep = cat.audit_verify()
    out.update(audit_rows=audited["n"], audited_items=audited["d"], decided_items=decided, audit_chain_ok=rep.ok)
    print(f"  audit: {audited['n']:,} decision rows for {audited['d']:,} items; {decided:,} items decided by the reviewers;"
          f" {'every decision audited exactly once' if audited['n'] == audited['d'] == decided == counts['decided'] else 'MISMATCH'};"
          f" audit chain {'verifies' if rep.ok else 'BROKEN: ' + '; '.join(rep.problems())}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--signals", type=int, default=200)
    ap.add_argument("--requests", type=int, default=200, help="page views and decisions per phase")
    ap.add_argument("--home", help="reuse a FLYWHEEL_HOME already filled by a previous run")
    ap.add_argument("--reviewers", type=int, default=0, help="soak mode: this many concurrent reviewers")
    ap.add_argument("--duration", type=float, default=600, help="soak mode: seconds")
    args = ap.parse_args()

    home = Path(args.home) if args.home else Path(tempfile.mkdtemp(prefix="review-load-"))
    os.environ["FLYWHEEL_HOME"] = str(home)
    os.environ["FLYWHEEL_ARGON2_PROFILE"] = "test"  # one login; hashing cost is not what is measured
    import httpx

    from flywheel.catalog import Catalog
    from flywheel.review import auth

    cat = Catalog()
    have = cat.execute("SELECT COUNT(*) AS n FROM review_items WHERE queue = 'pretrain' AND status = 'pending'")[0]["n"]
    print(f"catalog {cat.path}")
    if have < args.items:
        print(f"filling {args.items - have:,} pending items through queue.enqueue ...")
        fill(cat, args.items - have, args.signals)
    if not cat.execute("SELECT 1 FROM users WHERE name = 'bench'"):
        auth.add_user(cat, "bench", "reviewer", "bench-password")
    ids = [r["item_id"] for r in cat.execute("SELECT item_id FROM review_items WHERE queue = 'pretrain' AND status = 'pending'")]
    size = sum(f.stat().st_size for f in home.glob("catalog.db*"))
    print(f"pending items: {len(ids):,}; catalog size {size / 1e9:.2f} GB")

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "flywheel", "review", "serve", "--port", str(port), "--insecure-cookies"],
                            env=os.environ.copy(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ctx = mp.get_context("spawn")
    stop, counter, writer = ctx.Event(), ctx.Value("i", 0), None
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.2)
        if args.reviewers:
            res = soak(base, cat, ids, args.signals, args.reviewers, args.duration)
            load = os.getloadavg()
            print(f"machine: {os.cpu_count()} CPUs, load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
            print(json.dumps({"items": args.items, "soak": res, "loadavg": load}))
            return
        client = httpx.Client(base_url=base, timeout=60, follow_redirects=True)
        login = client.get("/login")
        tok = re.search(r'name="csrf" value="([^"]+)"', login.text).group(1)
        r = client.post("/login", data={"username": "bench", "password": "bench-password", "csrf": tok, "next": "/queue"})
        assert r.status_code == 200, r.status_code
        csrf = re.search(r'name="csrf-token" content="([^"]+)"', r.text).group(1)
        for path in ("/queue", "/stats"):
            times = []
            for _ in range(20):
                r = client.get(path)
                assert r.status_code == 200, (path, r.status_code)
                times.append(_timing(r)[0])
            print(f"{path:<7} (queue list / reviewer statistics): server first {times[0]:.1f} ms, p50 {_pct(times, 50):.1f} ms,"
                  f" max {max(times):.1f} ms")
        rng = random.Random(0)
        for _ in range(10):  # warm-up: templates compiled, SQLite pages cached
            client.get(f"/queue/pretrain?after={rng.choice(ids)}")
        alone = measure(client, ids, args.signals, args.requests, csrf, rng, "alone")
        writer = ctx.Process(target=_writer, args=(str(cat.path), stop, counter))
        writer.start()
        time.sleep(2.0)
        busy = measure(client, ids, args.signals, args.requests, csrf, rng, "while another process writes the catalog")
        print(f"  (the writer committed {counter.value} rounds of run + stats + 200 queued items meanwhile)")
        # a bulk decision on one signal's items in one track (the filter a reviewer would pick)
        sig = "sig-0001"
        page = client.get(f"/queue/pretrain?signal={sig}&track=pretrain").text
        max_id = re.search(r'name="max_id" value="(\d+)"', page).group(1)
        n_before = cat.execute("SELECT COUNT(*) AS n FROM review_items WHERE queue = 'pretrain' AND signal_id = ?"
                               " AND track = 'pretrain' AND status = 'pending'", (sig,))[0]["n"]
        t = time.perf_counter()
        r = client.post("/queue/pretrain/bulk", data={"csrf": csrf, "decision": "approved", "reason": "relevant",
                                                      "max_id": max_id, "signal": sig, "track": "pretrain", "confirm": "yes"})
        secs = time.perf_counter() - t
        assert r.status_code == 200, r.status_code
        print(f"bulk decision on {n_before:,} items (signal {sig}, track pretrain, writer still running):"
              f" {secs:.2f} s ({n_before / secs:,.0f} items/s, each audited)")
    finally:
        stop.set()
        if writer is not None and writer.pid is not None:
            writer.join(30)
        proc.terminate()
        proc.wait(10)

    worst_page = max(alone["page"]["p95"], alone["page_filtered"]["p95"], busy["page"]["p95"], busy["page_filtered"]["p95"])
    worst_dec = max(alone["decision"]["p95"], busy["decision"]["p95"])
    print(f"\ntarget: queue page server p95 < 200 ms: worst {worst_page:.1f} ms -> {'PASS' if worst_page < 200 else 'FAIL'}")
    print(f"target: decision < 50 ms (p95): worst {worst_dec:.1f} ms -> {'PASS' if worst_dec < 50 else 'FAIL'}")
    load = os.getloadavg()
    print(f"machine: {os.cpu_count()} CPUs, load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} (other work on the"
          " machine inflates wall times; server CPU time is the request's own work)")
    print(json.dumps({"items": args.items, "alone": alone, "with_writer": busy, "loadavg": load}))


if __name__ == "__main__":
    main()

"""Review fixtures: a catalog with a reviewer and an admin, and a pool dataset of real PNGs whose
samples are queued for review (captions include hostile HTML)."""

from __future__ import annotations

import io
import re
import time
from contextlib import contextmanager

import pyarrow as pa
import pytest

HOSTILE_GENERAL = "<script>window.__pwned = 1</script> a red bicycle"
HOSTILE_TEXT = '<img src=x onerror="window.__pwned = 2">'
PASSWORDS = {"ann": "ann-password-1", "bob": "bob-password-1", "root": "root-password-1"}


@pytest.fixture(autouse=True)
def _cheap_argon2(monkeypatch):
    """Production argon2 costs ~1 s per hash on a loaded 2-core machine; tests use the cheapest
    parameters (the code path is the same)."""
    monkeypatch.setenv("FLYWHEEL_ARGON2_PROFILE", "test")


def png(color, size=(320, 240)) -> bytes:
    """A coloured disc on a light background (distinct bytes per colour)."""
    from PIL import Image, ImageDraw

    im = Image.new("RGB", size, (235, 235, 225))
    w, h = size
    ImageDraw.Draw(im).ellipse((w * 0.2, h * 0.1, w * 0.8, h * 0.9), fill=color)
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def make_pool(cat, root, n: int = 12, name: str = "pool", offset: int = 0):
    """A registered dataset of `n` distinct PNGs; returns (ref, rows)."""
    from flywheel.datasets import BASE_SCHEMA, DatasetWriter, sample_id

    rows = []
    for i in range(offset, offset + n):
        data = png(((i * 37) % 256, (i * 91) % 256, (i * 53) % 256))
        rows.append({"id": sample_id(data), "source": f"pool/{i:03d}.png", "task": "t2i", "image": data,
                     "width": 320, "height": 240, "format": "PNG", "caption": f"caption {i}"})
    table = pa.Table.from_pylist(rows, schema=pa.schema([BASE_SCHEMA.field(c) for c in rows[0]]))
    with DatasetWriter(root / name, name=name, kind="accepted", catalog=cat) as w:
        w.write(table)
    return f"{name}@v{w.version}", rows


def queue_pool(cat, ref, rows, signal="sig-red-bicycle", track="pretrain", queue="pretrain"):
    import time

    from flywheel.loop import queue as q

    with cat.tx() as con:  # the signal the items were retrieved for, as the loop stores it
        con.execute("INSERT INTO signals (signal_id, kind, prompt, status, created_at) VALUES (?,?,?,?,?)"
                    " ON CONFLICT DO NOTHING",
                    (signal, "eval", f"a red bicycle leaning on a wall ({signal})", "routed", time.time()))

    items = []
    for k, r in enumerate(rows):
        items.append({
            "signal_id": signal, "sample_id": r["id"], "source": r["source"], "dataset": ref, "track": track,
            "payload": {
                "track": track,
                "captions": {"general": HOSTILE_GENERAL if k == 0 else f"general caption {k}",
                             "text": HOSTILE_TEXT if k == 0 else "", "knowledge": f"knowledge {k}",
                             "structured": {"entities": [{"name": "bicycle", "color": "red"}]}},
                "scores": {"clip__score": 0.25 + k / 100, "aesthetic__score": 5.5},
                "neighbours": [{"sample_id": "ab" * 32, "caption": f"a blue bicycle {k}", "score": 0.71,
                                "dataset": "train@v1"}],
            }})
    return q.enqueue(cat, queue, items)


def queue_routed(cat, ref, rows, queue="kites"):
    """Items as the router queues them (evidence, nearest training neighbours, the verified
    sample) for a feedback signal whose sender wrote text; returns their ids."""
    import json
    import time

    from flywheel.loop import queue as q

    with cat.tx() as con:
        con.execute("INSERT INTO signals (signal_id, kind, prompt, payload_json, status, created_at, attribute)"
                    " VALUES (?,?,?,?,?,?,?) ON CONFLICT DO NOTHING", ("fb-7", "feedback", "a crimson kite over the sea", json.dumps(
                        {"kind": "feedback", "prompt": "a crimson kite over the sea", "rating": 1,
                         "text": "the kite came out orange and there are two of them", "failed_attribute": "color"}),
                        "routed", time.time(), "color"))
    items = [{"signal_id": "fb-7", "sample_id": r["id"], "source": r["source"], "dataset": ref, "track": "pretrain",
              "sample": {"kind": "dataset", "dataset": ref, "id": r["id"], "source": r["source"], "width": 320, "height": 240},
              "payload": {"track": "pretrain", "prompt": "a crimson kite over the sea", "text": f"a red kite {k}", "score": 0.734,
                          "evidence": {"attribute": "color", "similarity": 0.734, "radius_ratio": 2.1,
                                       "density": "the training data's 4-NN radius around 'red kite' is 2.10x the reserve"
                                                  " pool's 3-NN radius (>= 1.4)"},
                          "neighbours": [{"id": "ab" * 32, "source": "train/kites/0041.jpg", "dataset": "train@v1",
                                          "text": "a blue kite on a beach", "similarity": 0.612},
                                         {"id": "cd" * 32, "source": "train/kites/0007.jpg", "dataset": "train@v1",
                                          "text": "two kites in a park", "similarity": 0.587}]}}
             for k, r in enumerate(rows)]
    return q.enqueue(cat, queue, items)


def add_users(cat):
    from flywheel.review import auth

    auth.add_user(cat, "ann", "reviewer", PASSWORDS["ann"])
    auth.add_user(cat, "bob", "reviewer", PASSWORDS["bob"])
    auth.add_user(cat, "root", "admin", PASSWORDS["root"])


def login(client, user: str, password: str | None = None, next: str = "/queue", headers: dict | None = None):
    page = client.get("/login", headers=headers)
    token = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    return client.post("/login", data={"username": user, "password": password or PASSWORDS[user], "csrf": token,
                                       "next": next}, follow_redirects=False, headers=headers)


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf-token" content="([^"]+)"', html).group(1)


@pytest.fixture
def review_env(tmp_path):
    from flywheel.catalog import Catalog

    cat = Catalog()
    add_users(cat)
    ref, rows = make_pool(cat, tmp_path)
    ids = queue_pool(cat, ref, rows)
    return {"cat": cat, "ref": ref, "rows": rows, "ids": ids}


@pytest.fixture
def client(review_env):
    from fastapi.testclient import TestClient

    from flywheel.review.app import create_app

    with TestClient(create_app(review_env["cat"], secure_cookies=False)) as c:
        yield c


@contextmanager
def review_server(env: dict):
    """`flywheel review serve` as its own process on a free loopback port; yields its URL once it
    accepts connections, and stops it afterwards (the browser tests' server)."""
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "flywheel", "review", "serve", "--port", str(port), "--insecure-cookies"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if proc.poll() is not None:
                    pytest.fail(f"review server exited: {proc.stdout.read().decode()}")
                time.sleep(0.2)
        else:
            pytest.fail("review server did not start within 60 s")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()

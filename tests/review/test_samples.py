"""Review items reference samples, never paths (issue 19, item 2), replayed as the attack was
made: an API token enqueues a real sample id with its own image or a server path, and reviewers
must only ever see the sample's own bytes; signal images go to the content-addressed store."""

from __future__ import annotations

import base64
import io
import json

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from flywheel.loop import blobs
from flywheel.loop import queue as q
from flywheel.review import auth
from flywheel.review.app import create_app

from .conftest import login, png

ATTACKER = (0, 255, 0)


@pytest.fixture
def env(review_env, tmp_path):
    """The strongest token there is (an admin's, allowed to queue items and post signals): the
    refusals below come from the sample checks, not from the token's scopes."""
    cat = review_env["cat"]
    attacker_png = tmp_path / "attacker.png"
    attacker_png.write_bytes(png(ATTACKER, size=(300, 300)))
    secret = tmp_path / "secret.txt"
    secret.write_text("not for reviewers")
    return {**review_env, "tok": auth.create_token(cat, "ingest-bot", user="root", scopes=["signals:write", "admin"]), "attacker_png": attacker_png, "secret": secret}


def _api(cat):
    from flywheel.review.signals_api import create_app as api_app

    return TestClient(api_app(cat))


def _h(tok):
    return {"Authorization": f"Bearer {tok}"}


def _centre(jpeg: bytes) -> tuple[int, int, int]:
    im = Image.open(io.BytesIO(jpeg)).convert("RGB")
    return im.getpixel((im.width // 2, im.height // 2))


def _close(a, b, tol=40) -> bool:
    return all(abs(x - y) <= tol for x, y in zip(a, b))


def _reviewer(env):
    c = TestClient(create_app(env["cat"], secure_cookies=False))
    assert login(c, "ann").status_code == 303
    return c


def test_real_sample_id_with_an_attacker_image_or_path_is_refused(env):
    row = env["rows"][3]
    api = _api(env["cat"])
    before = q.count_items(env["cat"], status=None)
    for payload in ({"path": str(env["attacker_png"])}, {"thumbnail": {"path": str(env["attacker_png"])}},
                    {"image_path": str(env["secret"])}, {"image_uri": f"file://{env['attacker_png']}"},
                    {"image_b64": base64.b64encode(env["attacker_png"].read_bytes()).decode()}):
        r = api.post("/api/review/enqueue", headers=_h(env["tok"]), json={"queue": "other", "items": [
            {"sample_id": row["id"], "source": row["source"], "dataset": env["ref"], "payload": payload}]})
        assert r.status_code == 422, (payload, r.text)
        assert "never a path" in r.json()["detail"] and "name a file" in r.json()["problems"][0]
    assert q.count_items(env["cat"], status=None) == before


@pytest.mark.parametrize("change,says", [
    ({"source": "attacker/own.png"}, "has no row with id"),
    ({"sample_id": "f" * 64}, "has no row with id"),
    ({"dataset": "pool@v9"}, "is not in the catalog"),
    ({"dataset": "nosuch@v1"}, "is not in the catalog"),
    ({"dataset": "pool@latest"}, "is not a `name@vN` reference"),
    ({"dataset": "/tmp"}, "is not a `name@vN` reference"),
    ({"source": None}, "source is missing"),
    ({"dataset": None}, "is not an image in the signal store"),
])
def test_an_item_must_name_a_dataset_row_of_the_catalog(env, change, says):
    row = env["rows"][3]
    item = {"sample_id": row["id"], "source": row["source"], "dataset": env["ref"], **change}
    r = _api(env["cat"]).post("/api/review/enqueue", headers=_h(env["tok"]), json={"queue": "other", "items": [item]})
    assert r.status_code == 422 and says in r.json()["detail"], r.text


def test_a_valid_item_is_queued_with_the_verified_sample(env):
    row = env["rows"][3]
    r = _api(env["cat"]).post("/api/review/enqueue", headers=_h(env["tok"]), json={"queue": "other", "items": [
        {"sample_id": row["id"], "source": row["source"], "dataset": env["ref"], "payload": {"caption": "hi"}}]})
    assert r.status_code == 200, r.text
    item = q.get_item(env["cat"], r.json()["item_ids"][0])
    assert item["sample"] == {"kind": "dataset", "dataset": env["ref"], "id": row["id"], "source": row["source"],
                              "width": 320, "height": 240}


def test_reviewers_never_see_attacker_bytes(env, tmp_path):
    """The attacker's remaining moves: queue a real sample with the right id and source (its own
    image is then nowhere to be read from), plant a thumbnail in the old id-keyed cache, or queue
    through the library with a payload path. Every card shows the dataset's own image."""
    from flywheel.config import cache_dir

    cat, row = env["cat"], env["rows"][3]
    real = tuple((3 * k) % 256 for k in (37, 91, 53))  # the colour conftest.make_pool drew for row 3
    old = cache_dir("thumbs") / row["id"][:2] / f"{row['id']}_256.jpg"
    old.parent.mkdir(parents=True, exist_ok=True)
    Image.open(env["attacker_png"]).convert("RGB").save(old, "JPEG")  # a thumbnail poisoned before the fix
    (i,) = q.enqueue(cat, "lib", [{"sample_id": row["id"], "source": row["source"], "dataset": env["ref"],
                                   "payload": {"path": str(env["attacker_png"])}}])
    (j,) = q.enqueue(cat, "lib", [{"sample_id": "b" * 64, "payload": {"image_path": str(env["secret"])}}])
    ann = _reviewer(env)
    for item_id in (i, env["ids"][3]):
        r = ann.get(f"/thumb/{item_id}?w=256")
        assert r.headers["content-type"] == "image/jpeg"
        assert _close(_centre(r.content), real) and not _close(_centre(r.content), ATTACKER)
    r = ann.get(f"/thumb/{j}?w=256")
    assert r.headers["content-type"] == "image/svg+xml" and b"not for reviewers" not in r.content
    # the real size on request (w=0), never upscaled
    assert Image.open(io.BytesIO(ann.get(f"/thumb/{i}?w=0").content)).size == (320, 240)


def test_signal_images_go_to_the_content_addressed_store(env, monkeypatch):
    cat, api = env["cat"], _api(env["cat"])
    data = png((200, 30, 30), size=(400, 200))
    sha = __import__("hashlib").sha256(data).hexdigest()
    sig = {"kind": "feedback", "id": "fb-1", "prompt": "a red fox", "text": "the fox is blue", "rating": 1,
           "image_b64": base64.b64encode(data).decode()}
    r = api.post("/api/signals", headers=_h(env["tok"]), json=sig)
    assert r.status_code == 201, r.text
    stored = json.loads(cat.execute("SELECT payload_json FROM signals WHERE signal_id = 'fb-1'")[0]["payload_json"])
    assert "image_b64" not in stored and stored["image"]["sha256"] == sha
    assert blobs.path(cat, sha).read_bytes() == data and blobs.path(cat, sha).parent.parent == cat.path.parent / "blobs"
    assert blobs.lookup(cat, sha)["signal_id"] == "fb-1"
    assert api.post("/api/signals", headers=_h(env["tok"]), json=sig).json()["duplicate"] == ["fb-1"]
    # an item showing the stored image names it by hash; an unknown hash is refused
    r = api.post("/api/review/enqueue", headers=_h(env["tok"]), json={"queue": "fb", "items": [
        {"sample_id": sha, "signal_id": "fb-1"}]})
    assert r.status_code == 200, r.text
    r2 = api.post("/api/review/enqueue", headers=_h(env["tok"]), json={"queue": "fb", "items": [{"sample_id": "c" * 64}]})
    assert r2.status_code == 422 and "not an image in the signal store" in r2.json()["detail"]
    ann = _reviewer(env)
    t = ann.get(f"/thumb/{r.json()['item_ids'][0]}?w=128")
    assert t.headers["content-type"] == "image/jpeg" and _close(_centre(t.content), (200, 30, 30))
    # a file swapped on disk is not shown as the registered image
    blobs.path(cat, sha).write_bytes(env["attacker_png"].read_bytes())
    assert blobs.read(cat, sha) is None
    # size-limited and images only
    monkeypatch.setenv("FLYWHEEL_BLOB_MAX_BYTES", "1000")
    r = api.post("/api/signals", headers=_h(env["tok"]), json={**sig, "id": "fb-2"})
    assert r.status_code == 422 and "up to 1,000 bytes" in r.json()["detail"]
    monkeypatch.delenv("FLYWHEEL_BLOB_MAX_BYTES")
    r = api.post("/api/signals", headers=_h(env["tok"]), json={**sig, "id": "fb-3",
                                                                "image_b64": base64.b64encode(b"<svg onload=x>").decode()})
    assert r.status_code == 422 and "not an image" in r.json()["detail"]
    assert cat.execute("SELECT COUNT(*) AS n FROM blobs")[0]["n"] == 1

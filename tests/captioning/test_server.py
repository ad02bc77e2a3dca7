"""`flywheel caption serve` over real HTTP on 127.0.0.1, and the openai backend against it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from cap_data import png, sample_table

from flywheel.captioning.annotate import Captioner
from flywheel.captioning.backends import OpenAIBackend, Request, TransformersBackend
from flywheel.captioning.types import Prompt


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tiny_qwen):
    port = free_port()
    exe = Path(sys.executable).parent / "flywheel"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([str(exe), "caption", "serve", "--model", str(tiny_qwen), "--port", str(port),
                             "--served-name", "tiny", "--max-batch", "8", "--max-wait-ms", "50",
                             "--max-new-tokens", "8"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 300
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("caption server exited: " + proc.stdout.read().decode()[-2000:])
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(1)
    else:
        proc.kill()
        raise RuntimeError("caption server did not start in 300 s")
    yield url
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()


def test_models_endpoint_reports_the_revision(server, tiny_qwen):
    r = httpx.get(server + "/v1/models").json()
    assert r["data"][0]["id"] == "tiny"
    assert r["data"][0]["revision"] == TransformersBackend(str(tiny_qwen)).revision


def test_concurrent_requests_are_batched_into_one_generate(server):
    be = OpenAIBackend(base_url=server + "/v1", concurrency=8, max_tokens=6, timeout=120)
    before = len(httpx.get(server + "/health").json()["batch_sizes"])
    reqs = [Request([png(c)], Prompt("general", "You annotate images.", "Describe this image."))
            for c in ["red", "blue", "green", "white", "black", "gray", "yellow", "pink"]]
    out = be.generate(reqs)
    assert all(isinstance(t, str) and t for t in out), out
    sizes = httpx.get(server + "/health").json()["batch_sizes"][before:]
    assert sum(sizes) == 8 and max(sizes) > 1, sizes
    assert be.revision.startswith("local-") and be.model == "tiny"
    # greedy: the same request gives the same text alone as in a batch
    assert be.generate(reqs[:1])[0] == out[0]


def test_openai_backend_captions_a_table_over_http(server, tmp_path):
    cap = Captioner(types=["general", "structured"], backend="openai",
                    backend_kwargs={"base_url": server + "/v1", "max_tokens": 6, "concurrency": 4},
                    cache_path=str(tmp_path / "c.db"))
    t = sample_table()
    out = cap(t)
    assert out.num_rows == t.num_rows
    assert set(out.column("caption_backend").to_pylist()) == {"openai"}
    for caps, errs in zip(out.column("captions").to_pylist(), out.column("caption_errors").to_pylist()):
        assert caps["general"] and errs == ["structured:invalid"]


def test_client_errors_are_not_retried_and_unreachable_servers_say_what_to_do(server):
    be = OpenAIBackend(base_url=server + "/v1", model="other-model", revision="x", retries=3, backoff=5.0)
    t0 = time.time()
    out = be.generate([Request([png("red")], Prompt("general", "", "Describe."))])
    assert isinstance(out[0], RuntimeError) and "404" in str(out[0]) and time.time() - t0 < 5
    down = OpenAIBackend(base_url=f"http://127.0.0.1:{free_port()}/v1", retries=1, backoff=0.01, timeout=2)
    with pytest.raises(RuntimeError, match="caption serve"):
        down.setup()
    down2 = OpenAIBackend(base_url=down.base_url, model="m", revision="r", retries=2, backoff=0.01, timeout=2)
    res = down2.generate([Request([png("red")], Prompt("general", "", "Describe."))])
    assert isinstance(res[0], httpx.ConnectError)

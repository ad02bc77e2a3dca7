"""`flywheel caption serve`: an OpenAI-compatible chat-completions server over the transformers
backend, for teams without vLLM.

Concurrent requests are batched into one `generate` call: handlers put their request on a queue
and await a future; one worker thread takes what is waiting (up to `max_batch`; the batch stays
open while requests keep arriving less than `max_wait_ms` apart, at most 4 x `max_wait_ms`),
groups it by generation parameters and runs each group as one left-padded batch. Requests that
arrive during a generate call wait in the queue and form the next batch. Endpoints: `GET /v1/models` (with the model `revision`, which the openai backend
puts in its cache key), `POST /v1/chat/completions` (text and `image_url` parts; images as base64
data URLs), `GET /health`.
"""

from __future__ import annotations

import asyncio
import base64
import queue
import threading
import time
import uuid
from concurrent.futures import Future
from dataclasses import dataclass

from starlette.requests import Request as HTTPRequest  # resolved by FastAPI from the annotation

from flywheel.captioning.backends import Request, TransformersBackend
from flywheel.captioning.types import Prompt


@dataclass
class _Job:
    req: Request
    params: tuple  # (max_new_tokens, temperature, top_p)
    future: Future


class Batcher:
    """Collects concurrent requests into batches for one generate call each."""

    def __init__(self, backend: TransformersBackend, max_batch: int = 8, max_wait_ms: float = 20.0):
        self.backend = backend
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000
        self.q: queue.Queue[_Job | None] = queue.Queue()
        self.batches: list[int] = []  # sizes of the batches run (for tests and the benchmark)
        self.arriving = 0  # requests a handler has accepted but not yet submitted (body being parsed)
        self._count_lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="caption-batcher", daemon=True)
        self._thread.start()

    def arrive(self, delta: int) -> None:
        with self._count_lock:
            self.arriving += delta

    def submit(self, req: Request, params: tuple) -> Future:
        fut: Future = Future()
        self.q.put(_Job(req, params, fut))
        return fut

    def close(self) -> None:
        self.q.put(None)
        self._thread.join(timeout=30)

    def _loop(self) -> None:
        while True:
            job = self.q.get()
            if job is None:
                return
            jobs = [job]
            # Clients' requests arrive staggered: keep the batch open while they keep coming (each
            # arrival extends the window by max_wait), never longer than 4 windows in all.
            hard = time.monotonic() + 4 * self.max_wait
            while len(jobs) < self.max_batch:
                wait = min(self.max_wait, hard - time.monotonic())
                try:
                    nxt = self.q.get(timeout=max(0.0, wait))
                except queue.Empty:
                    if self.arriving > 0 and time.monotonic() < hard:
                        continue  # a handler is still parsing a request: it joins this batch
                    break
                if nxt is None:
                    self.q.put(None)
                    break
                jobs.append(nxt)
            groups: dict[tuple, list[_Job]] = {}
            for j in jobs:
                groups.setdefault(j.params, []).append(j)
            for (max_new, temp, top_p), group in groups.items():
                self.batches.append(len(group))
                try:
                    outs = self.backend.generate([j.req for j in group], max_new_tokens=max_new,
                                                 temperature=temp, top_p=top_p)
                except Exception as e:
                    outs = [e] * len(group)
                for j, out in zip(group, outs):
                    if isinstance(out, BaseException):
                        j.future.set_exception(out)
                    else:
                        j.future.set_result(out)


def _decode_image(url: str) -> bytes:
    if url.startswith("data:"):
        _, _, b64 = url.partition(",")
        return base64.b64decode(b64)
    if url.startswith("file://"):
        with open(url[7:], "rb") as f:
            return f.read()
    raise ValueError("only data: and file:// image URLs are accepted (this server has no internet access)")


def parse_messages(messages: list[dict]) -> tuple[str, str, list[bytes]]:
    """(system text, user text, images) from OpenAI chat messages; earlier turns are joined."""
    system, user, images = [], [], []
    for m in messages:
        content = m.get("content")
        parts = [{"type": "text", "text": content}] if isinstance(content, str) else (content or [])
        for p in parts:
            if p.get("type") == "text":
                (system if m.get("role") == "system" else user).append(p.get("text", ""))
            elif p.get("type") == "image_url":
                iu = p.get("image_url")
                images.append(_decode_image(iu["url"] if isinstance(iu, dict) else iu))
    return "\n".join(system), "\n".join(user), images


def create_app(backend: TransformersBackend, model_name: str, max_batch: int = 8, max_wait_ms: float = 20.0):
    from fastapi import FastAPI, HTTPException
    from fastapi.responses import JSONResponse

    backend.setup()
    batcher = Batcher(backend, max_batch=max_batch, max_wait_ms=max_wait_ms)
    app = FastAPI(title="flywheel caption server")
    app.state.batcher = batcher

    @app.middleware("http")
    async def count_arrivals(request, call_next):
        # counted from the moment the request arrives (before its JSON body is read and parsed)
        chat = request.url.path.endswith("/chat/completions")
        if chat:
            batcher.arrive(1)
            request.state.counted = True
        try:
            return await call_next(request)
        finally:
            if chat and getattr(request.state, "counted", False):
                batcher.arrive(-1)

    @app.get("/health")
    def health():
        return {"status": "ok", "model": model_name, "batches": len(batcher.batches),
                "batch_sizes": batcher.batches[-100:]}

    @app.get("/v1/models")
    def models():
        return {"object": "list", "data": [{"id": model_name, "object": "model", "owned_by": "flywheel",
                                            "revision": backend.revision}]}

    @app.post("/v1/chat/completions")
    async def chat(body: dict, request: HTTPRequest):
        if body.get("stream"):
            raise HTTPException(400, "streaming is not supported; send stream=false")
        if body.get("model") not in (None, model_name):
            raise HTTPException(404, f"model {body.get('model')!r} is not served here; GET /v1/models lists {model_name!r}")
        try:
            try:
                system, user, images = parse_messages(body.get("messages") or [])
            except (ValueError, KeyError, OSError) as e:
                raise HTTPException(400, f"bad message content: {e}")
            if not user and not images:
                raise HTTPException(400, "no user content; send a text or image_url part")
            req = Request(images=images, prompt=Prompt(type="chat", system=system, user=user, n_images=len(images)))
            params = (int(body.get("max_tokens") or body.get("max_completion_tokens") or backend.max_new_tokens),
                      float(body.get("temperature") if body.get("temperature") is not None else backend.temperature),
                      float(body.get("top_p") if body.get("top_p") is not None else backend.top_p))
            fut = batcher.submit(req, params)
        finally:
            if getattr(request.state, "counted", False):
                request.state.counted = False
                batcher.arrive(-1)
        try:
            text = await asyncio.wrap_future(fut)
        except Exception as e:
            return JSONResponse({"error": {"message": f"{type(e).__name__}: {e}", "type": "server_error"}}, 500)
        return {
            "id": "chatcmpl-" + uuid.uuid4().hex[:24], "object": "chat.completion", "created": int(time.time()),
            "model": model_name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        }

    return app


def serve(model: str, host: str = "127.0.0.1", port: int = 8000, served_name: str | None = None, max_batch: int = 8,
          max_wait_ms: float = 20.0, max_new_tokens: int = 256, max_pixels: int | None = None,
          device: str = "auto") -> None:
    """Run the server until interrupted (`flywheel caption serve` and `python -m` both land here)."""
    from pathlib import Path

    import uvicorn

    name = served_name or Path(model).name
    backend = TransformersBackend(model, max_new_tokens=max_new_tokens, batch_size=max_batch, max_pixels=max_pixels,
                                  device=device)
    app = create_app(backend, name, max_batch=max_batch, max_wait_ms=max_wait_ms)
    print(f"serving {name} on http://{host}:{port}/v1 (batches of up to {max_batch})", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="OpenAI-compatible caption server over Qwen3-VL (transformers)")
    ap.add_argument("--model", required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--served-name")
    ap.add_argument("--max-batch", type=int, default=8)
    ap.add_argument("--max-wait-ms", type=float, default=20.0)
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--max-pixels", type=int)
    ap.add_argument("--device", default="auto")
    a = ap.parse_args()
    serve(a.model, a.host, a.port, a.served_name, a.max_batch, a.max_wait_ms, a.max_new_tokens, a.max_pixels, a.device)

"""Caption commands: `flywheel caption` (a dataset into a new captioned version) and
`flywheel caption serve` (an OpenAI-compatible server over the transformers backend)."""

from __future__ import annotations

import time
from typing import Optional

import typer

from flywheel.cli import UserError


def _backend_kwargs(backend: str, model: Optional[str], base_url: Optional[str], api_key: Optional[str],
                    concurrency: int, max_new_tokens: int, temperature: float, top_p: float, batch_size: int,
                    timeout: float, retries: int, max_pixels: Optional[int]) -> dict:
    if backend == "transformers":
        if not model:
            raise UserError("--backend transformers needs --model: a local Qwen3-VL directory or a hub id "
                            "(e.g. Qwen/Qwen3-VL-8B-Instruct, when it is in the HF cache)")
        kw = {"model": model, "max_new_tokens": max_new_tokens, "temperature": temperature, "top_p": top_p,
              "batch_size": batch_size}
        if max_pixels:
            kw["max_pixels"] = max_pixels
        return kw
    if backend == "openai":
        kw = {"concurrency": concurrency, "max_tokens": max_new_tokens, "temperature": temperature, "top_p": top_p,
              "timeout": timeout, "retries": retries}
        if model:
            kw["model"] = model
        if base_url:
            kw["base_url"] = base_url
        if api_key:
            kw["api_key"] = api_key  # note: stored in the run plan under FLYWHEEL_HOME; prefer the env variable
        return kw
    return {}


def offline_defaults(workers: Optional[int], batch_size: Optional[int]) -> tuple[int, int, int]:
    """(workers, batch_size, OCR threads per worker) for the offline backend: one worker per core (up
    to 4; each loads the OCR models once), 2 pages per batch so pages spread over the workers, and
    the cores shared out so rapidocr's onnxruntime threads and the workers do not fight."""
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    w = min(cores, 4) if workers is None else workers
    return w, 2 if batch_size is None else batch_size, max(1, cores // max(1, w))


def register(app: typer.Typer) -> None:
    caption_app = typer.Typer(
        help="Caption a dataset with the four caption types (general, text, knowledge, structured).",
        invoke_without_command=True, no_args_is_help=False)

    @caption_app.callback(invoke_without_command=True)
    def caption(
        ctx: typer.Context,
        input: Optional[str] = typer.Option(None, "--input", "-i", help="dataset directory or name@vN"),
        output: Optional[str] = typer.Option(None, "--output", "-o", help="new dataset directory"),
        types: str = typer.Option("general,text,knowledge,structured", help="caption types, comma-separated"),
        backend: str = typer.Option("offline", help="transformers | openai | offline"),
        model: Optional[str] = typer.Option(None, help="transformers: model dir or hub id; openai: served model id"),
        base_url: Optional[str] = typer.Option(None, help="openai: server URL (else FLYWHEEL_CAPTION_BASE_URL / OPENAI_BASE_URL)"),
        api_key: Optional[str] = typer.Option(None, help="openai: key (prefer FLYWHEEL_CAPTION_API_KEY / OPENAI_API_KEY)"),
        concurrency: int = typer.Option(8, help="openai: requests in flight per worker"),
        length: str = typer.Option("medium", help="general caption length: short | medium | long"),
        language: str = typer.Option("en", help="caption language: en | zh | auto (follow the image)"),
        max_new_tokens: int = typer.Option(256, help="tokens to generate per caption"),
        temperature: float = typer.Option(0.0, help="0 = greedy"),
        top_p: float = typer.Option(1.0),
        batch_size: Optional[int] = typer.Option(None, help="rows per batch (and per generate call); default 8, "
                                                 "offline 2 (pages spread over the workers)"),
        max_pixels: Optional[int] = typer.Option(None, help="transformers: cap on pixels per image"),
        timeout: float = typer.Option(120.0, help="openai: seconds per request"),
        retries: int = typer.Option(4, help="openai: retries with backoff on timeouts, 429 and 5xx"),
        workers: Optional[int] = typer.Option(None, help="Ray actors (0 = in this process, no Ray); default 1, "
                                              "offline one per core up to 4"),
        gpus: float = typer.Option(0.0, help="GPUs per Ray actor (transformers backend on GPU)"),
        name: Optional[str] = typer.Option(None, help="dataset name in the catalog (default: output folder name)"),
    ) -> None:
        """Caption a dataset into a new version (kind "captioned"); cached, so a rerun resumes."""
        if ctx.invoked_subcommand is not None:
            return
        if not input or not output:
            raise UserError("flywheel caption needs --input DATASET and --output DIR "
                            "(or `flywheel caption serve` to start the caption server)")
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        from flywheel.flows import caption as cf
        from flywheel.jobs import caption as fc

        con = Console()
        type_list = [t.strip() for t in types.split(",") if t.strip()]
        threads_note = ""
        if backend == "offline":
            workers, batch_size, threads = offline_defaults(workers, batch_size)
        else:
            workers, batch_size = (1 if workers is None else workers), (8 if batch_size is None else batch_size)
        kw = _backend_kwargs(backend, model, base_url, api_key, concurrency, max_new_tokens, temperature, top_p,
                             batch_size, timeout, retries, max_pixels)
        if backend == "offline" and "text" in type_list:
            kw["threads"] = threads
            threads_note = (f"; OCR threads per worker: onnxruntime intra-op {threads}, inter-op 1, "
                            "tesseract OMP_THREAD_LIMIT=1")
        t0 = time.perf_counter()
        try:
            state = fc.prepare(input, output, types=type_list, backend=backend, backend_kwargs=kw,
                               options={"length": length, "language": language}, name=name, workers=workers,
                               batch_size=batch_size, num_gpus=gpus)
        except fc.CaptionError as e:
            raise UserError(str(e)) from None
        import json
        from pathlib import Path

        plan = json.loads((Path(state) / "plan.json").read_text())
        con.print(f"captioning [bold]{plan['input_ref']}[/] ({plan['rows']} rows) with [bold]{backend}[/] "
                  f"-> {plan['output']}; types {','.join(type_list)}; workers={workers}, batch {batch_size}"
                  + threads_note)
        with Progress(TextColumn("[bold]captioning"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=con) as prog:
            task = prog.add_task("caption", total=plan["rows"] or None)
            cf._PROGRESS["cb"] = lambda n: prog.advance(task, n)
            try:
                stats = cf.caption_flow(state=state)
            except RuntimeError as e:
                raise UserError(str(e)) from None
            finally:
                cf._PROGRESS.pop("cb", None)
        con.print(f"wrote [bold]{stats['dataset']}[/] ({stats['rows']} rows) at {stats['output']}; backend "
                  f"{stats['backend']} revision {stats['model_revision']}; {time.perf_counter() - t0:.1f}s")
        if stats["errors"]:
            con.print("caption errors (rows keep their other captions): "
                      + ", ".join(f"{k}={v}" for k, v in sorted(stats["errors"].items())))

    @caption_app.command("serve")
    def serve(
        model: str = typer.Option(..., help="Qwen3-VL model directory or hub id"),
        host: str = typer.Option("127.0.0.1"),
        port: int = typer.Option(8000),
        served_name: Optional[str] = typer.Option(None, help="model id clients send (default: the folder name)"),
        max_batch: int = typer.Option(8, help="requests batched into one generate call"),
        max_wait_ms: float = typer.Option(20.0, help="how long the first request waits for others to batch with"),
        max_new_tokens: int = typer.Option(256, help="default when a request sends no max_tokens"),
        max_pixels: Optional[int] = typer.Option(None, help="cap on pixels per image"),
    ) -> None:
        """OpenAI-compatible chat-completions server over the transformers backend (batches concurrent requests)."""
        from flywheel.captioning.server import serve as run_server

        try:
            run_server(model, host, port, served_name, max_batch, max_wait_ms, max_new_tokens, max_pixels)
        except RuntimeError as e:
            raise UserError(str(e)) from None

    app.add_typer(caption_app, name="caption")

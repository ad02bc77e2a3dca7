"""The per-batch captioning function: an Arrow table in, the same rows out with captions.

`Captioner(**kwargs)` is what the engine runs as a Ray actor (`__call__(table) -> table`), and what
the plain loop calls without Ray. For each row and requested type it renders the prompt, looks the
(sample id, type, backend, model revision, prompt hash) key up in the cache, sends only the misses
to the backend in one batch, validates (structured: repair, then one retry with the validation
problem, then `structured:invalid`), writes the outcomes to the cache, and returns:

- `captions` (struct general/text/knowledge/structured; types not requested keep their input value),
- `caption_errors` (`<type>:<rule>`: `empty`, `invalid`, `no_image`, `error:<ExceptionType>`),
- `caption_backend`, `caption_model_revision`, `caption_prompt_hash` (struct of per-type hashes),
- `caption_meta` (struct per type: what the backend said about how it made that caption; the
  offline backend's `text` names the OCR engine, packs and script that read the page),
- `instruction_clean` (edit pairs), and `token_length__<type>_tokens` per requested type.

Every input row is in the output; a caption failure never touches `reject_reason`.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from flywheel.captioning.backends import Backend, Request, make_backend
from flywheel.captioning.cache import CaptionCache, Entry, Key
from flywheel.captioning.types import CaptionOptions, build_prompt, clean_instruction, postprocess, repair_prompt
from flywheel.datasets import CAPTION_TYPES, CAPTIONS_TYPE

PROMPT_HASH_TYPE = pa.struct([(t, pa.string()) for t in CAPTION_TYPES])
READ_COLUMNS = ("id", "source", "task", "image", "caption", "captions", "caption_errors", "caption_meta", "meta", "lang",
                "width", "height", "format", "has_alpha", "source_images", "instruction")


def token_column(ctype: str) -> str:
    return f"token_length__{ctype}_tokens"


class Captioner:
    """Captions Arrow batches. Picklable until `setup()`; the backend loads there, once per worker."""

    def __init__(self, types: list[str] | tuple[str, ...] = CAPTION_TYPES, backend: str = "offline",
                 backend_kwargs: dict | None = None, options: dict | None = None, cache_path: str | None = None,
                 structured_retries: int = 1, use_cache: bool = True):
        bad = [t for t in types if t not in CAPTION_TYPES]
        if bad:
            raise ValueError(f"unknown caption types {bad}; choose from {', '.join(CAPTION_TYPES)}")
        self.types = tuple(types)
        self.backend_name = backend
        self.backend_kwargs = dict(backend_kwargs or {})
        self.options = CaptionOptions(**(options or {}))
        self.cache_path = cache_path
        self.structured_retries = structured_retries
        self.use_cache = use_cache
        self.backend: Backend | None = None
        self.cache: CaptionCache | None = None
        self.stats = {"hits": 0, "generated": 0, "retried": 0, "failed": 0}

    def setup(self) -> None:
        if self.backend is None:
            self.backend = make_backend(self.backend_name, **self.backend_kwargs)
            self.backend.setup()
            self.cache = CaptionCache(self.cache_path)

    def __call__(self, table: pa.Table) -> pa.Table:
        self.setup()
        backend, cache = self.backend, self.cache
        revision = backend.revision
        gen = backend.gen_params()
        cols = [c for c in READ_COLUMNS if c in table.column_names]
        rows = table.select(cols).to_pylist()

        keys: dict[tuple[int, str], Key] = {}
        prompts = {}
        hashes: list[dict[str, str | None]] = [{t: None for t in CAPTION_TYPES} for _ in rows]
        for i, row in enumerate(rows):
            for t in self.types:
                p = build_prompt(t, row, self.options)
                h = p.hash({**gen, **backend.row_inputs(t, row)})
                prompts[(i, t)] = p
                hashes[i][t] = h
                keys[(i, t)] = Key(row["id"], t, backend.name, revision, h)

        found = cache.get_many(keys.values()) if self.use_cache else {}
        results: dict[tuple[int, str], Entry] = {}
        transient: dict[tuple[int, str], str] = {}
        todo: list[tuple[int, str]] = []
        for k, key in keys.items():
            if key in found:
                results[k] = found[key]
                self.stats["hits"] += 1
            elif not self._images(rows[k[0]]):
                transient[k] = "no_image"
            else:
                todo.append(k)

        self._run(rows, todo, prompts, results, transient)
        if self.use_cache:
            cache.put_many((keys[k], results[k]) for k in todo if k in results)
        return self._assemble(table, rows, results, transient, hashes, revision)

    # -- generation --------------------------------------------------------------------------
    @staticmethod
    def _images(row: dict) -> list[bytes]:
        if row.get("image") is None:
            return []
        srcs = [b for b in (row.get("source_images") or []) if b is not None] if row.get("task") == "ti2i" else []
        return [*srcs, row["image"]]

    def _call(self, reqs: list[Request]) -> list[Any]:
        if not reqs:
            return []
        try:
            return self.backend.generate(reqs)
        except Exception as e:  # the whole backend call failed (server down): every request fails alone
            return [e] * len(reqs)

    def _run(self, rows, todo, prompts, results, transient) -> None:
        reqs = [Request(self._images(rows[i]), prompts[(i, t)], rows[i]) for i, t in todo]
        outs = self._call(reqs)
        self.stats["generated"] += len(todo)
        retry: list[tuple[tuple[int, str], str]] = []
        for k, out in zip(todo, outs):
            if isinstance(out, BaseException):
                transient[k] = f"error:{type(out).__name__}"
                continue
            text, err = postprocess(k[1], out)
            if err == "invalid" and self.structured_retries > 0:
                retry.append((k, out))
            results[k] = Entry(text, err, out, getattr(out, "meta", None))
        for attempt in range(self.structured_retries):
            if not retry:
                break
            self.stats["retried"] += len(retry)
            reqs = [Request(self._images(rows[k[0]]), repair_prompt(bad, "did not parse or validate"), rows[k[0]])
                    for k, bad in retry]
            outs = self._call(reqs)
            still = []
            for (k, bad), out in zip(retry, outs):
                if isinstance(out, BaseException):
                    continue  # keep the first invalid outcome
                text, err = postprocess("structured", out)
                results[k] = Entry(text, err, out, getattr(out, "meta", None))
                if err == "invalid":
                    still.append((k, out))
            retry = still

    # -- output ------------------------------------------------------------------------------
    def _assemble(self, table, rows, results, transient, hashes, revision) -> pa.Table:
        n = len(rows)
        captions, errors, metas = [], [], []
        for i, row in enumerate(rows):
            cap = dict(row.get("captions") or {t: None for t in CAPTION_TYPES})
            meta = dict(row.get("caption_meta") or {t: None for t in CAPTION_TYPES})
            errs = [e for e in (row.get("caption_errors") or []) if e.split(":", 1)[0] not in self.types]
            for t in self.types:
                k = (i, t)
                if k in transient:
                    cap[t] = meta[t] = None
                    errs.append(f"{t}:{transient[k]}")
                    continue
                e = results[k]
                cap[t], meta[t] = e.text, e.meta
                if e.error:
                    errs.append(f"{t}:{e.error}")
            self.stats["failed"] += len(errs)
            captions.append({t: cap.get(t) for t in CAPTION_TYPES})
            metas.append({t: meta.get(t) for t in CAPTION_TYPES})
            errors.append(errs)
        instr = [clean_instruction(r.get("instruction")) if r.get("task") == "ti2i" else None for r in rows]
        new = {
            "captions": pa.array(captions, CAPTIONS_TYPE),
            "caption_errors": pa.array(errors, pa.list_(pa.string())),
            "caption_backend": pa.array([self.backend.name] * n, pa.string()),
            "caption_model_revision": pa.array([revision] * n, pa.string()),
            "caption_prompt_hash": pa.array(hashes, PROMPT_HASH_TYPE),
            "caption_meta": pa.array(metas, PROMPT_HASH_TYPE),  # a string per type, like the hashes
            "instruction_clean": pa.array(instr, pa.string()),
        }
        out = table
        for name, arr in new.items():
            if name in out.column_names:
                out = out.set_column(out.column_names.index(name), name, arr)
            else:
                out = out.append_column(name, arr)
        return add_token_lengths(out, self.types)


def add_token_lengths(table: pa.Table, types) -> pa.Table:
    """Count each new caption type in Qwen tokens, as the `token_length` operator does; stored per type
    as `token_length__<type>_tokens` (the operator's own column holds the original caption's)."""
    from flywheel.models.tokenizer import count_tokens

    caps = table.column("captions").to_pylist() if "captions" in table.column_names else [None] * table.num_rows
    for t in types:
        col = count_tokens([(c or {}).get(t) for c in caps])
        arr = pa.array(col, pa.int32())
        name = token_column(t)
        if name in table.column_names:
            table = table.set_column(table.column_names.index(name), name, arr)
        else:
            table = table.append_column(name, arr)
    return table

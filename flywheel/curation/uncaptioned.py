"""Inputs without a caption: counted before a run, and handled the way the user chose.

A pool of bare images run through a recipe that judges captions (`token_length`, `clip`) used to be
rejected whole as `token_length:missing`, with no word before the run. Now `prepare` counts the
inputs that arrive without a caption (`count`, from names and sidecars on the driver; no image is
read) and stops, saying what to pass, unless the run names a policy (`MODES`):

- `caption`: caption them first with a captioning backend (the captioning job's `Captioner`, its
  cache included), then judge the generated general caption like any other;
- `allow`: keep them, marked, and let neither `token_length` nor `clip` reject them for it;
- `reject`: judge them as they are (`token_length:missing`), what a run did before;
- or drop the caption-reading operators with `--skip clip,token_length` (then nothing reads captions).

Either way every input still ends as exactly one accepted or rejected row. Rows of a run with the
`caption` or `allow` policy carry `caption_origin`: `input`, `generated:<backend>`, or `none`.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from flywheel.datasets import storage

MODES = ("caption", "allow", "reject")
ORIGIN_COL = "caption_origin"
SIDECAR_READ_LIMIT = 1 << 20  # a .json sidecar larger than this is not opened at planning time


def caption_readers(recipe) -> list[str]:
    """Operators of the recipe that judge the original caption."""
    return [s.name for s in recipe.steps if s.op is not None and "caption" in s.instance().reads]


def _blank(v) -> bool:
    if isinstance(v, (bytes, bytearray)):
        return not v.strip()
    return not isinstance(v, str) or not v.strip()


def _json_caption(data: bytes) -> bool:
    try:
        obj = json.loads(data)
    except ValueError:
        return False
    if not isinstance(obj, dict):
        return False
    cap = obj.get("caption") or obj.get("text") or obj.get("alt") or obj.get("title")
    return not _blank(cap)


def _sidecar_caption(path: Path) -> bool:
    try:
        if path.stat().st_size > SIDECAR_READ_LIMIT:
            return True  # too big to look into here; the worker reads it
        return _json_caption(path.read_bytes())
    except OSError:
        return False


def count(pl) -> dict:
    """`{"missing": n, "rows": m, "examples": [...]}` over the inputs whose caption is known from
    the plan: folder files (sidecars), tar members (their .txt/.json), Parquet rows (the caption
    column). Edit pairs are judged on their instruction and are not counted; tars on an object
    store are counted in `unknown_shards` (their captions are known only to the worker that
    streams them)."""
    from flywheel.curation.ingest import safe_member
    from flywheel.filters.decode import IMAGE_EXTS

    missing = rows = unknown = 0
    examples: list[str] = []

    def miss(where: str) -> None:
        nonlocal missing
        missing += 1
        if len(examples) < 5:
            examples.append(where)

    seen_parquet: set[tuple[str, int]] = set()
    for s in pl.shards:
        if s["kind"] == "files":
            remote = storage.is_remote(s["root"])
            for rel, cap_rel, meta_rel in s["files"]:
                rows += 1
                if cap_rel:
                    continue
                # a .json sidecar on an object store is not fetched here (a GET per image on the
                # driver); the worker reads it, as it reads a local one too big to look into
                if not (meta_rel and (remote or _sidecar_caption(Path(s["root"]) / meta_rel))):
                    miss(rel)
        elif s["kind"] == "images":  # JSONL image lines: the caption is in the line
            for ln in s["lines"]:
                rows += 1
                if _blank(ln.get("caption")):
                    miss(ln["where"])
        elif s["kind"] == "tar" and storage.is_remote(s["path"]):
            unknown += 1  # the driver never downloads a tar on an object store; its worker streams it
        elif s["kind"] == "tar":
            try:
                with tarfile.open(s["path"], "r|*") as tf:  # streamed, headers dropped as read (100k members)
                    keys: dict[str, dict] = {}
                    while (m := tf.next()) is not None:
                        tf.members = []
                        if not safe_member(m):  # never read by ingest: counted as unsafe, not as a row
                            continue
                        d, _, base = m.name.rpartition("/")
                        key = (d + "/" if d else "") + base.split(".", 1)[0]
                        ext = base.split(".", 1)[1].lower() if "." in base else ""
                        k = keys.setdefault(key, {"name": m.name, "image": False, "cap": False})
                        if ext == "txt":
                            k["cap"] = k["cap"] or m.size > 0
                        elif ext == "json" and not k["cap"] and m.size <= SIDECAR_READ_LIMIT:
                            f = tf.extractfile(m)
                            k["cap"] = bool(f and _json_caption(f.read()))
                        elif ext.rsplit(".", 1)[-1] in IMAGE_EXTS:
                            k["image"], k["name"] = True, m.name
            except (tarfile.TarError, OSError, EOFError):
                continue  # the worker turns an unreadable tar into its own row
            for k in keys.values():
                if k["image"]:
                    rows += 1
                    if not k["cap"]:
                        miss(f"{s['rel']}!{k['name']}")
        elif s["kind"] == "parquet":
            if (s["path"], s["row_group"]) in seen_parquet:
                continue
            seen_parquet.add((s["path"], s["row_group"]))
            pf = pq.ParquetFile(storage.source(s["path"]))
            col = "caption" if s.get("dataset") else s.get("caption_col", "caption")
            n = pf.metadata.row_group(s["row_group"]).num_rows
            rows += n
            if col not in pf.schema_arrow.names:
                missing += n
                if len(examples) < 5:
                    examples.append(f"{s['rel']} (no column {col!r})")
                continue
            vals = pf.read_row_group(s["row_group"], columns=[col]).column(0).to_pylist()
            for i, v in enumerate(vals):
                if _blank(v):
                    miss(f"{s['rel']}#{i}")
    return {"missing": missing, "rows": rows, "examples": examples, "unknown_shards": unknown}


def stop_message(counts: dict, readers: list[str]) -> str:
    ex = ", ".join(counts["examples"][:3])
    return (f"{counts['missing']} of {counts['rows']} inputs have no caption (e.g. {ex}), and {', '.join(readers)} "
            f"judge captions: {'token_length would reject every one of them as token_length:missing' if 'token_length' in readers else 'clip cannot score them'}. "
            "Choose what happens to them:\n"
            "    --caption offline            caption them first (offline, transformers or openai backend), then judge\n"
            f"    --skip {','.join(readers):<22}run without the operators that read captions\n"
            "    --allow-uncaptioned          keep them, marked caption_origin=none; no operator rejects them for it\n"
            "    --reject-uncaptioned         judge them as they are (token_length:missing)")


class CaptionFill:
    """Per-batch policy for rows without a caption (runs in the workers before decoding). Picklable;
    the captioning backend loads on first use, once per worker process (`shared`)."""

    def __init__(self, mode: str, backend: str | None = None, backend_kwargs: dict | None = None,
                 cache_path: str | None = None):
        self.mode = mode
        self.backend = backend
        self.backend_kwargs = backend_kwargs or {}
        self.cache_path = cache_path
        self._captioner = None

    def __call__(self, table: pa.Table) -> pa.Table:
        caps = table.column("caption").to_pylist() if "caption" in table.column_names else [None] * table.num_rows
        tasks = table.column("task").to_pylist() if "task" in table.column_names else ["t2i"] * table.num_rows
        todo = [i for i, (c, t) in enumerate(zip(caps, tasks)) if _blank(c) and t != "ti2i"]
        origin = ["input" if not _blank(c) else "none" for c in caps]
        if self.mode == "caption" and todo:
            table, caps = self._generate(table, caps, todo, origin)
        table = _set(table, "caption", caps, pa.string())
        return _set(table, ORIGIN_COL, origin, pa.string())

    def _generate(self, table, caps, todo, origin):
        from flywheel.captioning.annotate import Captioner
        from flywheel.datasets import CAPTIONS_TYPE

        if self._captioner is None:
            self._captioner = Captioner(types=["general"], backend=self.backend, backend_kwargs=self.backend_kwargs,
                                        cache_path=self.cache_path)
        out = self._captioner(table.take(pa.array(todo, pa.int64())))
        gen = out.column("captions").to_pylist()
        captions = table.column("captions").to_pylist() if "captions" in table.column_names else [None] * table.num_rows
        for j, i in enumerate(todo):
            text = (gen[j] or {}).get("general")
            if not _blank(text):
                caps[i] = text
                origin[i] = f"generated:{self.backend}"
                captions[i] = gen[j]
        return _set(table, "captions", captions, CAPTIONS_TYPE), caps


_SHARED: dict[str, CaptionFill] = {}


def shared(config: dict) -> CaptionFill:
    """One `CaptionFill` per worker process and configuration (the backend loads once)."""
    key = json.dumps(config, sort_keys=True, default=str)
    if key not in _SHARED:
        _SHARED[key] = CaptionFill(**config)
    return _SHARED[key]


def _set(t: pa.Table, name: str, values, typ) -> pa.Table:
    arr = pa.array(list(values), type=typ)
    if name in t.column_names:
        return t.set_column(t.column_names.index(name), name, arr)
    return t.append_column(name, arr)

"""Ingest: turn an input path into shards of work, and a shard into Arrow rows.

Planning (`plan`) runs on the driver and only lists names: a folder tree's files, tar shards,
Parquet row groups, edit-pair manifest lines. Reading (`read_shard`) runs in the workers and
streams bytes; nothing holds the whole input in memory: a tar is read one sample at a time, and a
file or member above `max_bytes` (the decode step's `broken_file.max_bytes`) is never read, its
row saying `too_large` in `meta` (then `broken_file:too_large`). FIFOs and devices are never
opened (`broken_file:unreadable`).

Every input that is not a sidecar becomes a row (a non-image file is rejected later as
`broken_file:not_image`). What is never followed is counted under `ingest:*` in stats.json:
orphan sidecars, ambiguous (duplicate) stems, manifest lines pointing at missing files, symlinks
leaving the input root or looping, unsafe tar member names (`../`, absolute, links), unreadable
manifest lines, sidecars above 1 MiB. Captions repaired to clean UTF-8 are counted too
(`ingest:caption_not_utf8`: undecodable bytes replaced by U+FFFD; `ingest:caption_nul`: NULs
removed); their rows are kept.

Sources name rows uniquely within an input: `dir/a.jpg`, `shard.tar!key.jpg`,
`file.parquet#17`, `pairs.jsonl#L3`. Datasets made by this tool keep their original sources.
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import stat
import tarfile
from collections import Counter
from pathlib import Path, PurePosixPath
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from flywheel.curation.listing import (
    SIDECAR_EXTS,
    Plan,
    manifest_paths,
    plan_manifest_lines,
    plan_names,
)
from flywheel.curation.listing import ext as _ext
from flywheel.datasets import BASE_SCHEMA, pair_id, sample_id, storage
from flywheel.filters.decode import IMAGE_EXTS

ROWS_PER_BLOCK = 64
BLOCK_BYTES = 64 << 20  # a block is also cut when its image bytes reach this (64 large files are not one block)
MAX_BYTES = 256 << 20  # the decode step's `max_bytes` default; the engine passes the recipe's
SIDECAR_MAX_BYTES = 1 << 20  # a caption or metadata sidecar above this is not read (ingest:sidecar_too_large)


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root)
        return True
    except (ValueError, RuntimeError, OSError):  # outside, or a symlink loop
        return False


def _link(path: Path, root: Path) -> str | None:
    """Where a symlink leads: None (not a link, or a link inside the root), "outside", or "loop"
    (a cycle, which `resolve` cannot end)."""
    if not path.is_symlink():
        return None
    try:
        path.resolve(strict=False).relative_to(root)
        return None
    except ValueError:
        return "outside"
    except (RuntimeError, OSError):  # RuntimeError: "Symlink loop" (Python 3.11); OSError: ELOOP
        return "loop"


def plan(input_path: str | Path, image_col: str = "image", caption_col: str = "caption") -> Plan:
    """List the work for `input_path`: a folder, a Parquet file, a tar shard, a JSONL manifest,
    or a dataset directory made by this tool; on an object store (`s3://bucket/prefix/`, or one
    object) the same kinds, listed once by the driver and read by the workers (`ingest_remote`)."""
    if storage.is_remote(input_path):
        from flywheel.curation import ingest_remote

        return ingest_remote.plan(str(input_path), image_col, caption_col)
    root = Path(input_path).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"input {root} does not exist; pass a folder, .parquet, .tar, .jsonl or a dataset name@vN")
    root = root.resolve()
    p = Plan(root=str(root))
    opts = {"image_col": image_col, "caption_col": caption_col}
    if root.is_file():
        ext = _ext(root.name)
        p.kind = {"parquet": "parquet", "tar": "tar", "jsonl": "jsonl"}.get(ext, "file")
        base = root.parent
        _plan_file(p, root, base, opts)
        return p
    if (root / "manifest.json").exists() and (root / "data").is_dir():
        p.kind = "dataset"
        for f in sorted((root / "data").glob("part-*.parquet")):
            _plan_parquet(p, f, root, opts, dataset=True)
        return p
    p.kind = "folder"
    _plan_folder(p, root, opts)
    return p


def _plan_file(p: Plan, f: Path, base: Path, opts: dict) -> None:
    ext = _ext(f.name)
    if ext == "parquet":
        _plan_parquet(p, f, base, opts)
    elif ext == "tar":
        p.add({"kind": "tar", "path": str(f), "rel": f.relative_to(base).as_posix()}, max(1, f.stat().st_size // 100_000))
    elif ext == "jsonl":
        _plan_manifest(p, f, base)
    else:
        p.add({"kind": "files", "root": str(base), "files": [[f.relative_to(base).as_posix(), None, None]]}, 1)


def _plan_parquet(p: Plan, f: Path, base: Path, opts: dict, dataset: bool = False) -> None:
    try:
        meta = pq.ParquetFile(f).metadata
    except Exception as e:  # noqa: BLE001 - a broken parquet file is reported, not fatal
        p.skip("unreadable_parquet", f"{f}: {type(e).__name__}: {e}")
        return
    for rg in range(meta.num_row_groups):
        p.add({"kind": "parquet", "path": str(f), "rel": f.relative_to(base).as_posix(), "row_group": rg,
               "dataset": dataset, **opts}, meta.row_group(rg).num_rows)


def _plan_folder(p: Plan, root: Path, opts: dict) -> None:
    batch: list[list] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        d = Path(dirpath)
        dirnames.sort()
        for dn in list(dirnames):
            if (d / dn).is_symlink():
                dirnames.remove(dn)
                target = d / dn
                where = _link(target, root)
                p.skip({None: "symlink_dir_not_followed", "outside": "symlink_outside_root", "loop": "symlink_loop"}[where],
                       (target.relative_to(root)).as_posix())

        def keep(n: str, d: Path = d) -> bool:
            where = _link(d / n, root)
            if where:
                p.skip(f"symlink_{where}" if where == "loop" else "symlink_outside_root", (d / n).relative_to(root).as_posix())
            return not where

        prefix = "" if d == root else d.relative_to(root).as_posix() + "/"
        plan_names(p, str(root), prefix, filenames, batch, keep, lambda n, d=d: _plan_file(p, d / n, root, opts))
    if batch:
        p.add({"kind": "files", "root": str(root), "files": batch}, len(batch))


def _plan_manifest(p: Plan, f: Path, base: Path) -> None:
    mroot = f.parent.resolve()

    def problem(sp: str) -> str | None:
        if storage.is_remote(sp):
            return None  # a URL: the worker that reads it counts it missing (ingest:missing_file)
        full = mroot / sp
        if not _inside(full, mroot) and not Path(sp).is_absolute():
            return "path_outside_root"
        return None if full.is_file() else "missing_file"

    with open(f, encoding="utf-8", errors="replace") as fh:
        plan_manifest_lines(p, fh, f.relative_to(base).as_posix(), str(mroot), problem)


def reads_remote(shard: dict) -> bool:
    """The shard's worker reads from an object store (it needs the credential pointers)."""
    if any(storage.is_remote(shard.get(k) or "") for k in ("path", "root")):
        return True
    return any(storage.is_remote(x) for ln in shard.get("lines") or () for x in manifest_paths(ln))


# --- reading (workers) --------------------------------------------------------------------------


def _row(**kw: Any) -> dict:
    return kw


def read_limited(path: Path, max_bytes: int) -> tuple[bytes | None, dict | None]:
    """A file's bytes, or None and why: never more than `max_bytes` is read (a 2 GB file would
    not fit an Arrow binary cell and would blow the worker's memory), never a FIFO or device (a
    read would block or never end), never through a symlink loop."""
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            return None, {"read_error": "not a regular file"}
        if st.st_size > max_bytes:
            return None, {"too_large": st.st_size, "max_bytes": max_bytes}
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as e:
        return None, {"read_error": f"{type(e).__name__}: {e}"}
    if len(data) > max_bytes:  # grew since the stat
        return None, {"too_large": len(data), "max_bytes": max_bytes}
    return data, None


def read_any(ref: str | Path, max_bytes: int) -> tuple[bytes | None, dict | None]:
    """`read_limited` for a local path or a URL on an object store (`s3://...`)."""
    if storage.is_remote(ref):
        return _read_remote(str(ref), max_bytes)
    return read_limited(Path(ref), max_bytes)


def _read_remote(url: str, max_bytes: int) -> tuple[bytes | None, dict | None]:
    """An object's bytes through fsspec: its size first (a HEAD), so an object above `max_bytes` is
    never fetched, then one GET. Credential errors other than a refused object propagate: a
    worker without credentials fails the run rather than turning every row into a broken file."""
    fs = storage.filesystem(url)
    try:
        with fs.open(storage.strip(url), "rb") as f:
            if f.size > max_bytes:
                return None, {"too_large": f.size, "max_bytes": max_bytes}
            data = f.read(max_bytes + 1)
    except OSError as e:  # FileNotFoundError, PermissionError (a refused object), a dropped connection
        return None, {"read_error": f"{type(e).__name__}: {storage.redact(str(e))}"}
    if len(data) > max_bytes:
        return None, {"too_large": len(data), "max_bytes": max_bytes}
    return data, None


def missing(why: dict | None) -> bool:
    return bool(why) and str(why.get("read_error", "")).startswith("FileNotFoundError")


def ref(root: str, path: str) -> str:
    """Where `path` named inside an input (a manifest line, a Parquet path column) is: a URL as it
    is, an absolute local path as it is (under a local root), else relative to `root`."""
    if storage.is_remote(path):
        return path
    if storage.is_remote(root):
        proto, key = root.split("://", 1)
        return f"{proto}://{posixpath.normpath(key.rstrip('/') + '/' + path)}"
    return str(Path(root) / path)


def clean_text(raw: bytes | str | None, stats: Counter) -> str | None:
    """A caption as clean UTF-8: bytes that are not UTF-8 are decoded with U+FFFD replacements
    (`ingest:caption_not_utf8`) and NUL characters are removed (`ingest:caption_nul`): both are
    counted, and the row is kept."""
    if raw is None:
        return None
    if isinstance(raw, (bytes, bytearray)):
        try:
            text = bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            text = bytes(raw).decode("utf-8", "replace")
            stats["ingest:caption_not_utf8"] += 1
    elif isinstance(raw, str):
        text = raw
    else:
        return None
    if "\x00" in text:
        text = text.replace("\x00", "")
        stats["ingest:caption_nul"] += 1
    return text.strip()


def _read_sidecar(path: str | Path, stats: Counter) -> bytes | None:
    data, why = read_any(path, SIDECAR_MAX_BYTES)
    if why and "too_large" in why:
        stats["ingest:sidecar_too_large"] += 1
    return data


def _meta_of(raw: bytes | None, stats: Counter) -> tuple[str | None, str | None]:
    """A `.json` sidecar: its `caption` field and the whole object as metadata."""
    if raw is None:
        return None, None
    try:
        obj = json.loads(clean_text(raw, stats) or "")
    except ValueError:
        return None, None
    if not isinstance(obj, dict):
        return None, json.dumps({"value": obj})
    cap = obj.get("caption") or obj.get("text") or obj.get("alt") or obj.get("title")
    return (clean_text(cap, stats) if isinstance(cap, str) else None), json.dumps(obj, ensure_ascii=False, default=str)


def _stats_table(stats: Counter) -> pa.Table:
    return pa.table({"__ingest_stats__": [json.dumps({k: v for k, v in stats.items() if v})]})


def read_shard(shard: dict, done: set[str] | frozenset = frozenset(), max_bytes: int = MAX_BYTES) -> Iterator[pa.Table]:
    """Rows of one shard in blocks of ROWS_PER_BLOCK, skipping sources already `done`; no file or
    tar member above `max_bytes` is read (its row says `too_large` in `meta`)."""
    kind = shard["kind"]
    gen = {"files": _read_files, "tar": _read_tar, "parquet": _read_parquet, "edits": _read_edits,
           "images": _read_image_lines}[kind](shard, done, max_bytes)
    buf: list[dict] = []
    size = 0
    for item in gen:
        if isinstance(item, pa.Table):
            if buf:
                yield _to_table(buf)
                buf, size = [], 0
            yield item
            continue
        buf.append(item)
        size += len(item.get("image") or b"") + sum(len(b or b"") for b in item.get("source_images") or [])
        if len(buf) >= ROWS_PER_BLOCK or size >= BLOCK_BYTES:
            yield _to_table(buf)
            buf, size = [], 0
    if buf:
        yield _to_table(buf)


def _to_table(rows: list[dict]) -> pa.Table:
    cols = {f.name: [r.get(f.name) for r in rows] for f in BASE_SCHEMA}
    return pa.Table.from_pydict(cols, schema=BASE_SCHEMA)


def _read_files(shard: dict, done, max_bytes: int) -> Iterator[dict | pa.Table]:
    root = shard["root"]
    stats: Counter = Counter()
    for rel, cap_rel, meta_rel in shard["files"]:
        if rel in done:
            continue
        full = ref(root, rel)
        data, why = read_any(full, max_bytes)
        caption = clean_text(_read_sidecar(ref(root, cap_rel), stats), stats) if cap_rel else None
        meta = None
        if meta_rel:
            mcap, meta = _meta_of(_read_sidecar(ref(root, meta_rel), stats), stats)
            caption = caption or mcap
        if why:
            meta = json.dumps({**json.loads(meta or "{}"), **why}) if meta and meta.startswith("{") else json.dumps(why)
        yield _row(id=sample_id(data or b""), source=rel, task="t2i", image=data, image_uri=full, caption=caption, meta=meta)
    if stats:
        yield _stats_table(stats)


def safe_member(m: tarfile.TarInfo) -> bool:
    name = m.name
    if not m.isfile():
        return False
    pp = PurePosixPath(name)
    return not (pp.is_absolute() or ".." in pp.parts or "\\" in name or name.startswith("/"))


def _read_tar(shard: dict, done, max_bytes: int) -> Iterator[dict | pa.Table]:
    """WebDataset convention: consecutive members sharing a key (path up to the first dot of the
    basename) form one sample; the image member is the row, .txt/.json are its caption and
    metadata. Streamed: one sample's members are in memory at a time, so a tar of 100k members
    costs no more memory than one of ten; a member above `max_bytes` is never read."""
    rel = shard["rel"]
    with contextlib.ExitStack() as stack:
        try:
            tf = stack.enter_context(_open_tar(shard["path"], stack))
        except (tarfile.TarError, OSError) as e:
            yield _row(id=sample_id(b""), source=f"{rel}!", task="t2i", image=None,
                       meta=json.dumps({"tar_error": storage.redact(str(e))}))
            return
        yield from _tar_members(tf, rel, done, max_bytes)


# an object-store tar is streamed in ranged GETs of this size (one in memory at a time)
TAR_READ_BLOCK = 8 << 20


def _open_tar(path: str, stack: contextlib.ExitStack) -> tarfile.TarFile:
    """A tar as a stream (members in order, never indexed): a local file, or an object read
    sequentially through fsspec by the worker itself (never downloaded whole first)."""
    if storage.is_remote(path):
        fh = stack.enter_context(storage.filesystem(path).open(storage.strip(path), "rb", block_size=TAR_READ_BLOCK,
                                                               cache_type="readahead"))
        return tarfile.open(fileobj=fh, mode="r|*")
    return tarfile.open(path, mode="r|*")


def _tar_members(tf: tarfile.TarFile, rel: str, done, max_bytes: int) -> Iterator[dict | pa.Table]:
    stats: Counter = Counter()
    key: str | None = None
    members: dict[str, tuple] = {}
    with tf:
        try:
            while (m := tf.next()) is not None:
                tf.members = []  # TarFile keeps every header it has read: 100k members would be ~50 MB
                if m.isdir():
                    continue
                if not safe_member(m):
                    stats["ingest:unsafe_tar_member"] += 1
                    continue
                d, _, base = m.name.rpartition("/")
                k = (d + "/" if d else "") + base.split(".", 1)[0]
                ext = base.split(".", 1)[1].lower() if "." in base else ""
                if k != key:
                    yield from _tar_sample(rel, members, done, stats)
                    key, members = k, {}
                sidecar = ext in SIDECAR_EXTS
                limit = SIDECAR_MAX_BYTES if sidecar else max_bytes
                why = None
                if f"{rel}!{m.name}" in done and not sidecar:
                    data = None  # finished by an earlier attempt: not read again
                elif m.size > limit:
                    data, why = None, {"too_large": m.size, "max_bytes": limit}
                    if sidecar:
                        stats["ingest:sidecar_too_large"] += 1
                else:
                    f = tf.extractfile(m)
                    data = f.read() if f else b""
                members[ext] = (m.name, data, why)
        except (tarfile.TarError, OSError, EOFError):
            stats["ingest:truncated_tar"] += 1
    yield from _tar_sample(rel, members, done, stats)
    if any(stats.values()):
        yield _stats_table(stats)


def _tar_sample(rel: str, members: dict, done, stats: Counter) -> Iterator[dict]:
    if not members:
        return
    caption = meta = None
    if "txt" in members and members["txt"][1] is not None:
        caption = clean_text(members["txt"][1], stats)
    if "json" in members:
        mcap, meta = _meta_of(members["json"][1], stats)
        caption = caption or mcap
    payload = [e for e in members if e not in SIDECAR_EXTS]
    if not payload:
        stats["ingest:orphan_sidecar"] += 1
        return
    img = [e for e in payload if e.split(".")[-1].lower() in IMAGE_EXTS]
    for e in (img[:1] + [e for e in payload if e not in img[:1]]):
        name, data, why = members[e]
        src = f"{rel}!{name}"
        if src in done:
            continue
        row_meta = json.dumps({**(json.loads(meta) if meta and meta.startswith("{") else {}), **why}) if why else meta
        yield _row(id=sample_id(data or b""), source=src, task="t2i", image=data,
                   caption=caption if e in img[:1] else None, meta=row_meta)


def _read_parquet(shard: dict, done, max_bytes: int) -> Iterator[dict | pa.Table]:
    """A row group read ROWS_PER_BLOCK rows at a time (a row group of large images never sits in
    memory whole)."""
    src = shard["path"]
    pf = pq.ParquetFile(storage.source(src))
    names = pf.schema_arrow.names
    batches = (pa.Table.from_batches([b]) for b in pf.iter_batches(batch_size=ROWS_PER_BLOCK, row_groups=[shard["row_group"]]))
    rel = shard["rel"]
    if shard.get("dataset") or {"id", "source", "task"} <= set(names):
        # One of our datasets: keep every column (stored scores are reused, not recomputed).
        import pyarrow.compute as pc

        drop = [c for c in ("reject_reason", "reject_reasons", "reject_details", "dedup_of", "run_id") if c in names]
        done_arr = pa.array(sorted(done), pa.string()) if done else None
        for t in batches:
            t = t.drop_columns(drop)
            if done_arr is not None:
                t = t.filter(pc.invert(pc.is_in(t.column("source"), done_arr)))
            if t.num_rows:
                yield t
        return
    icol, ccol = shard["image_col"], shard["caption_col"]
    if icol not in names:
        raise ValueError(f"{rel}: no image column {icol!r} (columns: {names}); pass --image-col NAME")
    base_row = sum(pf.metadata.row_group(i).num_rows for i in range(shard["row_group"]))
    pdir = src.rsplit("/", 1)[0] if storage.is_remote(src) else str(Path(src).parent)
    stats: Counter = Counter()
    for i, (img, cap, meta) in enumerate(_parquet_rows(batches, icol, ccol)):
        src = f"{rel}#{base_row + i}"
        if src in done:
            continue
        uri = None
        if isinstance(img, dict):  # HF datasets style {"bytes": ..., "path": ...}
            img = img.get("bytes") or img.get("path")
        if isinstance(img, str):
            uri = img
            img, why = read_any(ref(pdir, img), max_bytes)
            if why:
                meta = {**(meta or {}), **why}
        elif img is not None and not isinstance(img, bytes):  # the preflight checks the column's type
            meta = {**(meta or {}), "read_error": f"image value of type {type(img).__name__}"}
            img = None
        elif img is not None and len(img) > max_bytes:
            meta = {**(meta or {}), "too_large": len(img), "max_bytes": max_bytes}
            img = None
        yield _row(id=sample_id(img or b""), source=src, task="t2i", image=img, image_uri=uri,
                   caption=clean_text(cap, stats),
                   meta=json.dumps(meta, ensure_ascii=False, default=str) if meta else None)
    if stats:
        yield _stats_table(stats)


def _parquet_rows(batches: Iterator[pa.Table], icol: str, ccol: str) -> Iterator[tuple]:
    """(image, caption, other columns as a dict) per row of a raw Parquet input."""
    for t in batches:
        images = t.column(icol).to_pylist()
        caps = t.column(ccol).to_pylist() if ccol in t.column_names else [None] * t.num_rows
        other = [c for c in t.column_names if c not in (icol, ccol)]
        metas = t.select(other).to_pylist() if other else [None] * t.num_rows
        yield from zip(images, caps, metas)


def parquet_problems(path: str | Path, image_col: str, caption_col: str) -> list[str]:
    """What is wrong with a raw Parquet input's columns, one sentence each (checked before a run)."""
    schema = pq.read_schema(storage.source(path))
    names = schema.names
    if {"id", "source", "task"} <= set(names):
        return []  # one of our datasets
    out = []
    if image_col not in names:
        out.append(f"{path}: no image column {image_col!r} (columns: {', '.join(names)}); pass --image-col NAME")
    else:
        t = schema.field(image_col).type
        ok = (pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_string(t) or pa.types.is_large_string(t)
              or (pa.types.is_struct(t) and {"bytes", "path"} & {f.name for f in t}))
        if not ok:
            out.append(f"{path}: image column {image_col!r} is {t}; it must hold bytes, paths, or "
                       "{bytes, path} structs (pass --image-col NAME)")
    if caption_col in names:
        t = schema.field(caption_col).type
        if not (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t) or pa.types.is_large_binary(t)):
            out.append(f"{path}: caption column {caption_col!r} is {t}, not text; pass --caption-col NAME")
    return out


def _read_edits(shard: dict, done, max_bytes: int) -> Iterator[dict | pa.Table]:
    """Edit pairs; a path the planner could not check (a URL, or any path of a manifest on an
    object store) and that does not exist is counted `ingest:missing_file`, like a missing local
    one at planning time, and its line is not a row."""
    root = shard["root"]
    stats: Counter = Counter()
    for ln in shard["lines"]:
        if ln["where"] in done:
            continue
        reads = [read_any(ref(root, s), max_bytes) for s in ln["sources"]]
        tgt, why = read_any(ref(root, ln["target"]), max_bytes)
        if missing(why) or any(missing(w) for _, w in reads):
            stats["ingest:missing_file"] += 1
            continue
        srcs = [b or b"" for b, _ in reads]  # unread: a broken source
        sids = [sample_id(b) for b in srcs]
        meta = ln.get("meta")
        if why:
            meta = {**(meta if isinstance(meta, dict) else {"value": meta} if meta is not None else {}), **why}
        yield _row(id=pair_id(sids, ln["instruction"], sample_id(tgt or b"")), source=ln["where"], task="ti2i", image=tgt,
                   image_uri=ref(root, ln["target"]), caption=ln.get("caption"), instruction=ln["instruction"],
                   source_ids=sids, source_images=srcs,
                   meta=json.dumps(meta, ensure_ascii=False, default=str) if meta else None)
    if stats:
        yield _stats_table(stats)


def _read_image_lines(shard: dict, done, max_bytes: int) -> Iterator[dict | pa.Table]:
    """Image lines of a JSONL manifest: one text-to-image row each, the line's other fields as
    `meta`; a path that does not exist is counted `ingest:missing_file`, as for edit pairs."""
    root = shard["root"]
    stats: Counter = Counter()
    for ln in shard["lines"]:
        if ln["where"] in done:
            continue
        uri = ref(root, ln["image"])
        data, why = read_any(uri, max_bytes)
        if missing(why):
            stats["ingest:missing_file"] += 1
            continue
        meta = {**(ln.get("meta") or {}), **(why or {})}
        caption = ln.get("caption")
        yield _row(id=sample_id(data or b""), source=ln["where"], task="t2i", image=data, image_uri=uri,
                   caption=clean_text(caption, stats) if isinstance(caption, str) else None,
                   meta=json.dumps(meta, ensure_ascii=False, default=str) if meta else None)
    if stats:
        yield _stats_table(stats)

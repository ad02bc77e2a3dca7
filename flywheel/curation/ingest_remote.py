"""Inputs on an object store (`s3://bucket/prefix/` or one object; any fsspec URL), planned on the
driver from one listing and read by the workers through fsspec.

A prefix with a manifest is a dataset made by this tool: its parts as the manifest names them,
one shard per row group (never a listing: an unfinished write is not an input). Any other prefix
is listed once (`find`: 1,000 keys a request, sizes included) and its objects are planned as a
local folder's files are (`listing.plan_names`):
- WebDataset `.tar` shards (what img2dataset writes): one shard each; the worker that scores it
  streams it member by member in ranged GETs of `ingest.TAR_READ_BLOCK`, with the member rules of
  a local tar (unsafe names counted, members above `max_bytes` never kept); the driver never reads
  a tar's bytes (so it cannot count a tar's missing captions before the run: `uncaptioned.count`);
- Parquet files: one shard per row group, from the footer alone; path columns resolve against the
  file's prefix, URLs as they are;
- JSONL edit-pair manifests: read by the driver (lines are small); paths relative to the manifest
  (never above it: `ingest:path_outside_root`) or URLs; a named object that does not exist is
  found by the worker and counted `ingest:missing_file` (one HEAD per path on the driver would cost
  more than the run's listing);
- loose images with their `.txt`/`.json` sidecars by stem, the image extensions of a folder; each
  image costs the worker a HEAD (its size, so nothing above `max_bytes` is fetched) and a GET.
An object store has no symlinks, FIFOs or devices, so those rules do not arise.

Credentials come only from the standard chain (`storage.filesystem`); a prefix that is empty,
missing or unreadable stops the run in `prepare` with what to check or set.
"""

from __future__ import annotations

import posixpath

import pyarrow.parquet as pq

from flywheel.curation import listing
from flywheel.datasets import storage

READ_HINT = ("set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), AWS_ENDPOINT_URL for a non-AWS "
             "server, and grant s3:ListBucket and s3:GetObject on the prefix")


def plan(url: str, image_col: str = "image", caption_col: str = "caption") -> listing.Plan:
    proto = url.split("://", 1)[0]
    key = storage.strip(url).rstrip("/")
    fs = storage.filesystem(url)
    try:
        fs.invalidate_cache(key)  # a listing cached earlier in this process may predate the upload
        if fs.exists(f"{key}/{storage.MANIFEST}"):
            return _plan_dataset(f"{proto}://{key}", image_col, caption_col)
        info = fs.info(key)
        if info["type"] == "directory":
            files, base = fs.find(key, detail=True), key
        else:
            files, base = {key: info}, key.rsplit("/", 1)[0]
        if files:  # listing is one permission, reading another: read a byte of one object now
            fs.cat_file(next(iter(sorted(files))), start=0, end=1)
    except FileNotFoundError:
        raise FileNotFoundError(f"input {url} does not exist: no object and no objects under that prefix. Check the "
                                "bucket and prefix (and AWS_ENDPOINT_URL for a non-AWS server).") from None
    except Exception as e:  # noqa: BLE001 - NoCredentialsError, AccessDenied, a wrong endpoint ...
        raise PermissionError(f"cannot read {url}: {type(e).__name__}: {storage.redact(str(e))}. "
                              f"To read there, {READ_HINT}.") from None
    if not files:
        raise FileNotFoundError(f"input {url} is an empty prefix: no objects under it. Check the prefix, or upload "
                                "the images, .tar shards, .parquet files or .jsonl manifests first.")
    root = f"{proto}://{base}"
    p = listing.Plan(root=root)
    opts = {"image_col": image_col, "caption_col": caption_col}
    if info["type"] == "directory":
        p.kind = "prefix"
    else:
        p.kind = {"parquet": "parquet", "tar": "tar", "jsonl": "jsonl"}.get(listing.ext(key), "file")
    _datasets_inside(p, files, base, root, image_col, caption_col)
    by_dir: dict[str, list[str]] = {}
    for path in sorted(files):
        d, _, name = path[len(base) + 1:].rpartition("/")
        by_dir.setdefault(d, []).append(name)
    batch: list[list] = []
    for d in sorted(by_dir):
        prefix = d + "/" if d else ""

        def data_file(name: str, prefix: str = prefix) -> None:
            rel = prefix + name
            _plan_object(p, fs, root, rel, int(files[f"{base}/{rel}"].get("size") or 0), opts)

        listing.plan_names(p, root, prefix, by_dir[d], batch, lambda n: True, data_file)
    if batch:
        p.add({"kind": "files", "root": root, "files": batch}, len(batch))
    return p


def _datasets_inside(p: listing.Plan, files: dict, base: str, root: str, image_col: str, caption_col: str) -> None:
    """Datasets under the prefix are read through their manifests, and parts under a `data/` with
    no manifest beside it (a killed writer's, which `flywheel gc` collects) are not read at all
    (`ingest:unfinished_dataset_part`): readers trust only manifests. Both leave `files`."""
    homes = sorted(path[: -len(storage.MANIFEST) - 1] for path in files if path.endswith("/" + storage.MANIFEST))
    for home in homes:
        sub = _plan_dataset(f"{root}/{home[len(base) + 1:]}", image_col, caption_col)
        for s in sub.shards:
            s["rel"] = s["path"][len(root) + 1:]
            p.add(s, 0)
        p.rows_estimate += sub.rows_estimate
        for path in [f for f in files if f.startswith(home + "/")]:
            del files[path]
    for path in [f for f in files if "/data/part-" in "/" + f[len(base) + 1:] and f.endswith(".parquet")]:
        p.skip("unfinished_dataset_part", path[len(base) + 1:])
        del files[path]


def _plan_object(p: listing.Plan, fs, root: str, rel: str, size: int, opts: dict) -> None:
    url = f"{root}/{rel}"
    ext = listing.ext(rel)
    if ext == "tar":
        p.add({"kind": "tar", "path": url, "rel": rel}, max(1, size // 100_000))
    elif ext == "parquet":
        try:
            _plan_row_groups(p, fs, url, rel, False, opts)
        except Exception as e:  # noqa: BLE001 - a broken parquet file is reported, not fatal
            p.skip("unreadable_parquet", f"{rel}: {type(e).__name__}: {storage.redact(str(e))}")
    elif ext == "jsonl":
        mdir = storage.strip(url).rsplit("/", 1)[0]

        def problem(sp: str) -> str | None:
            if storage.is_remote(sp):
                return None
            if sp.startswith("/") or not posixpath.normpath(f"{mdir}/{sp}").startswith(mdir + "/"):
                return "path_outside_root"  # above the manifest's prefix, or a path on some worker's disk
            return None

        with fs.open(storage.strip(url), "rt", encoding="utf-8", errors="replace") as fh:
            listing.plan_manifest_lines(p, fh, rel, url.rsplit("/", 1)[0], problem)


def _plan_dataset(url: str, image_col: str, caption_col: str) -> listing.Plan:
    """A dataset on an object store: the parts its manifest names, one shard per row group."""
    from flywheel.datasets import Dataset

    ds = Dataset(url)
    p = listing.Plan(root=url)
    p.kind = "dataset"
    opts = {"image_col": image_col, "caption_col": caption_col}
    for f in ds.files():
        _plan_row_groups(p, ds.fs, f, f[len(url) + 1:], True, opts)
    return p


def _plan_row_groups(p: listing.Plan, fs, url: str, rel: str, dataset: bool, opts: dict) -> None:
    """One shard per row group of a Parquet object, from its footer alone."""
    with fs.open(storage.strip(url), "rb") as fh:
        meta = pq.ParquetFile(fh).metadata
    for rg in range(meta.num_row_groups):
        p.add({"kind": "parquet", "path": url, "rel": rel, "row_group": rg, "dataset": dataset, **opts},
              meta.row_group(rg).num_rows)

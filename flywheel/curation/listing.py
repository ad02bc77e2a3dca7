"""Planning rules shared by local and object-store inputs (`ingest`, `ingest_remote`): the plan,
how one directory's files group into rows (an image and its sidecars by stem), and how a JSONL
manifest's lines become rows. Names only: nothing here reads an image."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field

from flywheel.filters.decode import IMAGE_EXTS

SIDECAR_EXTS = {"txt", "json"}
FILES_PER_SHARD = 32


@dataclass
class Plan:
    shards: list[dict] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)  # ingest:* -> n
    examples: dict[str, list[str]] = field(default_factory=dict)  # ingest:* -> a few paths
    root: str = ""
    kind: str = ""  # folder | prefix (object store) | parquet | tar | jsonl | dataset | file
    rows_estimate: int = 0

    def add(self, shard: dict, rows: int) -> None:
        """One shard of about `rows` input rows."""
        self.shards.append(shard)
        self.rows_estimate += rows

    def skip(self, reason: str, path: str) -> None:
        key = f"ingest:{reason}"
        self.counts[key] += 1
        ex = self.examples.setdefault(key, [])
        if len(ex) < 5:
            ex.append(path)


def ext(name: str) -> str:
    base = name.rsplit("/", 1)[-1]
    return base.rsplit(".", 1)[-1].lower() if "." in base else ""


def plan_names(p: Plan, root: str, prefix: str, filenames, batch: list, keep, data_file) -> None:
    """One directory's files (`prefix` is its path under the input root, "" or "dir/"): an image
    with its `.txt`/`.json` sidecars by stem is a row; data files (.parquet, .tar, .jsonl) are
    inputs of their own kind (`data_file(name)`); `keep(name)` drops a file it has counted (a
    symlink leaving the root). Rows are appended to `batch`, flushed into shards of FILES_PER_SHARD
    on `root` (a folder or an object-store prefix)."""
    by_stem: dict[str, list[str]] = {}
    for fn in sorted(filenames):
        by_stem.setdefault(fn.rsplit(".", 1)[0] if "." in fn else fn, []).append(fn)
    for stem, names in sorted(by_stem.items()):
        sidecars = [n for n in names if ext(n) in SIDECAR_EXTS]
        others = [n for n in names if ext(n) not in SIDECAR_EXTS]
        for n in list(others):
            if not keep(n):
                others.remove(n)
            elif ext(n) in ("parquet", "tar", "jsonl"):
                others.remove(n)
                data_file(n)
        images = [n for n in others if ext(n) in IMAGE_EXTS]
        if not others:
            for s in sidecars:
                p.skip("orphan_sidecar", prefix + s)
            continue
        caption_file = meta_file = None
        if sidecars:
            if len(images) > 1 or (not images and len(others) > 1):
                for s in sidecars:
                    p.skip("duplicate_stem", prefix + s)
            else:
                caption_file = next((s for s in sidecars if s.endswith(".txt")), None)
                meta_file = next((s for s in sidecars if s.endswith(".json")), None)
        for n in others:
            attach = n in images and len(images) == 1 or (not images and len(others) == 1)
            batch.append([prefix + n, (prefix + caption_file if attach and caption_file else None),
                          (prefix + meta_file if attach and meta_file else None)])
            if len(batch) >= FILES_PER_SHARD:
                p.add({"kind": "files", "root": root, "files": list(batch)}, len(batch))
                batch.clear()


def plan_manifest_lines(p: Plan, lines, rel: str, root: str, problem) -> None:
    """A JSONL manifest, one JSON object per line: an edit pair {"source": path | "sources": [paths],
    "instruction": str, "target": path, optional "caption"}, or an image {"image": path, optional
    "caption"; other fields are kept as `meta`}. Paths are relative to the manifest's folder
    (`root`, a folder or an object-store prefix) or URLs (`s3://...`); `problem(path)` says why a
    path is not followed (path_outside_root, missing_file) or None."""
    pending: dict[str, list[dict]] = {"edits": [], "images": []}
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{rel}#L{i}"
        try:
            obj = json.loads(line)
            if isinstance(obj, dict) and "image" in obj and "target" not in obj:
                kind, paths = "images", [obj["image"]]
                entry = {"where": where, "image": obj["image"], "caption": obj.get("caption"),
                         "meta": {k: v for k, v in obj.items() if k not in ("image", "caption")} or None}
            else:
                sources = obj.get("sources") or ([obj["source"]] if obj.get("source") else [])
                target = obj["target"]
                instruction = obj.get("instruction")
                if not sources or not isinstance(target, str) or not isinstance(instruction, str):
                    raise ValueError("needs source(s), target and instruction")
                kind, paths = "edits", [*sources, target]
                entry = {"where": where, "sources": sources, "target": target, "instruction": instruction,
                         "caption": obj.get("caption"), "meta": obj.get("meta")}
            if not all(isinstance(x, str) and x for x in paths):
                raise ValueError("paths must be strings")
        except (ValueError, KeyError, TypeError, AttributeError):
            p.skip("bad_manifest_line", where)
            continue
        why = next((w for w in map(problem, paths) if w), None)
        if why:
            p.skip(why, where)
            continue
        pending[kind].append(entry)
        if len(pending[kind]) >= FILES_PER_SHARD:
            p.add({"kind": kind, "root": root, "lines": pending[kind]}, len(pending[kind]))
            pending[kind] = []
    for kind, shard_lines in pending.items():
        if shard_lines:
            p.add({"kind": kind, "root": root, "lines": shard_lines}, len(shard_lines))


def manifest_paths(line: dict) -> list[str]:
    """The paths one planned manifest line names (an image line's, or an edit pair's)."""
    return [line["image"]] if "image" in line else [*line["sources"], line["target"]]

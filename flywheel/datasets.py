"""The dataset contract: an immutable directory `manifest.json` + `data/part-NNNNN.parquet` (zstd).

Written to a temporary directory beside the destination and renamed into place, so a crash never
leaves half a dataset. Registered in the catalog as `name@vN` (the catalog assigns N). Every
command that takes a dataset accepts a path or `name@vN` (`open_dataset`).

Row columns (ARCHITECTURE.md, Data contracts) are listed in `BASE_SCHEMA`; operators add
`<operator>__<metric>` score columns; decisions add `reject_reason`, `reject_reasons`,
`reject_details` and `dedup_of`. `training/` reads these files directly with pyarrow; it needs
only `id`, `task`, `image`, `caption`, `captions`, `source_images`, `instruction`, `width`, `height`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, Field

CAPTION_TYPES = ("general", "text", "knowledge", "structured")
CAPTIONS_TYPE = pa.struct([(t, pa.string()) for t in CAPTION_TYPES])
DEDUP_OF_TYPE = pa.struct([("id", pa.string()), ("source", pa.string())])

BASE_SCHEMA = pa.schema(
    [
        ("id", pa.string()),  # sha256 of the image bytes; edit pair: of source ids, instruction, target id
        ("source", pa.string()),  # where the row came from: relative path, shard.tar!member, file.parquet#row
        ("task", pa.string()),  # t2i | ti2i
        ("image", pa.binary()),  # encoded bytes as found (target image of an edit pair)
        ("image_uri", pa.string()),
        ("width", pa.int32()),  # after EXIF transpose
        ("height", pa.int32()),
        ("format", pa.string()),
        ("mode", pa.string()),
        ("frames", pa.int32()),
        ("exif_orientation", pa.int8()),
        ("has_alpha", pa.bool_()),
        ("caption", pa.string()),  # original text
        ("captions", CAPTIONS_TYPE),
        ("caption_errors", pa.list_(pa.string())),
        ("lang", pa.string()),
        ("meta", pa.string()),  # JSON object of metadata found with the sample (sidecar json, title, alt text)
        ("source_ids", pa.list_(pa.string())),  # ti2i: ids of the source images
        ("source_images", pa.list_(pa.binary())),  # ti2i: their bytes
        ("instruction", pa.string()),  # ti2i
    ]
)

DECISION_FIELDS = [
    pa.field("reject_reason", pa.string()),
    pa.field("reject_reasons", pa.list_(pa.string())),
    pa.field("reject_details", pa.list_(pa.string())),
    pa.field("dedup_of", DEDUP_OF_TYPE),
    pa.field("source_scores", pa.string()),  # ti2i: JSON {score column: [value per source]}
    pa.field("run_id", pa.string()),
]


class Manifest(BaseModel):
    name: str
    version: int
    kind: str  # accepted | rejected | captioned | emitted | synthetic | rl_prompts | ...
    parents: list[str] = Field(default_factory=list)  # name@vN
    recipe: str | None = None
    recipe_hash: str | None = None
    code_version: str | None = None
    created_at: float = Field(default_factory=time.time)
    rows: int = 0
    counts: dict[str, int] = Field(default_factory=dict)
    schema_: list[dict[str, str]] = Field(default_factory=list, alias="schema")
    run_id: str | None = None
    extra: dict[str, Any] = Field(default_factory=dict)

    model_config = {"populate_by_name": True}

    @property
    def ref(self) -> str:
        return f"{self.name}@v{self.version}"


def sample_id(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def pair_id(source_ids: list[str], instruction: str, target_id: str) -> str:
    h = hashlib.sha256()
    for s in source_ids:
        h.update(s.encode() + b"\x00")
    h.update(b"\x01" + instruction.encode("utf-8") + b"\x01" + target_id.encode())
    return h.hexdigest()


class DatasetWriter:
    """Streams Arrow batches into `dest` atomically.

    with DatasetWriter(dest, name="pool", kind="accepted", catalog=cat) as w:
        w.write(table)
    -> dest/manifest.json, dest/data/part-00000.parquet ..., registered as pool@vN.
    """

    def __init__(
        self,
        dest: str | Path,
        name: str,
        kind: str,
        catalog=None,
        parents: list[str] | None = None,
        recipe: str | None = None,
        recipe_hash: str | None = None,
        run_id: str | None = None,
        rows_per_part: int = 2048,
        extra: dict | None = None,
        schema: pa.Schema | None = None,
    ):
        from . import config

        self.dest = Path(dest).resolve()
        if self.dest.exists() and any(self.dest.iterdir()):
            raise FileExistsError(f"{self.dest} already exists and is not empty; datasets are immutable, pick a new directory")
        self.catalog = catalog
        self.name = name
        self.version = catalog.reserve_dataset(name, kind, run_id) if catalog is not None else 1
        self.manifest = Manifest(
            name=name, version=self.version, kind=kind, parents=parents or [], recipe=recipe,
            recipe_hash=recipe_hash, code_version=config.code_version(), run_id=run_id, extra=extra or {},
        )
        self.tmp = self.dest.parent / f".{self.dest.name}.tmp-{uuid.uuid4().hex[:8]}"
        (self.tmp / "data").mkdir(parents=True)
        self.rows_per_part = rows_per_part
        self.schema = schema
        self._buf: list[pa.Table] = []
        self._buf_rows = 0
        self._part = 0
        self._done = False

    def __enter__(self) -> "DatasetWriter":
        return self

    def __exit__(self, et, ev, tb) -> None:
        if et is None:
            self.close()
        else:
            self.abort()

    def write(self, table: pa.Table | pa.RecordBatch) -> None:
        if isinstance(table, pa.RecordBatch):
            table = pa.Table.from_batches([table])
        if table.num_rows == 0:
            if self.schema is None:
                self.schema = table.schema
            return
        if self.schema is None:
            self.schema = table.schema
        else:
            table = conform(table, self.schema)
        self._buf.append(table)
        self._buf_rows += table.num_rows
        if self._buf_rows >= self.rows_per_part:
            self._flush()

    def _flush(self) -> None:
        if not self._buf:
            return
        t = pa.concat_tables(self._buf)
        self._buf, self._buf_rows = [], 0
        pq.write_table(t, self.tmp / "data" / f"part-{self._part:05d}.parquet", compression="zstd")
        self._part += 1
        self.manifest.rows += t.num_rows

    def close(self, counts: dict[str, int] | None = None) -> Manifest:
        if self._done:
            return self.manifest
        self._flush()
        if self._part == 0 and self.schema is not None:  # an empty dataset still has its schema
            pq.write_table(self.schema.empty_table(), self.tmp / "data" / "part-00000.parquet", compression="zstd")
        if counts:
            self.manifest.counts = counts
        if self.schema is not None:
            self.manifest.schema_ = [{"name": f.name, "type": str(f.type)} for f in self.schema]
        (self.tmp / "manifest.json").write_text(self.manifest.model_dump_json(indent=2, by_alias=True))
        if self.dest.exists():
            self.dest.rmdir()  # empty (checked in __init__)
        self.dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.tmp, self.dest)
        if self.catalog is not None:
            self.catalog.commit_dataset(self.name, self.version, str(self.dest), json.loads(self.manifest.model_dump_json(by_alias=True)))
        self._done = True
        return self.manifest

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)
        if self.catalog is not None and not self._done:
            self.catalog.abort_dataset(self.name, self.version)
        self._done = True


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Reorder/cast `table` to `schema`, adding missing columns as nulls (parts stay uniform)."""
    cols = []
    for f in schema:
        if f.name in table.column_names:
            c = table.column(f.name)
            cols.append(c if c.type == f.type else c.cast(f.type))
        else:
            cols.append(pa.nulls(table.num_rows, f.type))
    extra = [n for n in table.column_names if n not in schema.names]
    if extra:
        raise ValueError(f"columns {extra} are not in the dataset schema")
    return pa.Table.from_arrays(cols, schema=schema)


class Dataset:
    def __init__(self, path: Path):
        self.path = path
        mf = path / "manifest.json"
        if not mf.exists():
            raise FileNotFoundError(f"{path} is not a dataset (no manifest.json); pass a dataset directory or name@vN")
        self.manifest = Manifest.model_validate_json(mf.read_text())

    @property
    def ref(self) -> str:
        return self.manifest.ref

    def files(self) -> list[Path]:
        return sorted((self.path / "data").glob("part-*.parquet"))

    def schema(self) -> pa.Schema:
        return pq.read_schema(self.files()[0])

    def to_table(self, columns: list[str] | None = None, filter=None) -> pa.Table:
        import pyarrow.dataset as pads

        return pads.dataset([str(f) for f in self.files()], format="parquet").to_table(columns=columns, filter=filter)

    def iter_batches(self, batch_size: int = 256, columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
        for f in self.files():
            yield from pq.ParquetFile(f).iter_batches(batch_size=batch_size, columns=columns)

    def __len__(self) -> int:
        return self.manifest.rows


def open_dataset(ref: str | Path, catalog=None) -> Dataset:
    """A dataset directory, or `name@vN` / `name@latest` looked up in the catalog."""
    p = Path(ref)
    if p.exists():
        return Dataset(p.resolve())
    if "@" in str(ref) or not p.exists():
        from .catalog import Catalog

        cat = catalog or Catalog()
        return Dataset(cat.resolve_dataset(str(ref)))
    raise FileNotFoundError(f"no dataset at {ref}")

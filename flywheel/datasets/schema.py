"""The row schema of every dataset (ARCHITECTURE.md, Data contracts) and content ids."""

from __future__ import annotations

import hashlib

import pyarrow as pa

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


def sample_id(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def pair_id(source_ids: list[str], instruction: str, target_id: str) -> str:
    h = hashlib.sha256()
    for s in source_ids:
        h.update(s.encode() + b"\x00")
    h.update(b"\x01" + instruction.encode("utf-8") + b"\x01" + target_id.encode())
    return h.hexdigest()


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

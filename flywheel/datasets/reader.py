"""Reading a dataset directory through its manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from flywheel.datasets.manifest import Manifest


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
    """A dataset directory, or `name@vN` / `name@latest` resolved by `catalog` (any object with
    `resolve_dataset(ref) -> path`; `flywheel.catalog.open_dataset` passes the catalog in)."""
    p = Path(ref)
    if p.exists():
        return Dataset(p.resolve())
    if catalog is not None:
        return Dataset(catalog.resolve_dataset(str(ref)))
    raise FileNotFoundError(f"no dataset directory at {ref}; a name@vN reference is resolved by the catalog "
                            "(flywheel.catalog.open_dataset)")

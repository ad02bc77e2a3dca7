"""The dataset contract: an immutable directory `manifest.json` + `data/part-NNNNN.parquet` (zstd; image and
embedding bytes stored as they are).

Written to a temporary directory beside the destination and renamed into place, so a crash never
leaves half a dataset. Registered in the catalog as `name@vN` (the catalog assigns N). This package is
the bottom layer: every package may import it, and it imports nothing of the platform;
`name@vN` is resolved by the catalog (`flywheel.catalog.open_dataset`), which passes itself in.

Row columns (ARCHITECTURE.md, Data contracts) are listed in `BASE_SCHEMA`; operators add
`<operator>__<metric>` score columns; decisions add `reject_reason`, `reject_reasons`,
`reject_details` and `dedup_of`. `training/` reads these files directly with pyarrow; it needs
only `id`, `task`, `image`, `caption`, `captions`, `source_images`, `instruction`, `width`, `height`.
"""

from flywheel.datasets.manifest import Manifest
from flywheel.datasets.reader import Dataset, open_dataset
from flywheel.datasets.schema import (
    BASE_SCHEMA,
    CAPTION_TYPES,
    CAPTIONS_TYPE,
    DECISION_FIELDS,
    DEDUP_OF_TYPE,
    conform,
    pair_id,
    sample_id,
)
from flywheel.datasets.writer import DatasetWriter, write_parquet

__all__ = ["BASE_SCHEMA", "CAPTION_TYPES", "CAPTIONS_TYPE", "DECISION_FIELDS", "DEDUP_OF_TYPE", "Dataset", "DatasetWriter",
           "Manifest", "conform", "open_dataset", "pair_id", "sample_id", "write_parquet"]

"""`read_columns`: the barrier's and the resume's reader of many parts, file by file (issue 18, memory)."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest


def _write(path, **cols):
    pq.write_table(pa.table(cols), path)
    return str(path)


def test_parts_read_file_by_file_match_the_dataset_scan_and_unify_types(tmp_path):
    from flywheel.datasets.reader import read_columns

    a = _write(tmp_path / "a.parquet", source=["s1", "s2"], width=pa.array([10, 20], pa.int64()),
               views=pa.array([[1, 2], [3, 4]], pa.list_(pa.int64())))
    # a part whose rows were all rejected before scoring: the score column is all null (type null)
    b = _write(tmp_path / "b.parquet", source=["s3"], width=pa.array([30], pa.int64()), views=pa.nulls(1))
    c = _write(tmp_path / "c.parquet", source=["s4", "s5"], width=pa.array([40, 50], pa.int64()),
               views=pa.array([[5, 6], None], pa.list_(pa.int64())))

    t = read_columns([a, b, c], ["source", "views", "width"])
    assert t.column_names == ["source", "views", "width"]
    assert t.column("source").to_pylist() == ["s1", "s2", "s3", "s4", "s5"]
    assert t.column("views").to_pylist() == [[1, 2], [3, 4], None, [5, 6], None]
    assert t.schema.field("views").type == pa.list_(pa.int64())
    # the same rows, in the same order, as pyarrow.dataset gives for files that agree on types
    assert read_columns([a, c], ["source", "width"]).equals(pads.dataset([a, c]).to_table(columns=["source", "width"]))


def test_a_column_one_part_lacks_is_null_there_one_no_part_has_is_an_error(tmp_path):
    from flywheel.datasets.reader import read_columns

    a = _write(tmp_path / "a.parquet", source=["s1", "s2"])
    b = _write(tmp_path / "b.parquet", source=["s3"], dedup__quality=pa.array([90.0]))
    t = read_columns([a, b], ["source", "dedup__quality"])
    assert t.column("dedup__quality").to_pylist() == [None, None, 90.0]
    with pytest.raises(KeyError, match="capton"):
        read_columns([a, b], ["source", "capton"])  # a misspelt column is not silently all null
    empty = read_columns([], ["source"])
    assert empty.num_rows == 0 and empty.column_names == ["source"]

"""`flywheel sql` is read-only: each escape that once wrote the catalog, read a secret or reached a
file outside the catalog and the datasets is replayed here and must be refused, with the catalog
left exactly as it was."""

from __future__ import annotations

import sqlite3

import pyarrow as pa
import pytest
from typer.testing import CliRunner


@pytest.fixture
def world(tmp_path):
    from flywheel.catalog import Catalog
    from flywheel.datasets import BASE_SCHEMA, DatasetWriter
    from flywheel.loop import queue
    from flywheel.review import auth

    cat = Catalog()
    auth.add_user(cat, "alice", "reviewer", "correct horse battery")
    auth.create_token(cat, "bot")
    sid, _ = auth.create_session(cat, "alice")
    queue.enqueue(cat, "pretrain", [{"sample_id": "s1", "source": "a.jpg"}])
    with DatasetWriter(tmp_path / "pool", name="pool", kind="accepted", schema=BASE_SCHEMA, catalog=cat) as w:
        w.write(pa.Table.from_pylist([{"id": "a" * 64, "caption": "a cat", "task": "t2i"}], schema=BASE_SCHEMA))
    return cat


def _dump(cat) -> list[str]:
    con = sqlite3.connect(cat.path)
    try:
        return list(con.iterdump())
    finally:
        con.close()


def _sql(query: str) -> str:
    """What `flywheel sql` prints, or the message of the error it exits with."""
    from flywheel.cli import UserError, _register_all, app

    _register_all()
    r = CliRunner().invoke(app, ["sql", query])
    if r.exception is not None:
        assert isinstance(r.exception, UserError), r.exception
        return "refused: " + str(r.exception)
    return r.output


ESCAPES = {
    "attach rw": ("ATTACH '{db}' AS rw (TYPE sqlite)", "only SELECT"),
    "attach then write": ("ATTACH '{db}' AS rw (TYPE sqlite); UPDATE rw.users SET role='admin'", "one statement"),
    "drop audit": ("DROP TABLE audit_log", "only SELECT"),
    "insert": ("INSERT INTO audit_log VALUES (99, 0, 'x', 'x', 'x', '{{}}')", "only SELECT"),
    "update": ("UPDATE review_items SET status = 'approved'", "only SELECT"),
    "make admin": ("UPDATE catalog.users SET role = 'admin'", "only SELECT"),
    "copy to": ("COPY (SELECT 1) TO '{tmp}/out.csv'", "only SELECT"),
    "read_text": ("SELECT * FROM read_text('/etc/passwd')", "read_text() is not allowed"),
    "read_csv": ("SELECT * FROM read_csv('/etc/passwd')", "read_csv() is not allowed"),
    "replacement scan": ("SELECT * FROM '/etc/passwd'", "not one of the views"),
    "raw catalog file": ("SELECT * FROM read_blob('{db}')", "read_blob() is not allowed"),
    "sqlite_scan": ("SELECT * FROM sqlite_scan('{db}', 'users')", "sqlite_scan() is not allowed"),
    "sql in a string": ("SELECT * FROM query('SELECT * FROM catalog.users')", "query() is not allowed"),
    "install": ("INSTALL httpfs", "only SELECT"),
    "load": ("LOAD sqlite_scanner", "only SELECT"),
    "unlock": ("SET enable_external_access = true", "only SELECT"),
    "unlock config": ("SET lock_configuration = false", "only SELECT"),
    "smuggled write": ("SELECT 1; DELETE FROM review_items", "one statement"),
    "password hashes": ("SELECT name, password_hash FROM catalog.users", "not one of the views"),
    "password hashes in a subquery": ("SELECT (SELECT max(password_hash) FROM catalog.main.users)", "not one of the views"),
    "summarize": ("SUMMARIZE catalog.users", "not one of the views"),
    "token hashes": ("SELECT hash FROM catalog.tokens", "not one of the views"),
    "sessions": ("SELECT * FROM sessions", "not one of the views"),
    "login attempts": ("WITH x AS (SELECT 1) SELECT * FROM x, login_attempts", "not one of the views"),
    "a CTE's name out of its scope": ('SELECT * FROM (WITH "{db}" AS (SELECT 1) SELECT 1) a, "{db}"', "not one of the views"),
    # issue 19's review: more ways in, each refused
    "FROM-first raw catalog": ("FROM catalog.users", "not one of the views"),
    "describe raw catalog": ("DESCRIBE catalog.users", "not one of the views"),
    "pivot raw catalog": ("PIVOT catalog.users ON role", "one statement"),
    "raw catalog in a lambda": ("SELECT list_filter([1], x -> x > (SELECT count(*) FROM catalog.sessions))", "not one of the views"),
    "raw catalog in a union": ("SELECT name, role FROM users UNION SELECT name, password_hash FROM catalog.users", "not one of the views"),
    "sqlite_master": ("SELECT * FROM catalog.main.sqlite_master", "not one of the views"),
    "information_schema": ("SELECT * FROM information_schema.tables", "not one of the views"),
    "glob files": ("SELECT * FROM glob('/etc/*')", "glob() is not allowed"),
    "parquet outside the datasets": ("SELECT * FROM parquet_scan('/etc/passwd')", "parquet_scan() is not allowed"),
    "json file": ("SELECT * FROM read_json_objects('/etc/hostname')", "read_json_objects() is not allowed"),
    "settings": ("SELECT * FROM duckdb_settings()", "duckdb_settings() is not allowed"),
    "export database": ("EXPORT DATABASE '{tmp}'", "only SELECT"),
    "detach": ("DETACH catalog", "only SELECT"),
    "checkpoint": ("CHECKPOINT", "only SELECT"),
    "vacuum": ("VACUUM", "only SELECT"),
    "macro": ("CREATE MACRO m(x) AS x", "only SELECT"),
    "variable": ("SET VARIABLE x = 1", "only SELECT"),
    "login devices": ("SELECT * FROM login_devices", "not one of the views"),
}


@pytest.mark.parametrize("name", list(ESCAPES))
def test_each_escape_is_refused_and_changes_nothing(world, tmp_path, name):
    query, message = ESCAPES[name]
    before = _dump(world)
    out = _sql(query.format(db=world.path, tmp=tmp_path))
    assert out.startswith("refused: ") and message in out
    assert _dump(world) == before
    assert not (tmp_path / "out.csv").exists()


def test_the_views_hide_credentials_and_still_answer(world):
    from flywheel.catalog import Catalog

    cat = Catalog()
    assert cat.query("SELECT name, role FROM users").to_pylist() == [{"name": "alice", "role": "reviewer"}]
    assert {"scopes", "last_used_at", "expires_at"} <= set(cat.query("SELECT * FROM tokens").column_names)
    for table, secret in (("users", "password_hash"), ("tokens", "hash")):
        assert secret not in cat.query(f"SELECT * FROM {table}").column_names
        out = _sql(f"SELECT {secret} FROM {table}")
        assert out.startswith("refused: ") and secret in out
    assert cat.query("SELECT count(*) AS n FROM samples").to_pylist() == [{"n": 1}]
    assert cat.query("SELECT count(*) AS n FROM ds_pool, range(2)").to_pylist() == [{"n": 2}]
    assert "pretrain" in _sql("WITH q AS (SELECT queue FROM review_items) SELECT * FROM q")


def test_datasets_and_a_catalog_reached_through_a_link_stay_readable(tmp_path):
    """The allowed paths are the files as the catalog lists them and as they resolve, so a home or
    dataset folder behind a symlink is not locked out by the external-access switch."""
    from flywheel.catalog import Catalog
    from flywheel.datasets import BASE_SCHEMA, DatasetWriter

    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    cat = Catalog(tmp_path / "link" / "catalog.db")
    with DatasetWriter(tmp_path / "link" / "pool", name="pool", kind="accepted", schema=BASE_SCHEMA, catalog=cat) as w:
        w.write(pa.Table.from_pylist([{"id": "b" * 64, "caption": "a dog", "task": "t2i"}], schema=BASE_SCHEMA))
    assert cat.query("SELECT caption FROM samples").to_pylist() == [{"caption": "a dog"}]

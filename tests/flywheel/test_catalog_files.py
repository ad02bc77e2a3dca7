"""The catalog holds password and token hashes, sessions and the audit log: its files are the
owner's alone."""

from __future__ import annotations

import stat


def test_a_new_catalog_and_its_wal_and_shm_are_0600(tmp_path):
    from flywheel.catalog import Catalog
    from flywheel.review import auth

    cat = Catalog(tmp_path / "c" / "catalog.db")
    con = cat.connect()  # held open so the -wal and -shm files exist while we look
    try:
        auth.create_token(cat, "bot")
        con.execute("SELECT count(*) FROM tokens").fetchone()
        files = [cat.path, cat.path.with_name("catalog.db-wal"), cat.path.with_name("catalog.db-shm")]
        for f in files:
            assert f.exists(), f
            assert stat.S_IMODE(f.stat().st_mode) == 0o600, (f, oct(f.stat().st_mode))
    finally:
        con.close()

"""Migration numbers are handed to branches in advance, so one can land after a higher one: every
migration the catalog has not recorded runs, not only those above its highest."""

from __future__ import annotations

from flywheel import catalog as catalog_mod
from flywheel.catalog import Catalog


def test_a_lower_migration_landing_later_still_runs(catalog_location, tmp_path, monkeypatch):
    loc = catalog_location or tmp_path / "c.db"
    cat = Catalog(loc)
    top = cat.schema_version()
    assert top >= 12 and 9 not in {r["version"] for r in cat.execute("SELECT version FROM schema_version")}
    later = sorted([*catalog_mod.MIGRATIONS, (9, "CREATE TABLE landed_late (x INTEGER)")], key=lambda m: m[0])
    monkeypatch.setattr(catalog_mod, "MIGRATIONS", later)
    cat = Catalog(loc)
    assert cat.execute("SELECT COUNT(*) AS n FROM landed_late")[0]["n"] == 0
    assert cat.schema_version() == top
    Catalog(loc)  # and only once

"""The catalog: runs, datasets, per-operator stats, signals, routes, review queue, audit, users,
tokens and models.

Several processes use it at once (curation runs, a review server up for days, a retraining flow).
DuckDB locks its database file against every other process while one holds it, so the
transactional tables live in SQLite in WAL mode (readers never block the writer), and DuckDB is
the query engine over them and over the datasets' Parquet (`query()`), opened per query.
"""

from __future__ import annotations

import json
import os
import random
import re
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlsplit

from flywheel import config

SCHEMA_VERSION_TABLE = "schema_version"
# SQLite stores integers as signed 64-bit: a larger Python int cannot even be bound to a query
# (OverflowError), so ids and versions taken from clients are checked against this first.
ROW_ID_MAX = 2**63 - 1

# Append-only list of migrations: (version, SQL). Never edit a released one; add a new one.
MIGRATIONS: list[tuple[int, str | list[str]]] = [
    (
        1,
        """
        CREATE TABLE runs (
            run_id TEXT PRIMARY KEY, kind TEXT NOT NULL, recipe TEXT, recipe_hash TEXT,
            input TEXT, output TEXT, status TEXT NOT NULL, started_at REAL, finished_at REAL,
            params_json TEXT, stats_json TEXT, code_version TEXT, state_key TEXT
        );
        CREATE TABLE datasets (
            name TEXT NOT NULL, version INTEGER NOT NULL, path TEXT, kind TEXT, run_id TEXT,
            recipe_hash TEXT, rows INTEGER, parents_json TEXT, manifest_json TEXT,
            status TEXT NOT NULL, created_at REAL, PRIMARY KEY (name, version)
        );
        CREATE TABLE op_stats (
            run_id TEXT NOT NULL, operator TEXT NOT NULL, rule TEXT NOT NULL, count INTEGER NOT NULL,
            PRIMARY KEY (run_id, operator, rule)
        );
        CREATE TABLE signals (
            signal_id TEXT PRIMARY KEY, kind TEXT NOT NULL, prompt TEXT, payload_json TEXT,
            status TEXT NOT NULL DEFAULT 'new', created_at REAL, source TEXT
        );
        CREATE TABLE routes (
            route_id INTEGER PRIMARY KEY AUTOINCREMENT, signal_id TEXT NOT NULL, track TEXT NOT NULL,
            evidence_json TEXT, created_at REAL
        );
        CREATE TABLE review_items (
            item_id INTEGER PRIMARY KEY AUTOINCREMENT, queue TEXT NOT NULL, signal_id TEXT,
            sample_id TEXT, source TEXT, dataset TEXT, payload_json TEXT,
            status TEXT NOT NULL DEFAULT 'pending', reason TEXT, decided_by TEXT, decided_at REAL,
            version INTEGER NOT NULL DEFAULT 0, created_at REAL
        );
        CREATE INDEX review_items_queue ON review_items (queue, status, item_id);
        CREATE INDEX review_items_signal ON review_items (signal_id, status, item_id);
        CREATE TABLE audit_log (
            seq INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, actor TEXT, action TEXT NOT NULL,
            target TEXT, detail_json TEXT
        );
        CREATE TABLE users (
            name TEXT PRIMARY KEY, role TEXT NOT NULL, password_hash TEXT NOT NULL,
            created_at REAL, disabled INTEGER NOT NULL DEFAULT 0
        );
        CREATE TABLE tokens (
            token_id TEXT PRIMARY KEY, name TEXT NOT NULL, hash TEXT NOT NULL, created_at REAL,
            revoked INTEGER NOT NULL DEFAULT 0
        );
        CREATE TABLE models (
            name TEXT PRIMARY KEY, kind TEXT, path TEXT, revision TEXT, files_json TEXT, installed_at REAL
        );
        """,
    ),
    (
        2,
        # Review queue: idempotent enqueue, one vote per reviewer and item
        # (the deciding vote and second-opinion checks, for agreement), sampled-QA batches,
        # server-side dashboard sessions and login throttling shared by every server process.
        """
        ALTER TABLE review_items ADD COLUMN track TEXT;
        ALTER TABLE review_items ADD COLUMN request_id TEXT;
        CREATE UNIQUE INDEX review_items_key ON review_items
            (queue, COALESCE(signal_id, ''), COALESCE(sample_id, ''), COALESCE(source, ''));
        CREATE INDEX review_items_track ON review_items (queue, status, track, item_id);
        CREATE INDEX review_items_decided ON review_items (status, decided_at);
        CREATE TABLE review_votes (
            item_id INTEGER NOT NULL, reviewer TEXT NOT NULL, decision TEXT NOT NULL, reason TEXT,
            kind TEXT NOT NULL, at REAL NOT NULL, PRIMARY KEY (item_id, reviewer)
        );
        CREATE INDEX review_votes_reviewer ON review_votes (reviewer, at);
        CREATE TABLE review_batches (
            batch_id TEXT PRIMARY KEY, queue TEXT, filter_json TEXT, sample_json TEXT, size INTEGER,
            max_error REAL, status TEXT NOT NULL DEFAULT 'open', created_by TEXT, created_at REAL,
            decided_by TEXT, decided_at REAL, result_json TEXT
        );
        CREATE TABLE sessions (
            sid_hash TEXT PRIMARY KEY, user TEXT NOT NULL, csrf TEXT NOT NULL, created_at REAL,
            expires_at REAL NOT NULL
        );
        CREATE TABLE login_attempts (key TEXT NOT NULL, at REAL NOT NULL, ok INTEGER NOT NULL);
        CREATE INDEX login_attempts_key ON login_attempts (key, at)
        """,
    ),
    (
        3,
        # The loop: signals queryable by concept and attribute; one route per signal and
        # router run; per-concept evaluations before and after a retraining, for the loop table.
        """
        ALTER TABLE signals ADD COLUMN concept TEXT;
        ALTER TABLE signals ADD COLUMN attribute TEXT;
        ALTER TABLE routes ADD COLUMN run_id TEXT;
        CREATE INDEX signals_status ON signals (status, created_at);
        CREATE INDEX routes_signal ON routes (signal_id, route_id);
        CREATE TABLE loop_evals (
            run_id TEXT NOT NULL, phase TEXT NOT NULL, ckpt TEXT, dataset TEXT, concept TEXT NOT NULL,
            attribute TEXT NOT NULL, seed INTEGER NOT NULL DEFAULT 0, n INTEGER NOT NULL,
            correct INTEGER NOT NULL, accuracy REAL, created_at REAL,
            PRIMARY KEY (run_id, phase, concept, attribute, seed)
        )
        """,
    ),
    (
        4,
        # Review queue pages filtered by signal (and track) stay keyset scans at a million items:
        # without these the planner walks the whole (queue, status, track) range and filters.
        """
        CREATE INDEX review_items_qsig ON review_items (queue, status, signal_id, item_id);
        CREATE INDEX review_items_qsigtrack ON review_items (queue, status, signal_id, track, item_id)
        """,
    ),
    (
        5,
        # Review counts per (queue, signal, track, status), kept by flywheel.loop.queue in the
        # transactions that change them: the dashboard's queue list and statistics read a few
        # hundred rows instead of grouping a million items (seconds on a cold cache).
        """
        CREATE TABLE review_counts (
            queue TEXT NOT NULL, signal_id TEXT NOT NULL, track TEXT NOT NULL, status TEXT NOT NULL,
            n INTEGER NOT NULL, PRIMARY KEY (queue, signal_id, track, status)
        );
        INSERT INTO review_counts SELECT queue, COALESCE(signal_id, ''), COALESCE(track, ''), status, COUNT(*)
            FROM review_items GROUP BY 1, 2, 3, 4
        """,
    ),
    (
        6,
        # The audit log is append-only: the database itself refuses to change or delete
        # a row, whatever code runs. Trigger bodies contain ';', hence a list of statements.
        [
            "CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log"
            " BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END",
            "CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log"
            " BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END",
        ],
    ),
    (
        7,
        # Scoped API tokens: a token belongs to a user and carries scopes (its rights are those
        # scopes intersected with the user's role), may expire, and records when it was last used
        # and revoked. Tokens made before scopes existed had every right; they keep only
        # `signals:write` (what they were issued for: posting signals) and belong to no user.
        """
        ALTER TABLE tokens ADD COLUMN user TEXT;
        ALTER TABLE tokens ADD COLUMN scopes TEXT NOT NULL DEFAULT 'signals:write';
        ALTER TABLE tokens ADD COLUMN expires_at REAL;
        ALTER TABLE tokens ADD COLUMN last_used_at REAL;
        ALTER TABLE tokens ADD COLUMN revoked_at REAL;
        UPDATE tokens SET scopes = 'signals:write'
        """,
    ),
    (
        8,
        # Log-in devices: a browser that logged in as a user gets a long-lived device cookie (only
        # its SHA-256 is stored); a correct password from a known device passes that account's
        # back-off, so failures sent by someone else cannot lock the owner out.
        """
        CREATE TABLE login_devices (
            device_hash TEXT PRIMARY KEY, user TEXT NOT NULL, created_at REAL NOT NULL, last_used_at REAL
        );
        CREATE INDEX login_devices_user ON login_devices (user)
        """,
    ),
    (
        10,
        # Tamper evidence for the audit log: each row's HMAC over its predecessor's
        # (flywheel.audit). Rows written before this migration keep NULL and are folded into
        # the first chained row's MAC.
        "ALTER TABLE audit_log ADD COLUMN mac TEXT",
    ),
    (
        11,
        # Images that arrive with signals: content-addressed files under FLYWHEEL_HOME/blobs,
        # registered here (flywheel.loop.blobs); a review item may show one, never a path.
        """
        CREATE TABLE blobs (
            sha256 TEXT PRIMARY KEY, size INTEGER NOT NULL, format TEXT, width INTEGER, height INTEGER,
            signal_id TEXT, created_at REAL
        );
        CREATE INDEX blobs_signal ON blobs (signal_id)
        """,
    ),
    (
        12,
        # What the catalog verified about an item's sample when it was queued (dataset row or
        # stored image: content hash, real width and height), apart from the caller's payload.
        "ALTER TABLE review_items ADD COLUMN sample_json TEXT",
    ),
    (
        13,
        # PostgreSQL only (catalog_pg.OVERRIDES): the audit seq high-water mark that SQLite keeps
        # in sqlite_sequence. Nothing to do on SQLite; recorded so both dialects count alike.
        [],
    ),
]


# Called with {"name", "version", "path", "rows", "kind", "run_id"} after a dataset version is
# committed. The flows layer registers the Prefect event that starts retraining
# (`flywheel.flows.events`); the catalog itself knows nothing of Prefect.
COMMIT_HOOKS: list = []


class Catalog:
    """A thin handle; each call opens a short-lived connection (safe across processes).

    Where it lives: `location` if given, else `FLYWHEEL_CATALOG`, else `FLYWHEEL_HOME/catalog.db`
    (`config.catalog_location`). A `postgresql://` location selects PostgreSQL (`catalog_pg`);
    anything else is a SQLite file. `location` reopens the same catalog (a PostgreSQL URL
    includes its password: pass it to child processes, never print it); `where` is what may be
    shown (the URL without the password). `path` is the local anchor of the files that belong
    to the catalog (audit key and head under `secrets/`, blobs): the database file on SQLite,
    `FLYWHEEL_HOME/postgresql-<host>-<port>-<db>` on PostgreSQL."""

    def __init__(self, location: str | Path | None = None):
        from flywheel import catalog_pg

        loc = location if location is not None else config.catalog_location()
        if catalog_pg.is_url(str(loc)):
            self.dialect = "postgresql"
            self.url: str | None = str(loc)
            self.location = str(loc)
            self.where = catalog_pg.redact(self.url)
            p = urlsplit(self.url)
            anchor = re.sub(r"[^\w.-]", "_", f"postgresql-{p.hostname or 'local'}-{p.port or 5432}-{p.path.lstrip('/')}")
            self.path = config.home() / anchor
        else:
            if "://" in str(loc):
                # a mistyped URL must not quietly become a SQLite file of that name
                raise ValueError(f"catalog location {str(loc).split('://')[0]}://… is not postgresql:// nor a file path")
            self.dialect = "sqlite"
            self.url = None
            self.path = Path(loc)
            self.location = str(self.path)
            self.where = str(self.path)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._create_private()
        self._migrate()

    def __repr__(self) -> str:
        return f"Catalog({self.where!r})"

    def _create_private(self) -> None:
        """A new catalog file is created 0600: it holds password and token hashes, sessions and
        the audit log. SQLite gives its -wal and -shm files the mode of the database file, so
        they follow. An existing file keeps its mode (a deployment may share it by group)."""
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        except FileExistsError:
            return
        os.close(fd)

    # -- connections -------------------------------------------------------------------------
    def connect(self) -> sqlite3.Connection:
        if self.url is not None:
            from flywheel import catalog_pg

            return catalog_pg.connect(self.url)  # type: ignore[return-value]
        con = sqlite3.connect(self.path, timeout=60.0, isolation_level=None, check_same_thread=False)
        con.row_factory = sqlite3.Row
        con.execute("PRAGMA busy_timeout = 60000")
        con.execute("PRAGMA foreign_keys = ON")
        con.execute("PRAGMA synchronous = NORMAL")
        return con

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """A write transaction. BEGIN IMMEDIATE takes the write lock up front, so a busy catalog
        makes us wait (busy_timeout) instead of failing half-way with SQLITE_BUSY on upgrade.
        On PostgreSQL the same one-writer lock is a transaction-scoped advisory lock taken first
        (see catalog_pg: READ COMMITTED, so every statement after it sees earlier commits)."""
        if self.url is not None:
            from flywheel import catalog_pg

            con = self.connect()
            try:
                con.execute("BEGIN")
                con.execute("SELECT pg_advisory_xact_lock(?)", (catalog_pg.WRITE_LOCK,))
            except BaseException:
                con.close()
                raise
        else:
            for attempt in range(20):
                con = self.connect()
                try:
                    con.execute("BEGIN IMMEDIATE")
                    break
                except sqlite3.OperationalError as e:
                    con.close()
                    if "locked" not in str(e) and "busy" not in str(e):
                        raise
                    time.sleep(0.05 * (attempt + 1) + random.random() * 0.05)
            else:
                raise RuntimeError(f"catalog {self.path} stayed locked; is a process stuck holding it?")
        try:
            yield con
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        finally:
            con.close()

    def execute(self, sql: str, params: tuple | dict = ()) -> list[sqlite3.Row]:
        if self.url is not None and sql.lstrip().split(None, 1)[0].upper() not in ("SELECT", "WITH", "VALUES"):
            # a write outside tx() still takes the writer lock, as SQLite's autocommit write does
            with self.tx() as con:
                return con.execute(sql, params).fetchall()
        con = self.connect()
        try:
            return con.execute(sql, params).fetchall()
        finally:
            con.close()

    @property
    def integrity_errors(self) -> tuple[type[BaseException], ...]:
        """The exception classes a constraint or append-only trigger raises on this dialect."""
        if self.url is not None:
            import psycopg

            return (psycopg.errors.IntegrityError,)
        return (sqlite3.IntegrityError,)

    def _migrate(self) -> None:
        if self.url is not None:
            from flywheel import catalog_pg

            con = self.connect()
            try:
                catalog_pg.migrate(con, MIGRATIONS, SCHEMA_VERSION_TABLE)  # type: ignore[arg-type]
            finally:
                con.close()
            return
        con = self.connect()
        try:
            con.execute("PRAGMA journal_mode = WAL")
        finally:
            con.close()
        with self.tx() as con:
            con.execute(f"CREATE TABLE IF NOT EXISTS {SCHEMA_VERSION_TABLE} (version INTEGER NOT NULL)")
            # every migration not yet recorded, not only those above the highest: numbers are
            # handed to branches in advance, so a lower one can land after a higher one
            applied = {r[0] for r in con.execute(f"SELECT version FROM {SCHEMA_VERSION_TABLE}")}
            for version, sql in MIGRATIONS:
                if version not in applied:
                    # a migration is a string of ';'-separated statements, or a list of statements
                    # (needed when a statement contains ';' itself, as trigger bodies do)
                    stmts = sql if isinstance(sql, (list, tuple)) else sql.split(";")
                    for stmt in filter(str.strip, stmts):
                        con.execute(stmt)
                    con.execute(f"INSERT INTO {SCHEMA_VERSION_TABLE} VALUES (?)", (version,))

    def schema_version(self) -> int:
        return self.execute(f"SELECT MAX(version) AS v FROM {SCHEMA_VERSION_TABLE}")[0]["v"]

    # -- runs --------------------------------------------------------------------------------
    def start_run(self, run_id: str, kind: str, **fields: Any) -> None:
        with self.tx() as con:
            con.execute(
                "INSERT INTO runs (run_id, kind, status, started_at, recipe, recipe_hash, input,"
                " output, params_json, code_version, state_key) VALUES (?,?,?,?,?,?,?,?,?,?,?)"
                " ON CONFLICT (run_id) DO UPDATE SET kind=excluded.kind, status=excluded.status,"
                " started_at=excluded.started_at, recipe=excluded.recipe, recipe_hash=excluded.recipe_hash,"
                " input=excluded.input, output=excluded.output, params_json=excluded.params_json,"
                " code_version=excluded.code_version, state_key=excluded.state_key,"
                " finished_at=NULL, stats_json=NULL",
                (
                    run_id, kind, "running", time.time(), fields.get("recipe"), fields.get("recipe_hash"),
                    fields.get("input"), fields.get("output"), json.dumps(fields.get("params", {})),
                    fields.get("code_version"), fields.get("state_key"),
                ),
            )

    def finish_run(self, run_id: str, status: str, stats: dict | None = None) -> None:
        with self.tx() as con:
            con.execute(
                "UPDATE runs SET status=?, finished_at=?, stats_json=? WHERE run_id=?",
                (status, time.time(), json.dumps(stats or {}), run_id),
            )

    def record_op_stats(self, run_id: str, counts: dict[str, int]) -> None:
        """counts: reason (`op:rule`, or `accepted`) -> rows."""
        with self.tx() as con:
            con.execute("DELETE FROM op_stats WHERE run_id=?", (run_id,))
            for reason, n in counts.items():
                op, _, rule = reason.partition(":")
                con.execute("INSERT INTO op_stats VALUES (?,?,?,?)", (run_id, op, rule or "", int(n)))

    # -- datasets ----------------------------------------------------------------------------
    def reserve_dataset(self, name: str, kind: str, run_id: str | None = None) -> int:
        """Assign the next version of `name` (the catalog, not the caller, numbers versions)."""
        with self.tx() as con:
            row = con.execute("SELECT MAX(version) FROM datasets WHERE name=?", (name,)).fetchone()
            version = (row[0] or 0) + 1
            con.execute(
                "INSERT INTO datasets (name, version, kind, run_id, status, created_at) VALUES (?,?,?,?,?,?)",
                (name, version, kind, run_id, "writing", time.time()),
            )
        return version

    def commit_dataset(self, name: str, version: int, path: str, manifest: dict) -> None:
        with self.tx() as con:
            con.execute(
                "UPDATE datasets SET path=?, rows=?, parents_json=?, manifest_json=?, recipe_hash=?,"
                " status='ready' WHERE name=? AND version=?",
                (
                    str(path), manifest.get("rows"), json.dumps(manifest.get("parents", [])),
                    json.dumps(manifest), manifest.get("recipe_hash"), name, version,
                ),
            )
            row = con.execute("SELECT kind, run_id FROM datasets WHERE name=? AND version=?", (name, version)).fetchone()
        committed = {"name": name, "version": version, "path": str(path), "rows": manifest.get("rows"),
                     "kind": row["kind"] if row else None, "run_id": row["run_id"] if row else None}
        for hook in COMMIT_HOOKS:  # after the commit: a hook never undoes or blocks a committed version
            hook(committed)

    def abort_dataset(self, name: str, version: int) -> None:
        with self.tx() as con:
            con.execute("UPDATE datasets SET status='failed' WHERE name=? AND version=?", (name, version))

    def resolve_dataset(self, ref: str) -> Path:
        """`name@vN` (or `name@latest`, or `name`) -> the dataset directory."""
        name, _, ver = ref.partition("@")
        if ver in ("", "latest"):
            rows = self.execute(
                "SELECT path FROM datasets WHERE name=? AND status='ready' ORDER BY version DESC LIMIT 1", (name,)
            )
        else:
            rows = self.execute(
                "SELECT path FROM datasets WHERE name=? AND version=? AND status='ready'",
                (name, int(ver.lstrip("v"))),
            )
        if not rows:
            known = [f"{r['name']}@v{r['version']}" for r in self.execute(
                "SELECT name, version FROM datasets WHERE status='ready' ORDER BY name, version")]
            raise KeyError(f"no dataset {ref!r} in the catalog {self.where}; known: {', '.join(known) or 'none'}")
        return Path(rows[0]["path"])

    def datasets(self) -> list[sqlite3.Row]:
        return self.execute("SELECT * FROM datasets WHERE status='ready' ORDER BY name, version")

    # -- audit -------------------------------------------------------------------------------
    def audit(self, actor: str, action: str, target: str, detail: dict | None = None, con: sqlite3.Connection | None = None) -> None:
        """Append one audit row, chained (`flywheel.audit`) in the same transaction as the change
        it records when `con` is that transaction."""
        self.audit_many([(time.time(), actor, action, target, json.dumps(detail or {}))], con=con)

    def audit_many(self, rows: list[tuple], con: sqlite3.Connection | None = None) -> None:
        """Append rows `(at, actor, action, target, detail_json)`, chained, in order."""
        from flywheel import audit

        if con is not None:
            audit.append(con, self.path, rows)
        else:
            with self.tx() as c:
                audit.append(c, self.path, rows)

    def audit_verify(self, use_saved_head: bool = True):
        """Check the audit log's HMAC chain, saved head and triggers (`flywheel.audit.Report`)."""
        from flywheel import audit

        con = self.connect()
        try:
            return audit.verify(con, self.path, use_saved_head=use_saved_head)
        finally:
            con.close()

    def audit_save_head(self) -> dict:
        """Save the newest audit row's seq and MAC outside the catalog (at server start and stop)."""
        from flywheel import audit

        row = self.execute("SELECT seq, mac FROM audit_log ORDER BY seq DESC LIMIT 1")
        head = {"seq": row[0]["seq"], "mac": row[0]["mac"]} if row else {"seq": 0, "mac": None}
        audit.save_head(self.path, head)
        return head

    def audit_seal(self, actor: str, reason: str) -> dict:
        """The audited recovery from a broken log: a seal row that records what was found and
        re-anchors the chain, missing triggers recreated, the head saved."""
        from flywheel import audit

        with self.tx() as con:
            res = audit.seal(con, self.path, actor, reason)
        self.audit_save_head()
        return res

    # -- DuckDB over everything --------------------------------------------------------------
    def query(self, sql: str, params: list | None = None):
        """Run one read-only SELECT in a fresh in-process DuckDB that sees the catalog tables
        (secrets left out) and every ready dataset: `samples` (all rows, with a `dataset` column
        `name@vN`) and one view per dataset name (`ds_<name>`, all versions). Returns a pyarrow
        Table; raises `QueryRefused` for anything else (see `duck_connect`)."""
        con = duck_connect(self)
        try:
            check_read_only(con, sql)
            return con.execute(sql, params or []).fetch_arrow_table()
        finally:
            con.close()


# The catalog as `flywheel sql` and `Catalog.query` see it: a view per table, with the columns
# that hold credentials left out. `sessions` and `login_attempts` are not shown at all: a session
# id hash or a client address is of no use to a query over data, and of use to an attacker.
CATALOG_VIEWS = {
    "runs": "*", "datasets": "*", "op_stats": "*", "signals": "*", "routes": "*", "review_items": "*",
    "audit_log": "*", "models": "*", "review_votes": "*", "review_batches": "*", "loop_evals": "*",
    "review_counts": "*", "blobs": "*",
    "users": "name, role, created_at, disabled",
    "tokens": "token_id, name, created_at, revoked, user, scopes, expires_at, last_used_at, revoked_at",
}
# Table functions that read nothing but their arguments; every other one (read_text, read_csv,
# sqlite_scan, query, ...) could reach a file or run SQL that was never checked.
SAFE_TABLE_FUNCTIONS = frozenset({"range", "generate_series", "unnest"})


_PLAIN_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")


class QueryRefused(ValueError):
    """A query `flywheel sql` does not run: not a single SELECT, or it names something other
    than the views the catalog offers."""


def duck_connect(cat: Catalog):
    """A DuckDB connection with the catalog attached read-only and the views created, then shut:
    no file outside the catalog and the datasets can be opened, no extension installed or
    loaded, and the configuration is locked so a query cannot undo this."""

    import duckdb

    # python_enable_replacements off: a name in a query never resolves to a Python variable
    con = duckdb.connect(":memory:", config={"autoinstall_known_extensions": False,
                                              "autoload_known_extensions": False,
                                              "allow_community_extensions": False,
                                              "python_enable_replacements": False})
    if cat.url is not None:
        # PostgreSQL: DuckDB's postgres extension (from its wheel), logged in as the catalog's
        # read-only role (SELECT on the shown tables and columns only), attached READ_ONLY
        from flywheel import catalog_pg

        _load_wheel_extension(con, "duckdb_extension_postgres_scanner", "postgres_scanner", "duckdb-extension-postgres-scanner")
        ro = _read_only_url(cat)
        try:
            con.execute(f"ATTACH '{_q(catalog_pg.libpq_dsn(ro))}' AS catalog (TYPE postgres, READ_ONLY)")
        except duckdb.Error as e:  # its message may quote the connection string
            raise catalog_pg.CatalogUnavailable(
                f"DuckDB could not attach the PostgreSQL catalog ({catalog_pg.describe(cat.url)}) as its read-only role: "
                + catalog_pg.scrub(str(e), cat.url, ro)) from None
    else:
        _load_sqlite_extension(con)
        con.execute(f"ATTACH '{_q(str(cat.path))}' AS catalog (TYPE sqlite, READ_ONLY)")
    for t, cols in CATALOG_VIEWS.items():
        con.execute(f"CREATE VIEW {t} AS SELECT {cols} FROM catalog.{t}")
    rows = cat.datasets()
    by_name: dict[str, list[tuple[str, str]]] = {}
    dirs: set[str] = set()
    for r in rows:
        files = sorted(Path(r["path"]).glob("data/*.parquet")) if r["path"] else []
        for f in files:
            by_name.setdefault(r["name"], []).append((str(f), f"{r['name']}@v{r['version']}"))
            dirs.update({str(f.parent) + "/", str(f.parent.resolve()) + "/"})  # as listed, and through links
    selects = []
    for name, files in by_name.items():
        ident = "ds_" + re.sub(r"\W", "_", name)
        mapping = ", ".join(f"('{_q(f)}', '{_q(d)}')" for f, d in files)
        flist = ", ".join(f"'{_q(f)}'" for f, _ in files)
        sel = (
            f"SELECT m.dataset, p.* EXCLUDE (filename) FROM read_parquet([{flist}], union_by_name=true, filename=true) p"
            f" JOIN (VALUES {mapping}) m(file, dataset) ON p.filename = m.file"
        )
        con.execute(f"CREATE VIEW {ident} AS {sel}")
        selects.append(f"SELECT * FROM {ident}")
    if selects:
        con.execute("CREATE VIEW samples AS " + " UNION ALL BY NAME ".join(selects))
    else:
        con.execute("CREATE VIEW samples AS SELECT NULL::VARCHAR AS dataset, NULL::VARCHAR AS id, NULL::VARCHAR AS source,"
                    " NULL::VARCHAR AS reject_reason WHERE false")
    # The views read these files when a query runs, so they stay reachable; nothing else does.
    catalog_files = [] if cat.url is not None else [
        str(p) + suffix for p in {cat.path.absolute(), cat.path.resolve()} for suffix in ("", "-wal", "-shm")]
    con.execute("SET allowed_paths = ?", [catalog_files])
    con.execute("SET allowed_directories = ?", [sorted(dirs)])
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return con


def check_read_only(con, sql: str) -> None:
    """Refuse anything but one SELECT over the views of `duck_connect`, using DuckDB's own
    parser. The configuration lock stops files and extensions; this stops the rest: ATTACH (which
    external access off does not stop for an allowed path), writes, COPY, SET, a second statement
    smuggled after the first, the attached raw catalog (`catalog.users`) and table functions that
    read files (`read_blob` of the catalog file would show every password hash)."""
    import json

    import duckdb

    try:
        stmts = duckdb.extract_statements(sql)
    except duckdb.Error as e:
        raise QueryRefused(f"could not parse the query: {e}") from None
    if len(stmts) != 1:
        raise QueryRefused(f"one statement at a time; this query has {len(stmts)}")
    kind = stmts[0].type
    if kind != duckdb.StatementType.SELECT:
        raise QueryRefused(f"only SELECT queries are run; this is {kind.name} (flywheel sql is read-only)")
    tree = json.loads(con.execute("SELECT json_serialize_sql(?)", [sql]).fetchone()[0])
    if tree.get("error"):
        raise QueryRefused(f"only SELECT queries are run: {tree.get('error_message')}")
    ctes: set[str] = set()
    refs: list[dict] = []
    _walk(tree, ctes, refs)
    known = {r[0].lower() for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
    for ref in refs:
        if ref["type"] == "TABLE_FUNCTION":
            fn = (ref.get("function") or {}).get("function_name", "?")
            if fn.lower() not in SAFE_TABLE_FUNCTIONS:
                raise QueryRefused(f"table function {fn}() is not allowed; query the views ({', '.join(sorted(known))})")
            continue
        name = (ref.get("table_name") or "").lower()
        qualified = ref.get("catalog_name") or ref.get("schema_name") not in ("", "main", None)
        # A CTE's name is in scope only where it is defined; a reference outside that scope falls
        # through to DuckDB's replacement scans, which read a path-like name as a file. So a name
        # is let through as a CTE only when it is a plain identifier no scan treats as a file.
        if qualified or not (name in known or (name in ctes and _PLAIN_NAME.match(name))):
            full = ".".join(x for x in (ref.get("catalog_name"), ref.get("schema_name"), ref.get("table_name")) if x)
            raise QueryRefused(f"{full!r} is not one of the views flywheel sql can read: {', '.join(sorted(known))}")


def _walk(node, ctes: set[str], refs: list[dict]) -> None:
    if isinstance(node, dict):
        if node.get("type") in ("BASE_TABLE", "TABLE_FUNCTION") or (node.get("type") == "SHOW_REF" and node.get("table_name")):
            refs.append(node)
        for entry in (node.get("cte_map") or {}).get("map", []):
            ctes.add(str(entry.get("key", "")).lower())
        for v in node.values():
            _walk(v, ctes, refs)
    elif isinstance(node, list):
        for v in node:
            _walk(v, ctes, refs)


def _q(s: str) -> str:
    return s.replace("'", "''")


def _read_only_url(cat: Catalog) -> str:
    """The URL of the catalog's read-only role, created (or its grants refreshed) by the owner.
    Its password is an HMAC of the owner's: whoever can open the catalog can derive it, nobody
    else, and nothing is stored. An owner URL without a password (peer auth, ~/.pgpass) keys it
    with the audit key instead, which machines sharing the catalog share; never with nothing."""
    import hashlib
    import hmac

    from flywheel import audit, catalog_pg

    secret = (urlsplit(cat.url).password or "").encode() or audit.load_key(cat.path, create=True)
    pw = hmac.new(secret, b"flywheel-sql-read-only", hashlib.sha256).hexdigest()
    grants = {t: (None if cols == "*" else [c.strip() for c in cols.split(",")]) for t, cols in CATALOG_VIEWS.items()}
    con = cat.connect()
    try:
        role = catalog_pg.ensure_read_role(con, cat.url, grants, pw)  # type: ignore[arg-type]
    finally:
        con.close()
    return catalog_pg.role_url(cat.url, role, pw)


def _load_wheel_extension(con, module: str, ext: str, package: str) -> None:
    """Load a DuckDB extension from the wheel that ships its binary (never a download)."""
    import glob
    import importlib

    try:
        mod = importlib.import_module(module)
    except ImportError:
        raise RuntimeError(f"DuckDB's {ext} extension is missing: pip install '{package}==<duckdb version>'") from None
    files = glob.glob(str(Path(mod.__file__).parent / "extensions" / "*" / f"{ext}.duckdb_extension"))
    if not files:
        raise RuntimeError(f"no {ext} extension file under {Path(mod.__file__).parent}; reinstall {package}")
    con.execute(f"LOAD '{files[0]}'")


def _load_sqlite_extension(con) -> None:
    """The `duckdb-extension-sqlite-scanner` wheel ships the extension file, so DuckDB never
    tries to download it (which fails offline)."""
    import glob

    try:
        import duckdb_extension_sqlite_scanner as ext  # type: ignore
    except ImportError:
        raise RuntimeError("DuckDB's sqlite extension is missing: pip install 'duckdb-extension-sqlite-scanner==<duckdb version>'") from None
    files = glob.glob(str(Path(ext.__file__).parent / "extensions" / "*" / "sqlite_scanner.duckdb_extension"))
    if not files:
        raise RuntimeError(f"no sqlite_scanner extension file under {Path(ext.__file__).parent}; reinstall duckdb-extension-sqlite-scanner")
    con.execute(f"LOAD '{files[0]}'")


def copy_catalog(src: Catalog, dst: Catalog, chunk: int = 5000) -> dict[str, int]:
    """Copy every table of catalog `src` into the empty catalog `dst` (`flywheel catalog migrate`),
    in one write transaction on `dst`: rows as they are (audit MACs included), identity sequences
    and the audit seq high-water mark set past the highest ids `src` ever handed out, the audit
    chain head carried over. Returns rows copied per table."""
    from flywheel import audit

    def tables(c: Catalog) -> list[str]:
        if c.dialect == "postgresql":
            sql = "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
        else:
            sql = "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        return sorted(r[0] for r in c.execute(sql))

    skip = {SCHEMA_VERSION_TABLE, "audit_high_water"}
    src_tables = [t for t in tables(src) if t not in skip]
    missing = sorted(set(src_tables) - set(tables(dst)))
    if missing:
        raise ValueError(f"the target catalog has no table {', '.join(missing)}: is it on an older flywheel?")
    copied: dict[str, int] = {}
    with dst.tx() as out:
        for t in src_tables:
            if out.execute(f"SELECT 1 FROM {t} LIMIT 1").fetchone():
                raise ValueError(f"the target catalog {dst.where} is not empty (table {t} has rows); migrate into a new database")
        con = src.connect()
        try:
            for t in src_tables:
                cur = con.execute(f"SELECT * FROM {t}")
                cols = [d[0] for d in cur.description]
                ins = f"INSERT INTO {t} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
                n = 0
                while rows := cur.fetchmany(chunk):
                    out.executemany(ins, [tuple(r) for r in rows])
                    n += len(rows)
                copied[t] = n
            top = {r[0]: r[1] for r in con.execute("SELECT name, seq FROM sqlite_sequence")} if src.dialect == "sqlite" else {}
        finally:
            con.close()
        if dst.dialect == "postgresql":
            for t, col in out.execute("SELECT table_name, column_name FROM information_schema.columns"
                                      " WHERE table_schema = 'public' AND is_identity = 'YES'").fetchall():
                high = max(top.get(t) or 0, out.execute(f"SELECT COALESCE(MAX({col}), 0) FROM {t}").fetchone()[0])
                if high:
                    out.execute("SELECT setval(pg_get_serial_sequence(?, ?), ?)", (t, col, high))
            out.execute("UPDATE audit_high_water SET top = GREATEST(top, ?, (SELECT COALESCE(MAX(seq), 0) FROM audit_log))",
                        (top.get("audit_log") or 0,))
    head = audit.load_head(src.path)
    if head and not audit.load_head(dst.path):
        audit.save_head(dst.path, {"seq": head.get("seq"), "mac": head.get("mac")})
    if not audit.key_file(dst.path).exists() and audit.key_file(src.path).exists():
        key = audit.key_file(src.path).read_bytes()
        audit.key_file(dst.path).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(audit.key_file(dst.path), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(key)
    return copied


def open_dataset(ref, catalog: "Catalog | None" = None):
    """A dataset directory, or `name@vN` / `name@latest` looked up in the catalog (the default one
    under FLYWHEEL_HOME when none is given)."""
    from pathlib import Path

    from flywheel.datasets import open_dataset as _open

    if Path(ref).exists():
        return _open(ref)
    return _open(ref, catalog or Catalog())

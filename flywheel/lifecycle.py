"""One job lifecycle for curation, captioning and retraining.

    Job.prepare   FLYWHEEL_HOME/state/<kind>-<key>/plan.json; the key hashes what defines the
                  result, so running the same command again finds the state and resumes it
    write_part    parts/part-<uuid>.parquet, written under a temporary name and renamed into place
    commit        done/<unit>.json names the unit's parts; only parts of committed units count
    finalize      refuses unless every planned unit is committed, then writes the dataset
                  (`flywheel.datasets.DatasetWriter`, registered in the catalog under the run id)
    run record    one row in the catalog's `runs`: running from prepare (or `start`), then
                  succeeded, or failed when a step raises

A unit is the smallest piece of input whose output is kept across a crash (an input file, a
training step). A process killed mid-unit leaves parts no marker names; the next prepare deletes
them and the unit runs again, so no row is ever counted twice. The commit marker is the last file
a unit writes, which is what makes "done" trustworthy after a kill -9. One process works on a
state at a time: a second prepare of the same key would delete the first one's unfinished parts.

This module sits between the job packages (curation, jobs, loop) and the catalog, so all three
can share it without importing each other.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from flywheel import config
from flywheel.catalog import Catalog
from flywheel.datasets import DatasetWriter, Manifest, write_parquet


class JobError(RuntimeError):
    """The job cannot finish as asked (a unit is missing, rows do not add up); says what to do next."""


class JobBusy(JobError):
    """Another live process runs the same job (same key): two runs at once would share one state
    directory, sweep each other's parts and finalize into one another's output."""


# state directory -> the open lock file this process holds it by (flock: released by the kernel
# when the process dies, so a killed run never blocks the rerun that resumes it)
_HELD: dict[str, int] = {}


def _acquire(state: Path) -> None:
    import fcntl

    if str(state) in _HELD:
        return  # this process prepares its own job again (a retried task, a resume in-process)
    state.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(state.with_name(state.name + ".lock"), os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise JobBusy(f"another run of this job is in progress (state {state}); wait for it, or start this one "
                      "after it ends (a run with the same input and recipe resumes the same job)") from None
    _HELD[str(state)] = fd


def _release(state: Path) -> None:
    import fcntl

    fd = _HELD.pop(str(state), None)
    if fd is not None:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)  # the lock file stays: unlinking it would let two processes lock two inodes


def _json_default(o: Any) -> Any:
    return o.item() if hasattr(o, "item") else str(o)  # numpy scalars as numbers; paths as strings


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _digest(obj: Any, n: int = 16) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=_json_default).encode()).hexdigest()[:n]


@contextmanager
def run_record(catalog, run_id: str, kind: str, **fields: Any) -> Iterator[dict]:
    """A run in the catalog around a block: `running`, then `succeeded` with the stats the block
    put in the yielded dict, or `failed` (with the error) when it raises."""
    catalog.start_run(run_id, kind, code_version=config.code_version(), **fields)
    stats: dict = {}
    try:
        yield stats
    except BaseException as e:
        catalog.finish_run(run_id, "failed", {**stats, "error": f"{type(e).__name__}: {e}"})
        raise
    catalog.finish_run(run_id, "succeeded", stats)


class Job:
    """A prepared job's state directory. `Job(state)` reopens it in any process (Prefect tasks
    and resumed runs pass only the path)."""

    def __init__(self, state: str | Path, catalog=None):
        self.state = Path(state)
        self.plan: dict = json.loads((self.state / "plan.json").read_text())
        self._catalog = catalog

    # -- plan ---------------------------------------------------------------------------------
    @classmethod
    def prepare(cls, kind: str, key: dict, plan: dict, units: Sequence[str], *, run: dict | None = None,
                run_id: str | None = None, keep_uncommitted: bool = False, catalog=None) -> "Job":
        """Write (or find again) the state for `key`; with `run`, record the run as running.

        `key` holds what defines the output (input, recipe, model options): the same key means the
        same job, so its committed units are kept and its run id reused. `plan` holds the rest
        (output path, worker count), refreshed on every prepare. `run` is the run record's fields
        (input, output, params, recipe...); without it the caller records the run with `start` once
        it knows them. `run_id` names a new run (default: kind, key and a random suffix).
        `keep_uncommitted` keeps a killed attempt's parts, for a job that resumes row by row from
        whatever parts exist (each is whole, being renamed into place) rather than unit by unit."""
        digest = _digest(key)
        state = config.state_dir() / f"{kind}-{digest}"
        units = [str(u) for u in units]
        if len(set(units)) != len(units):
            raise ValueError("job units must be unique")
        _acquire(state)  # before anything below reads, sweeps or rewrites the state
        old = None
        if (state / "plan.json").exists():
            try:
                old = json.loads((state / "plan.json").read_text())
            except ValueError:  # a plan cut short by a crash: nothing in this state can be trusted
                old = None
        if old is None or old.get("units") != units:
            shutil.rmtree(state, ignore_errors=True)
            old = None
        if old and run_id and old["run_id"] != run_id:
            raise ValueError(f"state {state} belongs to run {old['run_id']}, not {run_id}; put the run id in the key")
        run_id = old["run_id"] if old else run_id or f"{kind}-{digest}-{uuid.uuid4().hex[:6]}"
        (state / "parts").mkdir(parents=True, exist_ok=True)
        (state / "done").mkdir(exist_ok=True)
        full = {**plan, "kind": kind, "key": digest, "key_fields": key, "units": units, "run_id": run_id,
                "state": str(state), "keep_uncommitted": keep_uncommitted}
        _write_atomic(state / "plan.json", json.dumps(full, indent=2, default=_json_default))
        job = cls(state, catalog)
        job._sweep()
        if run is not None:
            job.start(**run)
        return job

    def start(self, **fields: Any) -> None:
        """Record the run as running (again, on a resume) with `fields` (input, output, params...)."""
        self.catalog.start_run(self.run_id, self.kind, code_version=config.code_version(),
                               state_key=self.plan["key"], **fields)

    @property
    def run_id(self) -> str:
        return self.plan["run_id"]

    @property
    def kind(self) -> str:
        return self.plan["kind"]

    @property
    def catalog(self):
        if self._catalog is None:
            self._catalog = Catalog()
        return self._catalog

    @property
    def parts_dir(self) -> Path:
        """Where parts are written; an engine writing its own parts (temp name + rename) writes here."""
        return self.state / "parts"

    # -- units and parts ----------------------------------------------------------------------
    def _markers(self) -> list[dict]:
        out = []
        for f in (self.state / "done").glob("*.json"):
            out.append(json.loads(f.read_text()))
        pos = {u: i for i, u in enumerate(self.plan["units"])}
        return sorted(out, key=lambda m: min(pos.get(u, len(pos)) for u in m["units"]))

    def done(self) -> set[str]:
        return {u for m in self._markers() for u in m["units"]}

    def committed(self, unit: str) -> dict | None:
        """The stats `unit` was committed with, or None while it is pending."""
        return next((m["stats"] for m in self._markers() if unit in m["units"]), None)

    def pending(self) -> list[str]:
        """Planned units with no commit marker, in plan order."""
        done = self.done()
        return [u for u in self.plan["units"] if u not in done]

    def write_part(self, table: pa.Table) -> str:
        """Write `table` as one part (temporary name, then rename); returns its name for `commit`."""
        name = f"part-{uuid.uuid4().hex}.parquet"
        tmp = self.parts_dir / f".{name}.tmp"
        write_parquet(table, tmp)
        os.replace(tmp, self.parts_dir / name)
        return name

    def commit(self, units: str | Sequence[str], parts: Sequence[str | Path], stats: dict | None = None) -> None:
        """Mark `units` done with their parts. Several units commit together when one pass of an
        engine produced their parts without saying which row came from which unit."""
        units = [units] if isinstance(units, str) else [str(u) for u in units]
        unknown = [u for u in units if u not in self.plan["units"]]
        if unknown:
            raise ValueError(f"units {unknown} are not in the plan")
        names = [Path(p).name for p in parts]
        missing = [n for n in names if not (self.parts_dir / n).exists()]
        if missing:
            raise JobError(f"parts {missing} were never written to {self.parts_dir}")
        marker = {"units": units, "parts": names, "stats": stats or {}, "at": time.time()}
        _write_atomic(self.state / "done" / f"{_digest(units)}.json", json.dumps(marker, default=_json_default))

    def parts(self) -> list[Path]:
        """The parts of committed units: plan order, then write order within a commit."""
        return [self.parts_dir / n for m in self._markers() for n in m["parts"]]

    def written_parts(self) -> list[Path]:
        """Every part on disk, committed or not (for jobs prepared with `keep_uncommitted`)."""
        return sorted(self.parts_dir.glob("part-*.parquet"))

    def committed_rows(self) -> int:
        return sum(pq.ParquetFile(p).metadata.num_rows for p in self.parts())

    def _sweep(self) -> None:
        """Delete what a killed attempt left: temp files, and parts no commit marker names
        (unless the job resumes from uncommitted parts)."""
        keep = {p.name for p in self.parts()}
        for f in self.parts_dir.iterdir():
            if f.name not in keep and not (self.plan["keep_uncommitted"] and f.name.startswith("part-")):
                f.unlink(missing_ok=True)
        for f in self.state.rglob(".*.tmp"):
            f.unlink(missing_ok=True)

    # -- side files ---------------------------------------------------------------------------
    def write_json(self, name: str, obj: Any) -> None:
        _write_atomic(self.state / name, json.dumps(obj, indent=2, default=_json_default))

    def read_json(self, name: str, default: Any = None) -> Any:
        p = self.state / name
        return json.loads(p.read_text()) if p.exists() else default

    # -- steps, finalize, run record ------------------------------------------------------------
    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        """Run one step of the job; if it raises, the run is recorded as failed at this step."""
        try:
            yield
        except BaseException as e:
            self.catalog.finish_run(self.run_id, "failed", {"step": name, "error": f"{type(e).__name__}: {e}"})
            _release(self.state)  # a rerun may resume it from another process now
            raise

    def check_complete(self, rows: int | None = None) -> None:
        """Refuse to finalize unless every planned unit is committed (and, when given, the
        committed parts hold exactly `rows` rows)."""
        missing = self.pending()
        if missing:
            raise JobError(f"{len(missing)} of {len(self.plan['units'])} units of {self.kind} run {self.run_id} are "
                           f"unfinished (first: {missing[0]}); rerun the same command to resume it")
        if rows is not None:
            got = self.committed_rows()
            if got != rows:
                raise JobError(f"{self.kind} run {self.run_id} produced {got} rows for {rows} input rows; rerun the "
                               "same command")

    def dataset(self, dest: str | Path, *, name: str, kind: str, parents: list[str] | None = None,
                **kw) -> DatasetWriter:
        """A `DatasetWriter` registered in this job's catalog under its run id."""
        return DatasetWriter(dest, name, kind, catalog=self.catalog, parents=parents, run_id=self.run_id, **kw)

    def finalize(self, dest: str | Path, *, name: str, kind: str, parents: list[str] | None = None,
                 rows: int | None = None, counts: dict[str, int] | None = None, **writer_kw) -> Manifest:
        """Check that every unit is committed (and `rows` rows are there), then write the committed
        parts, in plan order, as one dataset version; returns its manifest. Jobs that split or
        rewrite rows (curation's accepted/rejected) call `check_complete` and `dataset` themselves."""
        self.check_complete(rows)
        with self.dataset(dest, name=name, kind=kind, parents=parents, **writer_kw) as w:
            for p in self.parts():
                w.write(pq.read_table(p))
            return w.close(counts=counts)

    def finish(self, stats: dict) -> None:
        """Record the run as succeeded with `stats`, also kept as result.json in the state."""
        self.write_json("result.json", stats)
        self.catalog.finish_run(self.run_id, "succeeded", stats)

    def cleanup(self) -> None:
        """Remove the state; the job's lock goes with it (held from prepare, so that a second run
        of the same key cannot resume a finished job's parts into its own output meanwhile)."""
        shutil.rmtree(self.state, ignore_errors=True)
        _release(self.state)

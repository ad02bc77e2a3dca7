"""`flywheel models list | add | pull | check | train rotation` and `flywheel calibrate`.

Calibration: thresholds are on a model's scale, and a scale moves with the model and the data.
`calibrate` scores the input with the recipe (the curation API, so the scores are the ones a
run stores), prints each threshold operator's score percentiles, and picks thresholds so the
calibrated rules together keep `--keep` of the rows no other rule rejects. Rules are reapplied
to the stored scores (`reject` is cheap), so the promise is checked before it is written; the
override is a recipe YAML that `extends` the original, usable as `--recipe FILE`.
"""

from __future__ import annotations

import math
from pathlib import Path

import typer

from flywheel.cli import UserError

PERCENTILES = (1, 5, 10, 25, 50, 75, 90, 95, 99)


def _console():
    from rich.console import Console

    return Console()


def _bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


# -- calibration (pure functions over a score table, tested directly) -------------------------
def _threshold_keep(values, direction: str, keep: float) -> float:
    """A threshold between two distinct score values that keeps about `keep` of `values`."""
    import numpy as np

    v = np.sort(np.asarray(values, dtype=np.float64))
    n = len(v)
    k = min(n, max(0, int(round(keep * n))))
    if direction == "min":  # keep the top k: threshold between v[n-k-1] and v[n-k]
        if k >= n:
            return float(v[0] - 1e-9 - abs(v[0]) * 1e-9)
        if k == 0:
            return float(v[-1] + 1e-9 + abs(v[-1]) * 1e-9)
        return float((v[n - k - 1] + v[n - k]) / 2)
    if k >= n:
        return float(v[-1] + 1e-9 + abs(v[-1]) * 1e-9)
    if k == 0:
        return float(v[0] - 1e-9 - abs(v[0]) * 1e-9)
    return float((v[k - 1] + v[k]) / 2)


def calibrated_rules(op_cls) -> list[tuple[str, str, str]]:
    """(param, score column, direction) of the operator's rules marked `calibrated` (thresholds on a
    model's scale): "min" keeps scores >= threshold (the rule fails below), "max" keeps <=."""
    return [(r.param, r.column, "min" if r.compare in ("<", "<=") else "max")
            for r in op_cls.rules if r.calibrated and r.param]


def calibrate_table(table, steps: dict[str, dict], keep: float, decode_params: dict | None = None) -> dict:
    """Thresholds for the calibrated rules (`Rule.calibrated`) with scores in `table` (all scored
    rows of a run).

    Eligible rows: not rejected by any other rule of the recipe (broken files fail broken_file).
    A null score (the operator could not score that row) passes, as it does in a run.
    One per-rule quantile q is found by bisection so the calibrated rules together keep
    `keep` of the eligible rows (per-rule keep q >= keep, since the rules overlap partly).
    """
    import numpy as np

    from flywheel.filters import base
    from flywheel.filters.decode import Decode

    ops = [Decode(decode_params or {})] + [base.get(name)(params) for name, params in steps.items()]
    other_reject = np.zeros(table.num_rows, dtype=bool)
    for op in ops:
        if not set(op.decision_columns()) <= set(table.column_names):
            continue
        calibrated = {r.name for r in op.rules if r.calibrated}
        for i, fails in enumerate(op.reject(table)):
            other_reject[i] |= any(f.rule not in calibrated for f in fails)
    rules = [(op.name, p, col, d) for op in ops for p, col, d in calibrated_rules(type(op)) if col in table.column_names]
    if not rules:
        known = sorted(n for n, cls in base.registry().items() if calibrated_rules(cls))
        raise UserError(f"the recipe has no calibrated operator with scores here ({', '.join(known)}); nothing to calibrate")
    cols = {col: np.array([np.nan if x is None else x for x in table.column(col).to_pylist()], dtype=np.float64) for _, _, col, _ in rules}
    eligible = ~other_reject  # broken files fail broken_file, one of the other rules
    if eligible.sum() == 0:
        raise UserError("no row passes the recipe's other rules; check the input and --skip")

    def values(col: str) -> np.ndarray:
        v = cols[col][eligible]
        return v[~np.isnan(v)]

    def thresholds(q: float) -> dict:  # a null score never fails (the operator could not score the row)
        return {(op, p): _threshold_keep(values(col), d, q) if values(col).size else float("nan") for op, p, col, d in rules}

    def kept(th: dict) -> int:
        ok = eligible.copy()
        for op, p, col, d in rules:
            c, t = cols[col], th[(op, p)]
            if not np.isnan(t):
                ok &= np.isnan(c) | ((c >= t) if d == "min" else (c <= t))
        return int(ok.sum())

    n = int(eligible.sum())
    target = keep * n
    lo, hi = keep, 1.0
    for _ in range(40):
        mid = (lo + hi) / 2
        if kept(thresholds(mid)) < target:
            lo = mid
        else:
            hi = mid
    q = hi if abs(kept(thresholds(hi)) - target) <= abs(kept(thresholds(lo)) - target) else lo
    th = thresholds(q)
    pct = {col: {p: float(np.percentile(values(col), p)) if values(col).size else float("nan") for p in PERCENTILES}
           for _, _, col, _ in rules}
    return {
        "keep": keep, "per_rule_keep": q, "rows": table.num_rows, "eligible": n, "kept": kept(th),
        "kept_fraction": kept(th) / n, "thresholds": {f"{op}.{p}": v for (op, p), v in th.items() if not np.isnan(v)},
        "percentiles": pct, "directions": {col: d for _, _, col, d in rules},
    }


def override_yaml(recipe_ref: str, result: dict, extends: str) -> str:
    import yaml

    from flywheel.curation.preflight import model_needs
    from flywheel.filters import recipe as recipes
    from flywheel.models import store

    ops: dict[str, dict] = {}
    for key, v in result["thresholds"].items():
        op, p = key.split(".", 1)
        ops.setdefault(op, {})[p] = float(f"{v:.6g}") if math.isfinite(v) else v
    revisions = {}
    needs = model_needs(recipes.load(recipe_ref))
    for m in [m for m, users in needs.items() if set(users) & set(ops)]:
        try:
            rev = store.installed_revision(m)
        except KeyError:
            rev = None
        if rev:
            revisions[m] = rev
    doc = {
        "name": f"{Path(recipe_ref).stem}-calibrated",
        "description": f"{recipe_ref} with thresholds calibrated to keep {result['keep']:.3g} "
                       f"({result['kept']} of {result['eligible']} eligible rows)",
        "extends": extends,
        "model_revisions": revisions,
        "operators": [{op: params} for op, params in ops.items()],
    }
    return "# written by `flywheel calibrate`\n" + yaml.safe_dump(doc, sort_keys=False)


def calibrate(recipe: str, input: str, keep: float, out: str | None = None, skip: list[str] | None = None,
              sets: dict | None = None, workers: int = 2, work_dir: str | None = None) -> dict:
    """Score `input` with the recipe through the curation API and calibrate (see module doc)."""
    import tempfile

    import pyarrow as pa
    import pyarrow.parquet as pq

    from flywheel.curation import pipeline
    from flywheel.filters import recipe as recipes

    if not 0 < keep <= 1:
        raise UserError(f"--keep {keep}: give the fraction of rows to keep, between 0 and 1 (e.g. 0.8)")
    try:
        r = recipes.load(recipe, overrides=sets or {}, skip=set(skip or []))
    except (ValueError, FileNotFoundError) as e:
        raise UserError(str(e)) from None
    steps = {s.name: s.params for s in r.steps if s.op is not None}
    with tempfile.TemporaryDirectory(prefix="calibrate-", dir=work_dir) as tmp:
        try:
            pipeline.curate(recipe, input, str(Path(tmp) / "run"), name="calibration", workers=workers,
                            skip=skip, sets=sets)
        except pipeline.CurateError as e:
            raise UserError(str(e)) from None
        files = sorted((Path(tmp) / "run").glob("*/data/*.parquet"))
        tables = [pq.read_table(f) for f in files]
        table = pa.concat_tables(tables, promote_options="default") if tables else pa.table({})
        if not table.num_rows:
            raise UserError(f"{input}: no rows were scored; check the input path")
    result = calibrate_table(table, steps, keep, r.decode)
    extends = str(Path(recipe).resolve()) if Path(recipe).suffix in (".yaml", ".yml") else recipe
    result["override"] = override_yaml(recipe, result, extends)
    if out:
        Path(out).write_text(result["override"])
        result["override_path"] = str(Path(out).resolve())
    return result


def _record(name: str, res: dict) -> None:
    """Best effort: the catalog's `models` table mirrors what is installed (for `flywheel sql`)."""
    import json
    import time

    try:
        from flywheel.catalog import Catalog

        Catalog().execute(
            "INSERT INTO models (name, kind, path, revision, files_json, installed_at) VALUES (?,?,?,?,?,?)"
            " ON CONFLICT (name) DO UPDATE SET kind = excluded.kind, path = excluded.path, revision = excluded.revision,"
            " files_json = excluded.files_json, installed_at = excluded.installed_at",
            (name, res["kind"], res["path"], res["revision"], json.dumps(res["files"]), time.time()),
        )
    except Exception:  # noqa: BLE001 - the files are the truth; the catalog row is a mirror
        pass


# -- commands ---------------------------------------------------------------------------------
def _upright_photos(ref: str, limit: int = 0) -> list:
    """A dataset's images (path or name@vN) for the rotation head: decoded as curation decodes them (EXIF
    applied, short side 256), those under 32 px and undecodable ones skipped; at most `limit` (0: all)."""
    from flywheel.catalog import open_dataset
    from flywheel.filters.decode import decode

    images = []
    for batch in open_dataset(ref).iter_batches(batch_size=64, columns=["image"]):
        for data in batch.column("image").to_pylist():
            d = decode(data, None, 256, 200_000_000, check_ext=False)
            if d.work is not None and min(d.work.rgb.shape[:2]) >= 32:
                images.append(d.work.rgb)
            if limit and len(images) >= limit:
                return images
    return images


def register(app: typer.Typer) -> None:
    models = typer.Typer(help="The model store: pinned weights, installed or missing, checked before a run.", no_args_is_help=True)
    app.add_typer(models, name="models")
    train = typer.Typer(help="Train the small models the store ships.", no_args_is_help=True)
    models.add_typer(train, name="train")

    @models.command("list")
    def list_() -> None:
        """Every pinned model: installed or missing, where, revision, licence, size, who uses it."""
        from rich.table import Table

        from flywheel.filters import base
        from flywheel.models import store

        users: dict[str, list[str]] = {}  # model -> operators that load it with default params
        for name, op in sorted(base.registry().items()):
            for m in op().required_models():
                users.setdefault(m, []).append(name)
        t = Table("model", "status", "size", "licence", "operators", "revision")
        rows = store.listing()
        for r in rows:
            st = "[green]installed[/]" if r["status"] == "installed" else "[red]missing[/]"
            t.add_row(r["name"], st, _bytes(r["size"]), r["licence"].split(" (")[0].split(";")[0],
                      ", ".join(users.get(r["name"], [])), r["revision"])
        con = _console()
        con.print(t)
        for r in rows:
            if r["status"] == "installed":
                con.print(f"  {r['name']}: {r['where']}" + ("" if r["pinned"] else "  [yellow](not every file pinned)[/]"))
            else:
                con.print(f"  {r['name']}: [red]{r['where']}[/]; install with: {r['install']}")

    @models.command("add")
    def add(name: str = typer.Argument(..., help="model name (pinned, or described by DIR/model.yaml)"),
            from_: Path = typer.Option(..., "--from", help="folder holding the model's files")) -> None:
        """Verify a model's files against their SHA-256 pins and install them under FLYWHEEL_HOME/models."""
        from flywheel.models import store

        try:
            res = store.add(name, from_, progress=lambda f: _console().print(f"  verified {f}"))
        except (KeyError, FileNotFoundError, ValueError, store.ChecksumMismatch) as e:
            raise UserError(str(e).strip("'\"")) from None
        _record(name, res)
        for k, v in res.items():
            if k.startswith("note"):
                _console().print(f"[yellow]note:[/] {v}")
        _console().print(f"installed {name} at {res['path']}")

    @models.command("pull")
    def pull(name: str) -> None:
        """Download a hub-sourced model (where the network allows) and install it."""
        from flywheel.models import store

        try:
            res = store.pull(name)
        except (KeyError, ValueError, ConnectionError, store.ModelMissing, store.ChecksumMismatch) as e:
            raise UserError(str(e).strip("'\"")) from None
        _record(name, res)
        _console().print(f"installed {name} at {res['path']}")

    @models.command("check")
    def check(recipe: str = typer.Option(..., help="stage name (stage1..stage6) or recipe YAML"),
              skip: str = typer.Option("", help="operators to leave out, comma-separated"),
              set_: list[str] = typer.Option([], "--set", help="OPERATOR.PARAM=VALUE")) -> None:
        """Preflight: the models a recipe needs, which are missing, how to install them."""
        from flywheel.curation import preflight
        from flywheel.filters import recipe as recipes
        from flywheel.models import store

        try:
            r = recipes.load(recipe, overrides=recipes.parse_sets(set_), skip={s for s in skip.split(",") if s})
        except (ValueError, FileNotFoundError) as e:
            raise UserError(str(e)) from None
        need = preflight.model_needs(r)
        missing = store.preflight(need)
        con = _console()
        for m, ops in need.items():
            ok = not any(x.model == m for x in missing)
            con.print(f"  {'[green]ok[/]     ' if ok else '[red]missing[/]'} {m} ({', '.join(ops)})")
        for w in preflight.revision_warnings(r, recipe):
            con.print(f"[yellow]warning:[/] {w}")
        if missing:
            raise UserError("recipe " + r.name + " cannot run:\n  - " + "\n  - ".join(str(m) for m in missing)
                            + f"\nor leave them out: --skip {','.join(sorted({o for m in missing for o in m.operators}))}")
        con.print(f"recipe {r.name}: every model is installed")

    @train.command("rotation")
    def train_rotation(input: str = typer.Option(..., help="dataset (path or name@vN) of upright photos"),
                       name: str = typer.Option("rotation-photo-local", help="model-store name to install it as"),
                       crops: int = typer.Option(12, help="random crops per photo (each seen at 4 angles)"),
                       limit: int = typer.Option(0, help="use at most this many photos (0: all)"),
                       head: str = typer.Option("mlp", help="mlp (one hidden layer, the shipped kind) or linear")) -> None:
        """Train the self-supervised photo rotation head on a dataset's (upright) images."""
        from flywheel.models import rotation_train

        try:
            rotation_train.check_head(head)  # before decoding anything: a typo should not cost minutes
            images = _upright_photos(input, limit)
            res = rotation_train.train_and_install(images, name, crops=crops, progress=True, head=head,
                                                   provenance={"dataset": str(input)})
        except (FileNotFoundError, KeyError, ValueError) as e:
            raise UserError(str(e)) from None
        _console().print(f"trained on {res['photos']} photos ({res['examples']} examples); installed {name} at {res['path']}; "
                         f"use it with --set rotation.photo_model={name}")

    @app.command("calibrate")
    def calibrate_cmd(recipe: str = typer.Option(..., help="stage name or recipe YAML"),
                      input: str = typer.Option(..., help="images folder, Parquet, tars or dataset to calibrate on"),
                      keep: float = typer.Option(0.8, help="fraction of eligible rows the calibrated rules keep"),
                      out: str = typer.Option("", help="override YAML to write (default: <recipe>-calibrated.yaml)"),
                      skip: str = typer.Option("", help="operators to leave out, comma-separated"),
                      set_: list[str] = typer.Option([], "--set", help="OPERATOR.PARAM=VALUE"),
                      workers: int = typer.Option(2)) -> None:
        """Score percentiles per operator and thresholds that keep --keep; writes a recipe override."""
        from flywheel.filters import recipe as recipes

        try:
            sets = recipes.parse_sets(set_)
        except ValueError as e:
            raise UserError(str(e)) from None
        dest = out or f"{Path(recipe).stem}-calibrated.yaml"
        try:
            res = calibrate(recipe, input, keep, dest, skip=[s for s in skip.split(",") if s], sets=sets, workers=workers)
        except (ValueError, FileNotFoundError) as e:
            raise UserError(str(e)) from None
        con = _console()
        con.print(f"score percentiles over {res['eligible']} eligible rows (of {res['rows']}):")
        for col, pc in res["percentiles"].items():
            con.print(f"  {col} ({'higher' if res['directions'][col] == 'min' else 'lower'} is kept): "
                      + "  ".join(f"p{p}={v:.4g}" for p, v in pc.items()), soft_wrap=True)
        con.print("thresholds:")
        for k, v in res["thresholds"].items():
            con.print(f"  {k} = {v:.6g}")
        con.print(f"kept {res['kept']} of {res['eligible']} eligible rows ({res['kept_fraction']:.3f}; target {keep}); "
                  f"each rule alone keeps {res['per_rule_keep']:.3f}")
        con.print(f"override written to {res['override_path']}; run with --recipe {res['override_path']}")

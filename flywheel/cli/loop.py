"""The loop's commands: signal add, route, index build, search, api serve, tokens create, emit,
lineage, loop --demo."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

signal_app = typer.Typer(help="Failure signals: evaluation results, mined bad cases, user feedback.", no_args_is_help=True)
index_app = typer.Typer(help="FAISS indexes over dataset versions.", no_args_is_help=True)
api_app = typer.Typer(help="The signal and review HTTP API.", no_args_is_help=True)
tokens_app = typer.Typer(help="API tokens (stored hashed).", no_args_is_help=True)


def _err(msg: str):
    from flywheel.cli import UserError

    return UserError(msg)


def _msg(e: BaseException) -> str:
    """An exception's message without KeyError's quotes."""
    return str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)


def _console():
    from rich.console import Console

    return Console()


@signal_app.command("add")
def signal_add(file: Path = typer.Argument(..., help="JSONL, one signal per line (kind: eval | bad_case | feedback).")) -> None:
    """Store signals from a JSONL file; ids already stored with the same content are skipped, an id
    stored with other content is a conflict and nothing is stored."""
    from flywheel.catalog import Catalog
    from flywheel.loop import signals as sg

    if not file.exists():
        raise _err(f"{file} does not exist; pass a JSONL file of signals")
    try:
        sigs = sg.read_jsonl(file)
    except ValueError as e:
        raise _err(f"{e}\nFix those lines and run `flywheel signal add {file}` again (valid lines were not stored).") from None
    try:
        res = sg.add(Catalog(), sigs, source=f"file:{file.name}")
    except sg.SignalConflict as e:
        raise _err(f"conflict: {e}") from None
    typer.echo(f"{len(res['inserted'])} signals stored, {len(res['duplicate'])} already known (same id)")


@signal_app.command("mine")
def signal_mine(
    eval_dataset: Optional[str] = typer.Option(None, "--eval", help="A `flywheel eval` dataset: its failing prompts become signals."),
    losses: Optional[Path] = typer.Option(None, "--losses", help="The trainer's per-sample loss Parquet: outliers become bad cases."),
    z: float = typer.Option(3.0, help="Robust z-score above which a sample's loss is an outlier."),
) -> None:
    """Mine signals from an evaluation dataset or a per-sample loss file."""
    from flywheel.catalog import Catalog
    from flywheel.loop import signals as sg

    if not eval_dataset and not losses:
        raise _err("pass --eval DATASET and/or --losses FILE.parquet")
    cat = Catalog()
    found = []
    try:
        if eval_dataset:
            found += sg.from_eval_dataset(eval_dataset, catalog=cat)
        if losses:
            found += sg.from_loss_parquet(losses, z=z)
    except (ValueError, KeyError, FileNotFoundError) as e:
        raise _err(_msg(e)) from None
    try:
        res = sg.add(cat, found)
    except sg.SignalConflict as e:
        raise _err(f"conflict: {e}") from None
    typer.echo(f"mined {len(found)} signals: {len(res['inserted'])} new, {len(res['duplicate'])} already known")


@signal_app.command("list")
def signal_list(status: str = typer.Option("new", help="new | routed | passed | all"), limit: int = 50) -> None:
    """List stored signals."""
    from rich.table import Table

    from flywheel.catalog import Catalog

    where = "" if status == "all" else "WHERE status=?"
    rows = Catalog().execute(f"SELECT signal_id, kind, status, concept, attribute, prompt FROM signals {where} ORDER BY created_at LIMIT ?",
                             (() if status == "all" else (status,)) + (limit,))
    t = Table("id", "kind", "status", "concept", "attribute", "prompt")
    for r in rows:
        t.add_row(r["signal_id"], r["kind"], r["status"], r["concept"] or "", r["attribute"] or "", (r["prompt"] or "")[:60])
    _console().print(t)


def route(
    trained_on: List[str] = typer.Option(..., "--trained-on", help="Dataset(s) the model was trained on (name@vN or path)."),
    reserve: List[str] = typer.Option(..., "--reserve", help="Reserve pool dataset(s) to retrieve candidates from."),
    enhancer: str = typer.Option("rule", help="Prompt enhancer: rule (offline), llm:MODEL_DIR, or enhancer:DIR (trained by `flywheel train --stage enhancer-sft/-rl`)."),
    ckpt: Optional[Path] = typer.Option(None, help="Checkpoint to evaluate rewrites with (prompt track); without it no rewrite is tested."),
    radius_ratio: float = typer.Option(1.4, help="Scarce when the training k-NN radius is this many times the reserve's."),
    k_retrieve: int = typer.Option(40, help="Candidates retrieved per pre-training-track signal."),
    limit: Optional[int] = typer.Option(None, help="Route at most this many signals."),
) -> None:
    """Route new signals to the prompt, pre-training or RL track; prints the decisions."""
    from rich.table import Table

    from flywheel.catalog import Catalog
    from flywheel.loop import router as rt

    cat = Catalog()
    evaluator = None
    if ckpt is not None:
        from flywheel.loop.measure import checkpoint_evaluator

        evaluator = checkpoint_evaluator(ckpt)
    cfg = rt.RouterConfig(trained_on=list(trained_on), reserve=list(reserve), enhancer=enhancer, radius_ratio=radius_ratio,
                          k_retrieve=k_retrieve, limit=limit)
    try:
        s = rt.route(cat, cfg, evaluator=evaluator, progress=True)
    except (KeyError, FileNotFoundError, ValueError) as e:
        raise _err(_msg(e)) from None
    if not s["signals"]:
        typer.echo("no new failing signals to route; add some with `flywheel signal add FILE.jsonl`")
        return
    t = Table("signal", "track", "queued", "why", title=f"router run {s['run_id']}")
    for d in s["decisions"]:
        t.add_row(d["signal_id"], d["track"], str(d["enqueued"]), d["reason"] or "")
    _console().print(t)
    typer.echo(f"tracks: {s['tracks']}; {s['enqueued']} candidates queued for review; datasets: {s['datasets'] or 'none'}")


@index_app.command("build")
def index_build(
    dataset: List[str] = typer.Argument(..., help="Dataset(s): name@vN or a path."),
    encoder: Optional[str] = typer.Option(None, help="minilm-l6-v2 (default without CLIP embeddings) or clip:MODEL@PRETRAINED."),
    force: bool = typer.Option(False, help="Rebuild even if the index is current."),
) -> None:
    """Build the FAISS index of dataset versions (persisted next to each dataset)."""
    from flywheel.catalog import Catalog
    from flywheel.loop import index as fx

    cat = Catalog()
    for ref in dataset:
        try:
            ix = fx.build(ref, catalog=cat, encoder=encoder, force=force, progress=True)
        except (KeyError, FileNotFoundError, ValueError) as e:
            raise _err(_msg(e)) from None
        m = ix.meta
        typer.echo(f"{m['dataset']}: {m['rows']} rows, {m['type']} index, encoder {m['encoder']} ({m['encoded']} encoded, "
                   f"{m['reused']} reused from parents){', image vectors' if m['image'] else ''} -> {ix.path}")


def search(
    text: str = typer.Argument("", help="Text query."),
    image: Optional[Path] = typer.Option(None, help="Image query (needs CLIP image embeddings in the dataset)."),
    dataset: Optional[List[str]] = typer.Option(None, "--dataset", help="Dataset(s) to search; default every indexed one."),
    k: int = typer.Option(10, "-k", "--k", help="Results."),
) -> None:
    """Nearest samples to a text or image across dataset versions."""
    from rich.table import Table

    from flywheel.catalog import Catalog
    from flywheel.loop import index as fx

    cat = Catalog()
    refs = list(dataset or [])
    if not refs:
        for r in cat.datasets():
            if r["path"] and (Path(r["path"]).parent / f"{Path(r['path']).name}.index" / "meta.json").exists():
                refs.append(f"{r['name']}@v{r['version']}")
    if not refs:
        raise _err("no indexed dataset; run `flywheel index build DATASET` first or pass --dataset")
    if not text and image is None:
        raise _err('give a text query or --image FILE, e.g. flywheel search "a red bicycle"')
    img = None
    if image is not None:
        from PIL import Image

        img = Image.open(image)
    try:
        hits = fx.search(text or None, refs, k=k, image=img, catalog=cat)
    except (KeyError, FileNotFoundError, ValueError) as e:
        raise _err(_msg(e)) from None
    t = Table("score", "dataset", "id", "source", "text")
    for h in hits:
        t.add_row(f"{h['score']:.3f}", h["dataset"], h["id"][:12], h["source"] or "", (h["text"] or "")[:70])
    _console().print(t)


@api_app.command("serve")
def api_serve(host: str = typer.Option("127.0.0.1"), port: int = typer.Option(8780),
              trusted_proxy: List[str] = typer.Option([], "--trusted-proxy", help="Address or network of a reverse proxy "
                                                      "whose X-Forwarded-For is believed (repeat; default none)."),
              docs: bool = typer.Option(False, "--docs", help="Serve Swagger UI at /api/docs (the browser loads its "
                                        "script from a CDN); /api/openapi.json is always served.")) -> None:
    """Serve the signal API (/api/signals) and the review API (/api/review)."""
    import uvicorn

    from flywheel.review.signals_api import create_app

    where = "docs at /api/docs" if docs else "schema at /api/openapi.json"
    typer.echo(f"signal API on http://{host}:{port}/api ({where}); create tokens with `flywheel tokens create --name NAME`")
    try:
        app = create_app(docs=docs, trusted_proxies=trusted_proxy or None)
    except ValueError as e:
        raise _err(str(e)) from None
    uvicorn.run(app, host=host, port=port, log_level="warning", server_header=False)


def _when(t) -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(t)) if t else "-"


def _duration(spec: str) -> float | None:
    """`90d`, `12h`, `30m` or `never` -> seconds (None for never)."""
    spec = spec.strip().lower()
    if spec == "never":
        return None
    units = {"d": 86400.0, "h": 3600.0, "m": 60.0}
    if len(spec) < 2 or spec[-1] not in units or not spec[:-1].isdigit() or int(spec[:-1]) == 0:
        raise _err(f"--expires {spec!r}: give a number with d, h or m (e.g. 90d, 12h) or `never`")
    return int(spec[:-1]) * units[spec[-1]]


@tokens_app.command("create")
def tokens_create(
    name: str = typer.Option(..., "--name", help="What uses the token, e.g. eval-bot."),
    user: str = typer.Option(..., "--user", help="The dashboard user the token acts for; its role caps the scopes."),
    scope: List[str] = typer.Option(["signals:write"], "--scope",
                                    help="signals:write, review:read, review:write or admin; repeat for several."),
    expires: str = typer.Option("90d", "--expires", help="Lifetime: 90d, 12h, 30m, or never."),
) -> None:
    """Issue an API token; it is printed once and stored only as a hash."""
    from flywheel.catalog import Catalog
    from flywheel.review import auth

    try:
        tok = auth.create_token(Catalog(), name, user=user, scopes=scope, expires_in=_duration(expires))
    except auth.AuthError as e:
        raise _err(str(e)) from None
    typer.echo(tok)
    typer.echo(f"token {tok[len(auth.TOKEN_PREFIX):].split('.')[0]} for {name!r} (user {user}, scopes {', '.join(scope)}, "
               f"expires {expires}) created; it is shown only once, store it now", err=True)


@tokens_app.command("list")
def tokens_list(all_: bool = typer.Option(False, "--all", help="Include revoked and expired tokens.")) -> None:
    """List tokens: id, name, user, scopes, created, expires, last used (never the secret)."""
    import time

    from flywheel.catalog import Catalog
    from flywheel.review import auth

    now = time.time()
    for t in auth.list_tokens(Catalog()):
        state = "revoked" if t["revoked"] else "expired" if t["expires_at"] and t["expires_at"] <= now else "active"
        if state != "active" and not all_:
            continue
        typer.echo(f"{t['token_id']}\t{t['name']}\t{t['user'] or '-'}\t{t['scopes']}\tcreated {_when(t['created_at'])}"
                   f"\texpires {_when(t['expires_at']) if t['expires_at'] else 'never'}\tlast used {_when(t['last_used_at'])}\t{state}")


@tokens_app.command("revoke")
def tokens_revoke(token_id: str = typer.Argument(..., help="The id `flywheel tokens list` shows.")) -> None:
    """Revoke a token; the next request with it is refused."""
    from flywheel.catalog import Catalog
    from flywheel.review import auth

    try:
        auth.revoke_token(Catalog(), token_id)
    except auth.AuthError as e:
        raise _err(str(e)) from None
    typer.echo(f"revoked {token_id}")


def emit_cmd(
    from_: str = typer.Option(..., "--from", help="The dataset to extend (name@vN or path)."),
    add_approved: bool = typer.Option(True, "--add-approved/--no-add-approved", help="Add reviewer-approved samples."),
    name: Optional[str] = typer.Option(None, help="Name of the new dataset (default: the source's name, next version)."),
    queue: Optional[str] = typer.Option(None, help="Only approvals from this review queue."),
) -> None:
    """Write the next dataset version: the source's rows plus approved samples, with lineage."""
    from flywheel.catalog import Catalog
    from flywheel.loop import emit as em

    try:
        r = em.emit(from_, add_approved=add_approved, name=name, catalog=Catalog(), queue=queue)
    except (KeyError, FileNotFoundError, ValueError) as e:
        raise _err(_msg(e)) from None
    typer.echo(f"{r['dataset']}: {r['rows']} rows ({r['inherited']} inherited, {r['added']} added for {r['signals']} signals) -> {r['path']}")
    if r["skipped"]["already_in"] or r["skipped"]["missing"]:
        typer.echo(f"skipped: {r['skipped']}")


def lineage_cmd(id_: str = typer.Argument(..., metavar="ID", help="A dataset (name@vN or path) or a sample id (8+ hex characters)."),
                as_json: bool = typer.Option(False, "--json")) -> None:
    """Where a dataset or a sample came from and why it is there."""
    from flywheel.catalog import Catalog
    from flywheel.loop import emit as em

    try:
        info = em.lineage(id_, Catalog())
    except (KeyError, ValueError, FileNotFoundError) as e:
        raise _err(_msg(e)) from None
    if as_json:
        typer.echo(json.dumps(info, indent=2, default=str))
        return
    for line in em.describe_lineage(info):
        typer.echo(line)


def loop(
    demo: bool = typer.Option(False, "--demo", help="Run the whole loop on the synthetic suite with a planted gap."),
    small: bool = typer.Option(False, "--small", help="A few-minute version of the demo (tests)."),
    out: Path = typer.Option(Path("loop-demo"), help="Working directory for the demo's datasets and checkpoints."),
    seeds: Optional[int] = typer.Option(None, help="Sampling seeds per measurement prompt (default 3, 1 with --small)."),
    gap: Optional[str] = typer.Option(None, help="The planted gap: a colour (purple, the default) or COLOR-SHAPE (red-triangle)."),
) -> None:
    """The closed loop: train, eval, route, retrieve, review, emit, retrain, eval."""
    if not demo:
        raise _err("only the demo is built in: `flywheel loop --demo [--small]`; run the loop's steps with "
                   "signal add, route, review, emit and train")
    from flywheel.demos.loop import DemoConfig, run_demo

    cfg = DemoConfig.small() if small else DemoConfig()
    if seeds:
        cfg.seeds = seeds
    if gap:
        from flywheel.training.synthetic import Gap

        try:
            Gap.parse(gap)
        except ValueError as e:
            raise _err(str(e))
        cfg.gap = gap
    run_demo(cfg, out)


def register(app: typer.Typer) -> None:
    app.add_typer(signal_app, name="signal")
    app.add_typer(index_app, name="index")
    app.add_typer(api_app, name="api")
    app.add_typer(tokens_app, name="tokens")
    app.command("route")(route)
    app.command("search")(search)
    app.command("emit")(emit_cmd)
    app.command("lineage")(lineage_cmd)
    app.command("loop")(loop)

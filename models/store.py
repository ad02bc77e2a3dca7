"""The model store: pinned weights, checked before a run starts, never fetched on a worker.

Peer tools fetch weights at run time on every node and die halfway when one is missing. Here
every model an operator may load is pinned in `registry.yaml` (source, revision, SHA-256 of each
file, licence, size). Which models a run needs is the operators' business (each declares its own,
`Operator.required_models()`); the store answers for model names. A model is *installed* when its files are where
the store looks for them:

- `$FLYWHEEL_HOME/models/<name>/` (written by `add` or `pull`, with `installed.json` recording
  the revision and hashes), else
- the pip package that ships it (`source.pip`; located with `importlib.util.find_spec`, which
  does not import the package), else
- a folder of this repository (`source.repo`, weights committed with the code).

`preflight({model: [operators]})` answers in milliseconds, before anything starts, which models
are missing and the exact command that installs each. `path(name)` is what wrappers call in
`setup()`: it verifies the hashes (once per file state, cached) and raises `ModelMissing` with
the install command.

A model that is not pinned (a fine-tune, a tiny test model) is added from a folder holding a
`model.yaml` card (kind, revision, files with SHA-256); the store verifies against the card and
lists it like the pinned ones.

No torch, onnxruntime or open_clip import here: `flywheel --help` and preflight stay instant.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from flywheel import config

REGISTRY_FILE = Path(__file__).with_name("registry.yaml")
REPO_ROOT = Path(__file__).resolve().parent.parent
CARD = "model.yaml"
INSTALLED = "installed.json"


class ModelMissing(RuntimeError):
    """A model an operator needs is not installed (the message carries the install command)."""


class ChecksumMismatch(RuntimeError):
    pass


@dataclass(frozen=True)
class Model:
    name: str
    kind: str
    source: dict[str, Any]
    revision: str
    files: dict[str, str | None]
    licence: str = ""
    size: int = 0
    install: str = ""
    pinned: bool = True  # False: registered from a local card, not from registry.yaml
    extra: dict[str, Any] = field(default_factory=dict)  # card fields a wrapper reads (arch...)

    @property
    def install_command(self) -> str:
        return self.install or f"flywheel models add {self.name} --from DIR"


@dataclass(frozen=True)
class Missing:
    """One model a run needs and does not have: which, for whom, how to install it, why."""

    model: str
    operators: tuple[str, ...]
    install: str
    reason: str

    def __str__(self) -> str:
        return f"{self.model} (needed by {', '.join(self.operators)}): {self.reason}; install with: {self.install}"


def _model_from(name: str, d: dict, pinned: bool) -> Model:
    known = {"kind", "source", "revision", "files", "licence", "size", "install"}
    return Model(
        name=name,
        kind=str(d.get("kind", "")),
        source=dict(d.get("source") or {}),
        revision=str(d.get("revision", "")),
        files={str(k): (str(v) if v else None) for k, v in (d.get("files") or {}).items()},
        licence=str(d.get("licence", "")),
        size=int(d.get("size") or 0),
        install=str(d.get("install", "")),
        pinned=pinned,
        extra={k: v for k, v in d.items() if k not in known},
    )


def registry() -> dict[str, Model]:
    """Pinned models, then models added from a local card (never shadowing a pinned name)."""
    doc = yaml.safe_load(REGISTRY_FILE.read_text()) or {}
    out = {name: _model_from(name, d, True) for name, d in doc.items()}
    root = config.models_dir()
    for card in sorted(root.glob(f"*/{CARD}")):
        name = card.parent.name
        if name not in out:
            out[name] = _model_from(name, yaml.safe_load(card.read_text()) or {}, False)
    return out


def get(name: str) -> Model:
    reg = registry()
    if name not in reg:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(sorted(reg))} (`flywheel models list`)")
    return reg[name]


# -- where the files are ----------------------------------------------------------------------
def installed_dir(name: str) -> Path:
    return config.models_dir() / name


def _package_dir(m: Model) -> Path | None:
    pkg = m.source.get("package")
    if not pkg:
        return None
    try:
        spec = importlib.util.find_spec(pkg)  # locates without importing
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    d = Path(list(spec.submodule_search_locations)[0])
    return d / m.source["subdir"] if m.source.get("subdir") else d


def candidates(m: Model) -> list[Path]:
    out = [installed_dir(m.name)]
    if (d := _package_dir(m)) is not None:
        out.append(d)
    if m.source.get("repo"):
        out.append(REPO_ROOT / m.source["repo"])
    return out


def locate(name: str) -> tuple[Path | None, str]:
    """(folder holding every file of the model, or None; why not). Existence only: fast."""
    m = get(name)
    for d in candidates(m):
        if m.files and all((d / f).is_file() for f in m.files):
            return d, ""
    if m.source.get("pip") and _package_dir(m) is None:
        return None, f"pip package {m.source['pip']} is not installed"
    return None, "weights not installed (no file at " + ", ".join(str(c) for c in candidates(m)) + ")"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fp:
        for chunk in iter(lambda: fp.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _expected(m: Model, d: Path) -> dict[str, str | None]:
    """Pinned hashes, else what `add` recorded for an unpinned file (installed.json)."""
    exp = dict(m.files)
    rec = d / INSTALLED
    if rec.is_file():
        seen = json.loads(rec.read_text()).get("files", {})
        for f, h in exp.items():
            if h is None and seen.get(f):
                exp[f] = seen[f]
    return exp


def verify(name: str, d: Path | None = None, use_cache: bool = True) -> dict[str, str]:
    """SHA-256 of each file against its pin; raises `ChecksumMismatch` naming the file.

    Hashing a 1.7 GB checkpoint on every worker start would cost seconds, so a verified file's
    (size, mtime) is cached under the models dir; a changed file is hashed again.
    """
    m = get(name)
    if d is None:
        d, why = locate(name)
        if d is None:
            raise ModelMissing(f"model {name} is missing: {why}; install with: {m.install_command}")
    cache_file = config.cache_dir("model-verify") / f"{name}.json"
    cache = {}
    if use_cache:
        with contextlib.suppress(OSError, ValueError):  # none yet, or one a crash left half written: hash again
            cache = json.loads(cache_file.read_text())
    out = {}
    for f, want in _expected(m, d).items():
        p = d / f
        st = p.stat()
        key = f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}"
        got = cache.get(key) or sha256(p)
        if want and got != want:
            raise ChecksumMismatch(f"model {name}: {p} has SHA-256 {got}, pinned {want}; reinstall with: {m.install_command}")
        cache[key] = got
        out[f] = got
    # atomically: the model actors of a run start together, and one read another's half-written
    # file (a JSONDecodeError that killed the run's actor at start)
    tmp = cache_file.with_name(f".{cache_file.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(cache))
    os.replace(tmp, cache_file)
    return out


def path(name: str) -> Path:
    """The verified folder of an installed model (wrappers call this in `setup()`)."""
    verify(name)
    d, _ = locate(name)
    assert d is not None
    return d


def installed_revision(name: str) -> str | None:
    m = get(name)
    d, _ = locate(name)
    if d is None:
        return None
    rec = d / INSTALLED
    if rec.is_file():
        return json.loads(rec.read_text()).get("revision") or m.revision
    return m.revision


# -- preflight --------------------------------------------------------------------------------
def preflight(needs: dict[str, list[str]]) -> list[Missing]:
    """Which of the needed models (model -> operators needing it) are not installed.
    Existence checks only (< 1 s)."""
    reg = registry()
    out = []
    for name, ops in needs.items():
        if name not in reg:
            out.append(Missing(name, tuple(ops), f"flywheel models add {name} --from DIR", "not in the model registry"))
            continue
        d, why = locate(name)
        if d is None:
            out.append(Missing(name, tuple(ops), reg[name].install_command, why))
    return out


def revision_warnings(needs: dict[str, list[str]], wanted: dict[str, str], recipe_ref: str) -> list[str]:
    """Warnings for needed models whose installed revision differs from the one a recipe's
    thresholds were set for (`wanted`, its `model_revisions:`): scores may be on another scale."""
    out = []
    reg = registry()
    for name, ops in needs.items():
        have = installed_revision(name) if name in reg else None
        if name in wanted and have is not None and have != wanted[name]:
            out.append(
                f"{name}: recipe {recipe_ref} thresholds were set for revision {wanted[name]}, installed is {have}; "
                f"scores of {', '.join(ops)} may be on another scale (run `flywheel calibrate --recipe {recipe_ref}`)"
            )
    return out


# -- install ----------------------------------------------------------------------------------
def add(name: str, src: str | Path, progress=None) -> dict[str, str]:
    """Verify the files in `src` and copy them into the models dir (atomically, by rename).

    A pinned model's files must match their pins; an unpinned file's hash is recorded and the
    store says so. A name not in the registry needs a `model.yaml` card in `src`.
    """
    src = Path(src)
    if not src.is_dir():
        raise FileNotFoundError(f"{src} is not a folder; pass the folder holding the model's files")
    reg = registry()
    card_path = src / CARD
    if name in reg and reg[name].pinned:
        m = reg[name]
    elif card_path.is_file():
        m = _model_from(name, yaml.safe_load(card_path.read_text()) or {}, False)
        if not m.files:
            raise ValueError(f"{card_path}: the card lists no `files:` (each file and its SHA-256)")
    else:
        raise KeyError(f"model {name!r} is not pinned in the registry and {src} has no {CARD} card; "
                       f"known models: {', '.join(sorted(reg))}")
    missing = [f for f in m.files if not (src / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{src} lacks {', '.join(missing)} (model {name} needs {', '.join(m.files)})")
    seen, notes = {}, []
    for f, want in m.files.items():
        got = sha256(src / f)
        if want and got != want:
            raise ChecksumMismatch(f"{src / f}: SHA-256 {got} does not match the pinned {want}; not installed")
        if not want:
            notes.append(f"{f}: not pinned; recorded SHA-256 {got}")
        seen[f] = got
        if progress:
            progress(f)
    root = config.models_dir()
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=root))
    try:
        for f in m.files:
            (tmp / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src / f, tmp / f)
        if card_path.is_file() and not m.pinned:
            shutil.copy2(card_path, tmp / CARD)
        (tmp / INSTALLED).write_text(json.dumps({
            "name": name, "revision": m.revision, "files": seen, "from": str(src.resolve()),
            "installed_at": time.time(), "notes": notes,
        }, indent=2))
        dest = installed_dir(name)
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"path": str(installed_dir(name)), "kind": m.kind, "revision": m.revision, "files": seen,
            **{f"note{i}": n for i, n in enumerate(notes)}}


def pull(name: str) -> dict[str, str]:
    """Download a hub-sourced model's files (where the network allows), then `add` them."""
    m = get(name)
    repo = m.source.get("hub")
    if not repo:
        raise ValueError(f"model {name} has no hub source; install with: {m.install_command}")
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise ConnectionError(f"HF_HUB_OFFLINE=1: cannot download {repo}; copy its files ({', '.join(m.files)}) "
                              f"from a machine with access and run `flywheel models add {name} --from DIR`")
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as e:  # pragma: no cover - a dependency of transformers
        raise ModelMissing(f"huggingface_hub is needed to pull: pip install huggingface_hub ({e})") from None
    with tempfile.TemporaryDirectory(dir=config.models_dir()) as tmp:
        for f in m.files:
            try:
                hf_hub_download(repo, f, local_dir=tmp, revision=m.source.get("hub_revision"))
            except Exception as e:  # noqa: BLE001 - no network, gated repo, missing file: say which
                raise ConnectionError(
                    f"could not download {f} from {repo}: {type(e).__name__}: {str(e)[:200]}; copy the files "
                    f"({', '.join(m.files)}) from a machine with access and run `flywheel models add {name} --from DIR`"
                ) from None
        return add(name, tmp)


def listing() -> list[dict[str, Any]]:
    """One row per model for `flywheel models list`: installed or missing, where, licence, size."""
    rows = []
    for name, m in sorted(registry().items()):
        d, why = locate(name)
        size = sum((d / f).stat().st_size for f in m.files) if d else m.size
        rows.append({
            "name": name, "kind": m.kind, "status": "installed" if d else "missing", "where": str(d) if d else why,
            "revision": installed_revision(name) or m.revision, "licence": m.licence, "size": size,
            "install": "" if d else m.install_command,
            "pinned": all(m.files.values()) if m.files else False,
        })
    return rows

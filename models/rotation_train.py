"""Training the photo rotation head (`flywheel models train rotation`).

Self-supervised: the photos are assumed upright; each is seen whole and as random crops, at
0/90/180/270 degrees, and a small head learns the angle over frozen OpenNSFW features
(`flywheel.models.rotation`). The result is a model-store folder: `rotation_photo.npz` and a
`model.yaml` card (kind, revision, SHA-256, training provenance), installed with `store.add`.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from flywheel.models import rotation as R

HEADS = ("mlp", "linear")


def check_head(head: str, members: int = 1) -> None:
    """Before any decoding or feature extraction: a wrong name should not cost minutes."""
    if head not in HEADS:
        raise ValueError(f"head {head!r}: use one of {', '.join(HEADS)}")
    if members < 1 or (members > 1 and head != "mlp"):
        raise ValueError(f"members={members}: use 1, or more to merge several mlp heads (a linear head is one)")


def fit(feats: np.ndarray, labels: np.ndarray, head: str = "mlp", seed: int = 0, members: int = 1) -> R.Head:
    """`members`: MLP heads merged into one (`rotation.Head.merge`) sharing `rotation.HIDDEN` units between them, so
    the file stays the size of one head (2 MB); a linear head is one."""
    check_head(head, members)
    if head == "linear":
        return R.fit_head(feats, labels, seed=seed)
    return R.fit_mlp_head(feats, labels, hidden=R.HIDDEN // members, seed=seed, members=members)


def train_from_images(images: Sequence[np.ndarray], dest: Path | str, *, crops: int = 12, seed: int = 0,
                      provenance: dict | None = None, progress: bool = False, revision: str | None = None,
                      head: str = "mlp") -> dict:
    """Train a head (`mlp`: one hidden layer; `linear`) on upright RGB images and write the model
    folder `dest`."""
    from flywheel.models import store

    check_head(head)
    if len(images) < 4:
        raise ValueError(f"{len(images)} usable photos; the rotation head needs at least 4 upright photos (dozens to be useful)")
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(images), desc="rotation examples", unit="photo")
    views, labels, _ = R.examples(images, crops, seed, progress=(bar.update if bar else None))
    if bar:
        bar.close()
    fx = R.PhotoFeatures(store.path("opennsfw"))
    feats = []
    it = range(0, len(views), 64)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc="features", unit="batch")
    for s in it:
        feats.append(fx(views[s:s + 64]))
    model = fit(np.concatenate(feats), labels, head, seed)
    return write_head(model, dest, photos=len(images), crops=crops, seed=seed, head=head, revision=revision,
                      provenance=provenance)


def write_head(model: R.Head, dest: Path | str, *, photos: int, crops: int, seed: int, head: str,
               revision: str | None, provenance: dict | None) -> dict:
    """The model-store folder: the head file and its card (revision, SHA-256, training provenance)."""
    import yaml

    from flywheel.models import store

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    rev = revision or f"rotation-photo-{time.strftime('%Y%m%d')}"
    model.save(dest / R.HEAD_FILE, revision=rev, photos=photos, crops=crops, seed=seed, head=head)
    (dest / "model.yaml").write_text(yaml.safe_dump({
        "kind": "npz", "source": {"trained": "flywheel models train rotation"}, "revision": rev,
        "files": {R.HEAD_FILE: store.sha256(dest / R.HEAD_FILE)}, "licence": "as the training photos allow",
        "operators": ["rotation"], "training": {"photos": photos, "crops": crops, "seed": seed, "head": head, **(provenance or {})},
    }, sort_keys=False))
    return {"photos": photos, "examples": 4 * crops * photos, "path": str(dest)}


def train_and_install(images: Sequence[np.ndarray], name: str, *, crops: int = 12, progress: bool = False,
                      head: str = "mlp", provenance: dict | None = None) -> dict:
    """Train a head on upright RGB images and install it in the model store as `name`. Reading a
    dataset's images is the caller's part (`flywheel models train rotation` decodes them as curation
    does), so this layer needs neither the catalog nor the decoder."""
    from flywheel.models import store

    check_head(head)
    with tempfile.TemporaryDirectory() as tmp:
        res = train_from_images(images, tmp, crops=crops, provenance=provenance, progress=progress, head=head)
        res["path"] = store.add(name, tmp)["path"]
    return res


def carve_rcc_photos(rcc_dir: Path | str, out_dir: Path | str, min_side: int = 180) -> int:
    """Write the RGB WebP images inside Qt resource files (`*.rcc`, e.g. gcompris-qt-data's) as
    `<rcc name>_<nnn>.jpg` (quality 95), numbered in file order, skipping images with alpha and
    those under `min_side` px. Qt stores them uncompressed, so each is a RIFF/WEBP chunk whose
    header gives its length."""
    import io
    import struct

    from PIL import Image

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n = 0
    for f in sorted(Path(rcc_dir).glob("*.rcc")):
        b, k, i = f.read_bytes(), 0, 0
        while (i := b.find(b"RIFF", i)) >= 0:
            if b[i + 8:i + 12] == b"WEBP":
                size = struct.unpack("<I", b[i + 4:i + 8])[0]
                try:
                    im = Image.open(io.BytesIO(b[i:i + 8 + size]))
                    im.load()
                except Exception:  # a RIFF marker that is not a whole image
                    im = None
                if im is not None and im.mode == "RGB" and min(im.size) >= min_side:
                    im.save(out / f"{f.stem}_{k:03d}.jpg", quality=95)
                    k += 1
                    n += 1
            i += 4
    return n


def load_upright(path: str | Path, turn: int = 0, short: int = 256) -> np.ndarray:
    """A listed training photo as RGB: EXIF orientation applied (what a viewer shows), turned clockwise
    by `turn` (entries stored on their side), short side resized to `short`."""
    from PIL import Image, ImageOps

    im = Image.open(path)
    im.draft("RGB", (2 * short, 2 * short))
    im = ImageOps.exif_transpose(im).convert("RGB")
    f = short / min(im.size)
    rgb = np.asarray(im.resize((max(1, round(im.size[0] * f)), max(1, round(im.size[1] * f))), Image.BILINEAR))
    return R.rotate(rgb, turn) if turn else rgb


def cache_key(photos: Sequence[tuple[str, str, int]]) -> np.ndarray:
    """What identifies a features cache's rows: each photo's path and turn, in order (the crops follow
    from the order: one random stream over all photos)."""
    return np.array([f"{p}@{turn}" for _, p, turn in photos])


def build_shipped(dest: Path | str, extra_dirs: Sequence[str] = (), crops: int = 8, seed: int = 0,
                  revision: str = "rotation-photo-v6", head: str = "mlp", cache: Path | str | None = None,
                  sources: Sequence[tuple[str, Sequence[str]]] | None = None) -> dict:
    """Rebuild the head shipped in `models/weights` from the photos that installable packages
    ship (`sources`, default `rotation.photo_sources()`; see `models/weights/rotation_photo.md` for the
    commands). `cache`: the features file that `benchmarks/rotation_accuracy.py --cache` wrote for the
    same photos; its views are the ones computed here (same seed, crops and order), stored in float16, so
    the fit takes a minute instead of fifteen."""
    photos = R.package_photos(extra_dirs, sources)
    prov = {"photos_from": sorted({s for s, _, _ in photos}), "files": [Path(p).name for _, p, _ in photos]}
    if cache is None:
        images = [load_upright(p, turn) for _, p, turn in photos]
        return train_from_images(images, dest, crops=crops, seed=seed, provenance=prov, progress=True,
                                 revision=revision, head=head)
    check_head(head)
    z = np.load(cache)
    key = cache_key(photos)
    if z["key"].shape != key.shape or not (z["key"] == key).all() or z["F"].shape[1] < 4 * crops:
        raise ValueError(f"{cache} holds other photos or fewer views than {4 * crops} per photo: rebuild without it")
    feats = z["F"][:, :4 * crops].astype(np.float32)
    labels = np.tile(np.arange(4), crops * len(photos))
    return write_head(fit(feats.reshape(-1, feats.shape[2]), labels, head, seed), dest, photos=len(photos),
                      crops=crops, seed=seed, head=head, revision=revision, provenance={**prov, "features": "float16 cache"})

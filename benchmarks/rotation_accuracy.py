"""Photo rotation accuracy on real photos the head never saw: leave-sources-out cross-validation.

The pool is the upright photos that installable packages ship (`rotation.photo_sources()`, listed in
models/weights/rotation-photo-sources.json; how to fetch them: models/weights/rotation_photo.md). Folds hold whole sources
(a package; gcompris by activity), so a fold's test photos come from packages the head was not trained
on: closer to a new user's corpus than random folds, where near-identical photos of one package fall
on both sides. Each test photo is turned 0/90/180/270 degrees and scored as the operator scores it
(the image and its mirror image, four turns each, voting). Also reported: how many upright photos
the operator would reject and how many turned ones it catches, per `min_confidence`.

    .venv/bin/python benchmarks/fetch_rotation_photos.py /tmp/rotpool
    .venv/bin/python benchmarks/rotation_accuracy.py --photo-dirs /tmp/rotpool --cache /tmp/rotfeat.npz
    .venv/bin/python benchmarks/rotation_accuracy.py --photo-dirs ... --head models/weights/rotation_photo.npz \
        --only-v3     # a trained head on the photos added after it (no training)
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def source_group(src: str, path: str) -> str:
    if "gcompris" in src:  # 208 photos in one package: its activities are the groups
        return "gcompris:" + re.sub(r"_\d+\.jpg$", "", Path(path).name)
    return src


def scores(head, feats: np.ndarray, mirror: np.ndarray) -> np.ndarray:
    """feats (4, D): the upright image turned 0/90/180/270; mirror (4, D): its mirror image turned so ->
    (4 true angles, 4) vote, as PhotoRotation.proba computes it for the image turned by each angle."""
    from flywheel.models import rotation as R

    pn, pm = head.proba(feats), head.proba(mirror)
    return np.stack([R.vote(pn[[(t + k) % 4 for k in range(4)]][None], pm[[(k - t) % 4 for k in range(4)]][None])[0]
                     for t in range(4)])


def report(P: np.ndarray, name: str, thresholds=(0.8, 0.9, 0.95)) -> None:
    if not len(P):
        return
    pred, conf = P.argmax(2), P.max(2)
    truth = np.arange(4)
    line = f"{name[:48]:48} {len(P):4d} photos  accuracy {(pred == truth).mean():.3f}"
    for th in thresholds:
        up = ((pred[:, 0] != 0) & (conf[:, 0] >= th)).mean()
        caught = ((pred[:, 1:] != 0) & (conf[:, 1:] >= th)).mean()
        line += f" | {th}: upright rejected {up:.3f}, turned rejected {caught:.3f}"
    print(line)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photo-dirs", nargs="+", default=[], help="where the packages' photos were extracted")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--splits", type=int, default=1, help="partitions of the sources into folds; >1 reports the "
                    "spread (a single partition's accuracy can be off by a couple of points)")
    ap.add_argument("--crops", type=int, default=8, help="training views per photo (the shipped recipe: 8)")
    ap.add_argument("--head", help="score this head instead of cross-validating")
    ap.add_argument("--head-type", default="mlp", choices=("mlp", "linear"), help="the kind of head cross-validation fits")
    ap.add_argument("--only-v3", action="store_true", help="score only the photos added for rotation-photo-v3")
    ap.add_argument("--only-v5", action="store_true", help="score only the photos added for rotation-photo-v5")
    ap.add_argument("--only-v6", action="store_true", help="score only the photos added for rotation-photo-v6")
    ap.add_argument("--pool", default="all", choices=("all", "v4", "v5"),
                    help="v4: only the 676 photos rotation-photo-v4 was trained on; v5: the 858 of v5 (their figures, for comparison)")
    ap.add_argument("--members", type=int, default=1, help="MLP heads merged into one, sharing 256 hidden units (the shipped v6: 3)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--per-source", action="store_true")
    ap.add_argument("--cache", type=Path, help="features file (.npz): written after extraction, read instead of it "
                    "when it holds the same photos and views (refit heads in a minute, not ten)")
    a = ap.parse_args()

    from tqdm import tqdm

    from flywheel.models import rotation as R
    from flywheel.models import store
    from flywheel.models.rotation_train import cache_key, fit, load_upright

    photos = R.package_photos(a.photo_dirs)
    v3, v5, v6 = ({k for k, _ in R.photo_sources([f"rotation-photo-{v}"])} for v in ("v3", "v5", "v6"))
    if a.pool in ("v4", "v5"):
        photos = [ph for ph in photos if ph[0] not in v6 and (a.pool == "v5" or ph[0] not in v5)]
    if not photos:
        sys.exit("no listed photos found: fetch them as models/weights/rotation_photo.md says and pass --photo-dirs")
    src = np.array([s for s, _, _ in photos])
    groups = np.array([source_group(s, p) for s, p, _ in photos])
    print(f"{len(photos)} photos from {len(set(src))} sources ({sum(s in v3 for s in src)} added for v3, "
          f"{sum(s in v5 for s in src)} for v5, {sum(s in v6 for s in src)} for v6)")
    t0 = time.time()
    train_views = a.head is None
    n_views = 4 * (a.crops if train_views else 1)
    key = cache_key(photos)
    if a.cache and a.cache.exists():
        z = np.load(a.cache)
        if z["key"].shape == key.shape and (z["key"] == key).all() and z["F"].shape[1] >= n_views:
            F, FM = list(z["F"][:, :n_views].astype(np.float32)), list(z["FM"].astype(np.float32))
            print(f"features read from {a.cache}")
        else:
            sys.exit(f"{a.cache} holds other photos or fewer views: remove it or name another --cache")
    else:
        fx = R.PhotoFeatures(store.path("opennsfw"), threads=a.threads)
        F, FM = [], []
        rng = np.random.default_rng(0)
        for s, p, turn in tqdm(photos, desc="features", unit="photo"):
            im = load_upright(p, turn)
            crops = R.augment(im, rng, a.crops) if train_views else [im]  # crop 0 is the whole image
            views = [R.rotate(c, ang) for c in crops for ang in R.ANGLES]
            mirror = [R.rotate(np.ascontiguousarray(im[:, ::-1]), ang) for ang in R.ANGLES]
            f = fx(views + mirror)
            F.append(f[:len(views)])
            FM.append(f[len(views):])
        print(f"features: {time.time() - t0:.0f} s")
        if a.cache:
            np.savez(a.cache, key=key, F=np.stack(F).astype(np.float16), FM=np.stack(FM).astype(np.float16))
    lab = [np.tile(np.arange(4), len(f) // 4) for f in F]
    grp = [np.full(len(f), i) for i, f in enumerate(F)]
    P = np.zeros((len(photos), 4, 4))
    only = v3 if a.only_v3 else v5 if a.only_v5 else v6 if a.only_v6 else None
    mask = np.isin(src, list(only)) if only else np.ones(len(photos), bool)
    added = "added for v3" if a.only_v3 else "added for v5" if a.only_v5 else "added for v6" if a.only_v6 else "all"
    if a.head:
        head = R.Head.load(a.head)
        for i in range(len(photos)):
            P[i] = scores(head, F[i][:4], FM[i])
        print(f"head {a.head} (no training), photos {added}:")
    else:
        Fa, la, ga = np.concatenate(F), np.concatenate(lab), np.concatenate(grp)
        by_size = sorted(set(groups), key=lambda g: (-(groups == g).sum(), g))
        accs = []
        for split in range(a.splits):
            names = by_size
            if split:  # another partition: the sources in a shuffled order, each into the emptiest fold
                names = [by_size[j] for j in np.random.default_rng(split).permutation(len(by_size))]
            sizes, fold_of = [0] * a.folds, {}
            for g in names:  # split 0: largest groups first, each into the emptiest fold
                k = int(np.argmin(sizes))
                fold_of[g] = k
                sizes[k] += int((groups == g).sum())
            fold = np.array([fold_of[g] for g in groups])
            Ps = np.zeros_like(P)
            for k in range(a.folds):
                test = np.where(fold == k)[0]
                train = ~np.isin(ga, test)
                head = fit(Fa[train], la[train], a.head_type, members=a.members)
                for i in test:
                    Ps[i] = scores(head, F[i][:4], FM[i])
                print(f"split {split + 1}/{a.splits} fold {k + 1}/{a.folds}: {len(test)} test photos from "
                      f"{len({groups[i] for i in test})} sources, trained on {int(train.sum())} views ({time.time() - t0:.0f} s)")
            if split == 0:
                P = Ps
            right = Ps.argmax(2) == np.arange(4)
            accs.append([right[m].mean() if m.any() else np.nan for m in (
                mask, mask & ~np.isin(src, list(v5 | v6)), mask & np.isin(src, list(v5)), mask & np.isin(src, list(v6)))])
        if a.splits > 1:
            acc = np.array(accs)
            for j, name in enumerate(("all", "the 676 photos of rotation-photo-v4", "added for v5", "added for v6")):
                print(f"accuracy over {a.splits} partitions into folds, {name}: mean {np.nanmean(acc[:, j]):.3f}, "
                      f"range {np.nanmin(acc[:, j]):.3f}-{np.nanmax(acc[:, j]):.3f} ({' '.join(f'{x:.3f}' for x in acc[:, j])})")
        print("below: the first partition (largest sources first)")
        print(f"leave-sources-out, {a.folds} folds, {a.head_type} head{f' ({a.members} merged)' if a.members > 1 else ''}:")
    report(P[mask], "all")
    old = ~np.isin(src, list(v3 | v5 | v6))
    report(P[mask & ~np.isin(src, list(v5 | v6))], "  the 676 photos of rotation-photo-v4")
    report(P[mask & old], "    rotation-photo-v2 pool (284)")
    report(P[mask & np.isin(src, list(v3))], "    added for v3 (392)")
    report(P[mask & np.isin(src, list(v5))], "  added for v5 (182)")
    report(P[mask & np.isin(src, list(v6))], "  added for v6 (114)")
    if a.per_source:
        for s in sorted(set(src[mask])):
            report(P[mask & (src == s)], "    " + s)


if __name__ == "__main__":
    main()

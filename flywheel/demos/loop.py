"""`flywheel loop --demo`: the whole loop on the synthetic shapes suite with a planted gap.

1. data: a training set where one concept is nearly absent (`gap`, kept with probability
   `gap_keep`): a colour (the default, `purple`: every scene of that colour) or a colour-shape
   combination (`red-triangle`), and a reserve pool drawn without the gap. A colour-shape gap is
   the harder test at toy scale: a model that knows red and triangles separately composes a red
   triangle it never saw, so the gap is shallow before the loop runs;
2. train the baseline; evaluate it per concept on held-out prompts (the measurement set);
3. signals: a `flywheel eval` pass on a *different* set of prompts (the signal set, disjoint from
   the measurement set) is mined for failures, which are posted to the signal API over HTTP;
4. route: the router finds which failures come from a scarce concept (k-NN density of the
   concept in the training index against the reserve pool's) and retrieves candidates for them;
   nothing in the demo tells it which concept was planted;
5. review: a scripted reviewer decides every queued item through the review API over HTTP,
   approving candidates whose caption names the concept of the signal they were retrieved for;
6. emit the next dataset version, retrain from the baseline checkpoint on it (the retraining
   flow), evaluate on the measurement set; optionally a control run continues the baseline on
   the *old* version for the same steps, so the gain is not just more training;
7. print the per-concept before/after table (95% Wilson intervals; the change with Newcombe's interval); record it in the catalog
   (`loop_evals`) and in `loop_result.json`.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from flywheel.loop.measure import (
    checkpoint_evaluator,
    concept_hit,
    concept_prompts,
    format_table,
    generate_and_score,
    generator,
    per_concept,
    prewarm,
    record_evals,
)


@dataclass
class DemoConfig:
    gap: str = "purple"  # a colour (every shape of it) or a colour-shape combination, e.g. red-triangle
    gap_keep: float = 0.0
    n_train: int = 6000
    n_reserve: int = 3000
    size: int = 64
    train_minutes: float = 16.0  # baseline budget (CPU-time minutes x threads, as the toy benchmark)
    retrain_minutes: float = 6.0
    retrain_lr: float = 5e-4
    batch_size: int = 32
    lr: float = 1e-3
    threads: int = 2
    sample_steps: int = 20
    guidance: float = 4.0
    n_per_concept: int = 100  # measurement prompts per concept
    seeds: int = 3
    concepts: str = "neighbours"  # neighbours: the gap and every concept sharing its colour or shape | all
    signal_per_concept: int = 8  # signal prompts per concept (all 48 concepts), one seed
    k_retrieve: int = 60
    control: bool = True
    ckpt_every: int = 200
    checker_images: int = 6000  # the checker's training set (cached under FLYWHEEL_HOME/cache/checker)

    @classmethod
    def small(cls) -> "DemoConfig":
        return cls(n_train=480, n_reserve=480, size=32, train_minutes=1.0, retrain_minutes=0.5, sample_steps=6,
                   n_per_concept=6, seeds=1, signal_per_concept=2, k_retrieve=20, control=False, ckpt_every=50,
                   batch_size=16, checker_images=1200)


# -- concepts of the planted gap ------------------------------------------------------------------
def concept_list(cfg: DemoConfig) -> list[tuple[str, str]]:
    from flywheel.training import synthetic as syn

    g = syn.Gap.parse(cfg.gap)
    if g.shape is None:  # a colour gap: the concepts are the colours (every shape of each)
        return [(g.color, None)] + [(c, None) for c in syn.COLORS if c != g.color]
    allc = [(c, s) for s in syn.SHAPES for c in syn.COLORS]
    if cfg.concepts == "all":
        return allc
    return [(g.color, g.shape)] + [(c, s) for c, s in allc if (c == g.color) != (s == g.shape)]


class Server:
    """The signal + review API on a loopback port, in a thread (uvicorn), for the demo's clients."""

    def __init__(self, cat):
        import socket

        import uvicorn

        from flywheel.review.signals_api import create_app

        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = s.getsockname()[1]
        s.close()
        self.server = uvicorn.Server(uvicorn.Config(create_app(cat), host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        for _ in range(600):
            if self.server.started:
                return f"http://127.0.0.1:{self.port}"
            time.sleep(0.05)
        raise RuntimeError("the API server did not start within 30 s")

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def _words(text: str) -> set[str]:
    return {w.strip(".,;:!?\"'()").lower() for w in (text or "").split()}


def names_concept(text: str, concept: str) -> bool:
    """Does a caption name the concept ('red triangle': the colour and the shape, singular or plural)?"""
    from flywheel.training import synthetic as syn

    color, _, shape = concept.partition(" ")
    w = _words(text)
    return color in w and (shape in w or syn.PLURAL.get(shape, shape) in w)


def demo_token(cat, name: str) -> str:
    """A token that posts signals and reviews, as the demo's scripted reviewer needs: it belongs
    to the `loop-demo` reviewer account (made with a random password nobody knows)."""
    import secrets

    from flywheel.review import auth

    if not cat.execute("SELECT 1 FROM users WHERE name = 'loop-demo'"):
        auth.add_user(cat, "loop-demo", "reviewer", secrets.token_urlsafe(24), actor="loop-demo")
    return auth.create_token(cat, name, actor="loop-demo", user="loop-demo",
                             scopes=["signals:write", "review:read", "review:write"], expires_in=86400.0)


def scripted_review(base_url: str, token: str, queue: str = "pretrain", reviewer_note: str = "scripted") -> dict:
    """Decide every pending item through the review API: approve a candidate whose caption names
    its signal's concept, reject it (`off_concept`) otherwise. Returns counts."""
    import httpx

    h = {"Authorization": f"Bearer {token}"}
    approve, reject = [], []
    with httpx.Client(base_url=base_url, headers=h, timeout=60) as c:
        after = None
        concept_of: dict[str, str | None] = {}
        while True:
            params = {"queue": queue, "limit": 500}
            if after is not None:
                params["after_id"] = after
            r = c.get("/api/review/items", params=params)
            r.raise_for_status()
            page = r.json()
            for it in page["items"]:
                sid = it["signal_id"]
                if sid not in concept_of:
                    s = c.get(f"/api/signals/{sid}")
                    concept_of[sid] = s.json().get("concept") if s.status_code == 200 else None
                concept = concept_of[sid] or it["payload"].get("concept")
                ok = bool(concept) and names_concept(it["payload"].get("text", ""), concept)
                (approve if ok else reject).append(it["item_id"])
            if not page["items"] or page.get("next_after_id") is None:
                break
            after = page["next_after_id"]
        out = {"approved": 0, "rejected": 0}
        for ids, decision, reason in ((approve, "approved", "relevant"), (reject, "rejected", "off_concept")):
            for b in range(0, len(ids), 1000):
                r = c.post("/api/review/bulk", json={"item_ids": ids[b:b + 1000], "decision": decision, "reason": reason})
                r.raise_for_status()
                out[decision] += r.json()["applied"]
    return out


# -- the demo --------------------------------------------------------------------------------------
def train_config(cfg: DemoConfig, datasets: list[str], out: Path, minutes: float, init: str | None = None,
                 lr: float | None = None, seed: int = 0, cache: Path | None = None) -> dict:
    """The flywheel's retraining config (`flows_loop.default_train_config`) at the demo's batch, learning
    rate, thread count and checkpoint interval."""
    from flywheel.loop.retrain import default_train_config

    c = default_train_config(datasets[0], str(out), init, minutes, cfg.size)
    c.update(datasets=datasets, batch_size=cfg.batch_size, lr=lr or cfg.lr, max_seconds=minutes * 60 * cfg.threads,
             ckpt_every=cfg.ckpt_every, cache_dir=str(cache) if cache else None, seed=seed)
    return c


def run_demo(cfg: DemoConfig, out: Path, catalog=None, echo=print) -> dict:
    import torch

    from flywheel.catalog import Catalog
    from flywheel.lifecycle import run_record
    from flywheel.loop import signals as sg
    from flywheel.loop.retrain import retrain
    from flywheel.loop.router import RouterConfig, route
    from flywheel.training import synthetic as syn
    from flywheel.training.config import TrainConfig
    from flywheel.training.trainer import main as train

    torch.set_num_threads(cfg.threads)
    t_wall, t_cpu = time.time(), time.process_time()
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    cat = catalog or Catalog()
    tag = time.strftime("%Y%m%d-%H%M%S")
    gap = syn.Gap.parse(cfg.gap if ":" in cfg.gap else f"{cfg.gap}:{cfg.gap_keep}")
    gap_concept = gap.concept
    color_only = gap.shape is None
    timings: dict[str, float] = {}

    def lap(name: str) -> None:
        timings[name] = round(time.time() - t_wall, 1)
        echo(f"[{timings[name] / 60:5.1f} min] {name}")

    # 1. data
    train_dir, reserve_dir = out / f"train-{tag}", out / f"reserve-{tag}"
    m_train = syn.write_dataset(train_dir, cfg.n_train, seed=0, size=cfg.size, gap=gap, name="loop-train", catalog=cat, progress=True)
    m_res = syn.write_dataset(reserve_dir, cfg.n_reserve, seed=1, size=cfg.size, name="loop-reserve", catalog=cat, progress=True)
    lap(f"data: {m_train.ref} ({m_train.rows} rows, gap {gap_concept} kept with p={gap.keep}), {m_res.ref} ({m_res.rows} rows)")
    from flywheel.loop.retrain import load_checker

    checker = load_checker(cfg.checker_images)
    lap("checker ready")

    # 2. baseline
    ck0 = out / f"ckpt-0-{tag}"
    cache = out / "cache"
    tc0 = train_config(cfg, [str(train_dir)], ck0, cfg.train_minutes, cache=cache)
    with run_record(cat, f"train-{tag}-0", "train", input=m_train.ref, output=str(ck0),
                    params={k: v for k, v in tc0.items() if k != "datasets"}) as run_stats:
        r0 = train(TrainConfig(**tc0))
        run_stats.update(steps=r0["step"], loss=r0.get("loss"))
    lap(f"baseline trained: {r0['step']} steps")

    # 3. signals: a `flywheel eval` pass (its own stratified prompts over all 48 concepts, one seed),
    # mined for failures, which are posted to the signal API over HTTP
    from flywheel.training.evaluate import evaluate

    n_sig = cfg.signal_per_concept * len(syn.COLORS) * len(syn.SHAPES)
    g0 = generator(ck0)

    def gen0(prompts: list[str], seed: int) -> list:
        prewarm(g0.encoder, list(prompts) + [""])
        return g0(list(prompts), width=cfg.size, height=cfg.size, steps=cfg.sample_steps, guidance=cfg.guidance, seed=seed)

    sig_eval = evaluate(ck0, n_prompts=n_sig, seeds=(0,), size=cfg.size, steps=cfg.sample_steps, guidance=cfg.guidance,
                        prompt_seed=101, out=out / f"signal-eval-{tag}", name="loop-signal-eval", catalog=cat, checker=checker,
                        checker_n=0, progress=True, generate=gen0, trained_on=[train_dir])
    signal_prompts = {r["prompt"] for r in sig_eval.rows}
    mined = sg.from_eval_dataset(sig_eval.manifest.ref, catalog=cat)
    lap(f"flywheel eval on {len(signal_prompts)} signal prompts: {len(mined)} failures")

    concepts = concept_list(cfg)
    measure = concept_prompts(concepts, cfg.n_per_concept, seed=202, exclude=signal_prompts)
    seeds = list(range(cfg.seeds))
    before_rows = generate_and_score(ck0, measure, seeds, cfg.size, cfg.sample_steps, cfg.guidance, checker, progress="eval before",
                                     color_only=color_only)
    run_id = f"loop-{tag}"
    record_evals(cat, run_id, "before", ck0, m_train.ref, before_rows)
    lap(f"baseline evaluated on {len(measure)} measurement prompts x {len(seeds)} seeds")

    token = demo_token(cat, f"loop-demo-{tag}")
    import httpx

    with Server(cat) as base:
        h = {"Authorization": f"Bearer {token}"}
        payload = [s.model_dump(mode="json", exclude_none=True) for s in mined]
        posted = {"inserted": 0, "duplicate": 0}
        for b in range(0, len(payload), 500):
            r = httpx.post(f"{base}/api/signals", json={"signals": payload[b:b + 500]}, headers=h, timeout=120)
            if r.status_code not in (200, 201):
                raise RuntimeError(f"signal API refused the demo's signals: {r.status_code} {r.text[:300]}")
            posted["inserted"] += len(r.json()["inserted"])
            posted["duplicate"] += len(r.json()["duplicate"])
        lap(f"signals posted to the API: {posted}")

        # 4. route (the router is not told which concept was planted)
        rcfg = RouterConfig(trained_on=[m_train.ref], reserve=[m_res.ref], k_retrieve=cfg.k_retrieve)
        evaluator = checkpoint_evaluator(ck0, size=cfg.size, steps=cfg.sample_steps, guidance=cfg.guidance, checker=checker)
        summary = route(cat, rcfg, evaluator=evaluator, progress=True)
        pre = {}
        for d in summary["decisions"]:
            if d["track"] == "pretrain":
                c = sg.get(cat, d["signal_id"])["concept"]
                pre[c] = pre.get(c, 0) + 1
        lap(f"routed {summary['signals']} signals: {summary['tracks']}; pre-training track by concept: {pre}; "
            f"{summary['enqueued']} candidates queued")

        # 5. scripted review through the HTTP API
        review = scripted_review(base, token)
        lap(f"scripted review over HTTP: {review}")

    # 6. emit and retrain (the retraining flow's steps), with a control on the old data
    from flywheel.loop.emit import emit

    e = emit(m_train.ref, add_approved=True, name="loop-train", catalog=cat, out=out / f"train-v2-{tag}")
    lap(f"emitted {e['dataset']}: {e['inherited']} inherited + {e['added']} approved")
    tc = train_config(cfg, [e["path"]], out / f"ckpt-1-{tag}", cfg.retrain_minutes, init=str(ck0), lr=cfg.retrain_lr, cache=cache)
    rr = retrain(cat, e["dataset"], tc, measure_prompts=measure, seeds=seeds, eval_cfg=_eval_cfg(cfg), run_id=run_id,
                 before_ckpt=None, checker=checker)
    after_rows = rr["after_rows"]
    lap(f"retrained from the baseline on {e['dataset']}: {rr['steps']} steps; evaluated")
    control = None
    if cfg.control:
        tcc = train_config(cfg, [str(train_dir)], out / f"ckpt-1-control-{tag}", cfg.retrain_minutes, init=str(ck0),
                           lr=cfg.retrain_lr, cache=cache)
        rc = train(TrainConfig(**tcc))
        control_rows = generate_and_score(tcc["out"], measure, seeds, cfg.size, cfg.sample_steps, cfg.guidance, checker,
                                          progress="eval control", color_only=color_only)
        record_evals(cat, run_id, "control", tcc["out"], m_train.ref, control_rows)
        control = per_concept(control_rows)
        lap(f"control: the baseline continued on {m_train.ref} for {rc['step']} steps; evaluated")

    # 7. the table
    before, after = per_concept(before_rows), per_concept(after_rows)
    table = format_table(before, after, gap_concept, control)
    gain = after[gap_concept]["acc"] - before[gap_concept]["acc"]
    worst = min(((after[c]["acc"] - before[c]["acc"], c) for c in before if c != gap_concept), default=(0.0, None))
    gap_routed = sum(v for c, v in pre.items() if concept_hit(c, gap_concept))
    other_routed = sum(v for c, v in pre.items() if not concept_hit(c, gap_concept))
    result = {
        "config": asdict(cfg), "gap": gap_concept, "datasets": {"train": m_train.ref, "reserve": m_res.ref, "emitted": e["dataset"]},
        "signals": len(mined), "tracks": summary["tracks"], "pretrain_by_concept": pre, "review": review,
        "added": e["added"], "before": before, "after": after, "control": control,
        "gain_points": round(gain * 100, 2), "worst_other": {"concept": worst[1], "change_points": round(worst[0] * 100, 2)},
        "target": {"gain>=20": gain >= 0.20, "no_other_fall>5": worst[0] >= -0.05, "gap_routed_to_pretrain": gap_routed > 0},
        "wall_minutes": round((time.time() - t_wall) / 60, 2), "process_cpu_minutes": round((time.process_time() - t_cpu) / 60, 2),
        "timings_s": timings, "measure_prompts_per_concept": cfg.n_per_concept, "seeds": seeds,
        "measure_disjoint_from_signals": not ({p for p, _ in measure} & signal_prompts),
        "routed_other_concepts_to_pretrain": other_routed,
    }
    (out / "loop_result.json").write_text(json.dumps(result, indent=2, default=str))
    echo(f"\nconcept accuracy ({'colour' if color_only else 'colour and shape'} right), measurement prompts disjoint from the signal prompts, "
         f"{cfg.n_per_concept} prompts x {len(seeds)} seeds per concept, 95% intervals (Wilson; the change: Newcombe):")
    echo(table)
    echo(f"\nplanted gap {gap_concept}: {gain * 100:+.1f} points; worst other concept: {worst[1]} {worst[0] * 100:+.1f} points; "
         f"gap routed to pre-training by {gap_routed} signals (other concepts: {other_routed}); "
         f"{result['wall_minutes']:.1f} min wall")
    return result


def _eval_cfg(cfg: DemoConfig) -> dict:
    from flywheel.training import synthetic as syn

    return {"size": cfg.size, "steps": cfg.sample_steps, "guidance": cfg.guidance,
            "color_only": syn.Gap.parse(cfg.gap).shape is None}

"""The failure router: error attribution to three tracks (report section 2.4, stage 2).

For each new failing signal, in order, with every step's evidence stored in the `routes` table:

1. prompt track: the prompt enhancer rewrites the failing prompt; when the model, given the
   rewrite, passes the evaluation that the original failed, the capability is there and the
   prompt was the problem. The (prompt, rewrite) pair joins the enhancer's training data.
2. pre-training track: the concept is scarce in what the model was trained on: fewer than
   `min_near` training rows lie within cosine similarity `tau` of the prompt's embedding (FAISS
   neighbourhood density). Candidates (prompts, image-text pairs, edit pairs) are retrieved from
   the reserve pool, excluding rows already trained on, rejected by curation or by a reviewer,
   duplicates and rows already queued, tagged with the signal and queued for review.
3. RL track otherwise: the prompt joins the RL prompt set (a dataset in the contract) with its
   failure attribute and the evidence, for the RL stage's reward adjustment.

The router never imports ray or prefect; flows and the CLI call `route()`.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pyarrow as pa

TRACKS = ("prompt", "pretrain", "rl")
PRETRAIN_QUEUE = "pretrain"
RL_DATASET = "rl_prompts"
ENHANCER_DATASET = "prompt_enhancer_pairs"

# evaluate(prompts, expected) -> per prompt {attribute: passed}; `expected` is the signal's ground
# truth (e.g. the synthetic spec), so the checker knows what the prompt asks for.
Evaluator = Callable[[list[str], list[dict]], list[dict]]


@dataclass
class RouterConfig:
    trained_on: list[str]  # datasets the model was trained on (name@vN or paths)
    reserve: list[str]  # the reserve pool to retrieve from
    tau: float = 0.8  # cosine similarity for "a row of the same concept" (evidence; the test without a reserve)
    min_near: int = 3  # without a reserve pool: scarce below this many such training rows
    k_reserve: int = 5  # k of the k-NN density estimate in the reserve pool
    radius_ratio: float = 1.4  # scarce when the training k-NN radius is this many times the reserve's
    k_density: int = 1024
    k_retrieve: int = 40
    min_score: float = 0.5  # retrieved candidates must be at least this similar to the prompt
    k_neighbours: int = 5  # nearest training rows stored with each queued candidate (the reviewer's comparison)
    queue: str = PRETRAIN_QUEUE
    enhancer: str = "rule"  # rule | llm:<model dir> | enhancer:<dir of `flywheel train --stage enhancer-*`>
    eval_repeats: int = 3  # the rewrite must pass in a majority of these evaluations
    out_dir: str | None = None  # where rl_prompts / enhancer pair versions go (default FLYWHEEL_HOME/datasets)
    limit: int | None = None


@dataclass
class Decision:
    signal_id: str
    track: str
    evidence: dict
    enqueued: list[int] = field(default_factory=list)


# the density figures copied into each queued item's evidence (the full set stays in `routes`)
_DENSITY_KEYS = ("test", "by", "query", "radius_ratio", "threshold", "k_train", "k_reserve", "sim_train_k", "sim_reserve_k",
                 "near", "tau", "min_near")


# -- prompt enhancer ---------------------------------------------------------------------------
# Rule-based rewriting: words users write -> the plainer words captions use. A rule applies only
# when its target is in the training captions' vocabulary (the model has seen it).
SYNONYMS: dict[str, tuple[str, ...]] = {
    "red": ("crimson", "scarlet", "ruby", "maroon", "vermilion", "cherry"),
    "orange": ("tangerine", "amber", "apricot"),
    "yellow": ("golden", "gold", "lemon", "mustard"),
    "green": ("emerald", "lime", "olive", "jade"),
    "cyan": ("teal", "turquoise", "aqua", "aquamarine"),
    "blue": ("azure", "navy", "cobalt", "sapphire", "indigo"),
    "purple": ("violet", "lilac", "lavender", "magenta", "plum"),
    "black": ("ebony", "jet", "onyx", "dark"),
    "white": ("ivory", "blank"),
    "circle": ("disc", "disk", "ring", "dot", "round", "ball", "sphere"),
    "circles": ("discs", "disks", "rings", "dots", "balls", "spheres"),
    "square": ("box", "cube", "block", "tile"),
    "squares": ("boxes", "cubes", "blocks", "tiles"),
    "triangle": ("pyramid", "wedge"),
    "triangles": ("pyramids", "wedges"),
    "star": ("pentagram", "asterisk"),
    "stars": ("pentagrams", "asterisks"),
    "cross": ("plus", "x"),
    "crosses": ("pluses",),
    "diamond": ("rhombus", "lozenge"),
    "diamonds": ("rhombi", "rhombuses", "lozenges"),
    "picture": ("photo", "photograph", "pic", "snapshot"),
    "image": ("img",),
    "left": ("leftmost", "west"),
    "right": ("rightmost", "east"),
    "top": ("upper", "north"),
    "bottom": ("lower", "south"),
    "center": ("centre", "centered", "centred", "central"),
}
_RULES = {src: dst for dst, srcs in SYNONYMS.items() for src in srcs}


class RuleEnhancer:
    """Offline, rule-based: words the training captions never use are rewritten into the caption
    vocabulary by synonym rules (`SYNONYMS`, applied only when the target word occurs in the
    captions), else to the nearest vocabulary word by MiniLM similarity when it is at least
    `min_sim` (single-word embeddings are a weak signal, so the bar is high); spacing and case
    are normalised. No language model is involved; `mode` says so."""

    mode = "rule-based (offline: synonym rules and nearest words of the caption vocabulary)"

    def __init__(self, vocabulary: dict[str, int], encoder=None, min_sim: float = 0.7, max_vocab: int = 20000):
        self.vocab = dict(sorted(vocabulary.items(), key=lambda kv: -kv[1])[:max_vocab])
        self.words = [w for w in self.vocab if w.isalpha()]
        self.encoder = encoder
        self.min_sim = min_sim
        self._wv = None

    @classmethod
    def from_texts(cls, texts: Sequence[str], encoder=None, **kw) -> "RuleEnhancer":
        counts: dict[str, int] = {}
        for t in texts:
            for w in _words(t):
                counts[w] = counts.get(w, 0) + 1
        return cls(counts, encoder, **kw)

    def _nearest(self, word: str) -> tuple[str | None, float]:
        if self.encoder is None or not self.words:
            return None, 0.0
        if self._wv is None:
            self._wv = self.encoder.encode(self.words)
        q = self.encoder.encode([word])[0]
        s = self._wv @ q
        j = int(np.argmax(s))
        return self.words[j], float(s[j])

    def rewrite(self, prompt: str) -> tuple[str, dict]:
        out, subs = [], []
        for tok in prompt.strip().split():
            core = tok.strip(".,;:!?\"'()").lower()
            if core and core.isalpha() and core not in self.vocab:
                rule = _RULES.get(core)
                if rule is not None and rule in self.vocab:
                    subs.append({"from": core, "to": rule, "by": "synonym rule"})
                    tok = tok.lower().replace(core, rule)
                else:
                    w, s = self._nearest(core)
                    if w is not None and s >= self.min_sim:
                        subs.append({"from": core, "to": w, "by": "nearest word", "similarity": round(s, 3)})
                        tok = tok.lower().replace(core, w)
            out.append(tok)
        text = " ".join(out)
        text = text[:1].lower() + text[1:] if text[:1].isupper() and text[1:2].islower() else text
        return text, {"mode": self.mode, "substitutions": subs}


class LLMEnhancer:
    """A chat model rewrites the prompt (Qwen3-VL through transformers, text-only turn), the
    caption backends' model family. With random weights (tests) the output is noise, which the
    evaluation then rejects: the track decision never trusts the rewrite, only its evaluation."""

    INSTRUCTION = ("Rewrite the image-generation prompt below so that a text-to-image model renders exactly what it "
                   "asks for. Use plain, common words; keep every object, colour, count and position. Answer with the "
                   "rewritten prompt only.\n\nPrompt: ")

    def __init__(self, model_dir: str | Path, max_new_tokens: int = 48, device: str = "cpu"):
        self.model_dir = str(model_dir)
        self.max_new_tokens = max_new_tokens
        self.device = device
        self.mode = f"llm ({Path(self.model_dir).name})"
        self._m = None

    def _load(self):
        if self._m is None:
            from transformers import AutoModelForImageTextToText, AutoProcessor

            proc = AutoProcessor.from_pretrained(self.model_dir)
            model = AutoModelForImageTextToText.from_pretrained(self.model_dir).to(self.device).eval()
            self._m = (proc, model)
        return self._m

    def rewrite(self, prompt: str) -> tuple[str, dict]:
        import torch

        proc, model = self._load()
        msgs = [{"role": "user", "content": [{"type": "text", "text": self.INSTRUCTION + prompt}]}]
        enc = proc.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt")
        enc = {k: v.to(self.device) for k, v in enc.items()}
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=self.max_new_tokens, do_sample=False)
        text = proc.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)[0].strip()
        return text, {"mode": self.mode, "model_dir": self.model_dir, "raw": text[:500]}


class TrainedEnhancer:
    """The prompt enhancer `flywheel train --stage enhancer-sft/enhancer-rl` trains (training/enhancer.py), loaded
    on first use; like every enhancer, its rewrite is only kept when the evaluation passes it."""

    def __init__(self, model_dir: str | Path, max_new_tokens: int = 32):
        self.model_dir, self.max_new_tokens = str(model_dir), max_new_tokens
        self.mode = f"trained enhancer ({Path(self.model_dir).name})"
        self._e = None

    def rewrite(self, prompt: str) -> tuple[str, dict]:
        if self._e is None:
            from flywheel.training.enhancer import Enhancer

            self._e = Enhancer.load(self.model_dir)
        return self._e.rewrite([prompt], self.max_new_tokens)[0], {"mode": self.mode, "model_dir": self.model_dir}


def _words(t: str) -> list[str]:
    return [w.strip(".,;:!?\"'()").lower() for w in (t or "").split() if w.strip(".,;:!?\"'()")]


# -- routing -----------------------------------------------------------------------------------
class Router:
    def __init__(self, cat, cfg: RouterConfig, evaluator: Evaluator | None = None, progress: bool = False):
        from flywheel.loop import index as fx

        self.cat = cat
        self.cfg = cfg
        self.evaluator = evaluator
        self.train_idx = fx.ensure(cfg.trained_on, catalog=cat, progress=progress)
        self.reserve_idx = fx.ensure(cfg.reserve, catalog=cat, progress=progress)
        encs = {ix.encoder for ix in self.train_idx + self.reserve_idx}
        if len(encs) > 1:
            raise ValueError(f"the training and reserve indexes use different encoders {sorted(encs)}; rebuild with one "
                             "(`flywheel index build --encoder NAME`)")
        self.encoder_name = encs.pop() if encs else fx.MINILM
        self.encoder = fx.get_encoder(self.encoder_name)
        self.used_ids = set()
        for ix in self.train_idx:
            self.used_ids.update(ix.keys.column("id").to_pylist())
        self.enhancer = self._enhancer()
        self._emb: dict[str, np.ndarray] = {}

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embeddings with a per-run cache; route() embeds every signal's texts in one batch
        (one call per text costs a model forward each)."""
        todo = list(dict.fromkeys(t for t in texts if t not in self._emb))
        if todo:
            for t, v in zip(todo, self.encoder.encode(todo)):
                self._emb[t] = v
        return np.stack([self._emb[t] for t in texts]) if texts else np.zeros((0, 1), np.float32)

    def _enhancer(self):
        if self.cfg.enhancer.startswith("llm:"):
            return LLMEnhancer(self.cfg.enhancer[4:])
        if self.cfg.enhancer.startswith("enhancer:"):
            return TrainedEnhancer(self.cfg.enhancer[len("enhancer:"):])
        if self.cfg.enhancer != "rule":
            raise ValueError(f"enhancer {self.cfg.enhancer!r}: use rule, llm:MODEL_DIR or enhancer:DIR")
        texts = [t for ix in self.train_idx for t in ix.keys.column("text").to_pylist()]
        return RuleEnhancer.from_texts(texts, encoder=self.encoder)

    def _excluded(self) -> tuple[set[str], set[str]]:
        """Sample ids a reviewer rejected (any queue) and ids already queued in ours."""
        rejected = {r["sample_id"] for r in self.cat.execute("SELECT DISTINCT sample_id FROM review_items WHERE status='rejected'")}
        queued = {r["sample_id"] for r in self.cat.execute("SELECT DISTINCT sample_id FROM review_items WHERE queue=?", (self.cfg.queue,))}
        return rejected, queued

    def _prompt_of(self, sig: dict) -> str | None:
        if sig.get("prompt"):
            return sig["prompt"]
        sid = sig["payload"].get("sample_id")
        for ix in self.train_idx:
            hit = [t for i, t in zip(ix.keys.column("id").to_pylist(), ix.keys.column("text").to_pylist()) if i == sid]
            if hit:
                return hit[0]
        return None

    def decide(self, sig: dict, rejected: set[str], queued: set[str]) -> Decision:
        from flywheel.loop import index as fx

        p = sig["payload"]
        prompt = self._prompt_of(sig)
        ev: dict = {"signal": {"kind": sig["kind"], "prompt": prompt, "concept": sig.get("concept"),
                               "attribute": sig.get("attribute")}}
        if not prompt:
            ev["reason"] = "the signal names no prompt and its sample has no text in the training indexes; RL by default"
            return Decision(sig["signal_id"], "rl", ev)
        # 1. prompt track
        rewrite, info = self.enhancer.rewrite(prompt)
        ev["prompt_track"] = {"rewrite": rewrite, **info}
        expected = p.get("expected") or {}
        if rewrite.strip().lower() == prompt.strip().lower():
            ev["prompt_track"]["result"] = "the enhancer left the prompt unchanged"
        elif self.evaluator is None:
            ev["prompt_track"]["result"] = "no evaluator configured; the rewrite was not tested"
        else:
            n = max(1, self.cfg.eval_repeats)
            res = self.evaluator([rewrite] * n + [prompt] * n, [expected] * (2 * n))
            passed = [all(v for k, v in r.items() if v is not None and k != "all") for r in res]
            new_pass, old_pass = sum(passed[:n]), sum(passed[n:])
            ev["prompt_track"].update({"rewrite_passes": new_pass, "original_passes": old_pass, "repeats": n,
                                       "per_attribute": res[:n]})
            if new_pass * 2 > n and new_pass > old_pass:
                ev["prompt_track"]["result"] = "the rewrite passes evaluation"
                ev["reason"] = f"rewrite passed {new_pass}/{n} evaluations against {old_pass}/{n} for the original"
                return Decision(sig["signal_id"], "prompt", ev)
            ev["prompt_track"]["result"] = "the rewrite does not pass evaluation"
        # 2. pre-training track: scarcity of the concept in the training data. The failing concept
        # (when the signal names it) is what is measured, not the whole prompt: counts, positions
        # and phrasing dominate a prompt's embedding and hide which concept is missing.
        dtext = sig.get("concept") or prompt
        q = self.embed([dtext])
        dens = fx.density(q, self.train_idx, self.cfg.tau, self.cfg.k_density)
        n_train = sum(ix.faiss().ntotal for ix in self.train_idx)
        n_res = sum(ix.faiss().ntotal for ix in self.reserve_idx)
        dv = {**dens, "query": dtext, "by": "concept" if sig.get("concept") else "prompt", "encoder": self.encoder_name}
        if n_res and n_train:
            # k-NN density ratio: with k scaled to the pool sizes, equal densities give equal radii
            kr = self.cfg.k_reserve
            kt = max(1, int(round(kr * n_train / n_res)))
            s_res = fx.kth_similarity(q, self.reserve_idx, kr)
            s_tr = fx.kth_similarity(q, self.train_idx, kt)
            ratio = None if s_res is None or s_tr is None else (1 - s_tr) / max(1 - s_res, 1e-3)
            scarce = ratio is not None and ratio >= self.cfg.radius_ratio
            dv.update({"test": "knn_radius_ratio", "k_train": kt, "k_reserve": kr, "sim_train_k": s_tr, "sim_reserve_k": s_res,
                       "radius_ratio": None if ratio is None else round(ratio, 3), "threshold": self.cfg.radius_ratio,
                       "n_train": n_train, "n_reserve": n_res})
            why_scarce = (f"the training data's {kt}-NN radius around '{dtext}' is {ratio:.2f}x the reserve pool's "
                          f"{kr}-NN radius (>= {self.cfg.radius_ratio})") if ratio is not None else ""
            why_covered = (f"the training data's {kt}-NN radius around '{dtext}' is {ratio:.2f}x the reserve pool's "
                           f"(< {self.cfg.radius_ratio})") if ratio is not None else "no reserve neighbours to compare with"
        else:
            scarce = dens["near"] < self.cfg.min_near
            dv.update({"test": "near_count", "min_near": self.cfg.min_near})
            why_scarce = f"{dens['near']} training rows within similarity {self.cfg.tau} of '{dtext}' (< {self.cfg.min_near})"
            why_covered = f"{dens['near']} training rows within similarity {self.cfg.tau} of '{dtext}'"
        ev["density"] = dv
        if scarce:
            # retrieval asks for the same concept: more signals on it retrieve further candidates
            # (rows queued for an earlier signal are skipped)
            cands = self._retrieve(q, rejected, queued)
            ev["retrieval"] = {"candidates": len(cands), "k": self.cfg.k_retrieve, "min_score": self.cfg.min_score,
                               "from": [ix.dataset for ix in self.reserve_idx],
                               "top": [{k: v for k, v in c.items() if k != "vector"} for c in cands[:5]]}
            ev["reason"] = f"{why_scarce}: the concept is scarce; {len(cands)} candidates retrieved for review"
            d = Decision(sig["signal_id"], "pretrain", ev)
            d.enqueued = self._enqueue(sig, prompt, cands, {"attribute": sig.get("attribute"), "density": why_scarce,
                                                            **{k: dv.get(k) for k in _DENSITY_KEYS if dv.get(k) is not None}})
            queued.update(c["id"] for c in cands)
            return d
        # 3. RL track
        ev["reason"] = f"{why_covered}: the concept is covered and no rewrite fixed it; the policy needs RL"
        return Decision(sig["signal_id"], "rl", ev)

    def _retrieve(self, q: np.ndarray, rejected: set[str], queued: set[str]) -> list[dict]:
        seen: set[tuple[str, str]] = set()
        out, why = [], {"used": 0, "rejected": 0, "duplicate": 0, "queued": 0}
        hits = []
        for ix in self.reserve_idx:
            D, I = ix.search(q, self.cfg.k_retrieve * 4)
            pos = [int(i) for i in I[0] if i >= 0]
            hits += [(float(s), ix, p, r) for s, p, r in zip(D[0], pos, ix.rows(pos))]
        hits.sort(key=lambda h: -h[0])
        ids_taken: set[str] = set()
        for s, ix, pos, r in hits:
            ds = ix.dataset
            if s < self.cfg.min_score or len(out) >= self.cfg.k_retrieve:
                break
            if r["id"] in self.used_ids:
                why["used"] += 1
            elif r["rejected"] or r["id"] in rejected:
                why["rejected"] += 1
            elif r["dup"] or r["id"] in ids_taken or (r["id"], r["source"]) in seen:
                why["duplicate"] += 1
            elif r["id"] in queued:
                why["queued"] += 1
            else:
                seen.add((r["id"], r["source"]))
                ids_taken.add(r["id"])
                out.append({"id": r["id"], "source": r["source"], "dataset": ds, "task": r["task"], "text": r["text"],
                            "score": round(s, 4), "vector": ix.text_vectors[pos]})
        self._last_excluded = why
        return out

    def neighbours(self, cands: list[dict]) -> list[list[dict]]:
        """The `k_neighbours` nearest training rows of each candidate (by its text embedding,
        rejected rows skipped): what a reviewer compares the candidate with."""
        k = self.cfg.k_neighbours
        if not cands or k <= 0:
            return [[] for _ in cands]
        vecs = np.stack([c["vector"] for c in cands]).astype(np.float32)
        out: list[list[dict]] = [[] for _ in cands]
        for ix in self.train_idx:
            if ix.faiss().ntotal == 0:
                continue
            D, I = ix.search(vecs, k * 2)
            for j in range(len(cands)):
                pos = [int(i) for i in I[j] if i >= 0]
                for s, r in zip(D[j], ix.rows(pos)):
                    if not r["rejected"]:
                        out[j].append({"id": r["id"], "source": r["source"], "dataset": ix.dataset, "text": r["text"],
                                       "similarity": round(float(s), 4)})
        return [sorted(n, key=lambda h: -h["similarity"])[:k] for n in out]

    def _enqueue(self, sig: dict, prompt: str, cands: list[dict], evidence: dict | None = None) -> list[int]:
        from flywheel.loop import queue as rq

        if not cands:
            return []
        neigh = self.neighbours(cands)
        items = [{
            "signal_id": sig["signal_id"], "sample_id": c["id"], "source": c["source"], "dataset": c["dataset"],
            "track": "pretrain",
            "payload": {"track": "pretrain", "prompt": prompt, "text": c["text"], "task": c["task"], "score": c["score"],
                        "signal_kind": sig["kind"], "concept": sig.get("concept"), "excluded": self._last_excluded,
                        "evidence": {**(evidence or {}), "similarity": c["score"]}, "neighbours": n},
        } for c, n in zip(cands, neigh)]
        try:  # the same check as the API: the index's rows are rows of catalog datasets
            for it, facts in zip(items, rq.resolve_samples(self.cat, items)):
                it["sample"] = facts
        except rq.SampleNotFound as e:
            raise RuntimeError(f"the reserve index is out of step with its dataset ({e}); rebuild it with "
                               "`flywheel index build --force`") from None
        return rq.enqueue(self.cat, self.cfg.queue, items, actor="router")


def route(cat, cfg: RouterConfig, evaluator: Evaluator | None = None, progress: bool = False) -> dict:
    """Route every new failing signal; store one `routes` row per signal with its evidence; write
    the new RL prompts and enhancer pairs as dataset versions. Returns a summary."""
    from flywheel.loop import signals as sg

    pending = sg.pending(cat, cfg.limit)
    run_id = "route-" + uuid.uuid4().hex[:10]
    summary = {"run_id": run_id, "signals": len(pending), "tracks": {t: 0 for t in TRACKS}, "enqueued": 0,
               "decisions": [], "datasets": {}}
    if not pending:
        return summary
    router = Router(cat, cfg, evaluator, progress=progress)
    rejected, queued = router._excluded()
    router.embed([t for sig in pending for t in (sig.get("concept"), sig.get("prompt")) if t])
    rl_rows, pair_rows = [], []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(pending), desc="route", unit="signal")
    for sig in pending:
        d = router.decide(sig, rejected, queued)
        with cat.tx() as con:
            con.execute("INSERT INTO routes (signal_id, track, evidence_json, created_at, run_id) VALUES (?,?,?,?,?)",
                        (d.signal_id, d.track, json.dumps(d.evidence, default=str), time.time(), run_id))
            con.execute("UPDATE signals SET status='routed' WHERE signal_id=?", (d.signal_id,))
        summary["tracks"][d.track] += 1
        summary["enqueued"] += len(d.enqueued)
        summary["decisions"].append({"signal_id": d.signal_id, "track": d.track, "reason": d.evidence.get("reason"),
                                     "enqueued": len(d.enqueued)})
        prompt = d.evidence["signal"]["prompt"]
        if d.track == "rl":
            rl_rows.append({"prompt": prompt, "signal_id": d.signal_id, "concept": sig.get("concept"),
                            "failure_attribute": sig.get("attribute"), "expected": json.dumps(sig["payload"].get("expected") or {}),
                            "evidence": json.dumps(d.evidence, default=str)})
        elif d.track == "prompt":
            pt = d.evidence["prompt_track"]
            pair_rows.append({"prompt": prompt, "rewrite": pt["rewrite"], "mode": pt["mode"], "signal_id": d.signal_id,
                              "evidence": json.dumps(pt, default=str)})
        bar and bar.update(1)
    if bar:
        bar.close()
    if rl_rows:
        summary["datasets"]["rl"] = _append_dataset(cat, RL_DATASET, "rl_prompts", rl_rows, cfg, run_id)
    if pair_rows:
        summary["datasets"]["prompt"] = _append_dataset(cat, ENHANCER_DATASET, "enhancer_pairs", pair_rows, cfg, run_id)
    cat.audit("router", "route", run_id, {k: v for k, v in summary.items() if k != "decisions"})
    return summary


def _append_dataset(cat, name: str, kind: str, rows: list[dict], cfg: RouterConfig, run_id: str) -> str:
    """A new version of `name`: the previous version's rows plus `rows` (ids dedupe repeats)."""
    from flywheel import config
    from flywheel.datasets import DatasetWriter

    prev = cat.execute("SELECT version, path FROM datasets WHERE name=? AND status='ready' ORDER BY version DESC LIMIT 1", (name,))
    table_rows = []
    for r in rows:
        key = r["prompt"] + "\x00" + (r.get("rewrite") or r.get("failure_attribute") or "")
        table_rows.append({"id": hashlib.sha256(key.encode()).hexdigest(), "source": f"signal:{r['signal_id']}",
                           "task": "t2i", "caption": r.get("rewrite") or r["prompt"], **r})
    new = pa.Table.from_pylist(table_rows)
    parents = []
    if prev:
        from flywheel.datasets import Dataset

        old = Dataset(prev[0]["path"])  # a directory, or a URL on an object store
        parents = [old.ref]
        old_t = old.to_table()
        old_ids = set(old_t.column("id").to_pylist())
        fresh = [i for i, x in enumerate(new.column("id").to_pylist()) if x not in old_ids]
        new = pa.concat_tables([old_t, new.take(pa.array(fresh, pa.int64()))], promote_options="permissive")
    base = Path(cfg.out_dir) if cfg.out_dir else config.home() / "datasets"
    dest = base / f"{name}-{run_id}"
    with DatasetWriter(dest, name=name, kind=kind, catalog=cat, parents=parents, run_id=run_id,
                       extra={"router": run_id, "added": len(rows)}) as w:
        w.write(new)
        m = w.close()
    return m.ref

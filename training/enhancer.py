"""The prompt enhancer (report section 3.3): SFT on rewrite pairs, then GRPO with the frozen image model.

- SFT (`--stage enhancer-sft`): next-token prediction on the rewrite given the prompt, loss on the rewrite's
  tokens only. Pairs come from the router's prompt track (`prompt_enhancer_pairs@vN`: a prompt the model
  failed on because of its wording, and a rewrite the checker passed) or a JSONL file of {prompt, rewrite}.
- RL (`--stage enhancer-rl`): G sampled rewrites per prompt; each is rendered by the frozen image model
  (`--image-model`, one seed per group so only the wording differs) and scored by the checker against the
  ORIGINAL prompt's intent, plus rule-based text constraints (`text_reward`: the suite's parser reads the
  same colour, shape, count and position, nothing dropped or added, and the length is bounded). Rewards go
  through rewards.py (calibrated, weighted); advantages are group-normalised (GRPO, Shao et al. 2024) and
  the policy gradient is taken once per rollout (so the ratio is 1 and needs no clipping), with a k3 KL
  estimate to the SFT model.

On the toy suite the enhancer is a small Qwen3-architecture model (transformers' Qwen3Config, a few hundred
thousand parameters) trained from scratch with a word-level tokenizer over the suite's vocabulary
(`suite_vocabulary`: the grammar's words and the paraphrase words users write). Real weights (a local
Qwen3 directory) load through the same `Enhancer.load`, and a tokenizer with a chat template is prompted
with `INSTRUCTION` in a user turn.

    flywheel train --stage enhancer-sft --prompts pairs.jsonl --out runs/pe-sft
    flywheel train --stage enhancer-rl --init runs/pe-sft --image-model runs/toy/ckpt --prompts p.jsonl --out runs/pe-rl
    flywheel enhance --model runs/pe-rl "a pair of crimson discs"
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from flywheel.training import synthetic as syn
from flywheel.training.config import TrainConfig

INSTRUCTION = ("Rewrite the image-generation prompt below in plain words; keep every object, colour, count and position. "
               "Answer with the rewritten prompt only.\n\nPrompt: ")
SPECIALS = ("<pad>", "<unk>", "<bos>", "<sep>", "<eos>")

# How users word what the suite's grammar says (the paraphrases of the toy benchmark; never in training captions).
PARAPHRASE = {
    "red": ("crimson", "scarlet"), "orange": ("tangerine", "amber"), "yellow": ("golden", "lemon"),
    "green": ("emerald", "lime"), "cyan": ("teal", "turquoise"), "blue": ("azure", "navy"),
    "purple": ("violet", "lilac"), "black": ("ebony", "jet"),
    "circle": ("disc", "ring"), "square": ("box", "tile"), "triangle": ("wedge", "pyramid"),
    "star": ("pentagram", "asterisk"), "cross": ("plus", "x-mark"), "diamond": ("rhombus", "lozenge"),
    "left": ("leftmost", "west"), "right": ("rightmost", "east"), "top": ("upper", "north"),
    "bottom": ("lower", "south"), "center": ("centre", "middle"),
    1: ("a single", "just one"), 2: ("a pair of", "2"), 3: ("3", "a trio of"), 4: ("4", "a quartet of"),
}
PLURAL_SYNONYMS = {"disc": "discs", "ring": "rings", "box": "boxes", "tile": "tiles", "wedge": "wedges", "pyramid": "pyramids",
                   "pentagram": "pentagrams", "asterisk": "asterisks", "plus": "pluses", "x-mark": "x-marks",
                   "rhombus": "rhombuses", "lozenge": "lozenges"}
FILLERS = ("please", "i would like", "can you draw", "show me", "make", "i need", "quickly sketch", "just")
ORDERS = ("{f} {n} {c} {s}{p}", "{f} {s}{p} , {n} {c}", "{f} {c} {s} , {n}{p}", "{n} {c} {s}{p} {f}")


def paraphrase(spec: syn.ShapeSpec, rng: np.random.Generator) -> str:
    """The spec in words the image model never saw: synonyms, other word orders, filler."""
    def word(w):
        return PARAPHRASE[w][rng.integers(2)] if rng.random() < 0.8 else w

    shape = word(spec.shape)
    if spec.count > 1:
        shape = PLURAL_SYNONYMS.get(shape) or syn.PLURAL.get(shape, shape)
    n = word(spec.count) if spec.count in PARAPHRASE else syn.NUMBER_WORDS[spec.count]
    n = syn.NUMBER_WORDS[spec.count] if n == spec.count else n
    pos = "" if spec.position is None else f" on the {word(spec.position)} side"
    t = ORDERS[rng.integers(len(ORDERS))]
    return " ".join(t.format(f=FILLERS[rng.integers(len(FILLERS))], n=n, c=word(spec.color), s=shape, p=pos).split())


def canonical(spec: syn.ShapeSpec) -> str:
    """The suite's own wording of a spec: what a rewrite should say."""
    pos = "" if spec.position is None else syn.POSITION_PHRASES[spec.position][0]
    return syn.noun_phrase(spec) + pos


def suite_vocabulary(extra_texts=()) -> list[str]:
    words: set[str] = set()
    texts = [*syn.TEMPLATES, *syn.BG_PHRASES, *(p for ps in syn.POSITION_PHRASES.values() for p in ps), *FILLERS, *ORDERS, *extra_texts]
    texts += [" ".join(map(str, (k, *v))) for k, v in PARAPHRASE.items()] + [" ".join(kv) for kv in PLURAL_SYNONYMS.items()]
    texts += [" ".join((*syn.COLORS, *syn.SHAPES, *syn.PLURAL.values(), *syn.NUMBER_WORDS.values(), "a", "an", "is", "are"))]
    for t in texts:
        words.update(w for w in _split(t) if w and "{" not in w)
    return [*SPECIALS, *sorted(words)]


def _split(text: str) -> list[str]:
    return text.lower().replace(",", " , ").replace(".", " . ").split()


def build_tokenizer(words: list[str]):
    """A word-level tokenizer (transformers' fast tokenizer) over `words`."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<bos>",
                                   eos_token="<eos>", sep_token="<sep>", padding_side="left")


def tiny_model(vocab_size: int, seed: int = 0):
    """A small Qwen3 (decoder-only, RMSNorm, QK-norm, SwiGLU, RoPE), random weights."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(seed)
    return Qwen3ForCausalLM(Qwen3Config(vocab_size=vocab_size, hidden_size=96, intermediate_size=256, num_hidden_layers=3,
                                        num_attention_heads=4, num_key_value_heads=2, head_dim=24, max_position_embeddings=128,
                                        tie_word_embeddings=True, pad_token_id=0, bos_token_id=2, eos_token_id=4))


class Enhancer:
    """A causal LM that rewrites prompts; `rewrite(prompts)` greedy, `sample(prompts, gen)` for RL."""

    def __init__(self, model, tokenizer, device="cpu"):
        self.model, self.tok, self.device = model.to(device), tokenizer, device
        self.tok.padding_side = "left"

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu") -> "Enhancer":
        from transformers import AutoModelForCausalLM, AutoTokenizer

        return cls(AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path), device)

    def save(self, path: str | Path) -> None:
        self.model.save_pretrained(path)
        self.tok.save_pretrained(path)

    def context(self, prompt: str) -> str:
        if self.tok.chat_template:  # real chat weights: the instruction in a user turn
            return self.tok.apply_chat_template([{"role": "user", "content": INSTRUCTION + prompt}], tokenize=False,
                                                add_generation_prompt=True)
        return f"<bos> {' '.join(_split(prompt))} <sep>"

    def encode(self, prompts: list[str]):
        enc = self.tok([self.context(p) for p in prompts], return_tensors="pt", padding=True, add_special_tokens=False)
        return {k: v.to(self.device) for k, v in enc.items()}

    def generate(self, prompts: list[str], max_new_tokens: int = 32, sample: bool = False, seed: int = 0):
        """(texts, prompt ids+mask, new token ids (B, T) padded with pad)."""
        import torch

        enc = self.encode(prompts)
        torch.manual_seed(seed)
        with torch.no_grad():
            out = self.model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=sample, temperature=1.0,
                                      pad_token_id=self.tok.pad_token_id, eos_token_id=self.tok.eos_token_id)
        new = out[:, enc["input_ids"].shape[1]:]
        texts = [t.strip() for t in self.tok.batch_decode(new, skip_special_tokens=True)]
        return texts, enc, new

    def rewrite(self, prompts: list[str], max_new_tokens: int = 32) -> list[str]:
        return self.generate(prompts, max_new_tokens)[0]

    def token_logprobs(self, model, enc, new):
        """(B, T) log-probabilities of the `new` tokens after the prompts, and (B, T) mask of real tokens
        (up to and including the first eos)."""
        import torch

        ids = torch.cat([enc["input_ids"], new], 1)
        eos = (new == self.tok.eos_token_id).long()
        real = (eos.cumsum(1) - eos) == 0  # tokens before the first eos, and the eos itself
        attn = torch.cat([enc["attention_mask"], real.long()], 1)
        logits = model(input_ids=ids, attention_mask=attn).logits[:, enc["input_ids"].shape[1] - 1:-1].float()
        return logits.log_softmax(-1).gather(-1, new.unsqueeze(-1)).squeeze(-1), real


def text_reward(rewrite: str, spec: dict | syn.ShapeSpec, max_words: int = 24) -> float:
    """1 when the suite's parser reads exactly the spec from the rewrite (nothing dropped or added) and the
    rewrite is 1..max_words words long, else 0."""
    spec = syn.spec_from_dict(spec) if isinstance(spec, dict) else spec
    words = rewrite.split()
    return float(0 < len(words) <= max_words and syn.parse_prompt(rewrite) == spec)


def read_pairs(spec: str | Path) -> list[tuple[str, str]]:
    """(prompt, rewrite) from an enhancer-pairs dataset or JSONL."""
    p = Path(spec)
    if (p / "manifest.json").exists():
        from flywheel.datasets import open_dataset

        rows = open_dataset(p).to_table(columns=["prompt", "rewrite"]).to_pylist()
    else:
        rows = [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
    return [(r["prompt"], r["rewrite"]) for r in rows if r.get("prompt") and r.get("rewrite")]


def _setup(cfg: TrainConfig, texts: list[str]):
    import torch

    device = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.init:
        enh = Enhancer.load(cfg.init, device)
    else:  # from scratch on the suite's vocabulary (and any word the pairs use)
        tok = build_tokenizer(suite_vocabulary(texts))
        enh = Enhancer(tiny_model(len(tok), cfg.seed), tok, device)
    enh.model.train()
    opt = torch.optim.AdamW(enh.model.parameters(), lr=cfg.schedule.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    return enh, opt, out, device


def sft(cfg: TrainConfig) -> dict:

    from flywheel.training import checkpoint as ck

    pairs = read_pairs(cfg.prompts)
    enh, opt, out, device = _setup(cfg, [t for pr in pairs for t in pr])
    start, history = ck.load_state(out / "state", enh.model, opt, None, device) if cfg.resume else (0, [])
    step, budget = start - 1, _budget(cfg)
    for step in range(start, cfg.steps):
        idx = np.random.default_rng([cfg.seed, step]).integers(len(pairs), size=cfg.batch_size)
        enc = enh.encode([pairs[i][0] for i in idx])
        tgt = enh.tok([" ".join(_split(pairs[i][1])) + " <eos>" if not enh.tok.chat_template else pairs[i][1] + enh.tok.eos_token
                       for i in idx], return_tensors="pt", padding=True, add_special_tokens=False, padding_side="right")
        new = tgt["input_ids"].to(device)
        for g in opt.param_groups:
            g["lr"] = cfg.schedule.lr * min(1.0, (step + 1) / max(1, cfg.warmup))
        lp, _ = enh.token_logprobs(enh.model, enc, new)
        mask = tgt["attention_mask"].to(device).bool()
        loss = -(lp * mask).sum() / mask.sum()
        if _step_end(cfg, out, enh, opt, loss, step, history, budget, {}):
            break
    return dict(losses=history, step=step + 1, out=str(out), loss=history[-1] if history else float("nan"))


def rl(cfg: TrainConfig) -> dict:
    import copy

    import torch

    from flywheel.training import checkpoint as ck
    from flywheel.training import policy as pol
    from flywheel.training.generate import Generator
    from flywheel.training.grpo import advantages
    from flywheel.training.rewards import Rewards

    rewards = Rewards(cfg.reward_weights, cfg.reward_weights_end, cfg.reward_ramp, cfg.reward_clip, cfg.reward_aesthetic,
                      extra=("text",))
    rewards.preflight()
    prompts = [(p, s) for p, s in pol.read_prompts(cfg.prompts) if s]  # the checker needs each prompt's intent
    if not prompts:
        raise ValueError(f"{cfg.prompts}: no prompt with a known intent (an `expected` spec) to score rewrites against")
    enh, opt, out, device = _setup(cfg, [])
    ref = copy.deepcopy(enh.model).eval().requires_grad_(False)  # the SFT model: the KL anchor
    start, history = ck.load_state(out / "state", enh.model, opt, None, device) if cfg.resume else (0, [])
    gen_img = Generator(cfg.image_model, device=device)
    size = cfg.resolution or gen_img.meta.get("resolution") or 64
    rewards.setup()

    def score(rewrites, specs, seeds, step):
        images = []
        for r, s in zip(rewrites, seeds):  # one seed per group: the rewrites differ, the noise does not
            images += gen_img([r or " "], width=size, height=size, steps=cfg.sample_steps, guidance=cfg.guidance, seed=int(s))
        extra = {"text": [text_reward(r, s) for r, s in zip(rewrites, specs)]}
        return rewards(images, [p for p in rewrites], specs, step, extra) if rewards.reference else rewards.raw(images, rewrites, specs, extra)

    if not rewards.load(out / "reward_calibration.json"):
        ref_prompts = [prompts[i % len(prompts)] for i in range(cfg.reward_reference)]
        rewrites = enh.rewrite([p for p, _ in ref_prompts], cfg.max_new_tokens)
        rewards.calibrate(score(rewrites, [s for _, s in ref_prompts], range(len(ref_prompts)), 0))
        rewards.save(out / "reward_calibration.json")

    step, budget, flat_steps = start - 1, _budget(cfg), 0
    G = cfg.group_size
    for step in range(start, cfg.steps):
        rng = np.random.default_rng([cfg.seed, step])
        chosen = [prompts[i] for i in rng.integers(len(prompts), size=cfg.batch_size)]
        expanded = [c for c in chosen for _ in range(G)]
        enh.model.eval()
        texts, enc, new = enh.generate([p for p, _ in expanded], cfg.max_new_tokens, sample=True, seed=int(rng.integers(2**31)))
        enh.model.train()
        seeds = np.repeat(rng.integers(2**31, size=cfg.batch_size), G)
        r, rlog = score(texts, [s for _, s in expanded], seeds, step)
        r = torch.tensor(r, dtype=torch.float32).view(-1, G)
        adv = advantages(r, cfg.adv_clip).flatten().to(device)
        distinct, flat = group_spread(texts, r)
        flat_steps += flat == 1.0
        for g in opt.param_groups:
            g["lr"] = cfg.schedule.lr * min(1.0, (step + 1) / max(1, cfg.warmup))
        lp, real = enh.token_logprobs(enh.model, enc, new)
        with torch.no_grad():
            lp_ref, _ = enh.token_logprobs(ref, enc, new)
        kl = torch.exp(lp_ref - lp) - (lp_ref - lp) - 1  # k3: unbiased, non-negative (GRPO)
        per_tok = -adv[:, None] * lp + cfg.kl_beta * kl
        loss = ((per_tok * real).sum(1) / real.sum(1).clamp(min=1)).mean()
        if _step_end(cfg, out, enh, opt, loss, step, history, budget,
                     dict(kl=float((kl.detach() * real).sum() / real.sum()), distinct=distinct, flat_groups=flat, **rlog,
                          sample=texts[0], prompt=expanded[0][0])):
            break
    steps = step + 1 - start
    if steps and flat_steps == steps:
        # every group of every step had one reward: zero advantages, so GRPO changed nothing
        print(f"warning: enhancer-rl: in all {steps} steps every group of {G} rewrites scored the same (the SFT "
              "model samples one rewrite per prompt), so no step changed the model. Give SFT several "
              "intent-preserving rewrites per prompt (benchmarks/enhancer_toy.py --sft-targets suite does) so "
              "its samples still differ, or raise --group-size.", flush=True)
    return dict(losses=history, step=step + 1, out=str(out), loss=history[-1] if history else float("nan"),
                flat_steps=flat_steps)


def group_spread(texts: list[str], rewards) -> tuple[float, float]:
    """(distinct rewrites per group / G, share of groups whose rewards are all equal) for (P, G) rewards
    and the P*G rewrites in group order: when every group is flat, GRPO's advantages are all zero."""
    from flywheel.training.grpo import flat_share

    P, G = rewards.shape
    return sum(len(set(texts[i * G:(i + 1) * G])) for i in range(P)) / (P * G), flat_share(rewards)


def _step_end(cfg: TrainConfig, out: Path, enh, opt, loss, step: int, history: list, budget, log: dict) -> bool:
    """The end of an SFT or GRPO step: clipped update, log, checkpoint when due or out of time.
    True when the time budget is spent (the loop stops after the checkpoint)."""
    import torch

    from flywheel.training import checkpoint as ck

    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(enh.model.parameters(), cfg.grad_clip)
    opt.step()
    history.append(float(loss.detach()))
    _log(cfg, out, step, dict(loss=history[-1], **log))
    out_of_time = budget.over()
    if (step + 1) % cfg.ckpt_every == 0 or step + 1 == cfg.steps or out_of_time:
        ck.save_state(out / "state", enh.model, opt, None, step + 1, history, cfg)
        enh.save(out)
    return out_of_time


def _budget(cfg: TrainConfig):
    from flywheel.training.policy import Budget

    return Budget(cfg)


def _log(cfg: TrainConfig, out: Path, step: int, rec: dict) -> None:
    if cfg.progress and (step + 1) % cfg.log_every == 0:
        print(f"{cfg.stage} step {step + 1}/{cfg.steps} " + " ".join(f"{k} {v:.4f}" for k, v in rec.items() if isinstance(v, float)),
              flush=True)
    if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
        with open(out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(dict(step=step + 1, time=time.time(), **rec)) + "\n")


def main(cfg: TrainConfig) -> dict:
    return sft(cfg) if cfg.kind == "enhancer-sft" else rl(cfg)

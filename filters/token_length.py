"""token_length: captions whose length in Qwen tokens is out of range, and missing captions.

Counted with the exact Qwen BPE (the 151,643 ranks of `qwen.tiktoken`, shipped in the Apache-2.0
`qwen-agent` wheel) and Qwen's pre-tokenizer pattern, through tiktoken. The file is located
without importing `qwen_agent` (its package import pulls in audio libraries we do not need).
Edit pairs (ti2i) are measured on their instruction. Report section 2.3, "Token Length Filter".
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from typing import Any, Literal, Sequence

import pyarrow as pa
from pydantic import Field

from flywheel.filters.base import Fail, Operator, Params, Work, above, below, register

QWEN_PAT = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""


def qwen_tiktoken_path() -> Path:
    spec = importlib.util.find_spec("qwen_agent")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the Qwen vocabulary comes from the `qwen-agent` wheel: pip install qwen-agent")
    p = Path(list(spec.submodule_search_locations)[0]) / "utils" / "qwen.tiktoken"
    if not p.exists():
        raise RuntimeError(f"{p} is missing; reinstall qwen-agent (pip install --force-reinstall qwen-agent)")
    return p


@functools.lru_cache(maxsize=1)
def qwen_encoding():
    """The Qwen BPE as a tiktoken Encoding (loaded once per process)."""
    import base64

    import tiktoken

    ranks = {}
    for line in qwen_tiktoken_path().read_bytes().splitlines():
        if line:
            tok, rank = line.split()
            ranks[base64.b64decode(tok)] = int(rank)
    return tiktoken.Encoding("qwen", pat_str=QWEN_PAT, mergeable_ranks=ranks, special_tokens={})


def count_tokens(texts: Sequence[str | None]) -> list[int | None]:
    enc = qwen_encoding()
    idx = [i for i, t in enumerate(texts) if t is not None and t.strip()]
    out: list[int | None] = [None] * len(texts)
    for i, ids in zip(idx, enc.encode_ordinary_batch([texts[i] for i in idx], num_threads=1)):
        out[i] = len(ids)
    return out


class TokenLengthParams(Params):
    min_tokens: int = Field(1, ge=0)
    max_tokens: int = Field(512, ge=1)
    field: Literal["caption", "general", "text", "knowledge", "structured"] = Field(
        "caption", description="the original caption, or one of the four generated caption types")


@register
class TokenLength(Operator):
    name = "token_length"
    Params = TokenLengthParams
    reads = ("caption", "captions", "instruction", "task")
    needs_image = False
    writes = ("token_length__tokens",)
    types = {"token_length__tokens": pa.int32()}
    rules = ("missing", "too_short", "too_long")
    limits = {"token_length__tokens": "max_tokens"}
    cards = {"token_length__tokens": "caption length in Qwen BPE tokens (instruction for edit pairs); null = missing or blank"}

    def texts(self, batch: pa.Table) -> list[str | None]:
        p: TokenLengthParams = self.params
        if p.field == "caption":
            texts = batch.column("caption").to_pylist() if "caption" in batch.column_names else [None] * batch.num_rows
        else:
            caps = batch.column("captions").to_pylist() if "captions" in batch.column_names else [None] * batch.num_rows
            texts = [(c or {}).get(p.field) for c in caps]
        if "task" in batch.column_names and "instruction" in batch.column_names:
            tasks, instr = batch.column("task").to_pylist(), batch.column("instruction").to_pylist()
            texts = [i if t == "ti2i" else x for x, t, i in zip(texts, tasks, instr)]
        return texts

    def score(self, batch: pa.Table, work: Sequence[Work | None]) -> dict[str, Sequence[Any]]:
        return {"token_length__tokens": count_tokens(self.texts(batch))}

    def reject(self, table: pa.Table, params: TokenLengthParams) -> list[list[Fail]]:
        out = []
        for n in table.column("token_length__tokens").to_pylist():
            if n is None:
                out.append([self.fail("missing", f"no {params.field} text (missing or blank)")])
                continue
            f = self.check("too_short", below(n, params.min_tokens, "token_length__tokens", "min_tokens")) or self.check(
                "too_long", above(n, params.max_tokens, "token_length__tokens", "max_tokens"))
            out.append([f] if f else [])
        return out

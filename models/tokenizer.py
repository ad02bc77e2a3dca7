"""The Qwen BPE, located and loaded without importing `qwen_agent`.

The 151,643 ranks of `qwen.tiktoken` ship in the Apache-2.0 `qwen-agent` wheel; its package import
pulls in audio libraries we do not need, so the file is found through `importlib.util.find_spec`.
Used by the `token_length` operator (counts) and by captioning (a Qwen2 fast tokenizer).
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from typing import Sequence

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
    """Qwen tokens per text; None for a missing or blank text."""
    enc = qwen_encoding()
    idx = [i for i, t in enumerate(texts) if t is not None and t.strip()]
    out: list[int | None] = [None] * len(texts)
    for i, ids in zip(idx, enc.encode_ordinary_batch([texts[i] for i in idx], num_threads=1)):
        out[i] = len(ids)
    return out

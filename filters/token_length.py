"""token_length: captions whose length in Qwen tokens is out of range, and missing captions.

Counted with the exact Qwen BPE and pre-tokenizer pattern (`flywheel.models.tokenizer`).
Edit pairs (ti2i) are measured on their instruction. Report section 2.3, "Token Length Filter".
"""

from __future__ import annotations

from typing import Any, Literal, Sequence

import pyarrow as pa
from pydantic import Field

from flywheel.filters.base import Operator, Params, Rule, Work, register
from flywheel.models.tokenizer import count_tokens


class TokenLengthParams(Params):
    min_tokens: int = Field(1, ge=0)
    max_tokens: int = Field(512, ge=1)
    field: Literal["caption", "general", "text", "knowledge", "structured"] = Field(
        "caption", description="the original caption, or one of the four generated caption types")
    reject_missing: bool = Field(True, description="reject rows without text; false keeps them (`curate --allow-uncaptioned`)")


@register
class TokenLength(Operator):
    name = "token_length"
    Params = TokenLengthParams
    needs_image = False
    writes = ("token_length__tokens",)
    types = {"token_length__tokens": pa.int32()}
    rules = (
        Rule("missing", "token_length__tokens", "is_null", when="reject_missing", detail="no {field} text (missing or blank)"),
        Rule("too_short", "token_length__tokens", "<", "min_tokens"),
        Rule("too_long", "token_length__tokens", ">", "max_tokens"),
    )
    cards = {"token_length__tokens": "caption length in Qwen BPE tokens (instruction for edit pairs); null = missing or blank"}

    @property
    def reads(self) -> tuple[str, ...]:  # type: ignore[override]
        # `instruction` and `task` are optional: edit pairs are measured on their instruction
        return ("caption",) if self.params.field == "caption" else ("captions",)

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

"""`manifest.json`: what a dataset directory holds; readers trust only what it lists."""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel, Field


class Manifest(BaseModel):
    name: str
    version: int
    kind: str  # accepted | rejected | captioned | emitted | synthetic | rl_prompts | ...
    parents: list[str] = Field(default_factory=list)  # name@vN
    recipe: str | None = None
    recipe_hash: str | None = None
    code_version: str | None = None
    created_at: float = Field(default_factory=time.time)
    rows: int = 0
    counts: dict[str, int] = Field(default_factory=dict)
    schema_: list[dict[str, str]] = Field(default_factory=list, alias="schema")
    run_id: str | None = None
    # every part, relative to the dataset root; readers open only these (a part a killed writer left
    # on an object store is invisible). Empty in datasets written before parts were listed.
    parts: list[str] = Field(default_factory=list)
    extra: dict[str, Any] = Field(default_factory=dict)

    model_config = {"populate_by_name": True}

    @property
    def ref(self) -> str:
        return f"{self.name}@v{self.version}"

"""Checkpoints side by side: one table (per-attribute accuracy with 95% Wilson intervals, sampling time
per image) and an HTML page with each checkpoint's sample grid on the same prompts and seeds.

`flywheel eval --ckpt A --ckpt B --report DIR` writes DIR/index.html (images inline, one file to share)
and DIR/summary.json; the benchmarks (grpo_toy, distill_toy, enhancer_toy) print `side_by_side`.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

ROWS = ("color", "shape", "count", "position", "all")


def side_by_side(named: dict[str, dict], seconds: dict[str, float] | None = None) -> str:
    """named: label -> summary (evaluate.summarize); a text table, attributes down, checkpoints across."""
    labels = list(named)
    w = max(22, *(len(x) + 2 for x in labels))
    lines = ["attribute".ljust(10) + "".join(x.rjust(w) for x in labels)]
    for a in ROWS:
        if not any(a in s for s in named.values()):
            continue
        cells = []
        for x in labels:
            s = named[x].get(a)
            cells.append((f"{s['acc']:.1%} [{s['lo']:.0%},{s['hi']:.0%}] n={s['n']}" if s else "-").rjust(w))
        lines.append(a.ljust(10) + "".join(cells))
    if seconds:
        lines.append("s/image".ljust(10) + "".join(f"{seconds.get(x, float('nan')):.3f}".rjust(w) for x in labels))
    return "\n".join(lines)


def _img(im) -> str:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def write_report(out: str | Path, named: dict[str, dict], seconds: dict[str, float], grids: dict[str, list]) -> Path:
    """grids: label -> [(prompt, PIL image)], the same prompts in the same order for every label."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps({"summary": named, "seconds_per_image": seconds}, indent=2))
    labels = list(named)
    parts = ["<!doctype html><meta charset=utf-8><title>flywheel eval</title>",
             "<style>body{font-family:sans-serif}td,th{padding:4px 8px;text-align:right}img{width:96px;image-rendering:pixelated}"
             ".grid td{text-align:center;font-size:11px;vertical-align:top}</style>",
             "<h1>Checkpoints side by side</h1><table><tr><th>attribute</th>"
             + "".join(f"<th>{html.escape(x)}</th>" for x in labels) + "</tr>"]
    for a in ROWS:
        cells = []
        for x in labels:
            s = named[x].get(a)
            cells.append(f"<td>{s['acc']:.1%} [{s['lo']:.1%}, {s['hi']:.1%}] n={s['n']}</td>" if s else "<td>-</td>")
        parts.append(f"<tr><th>{a}</th>{''.join(cells)}</tr>")
    parts.append("<tr><th>s/image</th>" + "".join(f"<td>{seconds.get(x, float('nan')):.3f}</td>" for x in labels) + "</tr></table>")
    parts.append("<h2>Samples (same prompts and seeds)</h2><table class=grid><tr><th>prompt</th>"
                 + "".join(f"<th>{html.escape(x)}</th>" for x in labels) + "</tr>")
    first = grids[labels[0]] if labels else []
    for i, (prompt, _) in enumerate(first):
        cells = "".join(f"<td><img src='{_img(grids[x][i][1])}'></td>" for x in labels if i < len(grids[x]))
        parts.append(f"<tr><td>{html.escape(prompt)}</td>{cells}</tr>")
    parts.append("</table>")
    (out / "index.html").write_text("\n".join(parts))
    return out / "index.html"

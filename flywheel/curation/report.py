"""The run report: one self-contained HTML file (plots as inline SVG, thumbnails inlined).

Funnel per operator, score histograms with threshold lines, thumbnails of rejects per reason,
slowest operators, ingest counts. Numbers come from stats.json, which equals a GROUP BY over the
written Parquet.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa


class Histograms:
    """Collects numeric score columns while rows are written (memory: 8 bytes per score)."""

    def __init__(self, recipe):
        self.recipe = recipe
        self.cols: dict[str, tuple[str, list[np.ndarray]]] = {}
        for s in recipe.steps:
            if s.op is None:
                continue
            for c in s.op.writes:
                if pa.types.is_integer(s.op.column_type(c)) or pa.types.is_floating(s.op.column_type(c)):
                    if c in ("dedup__phash",):
                        continue
                    self.cols[c] = (s.name, [])

    def add(self, t: pa.Table) -> None:
        for c, (_, chunks) in self.cols.items():
            if c in t.column_names:
                a = t.column(c).to_numpy(zero_copy_only=False)
                a = np.asarray(a, dtype=np.float64)
                chunks.append(a[~np.isnan(a)])

    def to_dict(self) -> dict[str, Any]:
        out = {}
        for c, (op, chunks) in self.cols.items():
            v = np.concatenate(chunks) if chunks else np.array([])
            if not len(v):
                continue
            counts, edges = np.histogram(v, bins=30)
            step = self.recipe.step(op)
            thr = {}
            if step is not None and step.op is not None:
                thr = threshold_lines(step.instance(), c)
            out[c] = {"operator": op, "counts": counts.tolist(), "edges": edges.tolist(), "n": int(len(v)),
                      "p5": float(np.percentile(v, 5)), "p50": float(np.percentile(v, 50)),
                      "p95": float(np.percentile(v, 95)), "thresholds": thr}
        return out


def threshold_lines(op, column: str) -> dict[str, float]:
    """param -> value of every rule comparing `column` with a numeric parameter (from `op.rules`)."""
    out = {}
    for r in op.thresholds().get(column, []):
        v = r.threshold(op.params)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out[r.param] = v
    return out


def _svg_funnel(funnel: list[tuple[str, int, int]]) -> str:
    """Horizontal bars per operator: rows entering (light) and rejected there (red). Plain SVG: the
    report is drawn in milliseconds (matplotlib took seconds of every run's start-up)."""
    e = html.escape
    w, label_w, bar_h = 640, 130, 18
    top = max([f[1] for f in funnel] + [1])
    h = bar_h * len(funnel) + 30
    out = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{w}' height='{h}' font-size='11' font-family='sans-serif'>"]
    for i, (op, entering, rejected) in enumerate(funnel):
        y = 4 + i * bar_h
        scale = (w - label_w - 60) / top
        out.append(f"<text x='{label_w - 6}' y='{y + 12}' text-anchor='end'>{e(op)}</text>"
                   f"<rect x='{label_w}' y='{y}' width='{entering * scale:.1f}' height='{bar_h - 4}' fill='#cfe3f7'/>"
                   f"<rect x='{label_w}' y='{y}' width='{rejected * scale:.1f}' height='{bar_h - 4}' fill='#e4572e'/>"
                   f"<text x='{label_w + entering * scale + 4:.1f}' y='{y + 12}'>{entering} (-{rejected})</text>")
    out.append(f"<rect x='{label_w}' y='{h - 18}' width='10' height='10' fill='#cfe3f7'/>"
               f"<text x='{label_w + 14}' y='{h - 9}'>entering</text>"
               f"<rect x='{label_w + 80}' y='{h - 18}' width='10' height='10' fill='#e4572e'/>"
               f"<text x='{label_w + 94}' y='{h - 9}'>rejected here</text></svg>")
    return "".join(out)


def _svg_hist(col: str, h: dict) -> str:
    """A score histogram with its thresholds as dashed lines (param=value)."""
    e = html.escape
    w, ht, left, bottom, top_pad = 320, 190, 8, 30, 22
    edges, counts = h["edges"], h["counts"]
    lo, hi = edges[0], edges[-1]
    thr = dict(h["thresholds"])
    lo, hi = min([lo, *thr.values()]), max([hi, *thr.values()])
    span = (hi - lo) or 1.0
    cmax = max(counts + [1])

    def x(v: float) -> float:
        return left + (v - lo) / span * (w - 2 * left)

    out = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{w}' height='{ht}' font-size='10' font-family='sans-serif'>",
           f"<text x='{w / 2}' y='12' text-anchor='middle' font-size='11'>{e(col)}</text>"]
    plot_h = ht - bottom - top_pad
    for i, c in enumerate(counts):
        bh = c / cmax * plot_h
        out.append(f"<rect x='{x(edges[i]):.1f}' y='{top_pad + plot_h - bh:.1f}' width='{max(0.5, x(edges[i + 1]) - x(edges[i]) - 0.5):.1f}' "
                   f"height='{bh:.1f}' fill='#4a90d9'/>")
    out.append(f"<line x1='{left}' y1='{top_pad + plot_h}' x2='{w - left}' y2='{top_pad + plot_h}' stroke='#888'/>"
               f"<text x='{left}' y='{ht - 16}'>{lo:.3g}</text><text x='{w - left}' y='{ht - 16}' text-anchor='end'>{hi:.3g}</text>")
    for pname, v in thr.items():
        out.append(f"<line x1='{x(v):.1f}' y1='{top_pad}' x2='{x(v):.1f}' y2='{top_pad + plot_h}' stroke='#e4572e' "
                   f"stroke-dasharray='4 3'><title>{e(pname)}={v}</title></line>")
    if thr:
        out.append(f"<text x='{w / 2}' y='{ht - 4}' text-anchor='middle' fill='#e4572e'>"
                   f"{e(', '.join(f'{k}={v}' for k, v in thr.items()))}</text>")
    out.append(f"<text x='{w - left}' y='{top_pad - 2}' text-anchor='end' fill='#666'>max {cmax}</text></svg>")
    return "".join(out)


def _funnel(stats: dict) -> list[tuple[str, int, int]]:
    """(operator, rows entering, rows rejected there by their first failing rule)."""
    rows = stats["rows"]
    by_op: dict[str, int] = {}
    for reason, n in stats["reject_reason"].items():
        by_op[reason.split(":", 1)[0]] = by_op.get(reason.split(":", 1)[0], 0) + n
    out = []
    entering = rows
    for op in stats["operators"]:
        r = by_op.get(op, 0)
        out.append((op, entering, r))
        entering -= r
    return out


def write_report(stats: dict, thumbs: dict[str, list], path: str | Path) -> Path:
    funnel = _funnel(stats)
    funnel_svg = _svg_funnel(funnel)
    hist_imgs = [(col, _svg_hist(col, h), h) for col, h in stats.get("histograms", {}).items()]

    timing = stats.get("timing", {})
    op_cpu = sorted(timing.get("operator_cpu_s", {}).items(), key=lambda kv: -kv[1])
    e = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>flywheel curation report</title>",
        "<style>body{font:14px system-ui,sans-serif;margin:24px;color:#222}table{border-collapse:collapse}"
        "td,th{border:1px solid #ddd;padding:3px 8px;text-align:left}th{background:#f4f4f4}"
        ".grid{display:flex;flex-wrap:wrap;gap:12px}.card{border:1px solid #ddd;padding:6px}"
        ".thumb{display:inline-block;width:130px;margin:4px;font-size:10px;word-break:break-all;vertical-align:top}"
        ".thumb img{max-width:120px;max-height:120px;display:block}</style></head><body>",
        f"<h1>Curation report: {e(stats['recipe'])}</h1>",
        f"<p>run <code>{e(stats['run_id'])}</code> · input <code>{e(stats['input'])}</code> · "
        f"<b>{stats['rows']}</b> rows · <b>{stats['accepted']}</b> accepted ({e(stats['datasets']['accepted'])}) · "
        f"<b>{stats['rejected']}</b> rejected ({e(stats['datasets']['rejected'])})</p>",
    ]
    if stats.get("notes"):
        parts.append("<p><b>Notes:</b> " + "; ".join(e(n) for n in stats["notes"]) + "</p>")
    parts.append(f"<h2>Funnel</h2>{funnel_svg}<table><tr><th>operator</th><th>entering</th><th>rejected</th></tr>")
    parts += [f"<tr><td>{e(o)}</td><td>{a}</td><td>{b}</td></tr>" for o, a, b in funnel]
    parts.append("</table><h2>Reject reasons</h2><table><tr><th>reject_reason (first failing rule)</th><th>rows</th></tr>")
    parts += [f"<tr><td>{e(k)}</td><td>{v}</td></tr>" for k, v in stats["reject_reason"].items()]
    parts.append("</table>")
    if stats.get("ingest"):
        parts.append("<h2>Ingest (not rows: never followed)</h2><table><tr><th>what</th><th>count</th><th>examples</th></tr>")
        parts += [f"<tr><td>{e(k)}</td><td>{v}</td><td>{e(', '.join(stats.get('ingest_examples', {}).get(k, [])))}</td></tr>"
                  for k, v in stats["ingest"].items()]
        parts.append("</table>")
    parts.append("<h2>Scores</h2><div class='grid'>")
    for col, svg, h in hist_imgs:
        parts.append(f"<div class='card'>{svg}<br><small>n={h['n']} p5={h['p5']:.3g} p50={h['p50']:.3g} "
                     f"p95={h['p95']:.3g}</small></div>")
    parts.append("</div><h2>Rejected samples by reason</h2>")
    for reason, items in sorted(thumbs.items()):
        parts.append(f"<h3>{e(reason)}</h3>")
        for src, hexb in items:
            img = (f"<img src='data:image/jpeg;base64,{base64.b64encode(bytes.fromhex(hexb)).decode()}'>" if hexb
                   else "<div style='width:120px;height:60px;background:#eee'>no preview</div>")
            parts.append(f"<div class='thumb'>{img}{e(src)}</div>")
    parts.append("<h2>Timing</h2><table>")
    for k in ("prepare_s", "ray_startup_s", "score_s", "barrier_s", "images_per_s", "rows_resumed", "attempts"):
        v = timing.get(k)
        parts.append(f"<tr><td>{k}</td><td>{'' if v is None else (f'{v:.3f}' if isinstance(v, float) else v)}</td></tr>")
    for name, b in (stats.get("barrier") or {}).items():
        for k, v in b.items():
            parts.append(f"<tr><td>{e(name)} {e(k)}</td><td>{f'{v:.3f}' if isinstance(v, float) else e(str(v))}</td></tr>")
    parts.append("</table><h3>Slowest operators (CPU seconds, all workers)</h3><table>")
    parts += [f"<tr><td>{e(k)}</td><td>{v:.2f}</td></tr>" for k, v in op_cpu]
    parts.append("</table></body></html>")
    p = Path(path)
    p.write_text("".join(parts), encoding="utf-8")
    return p


"""The run report: one self-contained HTML file (plots and thumbnails inlined).

Funnel per operator, score histograms with threshold lines, thumbnails of rejects per reason,
slowest operators, ingest counts. Numbers come from stats.json, which equals a GROUP BY over the
written Parquet.
"""

from __future__ import annotations

import base64
import html
import io
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


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    funnel = _funnel(stats)
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(funnel) + 1))
    names = [f[0] for f in funnel][::-1]
    ax.barh(names, [f[1] for f in funnel][::-1], color="#cfe3f7", label="entering")
    ax.barh(names, [f[2] for f in funnel][::-1], color="#e4572e", label="rejected here")
    ax.set_xlabel("rows")
    ax.legend(loc="lower right")
    funnel_png = _png(fig)

    hist_imgs = []
    for col, h in stats.get("histograms", {}).items():
        fig, ax = plt.subplots(figsize=(4, 2.4))
        edges = np.array(h["edges"])
        ax.bar(edges[:-1], h["counts"], width=np.diff(edges), align="edge", color="#4a90d9")
        for pname, v in h["thresholds"].items():
            ax.axvline(v, color="#e4572e", linestyle="--", label=f"{pname}={v}")
        if h["thresholds"]:
            ax.legend(fontsize=7)
        ax.set_title(col, fontsize=9)
        hist_imgs.append((col, _png(fig), h))

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
    parts.append(f"<h2>Funnel</h2><img src='{funnel_png}'><table><tr><th>operator</th><th>entering</th><th>rejected</th></tr>")
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
    for col, png, h in hist_imgs:
        parts.append(f"<div class='card'><img src='{png}'><br><small>n={h['n']} p5={h['p5']:.3g} p50={h['p50']:.3g} "
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


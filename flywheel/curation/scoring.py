"""Per-batch scoring and per-row decisions, engine-free (the Ray adapter calls these).

Score: decode every image once (`decode.decode`, the first step, whose contract is
`decode.Decode`), then run each operator's `score` over the shared working copies. A sample that breaks an operator becomes `<op>:error:<ExceptionType>`
for that row alone (the batch is retried row by row), never a lost batch. Stored scores found
in the input (a dataset made by an earlier stage) are reused, not recomputed.

Decide: `decide_table` applies the decode step's rules, then each operator's (`Operator.reject`,
derived from its `rules`), turning stored scores into `reject_reason` (first failing rule in recipe
order), `reject_reasons` (every failing rule) and `reject_details` (the evidence: score vs
threshold). Edit pairs: a failing source rejects the pair with the rule suffix `:source`.
"""

from __future__ import annotations

import json
import struct
import time
import traceback
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from flywheel.filters import base
from flywheel.filters.base import Work
from flywheel.filters.decode import Decode, decode, ext_of

WORK_COL = "_work"
SRC_WORK_COL = "_src_work"
ERR_COL_SUFFIX = "__error_type"
_ENCODED = frozenset({"image", "source_images", WORK_COL, SRC_WORK_COL})  # bytes no operator reads unless it says so
FACT_COLS = ("width", "height", "format", "mode", "frames", "exif_orientation", "has_alpha")
BROKEN_COLS = Decode.writes
ERROR_COL, DETAIL_COL, FRAMES_COL = BROKEN_COLS


def pack_work(w: Work | None) -> bytes | None:
    if w is None:
        return None
    h, wd = w.rgb.shape[:2]
    return struct.pack("<II", h, wd) + struct.pack("<II", w.width, w.height) + w.rgb.tobytes()


def unpack_work(b: bytes | None) -> Work | None:
    if b is None:
        return None
    h, wd, ow, oh = struct.unpack_from("<IIII", b, 0)
    rgb = np.frombuffer(b, dtype=np.uint8, offset=16).reshape(h, wd, 3)
    return Work(rgb=rgb, width=ow, height=oh)


def _set_column(t: pa.Table, name: str, values: Sequence[Any], typ: pa.DataType) -> pa.Table:
    arr = pa.array(list(values), type=typ)
    if name in t.column_names:
        return t.set_column(t.column_names.index(name), name, arr)
    return t.append_column(name, arr)


def _unread(meta: str | None) -> tuple[str, str]:
    """The rule and detail of a row whose bytes ingest did not read: `too_large` when it left the
    file unread for its size, else `unreadable` with the read error ingest recorded."""
    try:
        m = json.loads(meta) if meta else {}
    except ValueError:
        m = {}
    m = m if isinstance(m, dict) else {}
    if "too_large" in m:
        return "too_large", f"{m['too_large']} bytes > max_bytes={m.get('max_bytes')}: not read"
    return "unreadable", "the image bytes could not be read" + (f": {m['read_error']}" if m.get("read_error") else
                                                               " (missing file or I/O error)")


def _needs(table: pa.Table, op: base.Operator) -> list[bool]:
    """Rows whose scores for `op` are not stored yet (every row when a column is missing: the input
    was scored by an older version of the operator)."""
    if not op.writes or any(c not in table.column_names for c in op.writes):
        return [True] * table.num_rows
    col = table.column(op.writes[0]).to_pylist()
    err = table.column(op.name + ERR_COL_SUFFIX).to_pylist() if op.name + ERR_COL_SUFFIX in table.column_names else [None] * len(col)
    return [v is None and e is None for v, e in zip(col, err)]


class Scorer:
    """Scores a batch for a list of operators. `decode_step`: decode image bytes first (the first
    stage); otherwise the working copies come packed in `_work` from an earlier stage."""

    def __init__(self, steps: list[tuple[str, dict]], work_size: int, decode_step: bool, keep_work: bool,
                 decode_params: dict | None = None, side_root: str | None = None):
        self.steps = steps
        self.work_size = work_size
        self.decode_step = decode_step
        self.keep_work = keep_work
        self.decode_params = decode_params or {}
        self.side_root = side_root  # run output: operators with `side_output` write side datasets there
        self.ops: list[base.Operator] | None = None

    def _setup(self) -> None:
        if self.ops is None:
            self.ops = [base.get(n)(p) for n, p in self.steps]
            for op in self.ops:
                if self.side_root and getattr(op, "side_output", None):
                    op.side_dir = str(Path(self.side_root) / op.side_output)
                op.setup()

    def set_side_root(self, side_root: str | None) -> None:
        """A run's output for operators' side datasets (a pooled scorer serves many runs)."""
        self.side_root = side_root
        for op in self.ops or []:
            if getattr(op, "side_output", None):
                op.side_dir = str(Path(side_root) / op.side_output) if side_root else None

    # -- decode ------------------------------------------------------------------------------
    def _decode(self, table: pa.Table, need: list[bool]) -> tuple[pa.Table, list[Work | None], list[list[Work | None]]]:
        bp = Decode.Params(**self.decode_params)
        images = table.column("image").to_pylist()
        sources = table.column("source").to_pylist()
        src_imgs = table.column("source_images").to_pylist() if "source_images" in table.column_names else [None] * len(images)
        metas = table.column("meta").to_pylist() if "meta" in table.column_names else [None] * len(images)
        facts: dict[str, list] = {c: [] for c in FACT_COLS + BROKEN_COLS}
        works: list[Work | None] = []
        src_works: list[list[Work | None]] = []
        src_scores = _src_scores(table)
        old = {c: table.column(c).to_pylist() if c in table.column_names else [None] * len(images) for c in FACT_COLS + BROKEN_COLS}
        for i, (data, src) in enumerate(zip(images, sources)):
            if not need[i]:
                for c in facts:
                    facts[c].append(old[c][i])
                works.append(None)
                src_works.append([])
                continue
            if data is None:
                d = None
                for c in FACT_COLS:
                    facts[c].append(None)
                err, det = _unread(metas[i])
                facts[ERROR_COL].append(err)
                facts[DETAIL_COL].append(det)
                facts[FRAMES_COL].append(None)
                works.append(None)
            else:
                d = decode(data, ext_of(src.split("!")[-1].split("#")[0]) if src else None, self.work_size,
                           bp.max_pixels, bp.check_extension, bp.max_metadata_bytes)
                for c in FACT_COLS:
                    facts[c].append(getattr(d, c))
                facts[ERROR_COL].append(d.error)
                facts[DETAIL_COL].append(d.detail)
                facts[FRAMES_COL].append(d.frames)
                works.append(d.work)
            sw: list[Work | None] = []
            if src_imgs[i]:
                errs, dets = [], []
                for sb in src_imgs[i]:
                    sd = decode(sb, None, self.work_size, bp.max_pixels, False, bp.max_metadata_bytes)
                    sw.append(sd.work)
                    errs.append(sd.error)
                    dets.append(sd.detail)
                src_scores[i][ERROR_COL] = errs
                src_scores[i][DETAIL_COL] = dets
                src_scores[i]["width"] = [w.width if w else None for w in sw]
                src_scores[i]["height"] = [w.height if w else None for w in sw]
            src_works.append(sw)
        from flywheel.datasets import BASE_SCHEMA

        for c in FACT_COLS:
            table = _set_column(table, c, facts[c], BASE_SCHEMA.field(c).type)
        for c in BROKEN_COLS:
            table = _set_column(table, c, facts[c], Decode.column_type(c))
        table = _set_column(table, "source_scores", [json.dumps(s) if s else None for s in src_scores], pa.string())
        return table, works, src_works

    # -- score -------------------------------------------------------------------------------
    def __call__(self, table: pa.Table) -> pa.Table:
        self._setup()
        assert self.ops is not None
        n = table.num_rows
        timing: dict[str, float] = {}
        if self.decode_step:
            t0 = time.thread_time()
            need_any = [False] * n
            for op in self.ops:
                if op.needs_image:
                    need_any = [a or b for a, b in zip(need_any, _needs(table, op))]
            bf_missing = ERROR_COL not in table.column_names
            need_decode = [a or bf_missing for a in need_any]
            table, works, src_works = self._decode(table, need_decode)
            timing[Decode.name] = time.thread_time() - t0  # CPU time of this thread, not wall: honest on a busy machine
        else:
            works = [unpack_work(b) for b in table.column(WORK_COL).to_pylist()]
            src_works = [[unpack_work(b) for b in (lst or [])] for lst in table.column(SRC_WORK_COL).to_pylist()]
        broken = [e is not None for e in table.column(ERROR_COL).to_pylist()]
        src_scores = _src_scores(table)
        for op in self.ops:
            t0 = time.thread_time()
            table, src_scores = self._score_op(op, table, works, src_works, broken, src_scores)
            timing[op.name] = timing.get(op.name, 0.0) + time.thread_time() - t0
        table = _set_column(table, "source_scores", [json.dumps(s) if s else None for s in src_scores], pa.string())
        if self.keep_work:
            table = _set_column(table, WORK_COL, [pack_work(w) for w in works], pa.binary())
            table = _set_column(table, SRC_WORK_COL, [[pack_work(w) for w in sw] for sw in src_works], pa.list_(pa.binary()))
        else:
            table = table.drop_columns([c for c in (WORK_COL, SRC_WORK_COL) if c in table.column_names])
        for name, secs in timing.items():
            table = _set_column(table, f"_t_{name}", [secs / max(1, n)] * n, pa.float64())
        return table

    def _score_op(self, op, table, works, src_works, broken, src_scores):
        need = _needs(table, op)
        rows = [i for i in range(table.num_rows) if need[i] and not broken[i]]
        existing = {c: (table.column(c).to_pylist() if c in table.column_names else [None] * table.num_rows) for c in op.writes}
        errcol = op.name + ERR_COL_SUFFIX
        errs = table.column(errcol).to_pylist() if errcol in table.column_names else [None] * table.num_rows
        if rows:
            # operators get the decoded working copies; the encoded bytes stay out of the copy
            # `take` makes (a block's images, copied once per operator, were a tenth of a
            # stage-1 worker's time outside the operators)
            view = table.select([c for c in table.column_names if c not in _ENCODED or c in op.reads])
            sub = view if len(rows) == table.num_rows else view.take(pa.array(rows, pa.int64()))
            subw = [works[i] for i in rows]
            results = _safe_score(op, sub, subw)
            for c in op.writes:
                for j, i in enumerate(rows):
                    existing[c][i] = results["cols"][c][j]
            for j, i in enumerate(rows):
                if results["errors"][j]:
                    errs[i] = results["errors"][j]
        for i in range(table.num_rows):
            if broken[i]:
                for c in op.writes:
                    existing[c][i] = None
        for c in op.writes:
            table = _set_column(table, c, existing[c], op.column_type(c))
        if any(errs):
            table = _set_column(table, errcol, errs, pa.string())
        # Edit pairs: every image operator also scores the sources (dedup is on the pair id instead).
        if _image_op(op):
            for i, sw in enumerate(src_works):
                if not sw or broken[i] or not need[i]:
                    continue
                ok = [k for k, w in enumerate(sw) if w is not None]
                if not ok:
                    continue
                cols = {
                    "id": [f"{i}-{k}" for k in ok],
                    "source": [f"source[{k}]" for k in ok],
                    "width": pa.array([sw[k].width for k in ok], pa.int32()),
                    "height": pa.array([sw[k].height for k in ok], pa.int32()),
                    "exif_orientation": pa.array([1] * len(ok), pa.int8()),
                }
                for c in op.reads:  # a source's values from earlier operators (e.g. its clip__embedding)
                    if c not in cols and c in src_scores[i]:
                        cols[c] = [src_scores[i][c][k] for k in ok]
                sub = pa.table(cols)
                res = _safe_score(op, sub, [sw[k] for k in ok])
                for c in op.writes:
                    vals = [None] * len(sw)
                    for j, k in enumerate(ok):
                        v = res["cols"][c][j]
                        vals[k] = v.hex() if isinstance(v, (bytes, bytearray)) else v
                    src_scores[i][c] = vals
                if any(res["errors"]):
                    src_scores[i][errcol] = [None] * len(sw)
                    for j, k in enumerate(ok):
                        src_scores[i][errcol][k] = res["errors"][j]
        return table, src_scores


def _image_op(op) -> bool:
    """Operators that judge an image (pixels or its size) also judge an edit pair's sources."""
    return (op.needs_image or "width" in op.reads) and not isinstance(op, (base.Barrier, Decode))


def _src_scores(table: pa.Table) -> list[dict]:
    if "source_scores" not in table.column_names:
        return [{} for _ in range(table.num_rows)]
    return [json.loads(s) if s else {} for s in table.column("source_scores").to_pylist()]


def _safe_score(op: base.Operator, sub: pa.Table, works: list[Work | None]) -> dict:
    """Score a batch; if it raises, score row by row so only the rows that break are marked."""
    n = sub.num_rows
    try:
        cols = op.score(sub, works)
        _check_lengths(op, cols, n)
        return {"cols": {c: list(cols[c]) for c in op.writes}, "errors": [None] * n}
    except Exception:  # noqa: BLE001 - isolate the failing rows below
        pass
    out = {c: [None] * n for c in op.writes}
    errors: list[str | None] = [None] * n
    for i in range(n):
        try:
            cols = op.score(sub.slice(i, 1), works[i:i + 1])
            _check_lengths(op, cols, 1)
            for c in op.writes:
                out[c][i] = list(cols[c])[0]
        except Exception as e:  # noqa: BLE001 - the row becomes `<op>:error:<Type>`
            errors[i] = f"{type(e).__name__}: {str(e)[:200]}"
            _log_error(op.name, e)
    return {"cols": out, "errors": errors}


def _check_lengths(op, cols, n):
    for c in op.writes:
        if c not in cols:
            raise RuntimeError(f"{op.name}.score did not return column {c}")
        if len(cols[c]) != n:
            raise RuntimeError(f"{op.name}.score returned {len(cols[c])} values for {c}, expected {n}")


def _log_error(name: str, e: Exception) -> None:
    import logging

    logging.getLogger("flywheel.curation.scoring").debug("operator %s failed on a row:\n%s", name, "".join(traceback.format_exception(e)))


# -- decisions ---------------------------------------------------------------------------------


def decide_table(table: pa.Table, steps: list[tuple[str, dict]], decode_params: dict | None = None) -> pa.Table:
    """Append reject_reason / reject_reasons / reject_details from stored scores: the decode step's
    rules first, then each operator's in recipe order."""
    n = table.num_rows
    reasons: list[list[str]] = [[] for _ in range(n)]
    details: list[list[str]] = [[] for _ in range(n)]
    src_scores = _src_scores(table)
    broken = ([e is not None for e in table.column(ERROR_COL).to_pylist()]
              if ERROR_COL in table.column_names else [False] * n)
    ops: list[base.Operator] = [Decode(decode_params or {})] + [base.get(name)(params) for name, params in steps]
    for op in ops:
        name = op.name
        is_decode = isinstance(op, Decode)
        cols_present = all(c in table.column_names for c in op.decision_columns())
        errcol = name + ERR_COL_SUFFIX
        errs = table.column(errcol).to_pylist() if errcol in table.column_names else [None] * n
        fails = op.reject(table) if cols_present else [[] for _ in range(n)]
        for i in range(n):
            if broken[i] and not is_decode:
                continue  # after decoding fails, operators hold null scores and no verdict
            if errs[i]:
                etype = errs[i].split(":", 1)[0]
                reasons[i].append(f"{name}:error:{etype}")
                details[i].append(f"{name} raised {errs[i]}")
            for f in fails[i]:
                reasons[i].append(f"{name}:{f.rule}")
                details[i].append(f.detail)
        if _image_op(op) or is_decode:  # edit pairs: the sources, with the rule suffix `:source`
            for i, ss in enumerate(src_scores):
                _decide_sources(op, ss, reasons[i], details[i])
    table = _set_column(table, "reject_reason", [r[0] if r else None for r in reasons], pa.string())
    table = _set_column(table, "reject_reasons", [r or None for r in reasons], pa.list_(pa.string()))
    table = _set_column(table, "reject_details", [d or None for d in details], pa.list_(pa.string()))
    return table


def _decide_sources(op: base.Operator, ss: dict, reasons: list[str], details: list[str]) -> None:
    present = [c for c in dict.fromkeys(op.writes + op.decision_columns()) if c in ss]
    if not ss or not present:
        return
    k = max((len(v) for v in ss.values() if isinstance(v, list)), default=0)
    cols = {}
    for c in present:
        vals = ss[c]
        if op.column_type(c) == pa.binary():
            vals = [bytes.fromhex(v) if v else None for v in vals]
        cols[c] = pa.array(vals, type=op.column_type(c))
    cols.setdefault("width", pa.array(ss.get("width", [None] * k), pa.int32()))
    cols.setdefault("height", pa.array(ss.get("height", [None] * k), pa.int32()))
    for f_list in op.reject(pa.table(cols)):
        for f in f_list:
            reasons.append(f"{op.name}:{f.rule}:source")
            details.append(f"source: {f.detail}")
    for e in ss.get(op.name + ERR_COL_SUFFIX, []) or []:
        if e:
            reasons.append(f"{op.name}:error:{e.split(':', 1)[0]}:source")
            details.append(f"source: {op.name} raised {e}")

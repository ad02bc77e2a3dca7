"""What a review card shows, for the queue, QA batch and check pages."""

from __future__ import annotations

import uuid


def decorate(catalog, items: list[dict]) -> list[dict]:
    """Add the signal each item was retrieved for (its prompt from the catalog) and normalised
    captions, neighbours and scores for the card template."""
    sids = sorted({i["signal_id"] for i in items if i.get("signal_id")})
    signals = {}
    if sids:
        rows = catalog.execute(f"SELECT * FROM signals WHERE signal_id IN ({','.join('?' * len(sids))})", sids)
        signals = {r["signal_id"]: dict(r) for r in rows}
    out = []
    for it in items:
        p = it.get("payload") or {}
        caps = p.get("captions") if isinstance(p.get("captions"), dict) else {}
        captions = [(t, caps.get(t)) for t in ("general", "text", "knowledge", "structured")]
        if not any(c for _, c in captions) and (p.get("caption") or p.get("text")):
            captions[0] = ("general", p.get("caption") or p.get("text"))  # the router sends the row's text
        sig = dict(signals.get(it.get("signal_id")) or {})
        if isinstance(p.get("signal"), dict):
            sig = {**p["signal"], **sig}
        for key, alt in (("prompt", "prompt"), ("kind", "signal_kind"), ("concept", "concept")):
            if not sig.get(key) and p.get(alt):
                sig[key] = p[alt]
        neigh = p.get("neighbours") or p.get("neighbors") or []
        scores = dict(p["scores"]) if isinstance(p.get("scores"), dict) else {}
        if isinstance(p.get("score"), (int, float)):
            scores.setdefault("retrieval_similarity", p["score"])
        out.append({**it, "captions": captions, "signal": sig, "neighbours": neigh if isinstance(neigh, list) else [],
                    "scores": scores, "request_id": uuid.uuid4().hex})
    return out

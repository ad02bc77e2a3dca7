"""What a review card shows, for the queue, QA batch and check pages: the sample, its captions
(empty types collapsed), the signal it was retrieved for (a feedback signal's own words), the
router's evidence for sending it here and its nearest training neighbours."""

from __future__ import annotations

import json
import uuid

CAPTION_TYPES = ("general", "text", "knowledge", "structured")


def _routes(catalog, sids: list[str]) -> dict[str, dict]:
    """The newest routing evidence per signal: the card's fallback for items queued without
    their own (router runs before items carried it)."""
    if not sids:
        return {}
    out = {}
    for r in catalog.execute(f"SELECT signal_id, evidence_json FROM routes WHERE signal_id IN ({','.join('?' * len(sids))})"
                             " ORDER BY route_id", sids):
        try:
            out[r["signal_id"]] = json.loads(r["evidence_json"] or "{}")
        except ValueError:
            continue
    return out


def _evidence(p: dict, sig: dict, route: dict) -> dict:
    ev = dict(p["evidence"]) if isinstance(p.get("evidence"), dict) else {}
    dens = route.get("density") if isinstance(route.get("density"), dict) else {}
    if not ev.get("density") and route.get("reason"):
        ev["density"] = route["reason"]
        for k in ("radius_ratio", "threshold", "near", "tau"):
            if dens.get(k) is not None:
                ev.setdefault(k, dens[k])
    if not ev.get("attribute") and sig.get("attribute"):
        ev["attribute"] = sig["attribute"]
    if ev.get("similarity") is None and isinstance(p.get("score"), (int, float)):
        ev["similarity"] = p["score"]
    return ev


def decorate(catalog, items: list[dict]) -> list[dict]:
    """Add the signal each item was retrieved for (from the catalog), the evidence, captions,
    neighbours and scores, normalised for the card template."""
    sids = sorted({i["signal_id"] for i in items if i.get("signal_id")})
    signals = {}
    if sids:
        rows = catalog.execute(f"SELECT * FROM signals WHERE signal_id IN ({','.join('?' * len(sids))})", sids)
        for r in rows:
            d = dict(r)
            try:
                sp = json.loads(d.pop("payload_json") or "{}")
            except ValueError:
                sp = {}
            # what the signal's sender said: a feedback signal's text and rating, the failed attribute
            d.update({k: sp[k] for k in ("text", "rating", "failed_attribute", "image") if sp.get(k) is not None})
            signals[r["signal_id"]] = d
    routes = _routes(catalog, [s for s in sids if s in signals])
    out = []
    for it in items:
        p = it.get("payload") or {}
        caps = p.get("captions") if isinstance(p.get("captions"), dict) else {}
        captions = [(t, caps.get(t)) for t in CAPTION_TYPES]
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
        out.append({**it, "captions": [(t, c) for t, c in captions if c],
                    "empty_captions": [t for t, c in captions if not c], "signal": sig,
                    "evidence": _evidence(p, sig, routes.get(it.get("signal_id"), {})),
                    "neighbours": [n for n in neigh if isinstance(n, (dict, str))] if isinstance(neigh, list) else [],
                    "scores": scores, "request_id": uuid.uuid4().hex})
    return out

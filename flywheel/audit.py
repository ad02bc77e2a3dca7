"""The audit log's tamper evidence: an HMAC chain over `audit_log`, its key and saved head.

The triggers of migration 6 stop code from changing the log, but anyone who can write the
catalog file can drop them with sqlite3, edit or delete rows and recreate them. So each row
carries `mac = HMAC-SHA256(key, mac_of_previous_row || canonical(row))`, with the key kept
outside the catalog file: whoever edits a row, even recomputing a chain of their own, cannot
produce MACs that verify without the key. Deleting the newest rows leaves a valid but shorter
chain; the chain head (last seq and MAC), saved outside the catalog at each server start and stop,
catches that.

Verification recomputes the chain from the rows as they are (the "running" MAC) and compares it
with the stored one. A break is acknowledged only by a seal row (`flywheel audit seal --reason`)
appended after it: the seal's MAC covers the running MAC over every earlier row as it was when
sealed, so a seal cannot hide an edit made after it. Rows written before the chain existed (MAC
NULL) are folded into the running MAC, so the first chained row vouches for them.

Key: `FLYWHEEL_AUDIT_KEY` (the secret itself), else the file `FLYWHEEL_AUDIT_KEY_FILE`, else
`<catalog dir>/secrets/audit.key` (0600 in a 0700 folder, created with 32 random bytes when the
log has no chained row yet). The head file lives in the same secrets folder.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

SEAL_ACTION = "audit.seal"
TRIGGERS = {
    "audit_log_no_update": "CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log"
                           " BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END",
    "audit_log_no_delete": "CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log"
                           " BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END",
}
# The same guarantee on PostgreSQL: plpgsql triggers (and one for TRUNCATE, which skips row
# triggers), defined in flywheel.catalog_pg; the connection says which dialect it speaks.
PG_FUNCTION_BODY = "BEGIN RAISE EXCEPTION 'audit_log is append-only' USING ERRCODE = 'integrity_constraint_violation'; END"
_GENESIS = b"flywheel-audit-v1"
VERIFY_HINT = "run `flywheel audit verify` to see the first broken link, then `flywheel audit seal --reason TEXT`"


class AuditKeyMissing(RuntimeError):
    pass


class AuditTampered(RuntimeError):
    """The log fails verification; the message names the first broken link and the commands."""


# -- key and head files -------------------------------------------------------------------------
def secrets_dir(catalog_path: Path) -> Path:
    return Path(catalog_path).absolute().parent / "secrets"


def key_file(catalog_path: Path) -> Path:
    env = os.environ.get("FLYWHEEL_AUDIT_KEY_FILE")
    return Path(env) if env else secrets_dir(catalog_path) / "audit.key"


def head_file(catalog_path: Path) -> Path:
    return secrets_dir(catalog_path) / f"{Path(catalog_path).name}.audit-head.json"


def load_key(catalog_path: Path, create: bool) -> bytes | None:
    env = os.environ.get("FLYWHEEL_AUDIT_KEY")
    if env:
        return env.encode()
    f = key_file(catalog_path)
    try:
        return f.read_bytes()
    except FileNotFoundError:
        if not create:
            return None
    f.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(f, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:  # another process made it first
        return f.read_bytes()
    with os.fdopen(fd, "wb") as fh:
        fh.write(secrets.token_hex(32).encode())
    return f.read_bytes()


def save_head(catalog_path: Path, head: dict) -> Path:
    f = head_file(catalog_path)
    f.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = f.with_suffix(f".{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({**head, "catalog": str(Path(catalog_path).absolute()), "saved_at": time.time()}, fh)
    os.replace(tmp, f)
    return f


def load_head(catalog_path: Path) -> dict | None:
    try:
        return json.loads(head_file(catalog_path).read_text())
    except FileNotFoundError:
        return None


# -- the chain ------------------------------------------------------------------------------------
def canonical(seq: int, at: float, actor, action, target, detail_json) -> bytes:
    return json.dumps([int(seq), repr(float(at)), actor, action, target, detail_json], ensure_ascii=False,
                      separators=(",", ":")).encode()


def link(key: bytes, prev: str, row: bytes, seal: bool = False) -> str:
    msg = (b"seal\x00" if seal else b"") + prev.encode() + b"\x00" + row
    return hmac.new(key, msg, hashlib.sha256).hexdigest()


def genesis(key: bytes) -> str:
    return hmac.new(key, _GENESIS, hashlib.sha256).hexdigest()


def _is_pg(con) -> bool:
    return getattr(con, "dialect", "sqlite") == "postgresql"


def triggers(con) -> dict[str, str]:
    """The append-only triggers of this connection's dialect: name -> CREATE statement."""
    if _is_pg(con):
        from flywheel.catalog_pg import TRIGGERS as PG_TRIGGERS

        return PG_TRIGGERS
    return TRIGGERS


def _top_seq(con) -> int:
    """The highest seq ever handed out, deleted rows included: SQLite keeps it in sqlite_sequence,
    PostgreSQL in audit_high_water (migration 13), both inside the writing transaction."""
    if _is_pg(con):
        return con.execute("SELECT GREATEST((SELECT MAX(top) FROM audit_high_water),"
                           " (SELECT MAX(seq) FROM audit_log))").fetchone()[0] or 0
    return con.execute("SELECT MAX(seq) FROM (SELECT seq FROM sqlite_sequence WHERE name = 'audit_log'"
                       " UNION ALL SELECT MAX(seq) FROM audit_log)").fetchone()[0] or 0


def _set_top(con, top: int) -> None:
    if _is_pg(con):
        con.execute("UPDATE audit_high_water SET top = ?", (top,))
        # the identity sequence past the rows, so a plain INSERT would not collide
        con.execute("SELECT setval(pg_get_serial_sequence('audit_log', 'seq'), ?)", (top,))


def _tail(con: sqlite3.Connection, key: bytes) -> str:
    """The running MAC after the newest row. Normally the newest row's stored MAC; when the
    newest rows have none (written before the chain, or by code that bypassed it) they are
    folded in from the last row that has one."""
    last = con.execute("SELECT seq, mac FROM audit_log ORDER BY seq DESC LIMIT 1").fetchone()
    if last is None:
        return genesis(key)
    if last[1]:
        return last[1]
    anchor = con.execute("SELECT seq, mac FROM audit_log WHERE mac IS NOT NULL ORDER BY seq DESC LIMIT 1").fetchone()
    prev, after = (anchor[1], anchor[0]) if anchor else (genesis(key), -1)
    for r in con.execute("SELECT seq, at, actor, action, target, detail_json, mac FROM audit_log WHERE seq > ? ORDER BY seq",
                         (after,)):
        prev = link(key, prev, canonical(*r[:6]), seal=r[3] == SEAL_ACTION)
    return prev


def append(con: sqlite3.Connection, catalog_path: Path, rows: list[tuple]) -> list[int]:
    """Insert audit rows `(at, actor, action, target, detail_json)` chained to the newest row.
    Must run inside the caller's BEGIN IMMEDIATE transaction (every catalog write does), so no
    other writer can append between reading the tail and inserting."""
    last = con.execute("SELECT mac FROM audit_log ORDER BY seq DESC LIMIT 1").fetchone()
    # the newest row's MAC answers "is the log chained?" in one index lookup; only a log whose
    # newest row has none (before the first chained row) needs the scan
    chained = bool(last and last[0]) or con.execute("SELECT 1 FROM audit_log WHERE mac IS NOT NULL LIMIT 1").fetchone() is not None
    key = load_key(catalog_path, create=not chained)
    if key is None:
        raise AuditKeyMissing(f"the audit key {key_file(catalog_path)} is missing but the log in {catalog_path} is chained "
                              "with one; restore the key (or FLYWHEEL_AUDIT_KEY), or start a new chain with "
                              "`flywheel audit seal --reason TEXT`")
    prev = _tail(con, key)
    top = _top_seq(con)
    seqs = []
    for at, actor, action, target, detail in rows:
        top += 1
        mac = link(key, prev, canonical(top, at, actor, action, target, detail), seal=action == SEAL_ACTION)
        con.execute("INSERT INTO audit_log (seq, at, actor, action, target, detail_json, mac) VALUES (?,?,?,?,?,?,?)",
                    (top, at, actor, action, target, detail, mac))
        prev = mac
        seqs.append(top)
    _set_top(con, top)
    return seqs


@dataclass
class Report:
    rows: int = 0
    chained: int = 0
    head: dict | None = None
    last: dict | None = None
    first_break: dict | None = None  # unacknowledged
    acknowledged: list[dict] = field(default_factory=list)  # breaks covered by a later seal
    head_problem: str | None = None
    triggers_missing: list[str] = field(default_factory=list)
    key_missing: bool = False

    @property
    def ok(self) -> bool:
        return not (self.first_break or self.head_problem or self.triggers_missing or self.key_missing)

    def problems(self) -> list[str]:
        out = []
        if self.key_missing:
            out.append("the audit key is missing, so the chain cannot be checked")
        if self.first_break:
            b = self.first_break
            out.append(f"first broken link at seq {b['seq']}: {b['problem']}")
        if self.head_problem:
            out.append(self.head_problem)
        if self.triggers_missing:
            out.append(f"append-only trigger(s) missing: {', '.join(self.triggers_missing)}")
        return out


def missing_triggers(con: sqlite3.Connection) -> list[str]:
    """The append-only triggers that are absent, or present under their name with another body
    (a trigger recreated to do nothing is as good as none)."""
    if _is_pg(con):
        want = triggers(con)
        body = con.execute("SELECT prosrc FROM pg_proc WHERE proname = 'audit_log_append_only'").fetchone()
        if body is None or " ".join(body[0].split()) != PG_FUNCTION_BODY:
            return list(want)  # a function changed to do nothing disarms every trigger
        have = {r[0]: " ".join(r[1].replace(" ON public.audit_log ", " ON audit_log ").split()) for r in con.execute(
            "SELECT tgname, pg_get_triggerdef(oid) FROM pg_trigger WHERE tgrelid = 'audit_log'::regclass"
            " AND NOT tgisinternal AND tgenabled <> 'D'")}
        return [t for t, sql in want.items() if have.get(t) != " ".join(sql.split())]
    have = {r[0]: " ".join(r[1].split()) for r in con.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'audit_log'")}
    return [t for t, sql in TRIGGERS.items() if have.get(t) != " ".join(sql.split())]


def verify(con: sqlite3.Connection, catalog_path: Path, head: dict | None = None, use_saved_head: bool = True) -> Report:
    """Walk the log in seq order, streaming, and report the first unacknowledged break."""
    rep = Report(triggers_missing=missing_triggers(con))
    has_chain = con.execute("SELECT 1 FROM audit_log WHERE mac IS NOT NULL LIMIT 1").fetchone() is not None
    key = load_key(catalog_path, create=False)
    if key is None:
        rep.key_missing = has_chain
        return rep
    prev, expected_seq, breaks = genesis(key), None, []
    seen_chain = False
    last = None
    for seq, at, actor, action, target, detail, mac in con.execute(
            "SELECT seq, at, actor, action, target, detail_json, mac FROM audit_log ORDER BY seq"):
        rep.rows += 1
        is_seal = action == SEAL_ACTION
        run = link(key, prev, canonical(seq, at, actor, action, target, detail), seal=is_seal)
        problem = None
        if mac is not None:
            seen_chain = True
            rep.chained += 1
        # seqs are handed out one by one inside the writing transaction, so a gap is a deletion
        # even when the rows after it were chained (honestly) onto what was left
        if expected_seq is not None and seq != expected_seq:
            problem = f"rows {expected_seq}..{seq - 1} are missing (deleted)"
        elif mac is None:
            if seen_chain:
                problem = "the row has no MAC (written around the chain)"
        elif not hmac.compare_digest(mac, run):
            problem = "the MAC does not match: this row, or one before it, was changed, inserted or deleted"
        if problem and not breaks:  # after a break every later link fails too; the first one is the news
            breaks.append({"seq": seq, "problem": problem})
        if is_seal and mac is not None and not problem:
            rep.acknowledged += [{**b, "sealed_by": seq} for b in breaks]
            breaks = []
        prev, expected_seq = run, seq + 1
        last = {"seq": seq, "mac": mac}
    rep.last = last
    rep.first_break = breaks[0] if breaks else None
    head = head if head is not None else (load_head(catalog_path) if use_saved_head else None)
    rep.head = head
    if head and head.get("seq"):
        row = con.execute("SELECT mac FROM audit_log WHERE seq = ?", (int(head["seq"]),)).fetchone()
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(head.get("saved_at", 0)))
        if row is None:
            top = last["seq"] if last else 0
            rep.head_problem = (f"the chain head saved at {when} names seq {head['seq']}, but the log "
                                f"{'ends at seq ' + str(top) if top < int(head['seq']) else 'has no such row'}: rows were deleted")
        elif row[0] != head.get("mac"):
            rep.head_problem = f"row {head['seq']} differs from the chain head saved at {when}"
    return rep


def seal(con: sqlite3.Connection, catalog_path: Path, actor: str, reason: str) -> dict:
    """The audited recovery: record what verification found, recreate missing triggers, and append
    a seal row that re-anchors the chain on the log as it is now; then save the head."""
    if not reason or not reason.strip():
        raise ValueError("a seal needs --reason: say what happened to the log")
    rep = verify(con, catalog_path)
    # a lost key: the old chain cannot be checked any more; the seal starts a new one
    key_created = load_key(catalog_path, create=False) is None
    recreated = []
    if rep.triggers_missing and _is_pg(con):
        from flywheel.catalog_pg import AUDIT_FUNCTION

        con.execute(AUDIT_FUNCTION)
    for name in rep.triggers_missing:
        con.execute(f"DROP TRIGGER IF EXISTS {name}" + (" ON audit_log" if _is_pg(con) else ""))
        con.execute(triggers(con)[name])
        recreated.append(name)
    detail = {"reason": reason.strip()[:2000], "problems": rep.problems(), "first_break": rep.first_break,
              "head_problem": rep.head_problem, "triggers_recreated": recreated, "new_key": key_created,
              "rows": rep.rows}
    # the chain continues from the running MAC over the rows as they are (not from a stored MAC)
    key = load_key(catalog_path, create=True)
    prev = genesis(key)
    for r in con.execute("SELECT seq, at, actor, action, target, detail_json FROM audit_log ORDER BY seq"):
        prev = link(key, prev, canonical(*r), seal=r[3] == SEAL_ACTION)
    top = _top_seq(con)
    seq, at, dj = top + 1, time.time(), json.dumps(detail)
    mac = link(key, prev, canonical(seq, at, actor, SEAL_ACTION, "audit_log", dj), seal=True)
    con.execute("INSERT INTO audit_log (seq, at, actor, action, target, detail_json, mac) VALUES (?,?,?,?,?,?,?)",
                (seq, at, actor, SEAL_ACTION, "audit_log", dj, mac))
    _set_top(con, seq)
    return {"seq": seq, "mac": mac, **detail}


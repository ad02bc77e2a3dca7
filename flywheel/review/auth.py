"""Users, roles, sessions, login throttling and API tokens for the review dashboard.

Passwords are stored as argon2id hashes (RFC 9106 low-memory profile).
Sessions live server-side in the catalog (`sessions`): the cookie carries a random id, the catalog
only its SHA-256, so a leaked catalog cannot be replayed as cookies and a user who is disabled
loses every session at once. Each session has its own CSRF token, checked on every
state-changing request. Failed logins are counted in the catalog, so the limit holds across
server processes and restarts.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass

ROLES = ("reviewer", "admin")
NAME_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
MIN_PASSWORD = 8
# argon2 hashes whatever it is given; a bound keeps one request from costing megabytes of hashing.
MAX_PASSWORD = 1024
SESSION_TTL = 12 * 3600.0
# Failed logins allowed per user name and per client address in the window.
LOGIN_WINDOW = 15 * 60.0
MAX_FAILS_PER_USER = 5
MAX_FAILS_PER_CLIENT = 30
TOKEN_PREFIX = "fwt_"


class AuthError(Exception):
    """Messages say what to do next."""


class RateLimited(AuthError):
    def __init__(self, retry_after: float):
        self.retry_after = max(1, int(retry_after))
        super().__init__(f"too many failed logins; wait {self.retry_after} s and try again")


@dataclass(frozen=True)
class Session:
    user: str
    role: str
    csrf: str
    expires_at: float

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def _hasher():
    """argon2id with RFC 9106's low-memory profile. `FLYWHEEL_ARGON2_PROFILE=test` picks the
    cheapest parameters, for test suites only (every hash records its own parameters, so
    verification works whichever profile made it)."""
    import os

    from argon2 import PasswordHasher, profiles

    if os.environ.get("FLYWHEEL_ARGON2_PROFILE") == "test":
        return PasswordHasher.from_parameters(profiles.CHEAPEST)
    return PasswordHasher.from_parameters(profiles.RFC_9106_LOW_MEMORY)


_DUMMY_HASH: str | None = None


def hash_password(password: str) -> str:
    return _hasher().hash(password)


def verify_password(stored_hash: str, password: str) -> bool:
    from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

    try:
        return _hasher().verify(stored_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def _sha(s: str) -> str:
    return hashlib.sha256(s.encode()).hexdigest()


# -- users -------------------------------------------------------------------------------------
def add_user(cat, name: str, role: str, password: str, actor: str = "cli") -> None:
    if not NAME_RE.match(name or ""):
        raise AuthError(f"user name {_shown(name)} is not allowed; use 1-64 letters, digits, '_', '.', '@' or '-'")
    if role not in ROLES:
        raise AuthError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    _check_password(password or "")
    h = hash_password(password)
    with cat.tx() as con:
        if con.execute("SELECT 1 FROM users WHERE name = ?", (name,)).fetchone():
            raise AuthError(f"user {name!r} exists already; pick another name or disable the old account on the admin page")
        con.execute("INSERT INTO users (name, role, password_hash, created_at) VALUES (?,?,?,?)", (name, role, h, time.time()))
        cat.audit(actor, "user.add", f"user:{name}", {"role": role}, con=con)


def _shown(name: str | None) -> str:
    """A name as an error message quotes it: never more than a line, whatever was sent."""
    name = name or ""
    return repr(name) if len(name) <= 80 else f"{name[:40]!r}... ({len(name)} characters)"


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise AuthError(f"the password needs at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise AuthError(f"the password may have at most {MAX_PASSWORD} characters")


def list_users(cat) -> list[dict]:
    return [dict(r) for r in cat.execute("SELECT name, role, created_at, disabled FROM users ORDER BY name")]


def set_user(cat, name: str, actor: str, *, role: str | None = None, disabled: bool | None = None,
             password: str | None = None) -> None:
    if role is not None and role not in ROLES:
        raise AuthError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    if password is not None:
        _check_password(password)
    with cat.tx() as con:
        row = con.execute("SELECT role, disabled FROM users WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise AuthError(f"no user {_shown(name)}; add one with `flywheel users add NAME --role reviewer`")
        if (role == "reviewer" or disabled) and row["role"] == "admin":
            admins = con.execute("SELECT COUNT(*) FROM users WHERE role = 'admin' AND disabled = 0").fetchone()[0]
            if admins <= 1 and not row["disabled"]:
                raise AuthError("this is the last active admin; make another user admin first")
        detail = {}
        if role is not None:
            con.execute("UPDATE users SET role = ? WHERE name = ?", (role, name))
            detail["role"] = role
        if disabled is not None:
            con.execute("UPDATE users SET disabled = ? WHERE name = ?", (int(disabled), name))
            detail["disabled"] = bool(disabled)
        if password is not None:
            con.execute("UPDATE users SET password_hash = ? WHERE name = ?", (hash_password(password), name))
            detail["password"] = "changed"
        if disabled or password is not None:
            con.execute("DELETE FROM sessions WHERE user = ?", (name,))
        cat.audit(actor, "user.update", f"user:{name}", detail, con=con)


# -- login -------------------------------------------------------------------------------------
def _check_rate(cat, name: str | None, client: str) -> None:
    since = time.time() - LOGIN_WINDOW
    keys = [(f"client:{client}", MAX_FAILS_PER_CLIENT)]
    if name is not None:
        keys.insert(0, (f"user:{name}", MAX_FAILS_PER_USER))
    for key, limit in keys:
        rows = cat.execute("SELECT COUNT(*) AS n, MIN(at) AS first FROM login_attempts WHERE key = ? AND at > ? AND ok = 0",
                           (key, since))
        if rows[0]["n"] >= limit:
            raise RateLimited(rows[0]["first"] + LOGIN_WINDOW - time.time())


def authenticate(cat, name: str, password: str, client: str = "unknown") -> str:
    """Check a password; returns the user name, raises `RateLimited` or `AuthError`."""
    global _DUMMY_HASH
    if not NAME_RE.match(name or "") or len(password or "") > MAX_PASSWORD:
        _refuse_malformed(cat, name or "", client)
    _check_rate(cat, name, client)
    rows = cat.execute("SELECT name, role, password_hash, disabled FROM users WHERE name = ?", (name,))
    if rows:
        ok = verify_password(rows[0]["password_hash"], password) and not rows[0]["disabled"]
    else:  # spend the same time as a real check, so response times do not reveal user names
        _DUMMY_HASH = _DUMMY_HASH or hash_password(secrets.token_hex(8))
        verify_password(_DUMMY_HASH, password)
        ok = False
    now = time.time()
    with cat.tx() as con:
        con.execute("DELETE FROM login_attempts WHERE at < ?", (now - 2 * LOGIN_WINDOW,))
        for key in (f"user:{name}", f"client:{client}"):
            con.execute("INSERT INTO login_attempts VALUES (?,?,?)", (key, now, int(ok)))
        if ok:  # a successful login clears this user's failures
            con.execute("DELETE FROM login_attempts WHERE key = ? AND ok = 0", (f"user:{name}",))
        cat.audit(name if ok else "-", "login.ok" if ok else "login.fail", f"user:{name}", {"client": client}, con=con)
    if not ok:
        raise AuthError("wrong user name or password (or the account is disabled); try again or ask an admin")
    return rows[0]["name"]


def _refuse_malformed(cat, name: str, client: str) -> None:
    """A name no account can have (or an oversized password) fails before anything is hashed or
    stored under it: the attempt counts against the client only, and the audit log records the
    name's length, never the name, so a megabyte typed into the form is not kept for good."""
    _check_rate(cat, None, client)
    now = time.time()
    with cat.tx() as con:
        con.execute("INSERT INTO login_attempts VALUES (?,?,?)", (f"client:{client}", now, 0))
        cat.audit("-", "login.fail", "user:(malformed)", {"client": client, "name_length": len(name)}, con=con)
    raise AuthError("wrong user name or password (or the account is disabled); try again or ask an admin")


def create_session(cat, user: str) -> tuple[str, Session]:
    """A new session for `user`; returns (cookie value, session)."""
    sid, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    now = time.time()
    role = cat.execute("SELECT role FROM users WHERE name = ?", (user,))[0]["role"]
    with cat.tx() as con:
        con.execute("DELETE FROM sessions WHERE expires_at < ?", (now,))
        con.execute("INSERT INTO sessions VALUES (?,?,?,?,?)", (_sha(sid), user, csrf, now, now + SESSION_TTL))
    return sid, Session(user, role, csrf, now + SESSION_TTL)


def get_session(cat, sid: str | None) -> Session | None:
    if not sid or len(sid) > 200:
        return None
    rows = cat.execute(
        "SELECT s.user, u.role, s.csrf, s.expires_at FROM sessions s JOIN users u ON u.name = s.user"
        " WHERE s.sid_hash = ? AND s.expires_at > ? AND u.disabled = 0", (_sha(sid), time.time()))
    return Session(*rows[0]) if rows else None


def end_session(cat, sid: str | None) -> None:
    if sid:
        with cat.tx() as con:
            con.execute("DELETE FROM sessions WHERE sid_hash = ?", (_sha(sid),))


def csrf_ok(session: Session | None, token: str | None) -> bool:
    return bool(session and token) and hmac.compare_digest(session.csrf.encode(), str(token).encode())


# -- API tokens --------------------------------------------------------------------------------
def create_token(cat, name: str, actor: str = "cli") -> str:
    """A new API token `fwt_<id>.<secret>`; only the secret's SHA-256 is stored (a 256-bit random
    secret needs no slow hash). The token is shown once."""
    token_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
    with cat.tx() as con:
        con.execute("INSERT INTO tokens (token_id, name, hash, created_at) VALUES (?,?,?,?)",
                    (token_id, name, _sha(secret), time.time()))
        cat.audit(actor, "token.create", f"token:{token_id}", {"name": name}, con=con)
    return f"{TOKEN_PREFIX}{token_id}.{secret}"


def verify_token(cat, token: str | None) -> str | None:
    """The token's name when it is valid and not revoked, else None."""
    if not token or not token.startswith(TOKEN_PREFIX) or "." not in token:
        return None
    token_id, _, secret = token[len(TOKEN_PREFIX):].partition(".")
    rows = cat.execute("SELECT name, hash FROM tokens WHERE token_id = ? AND revoked = 0", (token_id,))
    if rows and hmac.compare_digest(rows[0]["hash"], _sha(secret)):
        return rows[0]["name"]
    return None

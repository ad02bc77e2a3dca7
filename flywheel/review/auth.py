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
import math
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
TOKEN_PREFIX = "fwt_"


class AuthError(Exception):
    """Messages say what to do next."""


class RateLimited(AuthError):
    def __init__(self, retry_after: float, account: str | None = None):
        self.retry_after = max(1, math.ceil(retry_after))
        hint = (" (or log in from a browser you used before, or ask an admin to run"
                f" `flywheel users unlock {account}`)") if account else ""
        super().__init__(f"too many failed logins; wait {self.retry_after} s and try again{hint}")


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
# Throttling that an attacker cannot turn against the account's owner:
# - per account, an exponential back-off (capped) after ACCOUNT_FREE_FAILS failures; a correct
#   password from a *known device* (a browser that logged in as that user before, by its device
#   cookie, or one holding a live session of theirs) passes it and clears it, as does an admin
#   (`flywheel users unlock NAME`, or the admin page);
# - per client address (behind a trusted proxy, the forwarded one), a fixed window;
# - per known device, its own window, so a device cookie is no licence to guess.
ACCOUNT_FREE_FAILS = 5
BACKOFF_BASE = 30.0
BACKOFF_CAP = 15 * 60.0
ACCOUNT_WINDOW = 24 * 3600.0  # failures older than this no longer count towards the back-off
LOGIN_WINDOW = 15 * 60.0
MAX_FAILS_PER_CLIENT = 30
MAX_FAILS_PER_DEVICE = 10
MAX_FAILS_PER_USER = ACCOUNT_FREE_FAILS  # the failures that start the back-off (kept for callers)
DEVICE_TTL = 180 * 86400.0
MAX_DEVICES_PER_USER = 20


def account_backoff(n_fails: int) -> float:
    """Seconds an account waits after its latest failure, given its failures so far."""
    if n_fails < ACCOUNT_FREE_FAILS:
        return 0.0
    return min(BACKOFF_BASE * 2 ** min(n_fails - ACCOUNT_FREE_FAILS, 30), BACKOFF_CAP)


def _fails(cat, key: str, since: float):
    r = cat.execute("SELECT COUNT(*) AS n, MIN(at) AS first, MAX(at) AS last FROM login_attempts"
                    " WHERE key = ? AND at > ? AND ok = 0", (key, since))[0]
    return r["n"], r["first"], r["last"]


def _check_rate(cat, name: str | None, client: str, device_hash: str | None = None) -> None:
    now = time.time()
    if device_hash is not None:  # a known device: its own window instead of the account's and the client's
        n, first, _ = _fails(cat, f"device:{device_hash}", now - LOGIN_WINDOW)
        if n >= MAX_FAILS_PER_DEVICE:
            raise RateLimited(first + LOGIN_WINDOW - now)
        return
    if name is not None:
        n, _, last = _fails(cat, f"user:{name}", now - ACCOUNT_WINDOW)
        wait = account_backoff(n)
        if wait and last + wait > now:
            raise RateLimited(last + wait - now, account=name)
    n, first, _ = _fails(cat, f"client:{client}", now - LOGIN_WINDOW)
    if n >= MAX_FAILS_PER_CLIENT:
        raise RateLimited(first + LOGIN_WINDOW - now)


def known_device(cat, name: str, device: str | None) -> str | None:
    """The device cookie's hash when it was issued to `name` (and has not expired), else None."""
    if not device or len(device) > 200:
        return None
    h = _sha(device)
    rows = cat.execute("SELECT 1 FROM login_devices WHERE device_hash = ? AND user = ? AND created_at > ?",
                       (h, name, time.time() - DEVICE_TTL))
    return h if rows else None


def remember_device(cat, user: str, device: str | None = None) -> str:
    """The device cookie for a browser that just logged in as `user` (its old one if it had one
    for this user); the catalog keeps its SHA-256 and at most MAX_DEVICES_PER_USER per user."""
    now = time.time()
    h = known_device(cat, user, device)
    with cat.tx() as con:
        if h:
            con.execute("UPDATE login_devices SET last_used_at = ? WHERE device_hash = ?", (now, h))
            return device
        device = secrets.token_urlsafe(32)
        con.execute("INSERT INTO login_devices VALUES (?,?,?,?)", (_sha(device), user, now, now))
        con.execute("DELETE FROM login_devices WHERE user = ? AND device_hash NOT IN (SELECT device_hash FROM login_devices"
                    " WHERE user = ? ORDER BY last_used_at DESC LIMIT ?)", (user, user, MAX_DEVICES_PER_USER))
        con.execute("DELETE FROM login_devices WHERE created_at < ?", (now - DEVICE_TTL,))
    return device


def unlock_user(cat, name: str, actor: str = "cli") -> int:
    """Clear `name`'s failed log-ins (its back-off); returns how many were cleared. Audited."""
    if not NAME_RE.match(name or ""):
        raise AuthError(f"user name {_shown(name)} is not allowed; use 1-64 letters, digits, '_', '.', '@' or '-'")
    with cat.tx() as con:
        if con.execute("SELECT 1 FROM users WHERE name = ?", (name,)).fetchone() is None:
            raise AuthError(f"no user {name!r}; see `flywheel users list`")
        n = con.execute("DELETE FROM login_attempts WHERE key = ? AND ok = 0", (f"user:{name}",)).rowcount
        cat.audit(actor, "user.unlock", f"user:{name}", {"cleared": n}, con=con)
    return n


def authenticate(cat, name: str, password: str, client: str = "unknown", device: str | None = None,
                 session_user: str | None = None) -> str:
    """Check a password; returns the user name, raises `RateLimited` or `AuthError`. `device` is
    the browser's device cookie and `session_user` the user of a live session it holds: either,
    for this very user, makes the attempt a known device's."""
    global _DUMMY_HASH
    if not NAME_RE.match(name or "") or len(password or "") > MAX_PASSWORD:
        _refuse_malformed(cat, name or "", client)
    device_hash = known_device(cat, name, device)
    if device_hash is None and session_user == name:
        device_hash = "session:" + _sha(f"{name}:{client}")[:32]
    _check_rate(cat, name, client, device_hash)
    rows = cat.execute("SELECT name, role, password_hash, disabled FROM users WHERE name = ?", (name,))
    if rows:
        ok = verify_password(rows[0]["password_hash"], password) and not rows[0]["disabled"]
    else:  # spend the same time as a real check, so response times do not reveal user names
        _DUMMY_HASH = _DUMMY_HASH or hash_password(secrets.token_hex(8))
        verify_password(_DUMMY_HASH, password)
        ok = False
    now = time.time()
    with cat.tx() as con:
        con.execute("DELETE FROM login_attempts WHERE at < ? AND key NOT LIKE 'user:%'", (now - 2 * LOGIN_WINDOW,))
        con.execute("DELETE FROM login_attempts WHERE at < ?", (now - ACCOUNT_WINDOW,))
        keys = [f"user:{name}", f"client:{client}"] + ([f"device:{device_hash}"] if device_hash else [])
        for key in keys:
            con.execute("INSERT INTO login_attempts VALUES (?,?,?)", (key, now, int(ok)))
        if ok:  # a successful login clears this user's failures (the back-off) and the device's
            con.execute("DELETE FROM login_attempts WHERE key IN (?, ?) AND ok = 0", (f"user:{name}", f"device:{device_hash}"))
        cat.audit(name if ok else "-", "login.ok" if ok else "login.fail", f"user:{name}",
                  {"client": client, **({"known_device": True} if device_hash else {})}, con=con)
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
# What each scope lets a token do; a token's rights are its scopes intersected with what its
# user's role allows, so a reviewer's token can never act as an admin, and a token outlives
# neither its user's demotion nor their disabling.
SCOPES = ("signals:write", "review:read", "review:write", "admin")
ROLE_RIGHTS = {
    "reviewer": frozenset({"signals:write", "review:read", "review:write"}),
    "admin": frozenset(SCOPES),
    None: frozenset({"signals:write"}),  # a token with no user (made before tokens had users)
}
TOKEN_NAME_RE = re.compile(r"^[A-Za-z0-9_.@:-]{1,64}$")
DEFAULT_TOKEN_DAYS = 90
# last_used_at is written at most this often per token, so using a token costs no write per request.
LAST_USED_EVERY = 60.0


class TokenError(AuthError):
    """Why a token is refused (the API answers 401 with this message)."""


@dataclass(frozen=True)
class TokenInfo:
    token_id: str
    name: str
    user: str | None
    role: str | None
    scopes: frozenset
    rights: frozenset
    expires_at: float | None


def rights_of(role: str | None, scopes) -> frozenset:
    """A session's rights are its role's; a token's, its scopes within its user's role."""
    allowed = ROLE_RIGHTS.get(role, frozenset())
    return allowed if scopes is None else allowed & frozenset(scopes)


def parse_scopes(scopes) -> tuple[str, ...]:
    out = []
    for s in scopes or ():
        for part in str(s).replace(" ", ",").split(","):
            if part and part not in out:
                if part not in SCOPES:
                    raise AuthError(f"unknown scope {part!r}; scopes: {', '.join(SCOPES)}")
                out.append(part)
    if not out:
        raise AuthError(f"give a token at least one scope: {', '.join(SCOPES)}")
    return tuple(out)


def create_token(cat, name: str, actor: str = "cli", *, user: str | None = None, scopes=("signals:write",),
                 expires_in: float | None = DEFAULT_TOKEN_DAYS * 86400.0) -> str:
    """A new API token `fwt_<id>.<secret>` for `user` with `scopes`, expiring after `expires_in`
    seconds (None: never). Only the secret's SHA-256 is stored (a 256-bit random secret needs no
    slow hash); the token is returned once and cannot be shown again. A token for no user may
    only post signals."""
    if not TOKEN_NAME_RE.match(name or ""):
        raise AuthError(f"token name {_shown(name)} is not allowed; use 1-64 letters, digits, '_', '.', '@', ':' or '-'")
    wanted = parse_scopes(scopes)
    now = time.time()
    with cat.tx() as con:
        role = None
        if user is not None:
            row = con.execute("SELECT role, disabled FROM users WHERE name = ?", (user,)).fetchone()
            if row is None:
                raise AuthError(f"no user {_shown(user)}; a token belongs to a user: add one with `flywheel users add NAME`")
            if row["disabled"]:
                raise AuthError(f"user {user!r} is disabled; enable the account first")
            role = row["role"]
        beyond = [s for s in wanted if s not in ROLE_RIGHTS[role]]
        if beyond:
            raise AuthError(f"scope {', '.join(beyond)} is beyond what "
                            f"{'a token without a user' if user is None else f'the {role} {user!r}'} may do"
                            + ("; pass --user NAME" if user is None else ""))
        token_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
        expires_at = None if expires_in is None else now + float(expires_in)
        con.execute("INSERT INTO tokens (token_id, name, hash, created_at, user, scopes, expires_at) VALUES (?,?,?,?,?,?,?)",
                    (token_id, name, _sha(secret), now, user, ",".join(wanted), expires_at))
        cat.audit(actor, "token.create", f"token:{token_id}",
                  {"name": name, "user": user, "scopes": list(wanted), "expires_at": expires_at}, con=con)
    return f"{TOKEN_PREFIX}{token_id}.{secret}"


def verify_token(cat, token: str | None) -> TokenInfo:
    """The token's identity and rights; raises `TokenError` saying why it is refused (unknown,
    revoked, expired, or its user disabled). Revocation and expiry hold from the next request."""
    if not token or not token.startswith(TOKEN_PREFIX) or "." not in token or len(token) > 200:
        raise TokenError("invalid API token: expected `fwt_<id>.<secret>`; create one with `flywheel tokens create`")
    token_id, _, secret = token[len(TOKEN_PREFIX):].partition(".")
    rows = cat.execute(
        "SELECT t.name, t.hash, t.user, t.scopes, t.expires_at, t.revoked, t.last_used_at, u.role, u.disabled"
        " FROM tokens t LEFT JOIN users u ON u.name = t.user WHERE t.token_id = ?", (token_id,))
    if not rows or not hmac.compare_digest(rows[0]["hash"], _sha(secret)):
        raise TokenError("invalid or revoked API token; create one with `flywheel tokens create --name NAME --user USER`")
    r = rows[0]
    now = time.time()
    if r["revoked"]:
        raise TokenError(f"API token {token_id} was revoked; create a new one with `flywheel tokens create`")
    if r["expires_at"] is not None and r["expires_at"] <= now:
        raise TokenError(f"API token {token_id} expired at {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(r['expires_at']))};"
                         " create a new one with `flywheel tokens create`")
    if r["user"] is not None and (r["role"] is None or r["disabled"]):
        raise TokenError(f"API token {token_id} belongs to user {r['user']!r}, who is disabled or removed")
    if r["last_used_at"] is None or now - r["last_used_at"] > LAST_USED_EVERY:
        with cat.tx() as con:
            con.execute("UPDATE tokens SET last_used_at = ? WHERE token_id = ?", (now, token_id))
    scopes = frozenset(filter(None, (r["scopes"] or "").split(",")))
    return TokenInfo(token_id, r["name"], r["user"], r["role"], scopes, rights_of(r["role"], scopes), r["expires_at"])


def list_tokens(cat) -> list[dict]:
    return [dict(r) for r in cat.execute(
        "SELECT token_id, name, user, scopes, created_at, expires_at, last_used_at, revoked, revoked_at FROM tokens"
        " ORDER BY created_at")]


def revoke_token(cat, token_id: str, actor: str = "cli") -> None:
    """Revoke by id (the part after `fwt_` and before the dot); refused from the next request on."""
    token_id = (token_id or "").removeprefix(TOKEN_PREFIX).partition(".")[0]
    with cat.tx() as con:
        row = con.execute("SELECT revoked FROM tokens WHERE token_id = ?", (token_id,)).fetchone()
        if row is None:
            raise AuthError(f"no token {_shown(token_id)}; see `flywheel tokens list`")
        if row["revoked"]:
            raise AuthError(f"token {token_id} is already revoked")
        con.execute("UPDATE tokens SET revoked = 1, revoked_at = ? WHERE token_id = ?", (time.time(), token_id))
        cat.audit(actor, "token.revoke", f"token:{token_id}", {}, con=con)

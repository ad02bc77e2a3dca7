"""`flywheel users add` and `flywheel review recount` through the real command line."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from flywheel.catalog import Catalog
from flywheel.review import auth


def _flywheel(*args, stdin: str = ""):
    exe = Path(sys.executable).parent / "flywheel"  # the installed console script, as users run it
    exe = str(exe) if exe.exists() else shutil.which("flywheel")
    return subprocess.run([exe, *args], input=stdin, capture_output=True, text=True,
                          timeout=120)


def test_users_add_reads_password_from_stdin_and_refuses_bad_input():
    r = _flywheel("users", "add", "dora", "--role", "admin", "--password-stdin", stdin="dora-password-1\n")
    assert r.returncode == 0, r.stderr
    assert "added admin dora" in r.stdout
    cat = Catalog()
    assert [(u["name"], u["role"]) for u in auth.list_users(cat)] == [("dora", "admin")]
    assert auth.authenticate(cat, "dora", "dora-password-1") == "dora"
    stored = cat.execute("SELECT password_hash FROM users")[0]["password_hash"]
    assert stored.startswith("$argon2id$") and "dora-password-1" not in stored
    r = _flywheel("users", "add", "dora", "--password-stdin", stdin="another-password\n")
    assert r.returncode == 2 and "exists already" in r.stderr
    r = _flywheel("users", "add", "eve", "--role", "root", "--password-stdin", stdin="eve-password-1\n")
    assert r.returncode == 2 and "role must be one of reviewer, admin" in r.stderr
    with pytest.raises(auth.AuthError, match="at least 8 characters"):
        auth.add_user(cat, "eve", "reviewer", "short")

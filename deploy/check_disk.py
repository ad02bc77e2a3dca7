"""Refuse to start an install that cannot fit: the pinned set (torch's CUDA wheels among them) takes
about 8 GB in the virtualenv, and a full disk half-way through pip leaves a broken venv and an
`OSError: [Errno 28]` that does not say what to do. Usage: check_disk.py VENV GIB_NEEDED."""

import shutil
import sys
from pathlib import Path

venv, need_gib = Path(sys.argv[1]), float(sys.argv[2])
if (venv / ".installed").exists():
    sys.exit(0)
# an existing venv already holds part of the set: count what it holds as available
have = shutil.disk_usage(venv if venv.exists() else venv.resolve().parent).free
held = sum(f.stat().st_size for f in venv.rglob("*") if f.is_file() and not f.is_symlink()) if venv.exists() else 0
if have + held < need_gib * 2**30:
    sys.exit(
        f"error: {have / 2**30:.1f} GiB free on the disk holding {venv.resolve()}, the install needs about "
        f"{need_gib:.0f} GiB (torch and its CUDA libraries). Free space (old virtualenvs, /tmp, ~/.cache/pip) "
        f"or point VENV= at a larger disk, then rerun the same make command."
    )

"""`base.get` in a fresh process (a Ray worker): only the recipe's operator modules are imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

PROBE = """
import json, sys
from flywheel.filters import base
ops = [base.get(n).name for n in ("resolution", "entropy", "dedup", "token_length")]
out = {"ops": ops, "scanned": base._scanned, "numba": "numba" in sys.modules,
       "clip_module": "flywheel.filters.clip" in sys.modules}
try:
    base.get("no_such_operator")
except KeyError as e:
    out["unknown"] = str(e)
out["scanned_after_unknown"] = base._scanned
print(json.dumps(out))
"""


def test_a_worker_imports_only_the_operators_it_runs():
    r = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["ops"] == ["resolution", "entropy", "dedup", "token_length"]
    assert not out["scanned"]
    assert not out["clip_module"]
    assert not out["numba"]  # the dedup index (numba) is the barrier's, in the driver
    # an unknown name still scans everything and lists what exists
    assert "known operators:" in out["unknown"] and "entropy" in out["unknown"]
    assert out["scanned_after_unknown"]


def test_the_lazy_lookup_returns_the_registered_classes():
    from flywheel.filters import base

    for name, cls in base.registry().items():
        assert base.get(name) is cls


@pytest.mark.slow
def test_a_stateless_run_starts_ray_with_exactly_its_workers(tmp_path):
    probe = ("import json, ray\nfrom flywheel.curation import engine\nengine.ensure_ray(2, tasks_only=True)\n"
             "print(json.dumps(ray.cluster_resources().get('CPU')))\nray.shutdown()\n")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, env=env, timeout=300)
    assert json.loads(r.stdout.strip().splitlines()[-1]) == 2

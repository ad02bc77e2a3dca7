"""Curation on a real two-node Ray cluster (`ray start --head` + `ray start --address`, 1 CPU each),
joined by the real `flywheel curate` through RAY_ADDRESS:
- the second node dies mid-run (its raylet SIGKILLed while it runs a scoring task): the same run
  finishes, no rerun, with the rows and reasons of a clean run;
- the head dies mid-run: the run fails, and the same command on a new head resumes from the parts
  already written, again with the clean run's rows;
- a 100 MB object store under ~1 GB of input: the default run spills nothing; with --ship-inputs the
  driver's blocks overflow the store, Ray spills, and the rows equal the default run's.
All slow (several Ray and Prefect start-ups on a 2-core machine)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.dataset as pads
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import raydeploy  # noqa: E402
from raycluster import Cluster, session_members  # noqa: E402

pytestmark = pytest.mark.slow

def curate_argv(inp: Path, out: Path) -> list[str]:
    """The deploy files' entrypoint (deploy/kuberay/curate-job.yaml), on this test's paths, run by
    this interpreter (`flywheel` is `python -m flywheel`)."""
    return [sys.executable, "-m", *raydeploy.entrypoint(inp, out)]


def rows(out: Path):
    acc = pads.dataset(str(out / "accepted" / "data")).to_table(columns=["id", "source"]).to_pylist()
    rej = pads.dataset(str(out / "rejected" / "data")).to_table(columns=["id", "source", "reject_reason"]).to_pylist()
    return sorted((x["source"], x["id"]) for x in acc), sorted((x["source"], x["id"], x["reject_reason"]) for x in rej)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from flywheel.demos.sample_data import generate

    root = tmp_path_factory.mktemp("raycorpus") / "input"
    generate(root, n=400)  # a few hundred files: enough tasks that a kill lands mid-run
    return root


@pytest.fixture
def cluster():
    c = Cluster()
    try:
        yield c
    finally:
        c.close()  # every node's processes, even when the test failed


def open_parts(pid: int) -> list[str]:
    """The parts a worker is writing now: its open temp files `.part-NAME.parquet.XXXX.tmp`."""
    out = []
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return out
    for fd in fds:
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        name = Path(target).name
        if name.startswith(".part-") and name.endswith(".tmp"):
            out.append(name[1:].rsplit(".", 2)[0])
    return out


def _run(argv, env, timeout=600) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.perf_counter()
    p = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
    return p, time.perf_counter() - t0


def _wait_for(cond, proc, timeout=300, what=""):
    t = time.monotonic() + timeout
    while time.monotonic() < t and proc.poll() is None:
        v = cond()
        if v:
            return v
        time.sleep(0.1)
    pytest.fail(f"the run ended or timed out before {what}")


def _kill_node_when(cond, proc, node, task: str, what: str) -> tuple[str, list[int]]:
    """Wait for `cond` mid-run, SIGKILL `node` (its raylet and every process it runs) while `task`
    runs there, let the run finish; (the run's output, the pids of the tasks that were killed)."""
    try:
        _wait_for(cond, proc, what=what)
        busy = node.pids(task)
        assert busy and node.pids("raylet")
        node.kill()  # SIGKILL the raylet and everything the node runs: the node is gone
        out, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    return out, busy


def test_a_node_killed_mid_run_changes_nothing(corpus, cluster, tmp_path):
    cluster.start_head()
    node2 = cluster.add_node()
    clean_p, clean_s = _run(curate_argv(corpus, tmp_path / "clean"), cluster.driver_env(FLYWHEEL_HOME=str(tmp_path / "h1")))
    assert clean_p.returncode == 0, clean_p.stdout[-3000:] + clean_p.stderr[-3000:]
    clean = json.loads((tmp_path / "clean" / "stats.json").read_text())
    assert clean["ray"]["object_store"]["nodes"] == 2

    home = tmp_path / "h2"
    t0 = time.perf_counter()
    proc = subprocess.Popen(curate_argv(corpus, tmp_path / "killed"), env=cluster.driver_env(FLYWHEEL_HOME=str(home)),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    # mid-run, mid-task: a task on the second node has written a part (seen open as its temp
    # file, then renamed) and is still running, so its rerun writes that part again
    seen: dict[str, int] = {}

    def wrote_a_part_and_runs_on():
        busy = node2.pids("ray::_score_task")
        t = time.monotonic() + 0.2
        while busy and time.monotonic() < t:  # a part is open for milliseconds: look often
            for pid in busy:
                for name in open_parts(pid):
                    seen[name] = pid
        return [n for n, pid in seen.items()
                if list(home.glob(f"state/*/parts/{n}")) and pid in node2.pids("ray::_score_task")]

    out, busy = _kill_node_when(wrote_a_part_and_runs_on, proc, node2, "ray::_score_task",
                                "a task on the second node wrote a part")
    killed_s = time.perf_counter() - t0
    assert proc.returncode == 0, out[-4000:]
    killed = json.loads((tmp_path / "killed" / "stats.json").read_text())
    assert killed["timing"]["attempts"] == 1 and killed["timing"]["rows_resumed"] == 0  # no rerun
    assert rows(tmp_path / "killed") == rows(tmp_path / "clean")
    assert killed["reject_reason"] == clean["reject_reason"] and killed["accepted"] == clean["accepted"]
    # the lost task's parts were replaced by its rerun's, not added to: no row was seen twice
    assert killed["duplicate_rows_dropped_on_resume"] == 0
    print(f"\nnode kill: {clean['rows']} rows, accepted {clean['accepted']}, identical to the clean run; "
          f"clean {clean_s:.1f} s, with the kill {killed_s:.1f} s (killed {len(busy)} running task(s))")


def test_a_node_killed_while_it_scores_shipped_blocks(corpus, cluster, tmp_path):
    """--ship-inputs: the second node dies while it scores a block the driver shipped. Ray reruns
    the task from the block (owned by the driver, so it outlives the node), the rerun writes the part
    under the lost attempt's name: no rerun of the command, rows of a clean default run."""
    cluster.start_head()
    node2 = cluster.add_node()
    clean_p, clean_s = _run(curate_argv(corpus, tmp_path / "clean"), cluster.driver_env(FLYWHEEL_HOME=str(tmp_path / "h1")))
    assert clean_p.returncode == 0, clean_p.stdout[-3000:] + clean_p.stderr[-3000:]
    clean = json.loads((tmp_path / "clean" / "stats.json").read_text())
    home = tmp_path / "h2"
    t0 = time.perf_counter()
    proc = subprocess.Popen(curate_argv(corpus, tmp_path / "killed") + ["--ship-inputs"],
                            env=cluster.driver_env(FLYWHEEL_HOME=str(home)), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    out, busy = _kill_node_when(lambda: node2.pids("ray::_score_block_task") and list(home.glob("state/*/parts/part-*.parquet")),
                                proc, node2, "ray::_score_block_task", "the second node scored a shipped block")
    killed_s = time.perf_counter() - t0
    assert proc.returncode == 0, out[-4000:]
    assert "inputs: shipped (--ship-inputs)" in out
    killed = json.loads((tmp_path / "killed" / "stats.json").read_text())
    assert killed["ray"]["shipped"]["blocks"] >= 2
    assert killed["timing"]["attempts"] == 1 and killed["timing"]["rows_resumed"] == 0
    assert rows(tmp_path / "killed") == rows(tmp_path / "clean")
    assert killed["reject_reason"] == clean["reject_reason"] and killed["duplicate_rows_dropped_on_resume"] == 0
    print(f"\nnode kill, shipped inputs: {clean['rows']} rows, accepted {clean['accepted']}, identical to a clean "
          f"default run; clean {clean_s:.1f} s, shipped with the kill {killed_s:.1f} s (killed {len(busy)} running task(s), "
          f"{killed['ray']['shipped']['blocks']} blocks shipped)")


def test_losing_the_head_then_the_same_command_resumes(corpus, cluster, tmp_path):
    head = cluster.start_head()
    cluster.add_node()
    clean_p, clean_s = _run(curate_argv(corpus, tmp_path / "clean"), cluster.driver_env(FLYWHEEL_HOME=str(tmp_path / "h1")))
    assert clean_p.returncode == 0, clean_p.stdout[-3000:] + clean_p.stderr[-3000:]

    home = tmp_path / "h2"
    # the driver gives up on a lost GCS after 10 s instead of Ray's 60
    env = cluster.driver_env(FLYWHEEL_HOME=str(home), RAY_gcs_rpc_server_reconnect_timeout_s="10")
    t0 = time.perf_counter()
    # its own session: Ray ends a driver that lost the GCS at once, and the temporary Prefect server it
    # started outlives it (the CLI cannot stop it then); the session's leftovers are killed below
    with open(tmp_path / "driver.log", "wb") as log:
        proc = subprocess.Popen(curate_argv(corpus, tmp_path / "out"), env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        _wait_for(lambda: list(home.glob("state/*/parts/part-*.parquet")), proc, what="a part was written")
        head.kill(signal.SIGKILL)
        proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        leftovers = session_members(proc.pid)
        for pid in leftovers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    lost_s = time.perf_counter() - t0
    assert proc.returncode != 0
    assert not (tmp_path / "out" / "stats.json").exists()

    cluster.stop()  # what is left of the old cluster, then a new one, as an operator would
    cluster.start_head()
    cluster.add_node()
    again, again_s = _run(curate_argv(corpus, tmp_path / "out"), env)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    resumed = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert resumed["timing"]["rows_resumed"] >= 1
    assert rows(tmp_path / "out") == rows(tmp_path / "clean")
    print(f"\nhead kill: run failed after {lost_s:.1f} s ({len(leftovers)} orphaned process(es) of the driver killed); the same command resumed {resumed['timing']['rows_resumed']} "
          f"rows and finished in {again_s:.1f} s (clean {clean_s:.1f} s), rows identical")


def _gigabyte_of_photos(root: Path, total: int = 1 << 30) -> int:
    """~1 GB of large JPEGs, each with a caption: odd ones white noise (~1.2 MB, rejected as
    entropy:noise), even ones a smooth pattern of their own under light grain (kept), so runs are
    compared on rows with different outcomes."""
    import io

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (1024, 1024, 3), dtype=np.uint8)
    root.mkdir(parents=True)
    size = i = 0
    while size < total:
        img = np.roll(base, i * 7, axis=i % 2)  # a different image each time (no duplicates), no new noise per file
        if i % 2 == 0:
            cells = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
            img = (0.8 * np.asarray(cells.resize((1024, 1024), Image.BICUBIC)) + 0.2 * img).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, "JPEG", quality=95)
        (root / f"img{i:05d}.jpg").write_bytes(buf.getvalue())
        (root / f"img{i:05d}.txt").write_text(f"a noisy test photograph number {i}")
        size += buf.tell()
        i += 1
    return size


def test_a_100mb_object_store_under_a_gigabyte(cluster, tmp_path):
    """~1 GB of input, a 100 MB object store per node. Workers reading their own inputs (the
    default) put nothing large into the store: no spill. With --ship-inputs (an input only the
    driver can read) the driver puts 64 MiB blocks up to 2 x workers ahead, more than the store
    holds: Ray spills, the run completes, stats.json reports the spilled bytes, and the rows and
    reasons are those of the default run."""
    cluster.object_store_bytes = 100 * 1024 * 1024
    cluster.start_head()
    cluster.add_node()
    size = _gigabyte_of_photos(tmp_path / "input")
    runs = {}
    for mode, extra in (("read", []), ("shipped", ["--ship-inputs"])):
        out = tmp_path / f"out-{mode}"
        p, secs = _run(curate_argv(tmp_path / "input", out) + extra,
                       cluster.driver_env(FLYWHEEL_HOME=str(tmp_path / f"h-{mode}")), timeout=1800)
        assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
        stats = json.loads((out / "stats.json").read_text())
        assert stats["rows"] == len(list((tmp_path / "input").glob("*.jpg")))
        assert stats["ray"]["object_store"]["nodes"] == 2
        runs[mode] = (stats, secs, rows(out))
    (read, read_s, read_rows), (shipped, shipped_s, shipped_rows) = runs["read"], runs["shipped"]
    assert "inputs: shipped (--ship-inputs)" in p.stdout  # the plan says the mode is on
    assert read["ray"]["object_store"]["spilled_bytes"] == 0
    store = shipped["ray"]["object_store"]
    assert store["spilled_bytes"] > 0
    assert shipped["ray"]["shipped"]["bytes"] >= size * 0.9 and shipped["ray"]["shipped"]["window"] == 4
    assert shipped_rows == read_rows
    assert shipped["reject_reason"] == read["reject_reason"] and shipped["accepted"] == read["accepted"]
    print(f"\n100 MB object store: {size / 1e9:.2f} GB input, {read['rows']} rows; workers reading: {read_s:.1f} s, "
          f"object store {json.dumps(read['ray']['object_store'])}; --ship-inputs: {shipped_s:.1f} s, "
          f"object store {json.dumps(store)}, shipped {json.dumps(shipped['ray']['shipped'])}; "
          f"accepted {len(read_rows[0])} + rejected {len(read_rows[1])} rows identical (ids, sources, reasons)")

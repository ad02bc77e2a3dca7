"""End to end: `flywheel curate` through a real Prefect flow on a real local Ray runtime."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.dataset as pads
import pytest
from runs import kill_after_first_part

CPU_SKIP = ["nsfw", "rotation", "clip"]

EXPECT = {
    "broken/truncated.jpg": "broken_file:truncated",
    "broken/zero.jpg": "broken_file:zero_bytes",
    "broken/garbage.jpg": "broken_file:not_image",
    "broken/mislabelled.png": "broken_file:ext_mismatch",
    "broken/notes.pdf": "broken_file:not_image",
    "broken/bomb.png": "broken_file:bomb",
    "small/tiny.jpg": "resolution:too_small",
    "small/thumb.png": "resolution:too_small",
    "flat/solid.png": "entropy:flat",
    "flat/gradient.png": "entropy:near_blank",
    "flat/blank_scan.jpg": "entropy:near_blank",
    "flat/noise.png": "entropy:noise",
    "captions/no_caption.jpg": "token_length:missing",
    "captions/long_caption.jpg": "token_length:too_long",
}


def input_sources(root: Path) -> set[str]:
    out = set()
    for p in root.rglob("*"):
        if p.is_file() and p.suffix not in (".txt", ".json", ".tar"):
            out.add(p.relative_to(root).as_posix())
    out |= {"shards/shard-000000.tar!00000%d.jpg" % i for i in range(4)}
    return out


@pytest.fixture(scope="module")
def curated(demo_corpus, ray_local, prefect_harness, tmp_path_factory):
    from flywheel.cli.curate import run_curate

    out = tmp_path_factory.mktemp("run") / "out"
    home = out.parent / "home"
    old = os.environ.get("FLYWHEEL_HOME")
    os.environ["FLYWHEEL_HOME"] = str(home)
    stats = run_curate("stage1", str(demo_corpus), str(out), name="demo", workers=2, skip=CPU_SKIP, sets=[],
                       image_col="image", caption_col="caption", uncaptioned="reject")
    if old is not None:
        os.environ["FLYWHEEL_HOME"] = old
    yield out, stats, home


@pytest.fixture
def in_home(curated, monkeypatch):
    """Point this test's FLYWHEEL_HOME at the curated run's catalog."""
    monkeypatch.setenv("FLYWHEEL_HOME", str(curated[2]))
    return curated


def _rows(out: Path):
    acc = pads.dataset(str(out / "accepted" / "data")).to_table(columns=["source", "reject_reason"]).to_pylist()
    rej = pads.dataset(str(out / "rejected" / "data")).to_table(columns=["source", "reject_reason", "reject_details"]).to_pylist()
    return acc, rej


def test_every_input_row_exactly_once_with_exact_reasons(curated, demo_corpus):
    out, stats, _ = curated
    acc, rej = _rows(out)
    sources = [r["source"] for r in acc + rej]
    assert len(sources) == len(set(sources))
    assert set(sources) == input_sources(demo_corpus)
    reason = {r["source"]: r["reject_reason"] for r in rej}
    for src, want in EXPECT.items():
        assert reason.get(src) == want, (src, reason.get(src))
    kept = {r["source"] for r in acc}
    assert all(r["reject_reason"] is None for r in acc)
    # rendered document pages in many scripts and the screenshot are information, not noise
    for p in ("english", "vietnamese", "russian", "greek", "chinese", "japanese", "korean", "thai", "arabic"):
        assert f"pages/{p}.png" in kept, reason.get(f"pages/{p}.png")
    assert "pages/screenshot.png" in kept
    # exact and near copies: exactly one kept per family
    assert reason.get("copies/exact_copy.jpg", "").startswith("dedup:") or "copies/exact_copy.jpg" in kept
    # one family: the photo, its exact copy (same bytes), a re-encode and a resize; one survivor
    astro = [s for s in sources if ("astronaut" in s and "crop" not in s) or s == "copies/exact_copy.jpg"]
    assert sum(s in kept for s in astro) == 1, astro
    # EXIF-rotated photos are accepted (or are a near copy of their upright original)
    for s in ("rotated/retina_exif6.jpg", "rotated/camera_exif6.jpg", "rotated/brick_exif6.jpg"):
        assert s in kept or reason[s].startswith("dedup:"), reason.get(s)
    assert stats["ingest"] == {"ingest:orphan_sidecar": 1, "ingest:unsafe_tar_member": 1}


def test_stats_equal_group_by_over_parquet_and_catalog(in_home):
    out, stats, _ = in_home
    from flywheel.catalog import Catalog

    t = Catalog().query("SELECT coalesce(reject_reason, 'accepted') r, count(*) n FROM samples GROUP BY 1").to_pylist()
    grouped = {r["r"]: r["n"] for r in t}
    on_disk = json.loads((out / "stats.json").read_text())
    assert grouped == {**on_disk["reject_reason"], "accepted": on_disk["accepted"]}
    runs = Catalog().query("SELECT operator, rule, count FROM op_stats").to_pylist()
    assert sum(r["count"] for r in runs) == on_disk["rows"]
    ds = {r["name"]: r["version"] for r in Catalog().query("SELECT name, version FROM datasets WHERE status='ready'").to_pylist()}
    assert ds == {"demo": 1, "demo.rejected": 1}


def test_explain_names_operator_score_and_threshold(in_home):
    from flywheel.curation.explain import explain_rows

    text = "\n".join(explain_rows("flat/gradient.png"))
    assert "operator=entropy rule=near_blank" in text and "entropy__extent=" in text and "< min_extent=0.15" in text
    assert "(fails when entropy__extent < min_extent)" in text  # the rule, from the operator's declared thresholds
    text = "\n".join(explain_rows("captions/long_caption.jpg"))
    assert "token_length__tokens=" in text and "> max_tokens=512" in text
    dup = next(r for r in explain_rows("copies/exact_copy.jpg"))
    assert "dedup_of" in dup or "kept" in dup


def test_report_is_self_contained(curated):
    out, _, _ = curated
    html = (out / "report.html").read_text()
    assert "Funnel" in html and "entropy:near_blank" in html
    assert html.count("<svg") == 1 + len(json.loads((out / "stats.json").read_text())["histograms"])  # funnel + one per score
    assert "min_extent=0.15" in html  # the entropy histogram's threshold line is labelled
    assert "src='http" not in html and 'src="http' not in html
    hist = json.loads((out / "stats.json").read_text())["histograms"]  # threshold lines: the rules' parameters
    assert hist["entropy__extent"]["thresholds"] == {"min_extent": 0.15}
    assert hist["token_length__tokens"]["thresholds"] == {"min_tokens": 1, "max_tokens": 512}


def test_an_input_with_nothing_to_curate_is_refused_before_anything_starts(tmp_path):
    from flywheel.curation import pipeline

    empty = tmp_path / "in"
    empty.mkdir()
    (empty / "orphan.txt").write_text("a caption without its image")
    with pytest.raises(pipeline.CurateError, match=r"(?s)nothing to curate.*ingest:orphan_sidecar=1"):
        pipeline.prepare("stage1", str(empty), str(tmp_path / "out"), skip=["clip"])
    assert not (tmp_path / "out").exists()


def test_plan_checks_the_columns_operators_read(demo_corpus, tmp_path, monkeypatch):
    """aesthetic reads clip__embedding: without clip nothing writes it, and prepare says which
    operator, which column and what to do before anything runs. Columns, not values: the demo's
    rows without a caption pass the plan (clip reads `caption`)."""
    from flywheel.curation import pipeline

    monkeypatch.setenv("FLYWHEEL_HOME", str(tmp_path / "home"))
    with pytest.raises(pipeline.CurateError) as e:
        pipeline.prepare("stage4", str(demo_corpus), str(tmp_path / "o"), skip=["clip"], allow_missing=True)
    msg = str(e.value)
    assert "aesthetic" in msg and "'clip__embedding'" in msg and "--skip aesthetic" in msg and "add clip before aesthetic" in msg
    assert not (tmp_path / "home" / "state").exists()
    with pytest.raises(pipeline.CurateError, match="aesthetic.clip_model=clip-vit-l-14 but clip__embedding comes from clip.model=tiny"):
        pipeline.prepare("stage4", str(demo_corpus), str(tmp_path / "o"), sets={"clip": {"model": "tiny"}}, allow_missing=True)
    plan = pipeline.prepare("stage4", str(demo_corpus), str(tmp_path / "o"), allow_missing=True)
    assert [list(x)[0] for x in plan["recipe_resolved"]["operators"]][:2] == ["broken_file", "resolution"]


def test_rerun_on_accepted_reuses_scores_and_nests(in_home, tmp_path):
    """Stage 4 on stage 1's output: stored scores are reused; the new run only adds what stage 4 needs."""
    from flywheel.curation import pipeline

    out, _, _ = in_home
    stats = pipeline.curate("stage4", str(out / "accepted"), str(tmp_path / "s4"),
                            skip=CPU_SKIP + ["image_quality", "aesthetic"], workers=2)
    assert stats["rows"] == json.loads((out / "stats.json").read_text())["accepted"]
    assert stats["timing"]["operator_cpu_s"].get("entropy", 0.0) < 0.05  # reused, not recomputed
    before = {r["source"]: r["entropy__hist"] for r in pads.dataset(str(out / "accepted" / "data")).to_table(
        columns=["source", "entropy__hist"]).to_pylist()}
    after = pads.dataset(str(tmp_path / "s4" / "accepted" / "data")).to_table(columns=["source", "entropy__hist",
                                                                                    "compression_quality__quality"])
    assert after.num_rows and all(before[r["source"]] == r["entropy__hist"] for r in after.to_pylist())
    assert all(q is not None for q in after.column("compression_quality__quality").to_pylist())
    assert set(stats["reject_reason"]) <= {"resolution:too_small", "compression_quality:low_quality", "dedup:near", "dedup:exact"}


def _ray_address() -> str:
    import ray

    return ray.get_runtime_context().gcs_address


def _curate_cmd(inp: Path, out: Path) -> list[str]:
    code = (
        "import sys; from flywheel.curation import pipeline; "
        f"pipeline.curate('stage1', {str(inp)!r}, {str(out)!r}, skip={CPU_SKIP!r}, workers=2)"
    )
    return [sys.executable, "-c", code]


def test_kill_9_then_rerun_gives_the_clean_result(demo_corpus, ray_local, tmp_path, monkeypatch):
    from flywheel.curation import pipeline

    env = {**os.environ, "RAY_ADDRESS": _ray_address()}
    clean_home, kill_home = tmp_path / "clean", tmp_path / "killed"
    monkeypatch.setenv("FLYWHEEL_HOME", str(clean_home))
    clean = pipeline.curate("stage1", str(demo_corpus), str(tmp_path / "clean-out"), skip=CPU_SKIP, workers=2)

    env["FLYWHEEL_HOME"] = str(kill_home)
    proc = subprocess.Popen(_curate_cmd(demo_corpus, tmp_path / "killed-out"), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kill_after_first_part(proc, kill_home)
    assert not (tmp_path / "killed-out" / "accepted").exists()

    monkeypatch.setenv("FLYWHEEL_HOME", str(kill_home))
    resumed = pipeline.curate("stage1", str(demo_corpus), str(tmp_path / "killed-out"), skip=CPU_SKIP, workers=2)
    assert resumed["timing"]["rows_resumed"] >= 1
    assert resumed["timing"]["rows_scored_this_attempt"] + resumed["timing"]["rows_resumed"] >= resumed["rows"]
    assert resumed["duplicate_rows_dropped_on_resume"] == 0
    assert resumed["reject_reason"] == clean["reject_reason"] and resumed["accepted"] == clean["accepted"]

    def rows(out):
        t = pads.dataset(str(out / "accepted" / "data")).to_table(columns=["id", "source"]).to_pylist()
        r = pads.dataset(str(out / "rejected" / "data")).to_table(columns=["id", "source", "reject_reason"]).to_pylist()
        return sorted((x["source"], x["id"]) for x in t), sorted((x["source"], x["reject_reason"]) for x in r)

    assert rows(tmp_path / "killed-out") == rows(tmp_path / "clean-out")


def test_two_curations_and_a_writer_share_the_catalog(demo_corpus, ray_local, tmp_path, monkeypatch):
    """Two curation processes and a catalog writer loop at once: none fails on a locked catalog."""
    from flywheel.catalog import Catalog

    home = tmp_path / "shared-home"
    env = {**os.environ, "RAY_ADDRESS": _ray_address(), "FLYWHEEL_HOME": str(home)}
    monkeypatch.setenv("FLYWHEEL_HOME", str(home))
    cat = Catalog()
    small = tmp_path / "small"
    (small / "a").mkdir(parents=True)
    for p in list((demo_corpus / "photos").glob("*.jpg"))[:6]:
        (small / "a" / p.name).write_bytes(p.read_bytes())
    procs = [subprocess.Popen(_curate_cmd(inp, tmp_path / f"out{i}"), env=env, stderr=subprocess.PIPE)
             for i, inp in enumerate([small, demo_corpus / "pages"])]
    errors, writes = [], [0]
    stop = threading.Event()

    def writer():
        while not stop.is_set():
            try:
                cat.audit("test", "ping", "catalog", {"n": writes[0]})
                writes[0] += 1
            except Exception as e:  # noqa: BLE001 - the test fails on any error
                errors.append(e)
            time.sleep(0.01)

    th = threading.Thread(target=writer)
    th.start()
    try:
        rcs = [p.wait(timeout=400) for p in procs]
    finally:
        stop.set()
        th.join()
    assert rcs == [0, 0], [p.stderr.read().decode()[-2000:] for p in procs]
    assert not errors and writes[0] > 10
    runs = cat.execute("SELECT status FROM runs")
    assert [r["status"] for r in runs] == ["succeeded", "succeeded"]
    assert cat.execute("SELECT count(*) AS n FROM audit_log")[0]["n"] == writes[0]


def test_dedup_against_datasets_already_in_the_catalog(in_home, tmp_path):
    """A copy of a sample that an earlier run accepted is a duplicate of that dataset's row."""
    from flywheel.curation import pipeline

    out, _, _ = in_home
    acc = pads.dataset(str(out / "accepted" / "data")).to_table(columns=["source", "image"]).to_pylist()
    kept = next(r for r in acc if r["source"].startswith("photos/") and r["source"].endswith(".jpg"))
    new = tmp_path / "new"
    new.mkdir()
    (new / "again.jpg").write_bytes(kept["image"])
    (new / "again.txt").write_text("the same photo, found again elsewhere")
    stats = pipeline.curate("stage1", str(new), str(tmp_path / "o"), skip=CPU_SKIP, workers=1)
    assert stats["reject_reason"] == {"dedup:exact": 1}
    row = pads.dataset(str(tmp_path / "o" / "rejected" / "data")).to_table(columns=["dedup_of"]).to_pylist()[0]
    assert row["dedup_of"]["source"] == kept["source"]


def test_shipped_inputs_give_the_rows_of_workers_reading_them(demo_corpus, ray_local, tmp_path, monkeypatch):
    """--ship-inputs: the driver reads the blocks and puts them into Ray's object store, one task per
    block scores and writes it; the rows, reasons and ingest counts are those of a normal run (the
    100 MB store under 1 GB case, with its spill, is the slow cluster test)."""
    from flywheel.curation import pipeline

    monkeypatch.setenv("FLYWHEEL_HOME", str(tmp_path / "h1"))
    normal = pipeline.curate("stage1", str(demo_corpus), str(tmp_path / "normal"), skip=CPU_SKIP, workers=2)
    monkeypatch.setenv("FLYWHEEL_HOME", str(tmp_path / "h2"))
    shipped = pipeline.curate("stage1", str(demo_corpus), str(tmp_path / "shipped"), skip=CPU_SKIP, workers=2,
                              ship_inputs=True)

    def rows(out):
        t = pads.dataset(str(out / "accepted" / "data")).to_table(columns=["id", "source"]).to_pylist()
        r = pads.dataset(str(out / "rejected" / "data")).to_table(columns=["id", "source", "reject_reason"]).to_pylist()
        return sorted((x["source"], x["id"]) for x in t), sorted((x["source"], x["id"], x["reject_reason"]) for x in r)

    assert rows(tmp_path / "shipped") == rows(tmp_path / "normal")
    assert shipped["reject_reason"] == normal["reject_reason"] and shipped["ingest"] == normal["ingest"]
    sent = shipped["ray"]["shipped"]
    assert sent["window"] == 4 and sent["blocks"] >= 2 and sent["bytes"] > 0 and "shipped" not in normal["ray"]
    # model operators run in actors that read their own inputs: the mode says so before the run
    with pytest.raises(pipeline.CurateError, match="--ship-inputs.*nsfw"):
        pipeline.prepare("stage1", str(demo_corpus), str(tmp_path / "o"), skip=["rotation", "clip"], ship_inputs=True,
                         allow_missing=True)


def test_rows_a_rerun_task_wrote_twice_keep_their_first_copy_and_its_decisions(curated, demo_corpus, ray_local, tmp_path,
                                                                              monkeypatch):
    """A task rerun after its worker died can write a block a second time under another part name. The
    barrier sees both copies (the later is an exact duplicate of the earlier); finalize keeps the first
    copy with the first copy's own decisions, so the result is the clean run's, less nothing."""
    import shutil

    from flywheel.curation import pipeline
    from flywheel.lifecycle import Job

    _, clean, _ = curated
    monkeypatch.setenv("FLYWHEEL_HOME", str(tmp_path / "home"))
    plan = pipeline.prepare("stage1", str(demo_corpus), str(tmp_path / "out"), name="demo", workers=2, skip=CPU_SKIP)
    pipeline.score(plan["state"])
    parts = Job(plan["state"]).written_parts()
    shutil.copy(parts[0], parts[0].with_name("part-zzzz-rerun.parquet"))  # read after every other part
    again = pads.dataset(str(parts[0])).count_rows()
    pipeline.barrier(plan["state"])
    stats = pipeline.finalize(plan["state"])
    assert again > 0 and stats["duplicate_rows_dropped_on_resume"] == again
    assert stats["rows"] == clean["rows"] and stats["accepted"] == clean["accepted"]
    assert stats["reject_reason"] == clean["reject_reason"]

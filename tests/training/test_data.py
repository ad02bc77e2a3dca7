"""Training data from the dataset contract (training/data.py)."""

from __future__ import annotations

import collections

import pytest

from flywheel.training.data import Batches, Samples, buckets, load_image, nearest_bucket


def test_rejected_rows_are_skipped_and_columns_read(toy_dataset):
    s = Samples.load([toy_dataset])
    assert len(s) == 8 + 4  # the fixture's rejected row is not there
    assert set(s.column("task")) == {"t2i", "ti2i"}
    assert s.refs == ["toyset@v1"]


def test_buckets_keep_area_and_aspect():
    sizes = buckets(256)
    assert (256, 256) in sizes
    for w, h in sizes:
        assert w % 32 == 0 and h % 32 == 0
        assert 0.8 < w * h / 256**2 < 1.25
    assert nearest_bucket(1920, 1080, sizes)[0] > nearest_bucket(1920, 1080, sizes)[1]
    assert nearest_bucket(600, 1200, sizes) == min(sizes, key=lambda s: s[0] / s[1])


def test_batches_are_deterministic_bucketed_and_mixed_at_the_ratio(toy_dataset):
    s = Samples.load([toy_dataset])
    b = Batches(s, batch_size=2, seed=3, ti2i_ratio=0.25)
    again = Batches(s, batch_size=2, seed=3, ti2i_ratio=0.25)
    tasks = collections.Counter()
    for step in range(40):
        batch = b.get(step, 64)
        assert [x.__dict__ for x in batch] == [x.__dict__ for x in again.get(step, 64)]
        assert len({x.size for x in batch}) == 1 and len({x.task for x in batch}) == 1
        tasks[batch[0].task] += 1
        for x in batch:
            if x.task == "ti2i":
                assert x.caption_type == "instruction" and x.prompt.startswith("make the square") and x.n_sources == 1
    assert tasks["ti2i"] == 10  # exactly a quarter
    # every sample of a task is seen once per epoch
    n = b.batches_per_epoch("t2i", 64)
    seen = [x.id for step in range(200) for x in b.get(step, 64) if x.task == "t2i"][: 8]
    assert n == 4 and len(set(seen)) == 8  # 8 T2I rows, 2 sizes of 4 each, batches of 2


def test_ddp_ranks_get_disjoint_batches(toy_dataset):
    s = Samples.load([toy_dataset])
    b = Batches(s, batch_size=2, seed=0, ti2i_ratio=0.0)
    r0 = [x.id for x in b.get(0, 64, rank=0, world=2)]
    r1 = [x.id for x in b.get(0, 64, rank=1, world=2)]
    assert not set(r0) & set(r1)


def test_caption_types_follow_the_probabilities(toy_dataset):
    s = Samples.load([toy_dataset])
    b = Batches(s, batch_size=4, seed=0, ti2i_ratio=0.0, caption_probs={"general": 0.7, "structured": 0.3, "text": 0.5})
    seen = collections.Counter(x.caption_type for step in range(300) for x in b.get(step, 64))
    assert "text" not in seen  # the rows have no text caption: its share goes to the others
    assert seen["general"] / sum(seen.values()) == pytest.approx(0.7, abs=0.05)
    with pytest.raises(ValueError, match="unknown caption types"):
        Batches(s, 2, 0, 0.0, caption_probs={"genral": 1.0})


def test_images_reach_the_vae_as_rgba_in_range(toy_dataset):
    s = Samples.load([toy_dataset])
    x = load_image(s.image(0), (64, 32), 4)
    assert tuple(x.shape) == (4, 32, 64)
    assert float(x.min()) >= -1 and float(x.max()) <= 1
    assert float(x[3].min()) == 1.0  # alpha 1 where the source had none
    assert tuple(load_image(s.image(0), (32, 32), 3).shape) == (3, 32, 32)


def test_not_a_dataset_says_what_to_pass(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a dataset directory"):
        Samples.load([tmp_path])

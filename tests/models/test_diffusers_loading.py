"""diffusers models load through `from_pretrained` quietly: with `accelerate` installed (a dependency) it
takes the low-memory path instead of warning on every load."""

from __future__ import annotations

import logging


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_a_saved_vae_loads_without_the_accelerate_warning(tmp_path):
    import torch
    from diffusers.utils import logging as dlog

    from flywheel.models import qwen_image as qi

    torch.set_num_threads(1)
    vae = qi.build_vae("2.1", "tiny")
    vae.save_pretrained(tmp_path / "vae")
    # diffusers logs to its own handler (stderr as it was at import); listen on its logger itself
    logger, level, rec = dlog.get_logger("diffusers"), dlog.get_verbosity(), _Records()
    logger.addHandler(rec)
    dlog.set_verbosity_warning()
    try:
        back = type(vae).from_pretrained(tmp_path / "vae")
    finally:
        logger.removeHandler(rec)
        dlog.set_verbosity(level)
    assert not [m for m in rec.messages if "accelerate" in m], rec.messages
    for a, b in zip(vae.state_dict().values(), back.state_dict().values()):
        assert torch.equal(a, b)

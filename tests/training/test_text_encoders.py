"""Condition encoders (models/text_encoders.py): a tiny random Qwen3-VL saved with its processor and loaded
through the same path as the released model, and the offline MiniLM encoder."""

from __future__ import annotations

import pytest
import torch
from PIL import Image


@pytest.fixture(scope="module")
def qwen(tiny_qwen3vl):
    from flywheel.models.text_encoders import load_text_encoder

    return load_text_encoder(str(tiny_qwen3vl))


def _last_layer_before_norm(enc, prompt, image=None):
    """Independent reference: the last decoder layer's output captured by a hook, over the pipeline's template."""
    model, proc = enc.model, enc.processor
    sys_prompt = "Comprehend and analyze the provided prompt."
    vision = "<|vision_start|><|image_pad|><|vision_end|>" if image is not None else ""
    img_tag = "<image1>" if image is not None else ""
    text = (f"<|im_start|>system\n{sys_prompt}<|im_end|>\n<|im_start|>user\n{img_tag}{vision}{prompt}<|im_end|>\n"
            "<|im_start|>assistant\n")
    inputs = proc(text=[text], images=[image] if image is not None else None, return_tensors="pt")
    captured = {}
    layers = model.model.language_model.layers
    h = layers[-1].register_forward_hook(lambda m, a, out: captured.__setitem__("h", out[0] if isinstance(out, tuple) else out))
    with torch.no_grad():
        model(**inputs)
    h.remove()
    n_sys = len(proc.tokenizer(f"<|im_start|>system\n{sys_prompt}<|im_end|>\n")["input_ids"])
    return captured["h"][0][n_sys:], inputs["input_ids"][0][n_sys:]


def test_qwen3vl_takes_the_last_layer_before_the_final_norm_and_drops_the_system_prompt(qwen):
    e = qwen.encode("a red square left of a blue circle")
    ref, ids = _last_layer_before_norm(qwen, "a red square left of a blue circle")
    assert e.embeds.shape == (len(ids), qwen.dim)
    assert torch.allclose(e.embeds, ref.float(), atol=1e-5)
    normed = qwen.model.model.language_model.norm(ref)
    assert not torch.allclose(e.embeds, normed.float(), atol=1e-3)  # not the normalised output
    assert not e.img_slots.any()
    assert not torch.allclose(qwen.encode("a green triangle").embeds[-4:], e.embeds[-4:])


def test_qwen3vl_reserves_one_slot_per_32px_of_a_condition_image(qwen):
    img = Image.new("RGB", (96, 64), (200, 30, 30))
    e = qwen.encode("make the square yellow", [img])
    ref, ids = _last_layer_before_norm(qwen, "make the square yellow", img)
    assert int(e.img_slots.sum()) == (96 // 32) * (64 // 32)
    assert torch.equal(e.img_slots, ids == qwen.processor.tokenizer.convert_tokens_to_ids("<|image_pad|>"))
    assert torch.allclose(e.embeds, ref.float(), atol=1e-5)


def test_qwen3vl_round_trip_and_revision(tiny_qwen3vl, tmp_path):
    from builders import tiny_qwen3vl_encoder

    from flywheel.models.text_encoders import load_text_encoder

    a = load_text_encoder(str(tiny_qwen3vl))
    b = load_text_encoder(str(tiny_qwen3vl))
    assert a.revision == b.revision
    other = load_text_encoder(str(tiny_qwen3vl_encoder(tmp_path / "other", seed=1)))
    assert other.revision != a.revision  # other weights, other cache keys


def test_minilm_token_features_and_slots():
    from flywheel.models.text_encoders import load_text_encoder

    m = load_text_encoder("minilm")
    a, b = m.encode("a red square"), m.encode("a blue square")
    assert a.embeds.shape[1] == m.dim == 384 and a.embeds.shape[0] >= 3
    assert not torch.allclose(a.embeds, b.embeds)
    c = m.encode("a red square", [4, (64, 64)])
    assert int(c.img_slots.sum()) == 4 + 4 and c.embeds.shape[0] == a.embeds.shape[0] + 8
    assert torch.equal(c.embeds[8:], a.embeds) and bool(c.img_slots[:8].all())
    assert m.encode("").embeds.shape[0] >= 2  # the empty prompt (unconditional) still encodes

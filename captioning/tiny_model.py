"""A tiny random-weight Qwen3-VL with the real Qwen tokenizer, for tests and benchmarks.

Weights cannot be downloaded here, so tests build the model from `Qwen3VLConfig` at toy size and
save it with `save_pretrained`; the backend then loads it through the same `from_pretrained` path
as a real checkpoint. What is real: the 151,643-rank Qwen BPE (the `qwen-agent` wheel's
`qwen.tiktoken`, converted to a `tokenizers` BPE), Qwen's special tokens at Qwen's ids, the
Qwen3-VL chat template, the image processor (16 px patches, 2x2 merge) and the model code.
What is not: the weights, so generated text is random tokens.
"""

from __future__ import annotations

from pathlib import Path

# Qwen2/2.5/3-VL special tokens, in id order from 151643 (tokenizer_config.json added_tokens_decoder).
QWEN_SPECIAL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
)
QWEN_FIRST_SPECIAL_ID = 151643
QWEN_VOCAB_SIZE = 151936  # embedding rows of every Qwen3-VL checkpoint (padded past the tokens)

# Qwen3-VL Instruct's chat template, its non-tool part: ChatML turns, images as
# <|vision_start|><|image_pad|><|vision_end|> (the processor expands the pad to the image's tokens),
# no default system turn.
QWEN3_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}"
    "{% endif %}{% endfor %}{% endif %}"
    "{{ '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def qwen_tokenizer():
    """The Qwen2 fast tokenizer: real BPE ranks and special tokens at Qwen's ids."""
    from transformers import Qwen2TokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    from flywheel.models.tokenizer import QWEN_PAT, qwen_tiktoken_path

    from tokenizers import AddedToken

    backend = TikTokenConverter(vocab_file=str(qwen_tiktoken_path()), pattern=QWEN_PAT).converted()
    # Added in id order before the wrapper names eos/pad, so each lands at Qwen's id.
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in QWEN_SPECIAL_TOKENS])
    tok = Qwen2TokenizerFast(
        tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token=None,
        bos_token=None, clean_up_tokenization_spaces=False, model_max_length=262144,
    )
    for i, t in enumerate(QWEN_SPECIAL_TOKENS):
        got = tok.convert_tokens_to_ids(t)
        if got != QWEN_FIRST_SPECIAL_ID + i:
            raise RuntimeError(f"{t} got id {got}, Qwen's is {QWEN_FIRST_SPECIAL_ID + i}")
    tok.padding_side = "left"
    tok.chat_template = QWEN3_VL_CHAT_TEMPLATE
    return tok


def build_tiny_qwen3_vl(out_dir: str | Path, seed: int = 0, max_pixels: int = 128 * 128) -> Path:
    """Write a random tiny Qwen3-VL (config, safetensors, tokenizer, processor) into `out_dir`."""
    import torch
    from transformers import (Qwen2VLImageProcessor, Qwen3VLConfig, Qwen3VLForConditionalGeneration,
                              Qwen3VLProcessor)
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    cfg = Qwen3VLConfig(
        text_config=dict(
            vocab_size=QWEN_VOCAB_SIZE, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=4096,
            rope_parameters={"rope_type": "default", "rope_theta": 5_000_000.0, "mrope_section": [4, 2, 2],
                             "mrope_interleaved": True},
            tie_word_embeddings=False,  # tied, a random model only echoes its last input token
        ),
        vision_config=dict(
            depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64, patch_size=16,
            spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=256, deepstack_visual_indexes=[1],
        ),
        image_token_id=151655, video_token_id=151656, vision_start_token_id=151652, vision_end_token_id=151653,
        tie_word_embeddings=False,
    )
    model = Qwen3VLForConditionalGeneration(cfg).eval()
    with torch.no_grad():  # special tokens get zero output logits, so greedy decoding writes words
        model.lm_head.weight[QWEN_FIRST_SPECIAL_ID:].zero_()
    gen = model.generation_config
    gen.eos_token_id, gen.pad_token_id, gen.bos_token_id = [151645, 151643], 151643, 151643
    model.save_pretrained(out)

    tok = qwen_tokenizer()
    size = {"shortest_edge": 32 * 32, "longest_edge": max_pixels}
    img = Qwen2VLImageProcessor(patch_size=16, merge_size=2, temporal_patch_size=2, size=size,
                                    image_mean=[0.5] * 3, image_std=[0.5] * 3)
    vid = Qwen3VLVideoProcessor(patch_size=16, merge_size=2, temporal_patch_size=2,
                                size={"shortest_edge": 32 * 32, "longest_edge": max_pixels * 4})
    proc = Qwen3VLProcessor(image_processor=img, tokenizer=tok, video_processor=vid,
                            chat_template=QWEN3_VL_CHAT_TEMPLATE)
    proc.save_pretrained(out)
    return out

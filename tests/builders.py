"""Tiny random-weight models for tests, benchmarks and the golden capture: built from their configs at
toy size (no weights can be downloaded here) and saved in the layout the real ones have, so the code
under test loads them exactly as it loads released weights (`store.add` + the operator, or
`from_pretrained` on the saved folder). Test code only: the installed package does not ship them.

- `tiny_clip`, `tiny_aesthetic`: an open_clip model and a LAION-aesthetic head, each with a `model.yaml`
  card, so `flywheel models add NAME --from DIR` (or `store.add`) takes them.
- `tiny_qwen3vl_encoder`: a Qwen3-VL of a few hundred thousand parameters with a small trained BPE, for
  the trainer's text encoder (`flywheel.models.text_encoders.Qwen3VLEncoder`).
- `tiny_qwen3vl_captioner`: a Qwen3-VL with the real Qwen tokenizer (151,643 BPE ranks, special tokens at
  Qwen's ids, the Instruct chat template), for the captioning backends; generated text is random words.

Outside pytest, put this folder on `sys.path` first (benchmarks and tests/golden/capture.py do).
"""

from __future__ import annotations

import json
from pathlib import Path


# -- CLIP and the aesthetic head (model store) -----------------------------------------------------
def tiny_clip(dest: Path | str, seed: int = 0, embed_dim: int = 32, image_size: int = 32, revision: str = "tiny-random") -> Path:
    """A tiny random-weight open_clip model in the store's folder layout, with its `model.yaml`
    card (kind, revision, SHA-256 of each file) so `flywheel models add NAME --from DEST` takes it."""
    import open_clip
    import torch
    import yaml
    from safetensors.torch import save_file

    from flywheel.models.store import sha256

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    model_cfg = {
        "embed_dim": embed_dim,
        "vision_cfg": {"image_size": image_size, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
    }
    cfg = {"model_cfg": model_cfg, "preprocess_cfg": {"mean": [0.48145466, 0.4578275, 0.40821073],
                                                      "std": [0.26862954, 0.26130258, 0.27577711],
                                                      "interpolation": "bicubic", "resize_mode": "shortest"}}
    (dest / "open_clip_config.json").write_text(json.dumps(cfg, indent=1))
    torch.manual_seed(seed)
    model = open_clip.create_model(f"local-dir:{dest}")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(dest / "open_clip_model.safetensors"))
    files = {f: sha256(dest / f) for f in ("open_clip_config.json", "open_clip_model.safetensors")}
    (dest / "model.yaml").write_text(yaml.safe_dump({
        "kind": "open_clip", "source": {"local": "tests/builders.py:tiny_clip"}, "revision": revision,
        "files": files, "licence": "test model (random weights)", "operators": ["clip", "aesthetic"],
    }, sort_keys=False))
    return dest


def tiny_aesthetic(dest: Path | str, dim: int = 32, seed: int = 0, revision: str = "tiny-random") -> Path:
    """A random head in the published state-dict format, with a `model.yaml` card."""
    import torch
    import yaml

    from flywheel.models.aesthetic import HEAD_FILE, mlp
    from flywheel.models.store import sha256

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    net = mlp(dim)
    torch.save({f"layers.{k}": v for k, v in net.state_dict().items()}, dest / HEAD_FILE)
    (dest / "model.yaml").write_text(yaml.safe_dump({
        "kind": "torch_state_dict", "source": {"local": "tests/builders.py:tiny_aesthetic"}, "revision": revision,
        "files": {HEAD_FILE: sha256(dest / HEAD_FILE)}, "licence": "test model (random weights)", "operators": ["aesthetic"],
    }, sort_keys=False))
    return dest


# -- Qwen3-VL for the trainer's text encoder ----------------------------------------------------
_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
             "<|image_pad|>", "<|video_pad|>"]

# Qwen3-VL's chat template, reduced to what the encoder uses: roles, text and image items.
_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'image' -%}{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}"
    "{%- elif item['type'] == 'text' -%}{{- item['text'] -}}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)


def tiny_qwen3vl_encoder(dest: str | Path, hidden: int = 32, seed: int = 0) -> Path:
    """Write a random-weight Qwen3-VL (a few hundred thousand parameters) with a working processor:
    a byte-level BPE tokenizer trained on a few sentences, Qwen's special tokens and chat template, and
    the real Qwen2-VL image processor (patch 16, merge 2: one slot per 32x32 pixels). Loads through the
    same `from_pretrained` path as the released model."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (
        PreTrainedTokenizerFast,
        Qwen2VLImageProcessor,
        Qwen3VLConfig,
        Qwen3VLForConditionalGeneration,
        Qwen3VLProcessor,
    )
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = ["a red square left of a blue circle", "three green triangles on a white background",
              "Comprehend and analyze the provided prompt.", "system user assistant picture image",
              "make the square yellow", "the quick brown fox jumps over the lazy dog 0123456789"]
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=400, special_tokens=_SPECIALS,
                                                         initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   additional_special_tokens=_SPECIALS[1:])
    fast.chat_template = _CHAT_TEMPLATE
    ids = {t: fast.convert_tokens_to_ids(t) for t in _SPECIALS}
    image_proc = Qwen2VLImageProcessor(patch_size=16, merge_size=2, temporal_patch_size=2,
                                       min_pixels=32 * 32, max_pixels=1024 * 1024)
    video_proc = Qwen3VLVideoProcessor(patch_size=16, merge_size=2, temporal_patch_size=2)
    processor = Qwen3VLProcessor(image_processor=image_proc, tokenizer=fast, video_processor=video_proc,
                                 chat_template=_CHAT_TEMPLATE)
    cfg = Qwen3VLConfig(
        text_config=dict(vocab_size=len(fast), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=4096,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3],
                                          "mrope_interleaved": True}),
        vision_config=dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=16,
                           spatial_merge_size=2, temporal_patch_size=2, out_hidden_size=hidden,
                           num_position_embeddings=64, deepstack_visual_indexes=[0]),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
    )
    torch.manual_seed(seed)
    model = Qwen3VLForConditionalGeneration(cfg).eval()
    model.save_pretrained(dest)
    processor.save_pretrained(dest)
    return dest


# -- Qwen3-VL with the real Qwen tokenizer, for captioning ------------------------------------
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
    from tokenizers import AddedToken
    from transformers import Qwen2TokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    from flywheel.models.tokenizer import QWEN_PAT, qwen_tiktoken_path

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


def tiny_qwen3vl_captioner(out_dir: str | Path, seed: int = 0, max_pixels: int = 128 * 128) -> Path:
    """Write a random tiny Qwen3-VL (config, safetensors, tokenizer, processor) into `out_dir`."""
    import torch
    from transformers import Qwen2VLImageProcessor, Qwen3VLConfig, Qwen3VLForConditionalGeneration, Qwen3VLProcessor
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

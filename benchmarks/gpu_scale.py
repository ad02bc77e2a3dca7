"""Per-GPU figures that calibrate docs/scale.md: model operators (images/s) and captioning (tokens/s).

No weights can be downloaded, and none are needed for throughput: the networks are built from the
released models' shapes with random weights, so every matrix product is the real one.
- clip_l14 / clip_b32: the CLIP image towers of the `clip` and `aesthetic` operators (timm's
  `vit_large_patch14_clip_224` and `vit_base_patch32_clip_224`, the same shapes as open_clip's
  ViT-L-14 and ViT-B-32), bf16, batch --batch, images/s.
- qwen3vl_2b: a Qwen3-VL-2B-shaped captioner (text 2048 wide x 28 layers, vision 1024 x 24) in bf16
  through transformers' `generate`: prefill of --prompt tokens (a 1 MP image is 1,024 visual tokens
  plus the instruction) then --new tokens per caption, batch --gen-batch; and the vision tower alone on
  1024x1024 images. Plain `generate` with a static batch: a serving engine with continuous batching
  (vLLM, SGLang) does several times better, so these are floors.

    python benchmarks/gpu_scale.py --out scale.json          (on a GPU machine)
    python benchmarks/gpu_scale.py --device cpu --tiny        (a smoke run: shapes shrunk)
"""

from __future__ import annotations

import argparse
import json
import time
import traceback


def timed(fn, warmup: int, iters: int, sync) -> float:
    for _ in range(warmup):
        fn()
    sync()
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    sync()
    return (time.perf_counter() - t0) / iters


def vit(name: str, dev, batch: int, tiny: bool, sync) -> dict:
    import timm
    import torch

    kw = dict(depth=2, embed_dim=64, num_heads=2) if tiny else {}
    m = timm.create_model(name, pretrained=False, num_classes=0, **kw).to(dev).eval()
    x = torch.randn(batch, 3, 224, 224, device=dev)

    def run():
        with torch.inference_mode(), torch.autocast(dev.type, dtype=torch.bfloat16):
            m(x)
    sec = timed(run, 2, 3 if tiny else 10, sync)
    return {"model": name, "batch": batch, "images_per_s": batch / sec}


def qwen3vl(dev, tiny: bool, gen_batch: int, prompt: int, new: int, sync) -> dict:
    import torch
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    if tiny:
        text = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, head_dim=16, mrope_section=[4, 2, 2])
        vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                      num_position_embeddings=256, deepstack_visual_indexes=[1])
    else:  # Qwen3-VL-2B-Instruct's config.json
        text = dict(hidden_size=2048, intermediate_size=6144, num_hidden_layers=28, num_attention_heads=16,
                    num_key_value_heads=8, head_dim=128, mrope_section=[24, 20, 20])
        vision = dict(depth=24, hidden_size=1024, intermediate_size=4096, num_heads=16, out_hidden_size=2048,
                      num_position_embeddings=2304, deepstack_visual_indexes=[5, 11, 17])
    sec = text.pop("mrope_section")
    cfg = Qwen3VLConfig(
        text_config=dict(vocab_size=151936, max_position_embeddings=32768, tie_word_embeddings=True,
                         rope_parameters={"rope_type": "default", "rope_theta": 5_000_000.0, "mrope_section": sec,
                                          "mrope_interleaved": True}, **text),
        vision_config=dict(patch_size=16, spatial_merge_size=2, temporal_patch_size=2, **vision),
        image_token_id=151655, video_token_id=151656, vision_start_token_id=151652, vision_end_token_id=151653,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    with torch.device(dev):
        model = Qwen3VLForConditionalGeneration(cfg).to(torch.bfloat16).eval()
    params = sum(p.numel() for p in model.parameters())
    out = {"params_b": params / 1e9}

    ids = torch.randint(0, 150000, (gen_batch, prompt), device=dev)
    mask = torch.ones_like(ids)

    def gen():
        with torch.inference_mode():
            model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new, min_new_tokens=new,
                           do_sample=False, pad_token_id=151643)
    s = timed(gen, 1, 1 if tiny else 2, sync)
    out.update(gen_batch=gen_batch, prompt_tokens=prompt, new_tokens=new, sec_per_batch=s,
               new_tokens_per_s=gen_batch * new / s, captions_per_s=gen_batch / s)

    side = 64 if tiny else 1024  # 1024x1024 -> 64x64 patches of 16 -> 1,024 tokens after the 2x2 merge
    g = side // 16
    nb = 2 if tiny else 16
    pix = torch.randn(nb * g * g, 3 * 2 * 16 * 16, device=dev, dtype=torch.bfloat16)
    thw = torch.tensor([[1, g, g]] * nb, device=dev)

    def vis():
        with torch.inference_mode():
            model.model.visual(pix, grid_thw=thw)
    s = timed(vis, 1, 2 if tiny else 5, sync)
    out.update(vision_images=nb, vision_side=side, vision_images_per_s=nb / s)
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--gen-batch", type=int, default=32)
    ap.add_argument("--prompt", type=int, default=1100)
    ap.add_argument("--new", type=int, default=128)
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    if a.tiny:
        a.batch, a.gen_batch, a.prompt, a.new = 4, 2, 16, 4

    import torch

    dev = torch.device(a.device)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    rec = {"device": str(dev), "gpu": torch.cuda.get_device_name() if dev.type == "cuda" else None,
           "torch": torch.__version__}
    jobs = {
        "clip_l14": lambda: vit("vit_large_patch14_clip_224", dev, a.batch, a.tiny, sync),
        "clip_b32": lambda: vit("vit_base_patch32_clip_224", dev, a.batch, a.tiny, sync),
        "qwen3vl_2b": lambda: qwen3vl(dev, a.tiny, a.gen_batch, a.prompt, a.new, sync),
    }
    for k, fn in jobs.items():  # one failing measurement must not cost the others (device time is scarce)
        t0 = time.time()
        try:
            rec[k] = fn()
        except Exception as e:  # noqa: BLE001 - reported, and the run goes on
            traceback.print_exc()
            rec[k] = {"error": f"{type(e).__name__}: {e}"}
        rec[k]["run_s"] = round(time.time() - t0, 1)
        print(k, json.dumps(rec[k]), flush=True)
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    if a.out:
        with open(a.out, "w") as f:
            json.dump(rec, f, indent=2)
    return rec


if __name__ == "__main__":
    main()

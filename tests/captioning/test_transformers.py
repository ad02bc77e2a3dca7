"""The transformers backend on a tiny random Qwen3-VL with the real Qwen tokenizer and template,
saved with save_pretrained and loaded through the backend's own from_pretrained path."""

from __future__ import annotations

import json

import pytest
from cap_data import png, sample_table

from flywheel.captioning.annotate import Captioner, token_column
from flywheel.captioning.backends import Backend, Request, TransformersBackend
from flywheel.captioning.types import Prompt, build_prompt
from flywheel.datasets import CAPTION_TYPES


def test_tokenizer_has_qwen_vocab_and_special_ids(tiny_qwen):
    from transformers import AutoProcessor

    from flywheel.models.tokenizer import qwen_encoding

    proc = AutoProcessor.from_pretrained(tiny_qwen)
    tok = proc.tokenizer
    ids = {t: tok.convert_tokens_to_ids(t) for t in
           ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>")}
    assert ids == {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645,
                   "<|vision_start|>": 151652, "<|vision_end|>": 151653, "<|image_pad|>": 151655}
    text = "A red card on a table, 你好, Привет 123"
    assert tok(text, add_special_tokens=False)["input_ids"] == qwen_encoding().encode_ordinary(text)
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe."}]}]
    prompt = proc.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    assert prompt == "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Describe.<|im_end|>\n<|im_start|>assistant\n"


def test_batched_left_padded_generation_matches_one_by_one(tiny_qwen):
    be = TransformersBackend(str(tiny_qwen), max_new_tokens=6, batch_size=8)
    be.setup()
    reqs = [Request([png("red", (96, 64))], Prompt("general", "sys", "Describe this image.")),
            Request([png("blue", (64, 160))], Prompt("text", "sys", "Read every line of text in this image, please.")),
            Request([png("white"), png("green")], Prompt("general", "", "What changed?"), {"task": "ti2i"})]
    batched = be.generate(reqs)
    single = [be.generate([r])[0] for r in reqs]
    assert all(isinstance(t, str) and t for t in batched), batched
    assert batched == single
    assert be.revision.startswith("local-") and be.revision == TransformersBackend(str(tiny_qwen)).revision


def test_missing_model_says_what_to_do(tmp_path):
    with pytest.raises(RuntimeError, match="local model directory"):
        TransformersBackend(str(tmp_path / "nope")).setup()


def test_captioner_end_to_end_keeps_rows_records_errors_and_caches(tiny_qwen, tmp_path):
    table = sample_table()
    cap = Captioner(backend="transformers", backend_kwargs={"model": str(tiny_qwen), "max_new_tokens": 8},
                    cache_path=str(tmp_path / "c.db"))
    out = cap(table)
    assert out.num_rows == table.num_rows and out.column("id").to_pylist() == table.column("id").to_pylist()
    # the random model writes no JSON: structured is retried once, then recorded as invalid; the others stay
    assert cap.stats["retried"] == table.num_rows
    for caps, errs in zip(out.column("captions").to_pylist(), out.column("caption_errors").to_pylist()):
        assert errs == ["structured:invalid"]
        assert caps["structured"] is None and all(caps[t] for t in ("general", "text", "knowledge"))
    assert "reject_reason" not in out.column_names
    assert set(out.column("caption_backend").to_pylist()) == {"transformers"}
    hashes = out.column("caption_prompt_hash").to_pylist()
    assert hashes[0]["knowledge"] != hashes[1]["knowledge"]  # metadata is in the knowledge prompt
    for t in CAPTION_TYPES:
        assert token_column(t) in out.column_names
    assert out.column(token_column("general")).to_pylist()[0] > 0
    assert out.column("instruction_clean").to_pylist()[3] == "Make it green."
    generated = cap.stats["generated"]
    again = cap(table)
    assert cap.stats["generated"] == generated and cap.stats["hits"] == 4 * table.num_rows
    assert again.column("captions").to_pylist() == out.column("captions").to_pylist()


class ScriptedBackend(Backend):
    """Replies from a script per prompt type, to drive the repair and retry paths exactly."""

    name = "scripted"

    def __init__(self, replies: dict[str, list[str]]):
        self.replies = {k: list(v) for k, v in replies.items()}
        self.calls: list[str] = []

    @property
    def revision(self) -> str:
        return "script-1"

    def generate(self, requests):
        out = []
        for r in requests:
            key = "retry" if "previous answer" in r.prompt.user.lower() else r.prompt.type
            self.calls.append(key)
            out.append(self.replies[key].pop(0) if self.replies.get(key) else RuntimeError("script ran out"))
        return out


def _captioner_with(backend, tmp_path):
    c = Captioner(types=["general", "structured"], backend="offline", cache_path=str(tmp_path / "c.db"))
    c.backend, c.cache = backend, __import__("flywheel.captioning.cache", fromlist=["CaptionCache"]).CaptionCache(tmp_path / "c.db")
    return c


def test_structured_repair_then_retry_then_invalid(tmp_path):
    good = {"summary": "a card", "entities": [{"name": "card"}]}
    be = ScriptedBackend({
        "general": ["A red card.", "A blue card.", "A blue card.", ""],
        # row 0: fenced JSON with a trailing comma (repaired, no retry); row 1: prose, fixed by the retry;
        # row 2: prose twice (invalid); row 3: a transport failure is raised below
        "structured": ["```json\n" + json.dumps(good)[:-1] + ",}\n```", "I see a card.", "nothing"],
        "retry": [json.dumps(good), "still no json"],
    })
    c = _captioner_with(be, tmp_path)
    out = c(sample_table())
    caps, errs = out.column("captions").to_pylist(), out.column("caption_errors").to_pylist()
    assert json.loads(caps[0]["structured"])["summary"] == "a card" and errs[0] == []
    assert json.loads(caps[1]["structured"])["entities"][0]["name"] == "card" and errs[1] == []
    assert caps[2]["structured"] is None and errs[2] == ["structured:invalid"] and caps[2]["general"] == "A blue card."
    assert errs[3] == ["general:empty", "structured:error:RuntimeError"]
    assert be.calls.count("retry") == 2
    # transport errors are not cached: the rerun asks again for row 3's structured caption only
    be.replies = {"structured": [json.dumps(good)]}
    be.calls = []
    out2 = c(sample_table())
    assert be.calls == ["structured"]
    assert out2.column("caption_errors").to_pylist()[3] == ["general:empty"]


def test_prompt_for_edit_pairs_sends_source_then_target(tiny_qwen):
    row = sample_table().to_pylist()[3]
    assert Captioner._images(row) == [*row["source_images"], row["image"]]
    assert build_prompt("general", row).n_images == 2

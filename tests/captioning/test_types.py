"""Caption types: prompts, the structured schema, JSON repair, instruction cleaning."""

from __future__ import annotations

import json

import pytest

from flywheel.captioning.types import (
    CaptionOptions,
    StructuredCaption,
    build_prompt,
    clean_instruction,
    parse_structured,
    postprocess,
    repair_json,
)

VALID = {"summary": "a cat on a mat", "entities": [{"name": "cat", "attributes": ["black"]}],
         "relations": [{"subject": "cat", "predicate": "on", "object": "mat"}], "text_regions": [], "style": "photo"}


@pytest.mark.parametrize("reply", [
    json.dumps(VALID),
    "Sure! Here is the JSON:\n```json\n" + json.dumps(VALID) + "\n```\nHope it helps.",
    json.dumps(VALID)[:-1] + ",}",  # trailing comma
    json.dumps(VALID).replace('"photo"}', '"photo"'),  # truncated: last brace missing
    '{"summary": "a cat on a mat", "entities": [{"name": "cat", "attributes": ["black"',  # cut mid-list
    "{'summary': 'a cat on a mat', 'entities': [], 'style': None}",  # Python literal
])
def test_malformed_structured_replies_are_repaired(reply):
    out, problem = parse_structured(reply)
    assert problem is None, problem
    cap = StructuredCaption.model_validate_json(out)
    assert cap.summary == "a cat on a mat"


@pytest.mark.parametrize("reply", ["no json here", "{\"entities\": []}", "{\"summary\": \"\"}", "[1, 2]", ""])
def test_unrepairable_or_invalid_structured_replies_fail(reply):
    out, problem = parse_structured(reply)
    assert out is None and problem
    assert postprocess("structured", reply)[1] in ("invalid", "empty")


def test_repair_json_closes_open_strings_and_brackets():
    assert repair_json('{"a": [1, {"b": "x') == {"a": [1, {"b": "x"}]}


def test_postprocess_general_and_empty():
    assert postprocess("general", "  A red card. ") == ("A red card.", None)
    assert postprocess("text", "   ") == (None, "empty")


def test_prompts_carry_options_metadata_and_edit_instruction():
    row = {"id": "x", "task": "t2i", "caption": "old caption", "meta": json.dumps({"title": "Eiffel Tower at night"})}
    k = build_prompt("knowledge", row)
    assert "Eiffel Tower at night" in k.user and "old caption" in k.user and "never invent" in k.user
    short = build_prompt("general", row, CaptionOptions(length="short", language="zh"))
    long = build_prompt("general", row, CaptionOptions(length="long"))
    assert "one sentence" in short.user and "用中文" in short.user and short.hash() != long.hash()
    assert build_prompt("general", row).hash() != build_prompt("general", row).hash({"temperature": 0.7})
    pair = {"task": "ti2i", "instruction": "add a hat", "source_images": [b"a"]}
    p = build_prompt("general", pair)
    assert p.n_images == 2 and "add a hat" in p.user
    assert "JSON" in build_prompt("structured", row).user
    with pytest.raises(ValueError):
        build_prompt("poem", row)


def test_clean_instruction():
    assert clean_instruction("  please   make the sky purple, thanks ") == "Make the sky purple."
    assert clean_instruction('"Add a red hat!"') == "Add a red hat!"
    assert clean_instruction("   ") is None and clean_instruction(None) is None

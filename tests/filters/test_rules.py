"""Thresholds are data: each `Rule` (reason, column, comparison, parameter) is declared once, and
`reject`, the report's threshold lines, calibration and `flywheel explain` are derived from it."""

from __future__ import annotations

from typing import ClassVar

import pyarrow as pa
import pytest
from pydantic import Field

from flywheel.filters import base
from flywheel.filters.base import Operator, Params, Rule


class _P(Params):
    max_x: float = Field(1.0)
    strict: bool = False


class _Op(Operator):
    """Not registered: a contract exercised on its own."""

    name: ClassVar[str] = "toy"
    Params = _P
    writes = ("toy__x", "toy__y")
    rules = (
        Rule("big", "toy__x", ">", "max_x"),
        Rule("absent", "toy__y", "is_null", detail="no y for x={toy__x}", context=("toy__x",)),
        Rule("odd", "toy__y", "==", value="odd", when="strict"),
    )


def test_reject_is_derived_from_the_rules_in_order():
    t = pa.table({"toy__x": [0.5, 2.0, None, 3.0], "toy__y": ["even", None, "odd", "odd"]})
    got = [[(f.rule, f.detail) for f in row] for row in _Op().reject(t)]
    assert got == [[], [("big", "toy__x=2 > max_x=1"), ("absent", "no y for x=2")], [], [("big", "toy__x=3 > max_x=1")]]
    strict = [[f.rule for f in row] for row in _Op({"strict": True, "max_x": 5}).reject(t)]
    assert strict == [[], ["absent"], ["odd"], ["odd"]]  # a null score never fails a comparison


def test_every_registered_operator_rejects_through_its_rules_alone():
    for name, op in base.registry().items():
        assert op.reject is Operator.reject, f"{name} restates its thresholds in its own reject"
        assert all(isinstance(r, Rule) for r in op.rules) and op.rules, name
        for r in op.rules:
            assert r.column in op.writes + tuple(getattr(op, "decided", ())), (name, r)


def test_a_rule_naming_an_unknown_param_fails_at_registration():
    class Bad(_Op):
        name: ClassVar[str] = "toy_bad"
        writes = ("toy_bad__x",)
        rules = (Rule("big", "toy_bad__x", ">", "max_z"),)

    with pytest.raises(ValueError, match="max_z"):
        base.register(Bad)


def test_report_threshold_lines_come_from_the_rules():
    from flywheel.curation.report import threshold_lines
    from flywheel.filters.entropy import Entropy
    from flywheel.filters.resolution import Resolution
    from flywheel.filters.token_length import TokenLength

    assert threshold_lines(Entropy({"min_extent": 0.3}), "entropy__extent") == {"min_extent": 0.3}
    assert threshold_lines(TokenLength(), "token_length__tokens") == {"min_tokens": 1, "max_tokens": 512}
    assert threshold_lines(Resolution({"min_bucket": 512}), "resolution__bucket") == {"min_bucket": 512}
    assert threshold_lines(Entropy(), "entropy__nope") == {}


def test_explain_and_calibrate_read_the_same_rules():
    from flywheel.cli.models import calibrated_rules
    from flywheel.curation.explain import rule_text
    from flywheel.filters.image_quality import ImageQuality
    from flywheel.filters.nsfw import Nsfw

    assert rule_text("entropy:flat") == "entropy__hist < min_entropy"
    assert rule_text("resolution:too_small:source") == "resolution__bucket < min_bucket"
    assert rule_text("broken_file:truncated") == "broken_file__error == 'truncated'"
    assert rule_text("token_length:missing") == "token_length__tokens is null (when reject_missing)"
    assert rule_text("nsfw:error:RuntimeError") is None
    assert calibrated_rules(Nsfw) == [("max_prob", "nsfw__prob", "max")]
    assert calibrated_rules(ImageQuality) == [("max_blocking", "image_quality__blocking", "max"),
                                              ("min_sharpness", "image_quality__sharpness", "min"),
                                              ("max_noise", "image_quality__noise", "max")]

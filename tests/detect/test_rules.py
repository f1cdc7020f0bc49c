"""Every rule proves itself: its examples match with its id, its negative examples do not."""

from __future__ import annotations

import pytest

from hoopctl.detect import Detector, Rule

DET = Detector.default()


def _cases(kind: str) -> list[tuple[Rule, object]]:
    return [(r, ex) for r in DET.rules for ex in getattr(r, kind)]


def _scan(example: object) -> list:
    if isinstance(example, dict):
        return DET.scan(example["text"].encode(), example["path"])
    return DET.scan(str(example).encode(), "example.txt")


def _id(case: tuple[Rule, object]) -> str:
    return case[0].id


@pytest.mark.parametrize("case", _cases("examples"), ids=_id)
def test_example_matches_its_rule(case: tuple[Rule, object]) -> None:
    rule, example = case
    assert rule.id in {m.rule_id for m in _scan(example)}


@pytest.mark.parametrize("case", _cases("negative_examples"), ids=_id)
def test_negative_example_does_not_match_its_rule(case: tuple[Rule, object]) -> None:
    rule, example = case
    assert rule.id not in {m.rule_id for m in _scan(example)}


def test_every_rule_has_proof() -> None:
    for rule in DET.rules:
        assert rule.examples, f"{rule.id} has no examples"
        assert rule.negative_examples, f"{rule.id} has no negative examples"

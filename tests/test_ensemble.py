"""Weighted ensembles: aggregation, verdicts, failure policies, contract enforcement."""

from __future__ import annotations

from typing import ClassVar

import pytest
from PIL import Image

import milr
from milr import ContractViolation, Critic, CriticResult, Ensemble, EnsembleError, evaluate


class Fixed(Critic):
    name: ClassVar[str] = "fixed"
    description: ClassVar[str] = "constant score"

    def __init__(self, value: float, passed: bool | None = None):
        self.value, self.passed = value, passed

    def score_batch(self, images, prompts, metadata):
        return [CriticResult(self.value, self.passed, {"value": self.value}) for _ in images]


class Boom(Critic):
    name: ClassVar[str] = "boom"
    description: ClassVar[str] = "always raises"

    def score_batch(self, images, prompts, metadata):
        raise RuntimeError("judge unreachable")


class Bad(Critic):
    name: ClassVar[str] = "bad"
    description: ClassVar[str] = "breaks the contract"

    def __init__(self, mode):
        self.mode = mode

    def score_batch(self, images, prompts, metadata):
        if self.mode == "nan":
            return [CriticResult(float("nan")) for _ in images]
        if self.mode == "range":
            return [CriticResult(1.5) for _ in images]
        if self.mode == "short":
            return [CriticResult(0.5)]
        return [CriticResult(0.5, None, {"x": object()}) for _ in images]


IMAGES = [Image.new("RGB", (4, 4)), Image.new("RGB", (4, 4), (255, 0, 0))]
PROMPTS = ["a", "b"]


def test_weighted_mean_and_breakdown():
    ens = Ensemble([(Fixed(1.0, True), 3.0), (Fixed(0.2, None), 1.0)])
    res = evaluate(ens, IMAGES, PROMPTS)
    assert res[0].score == pytest.approx((3 * 1.0 + 0.2) / 4)
    assert res[0].passed is True  # only the member with a verdict counts
    critics = res[0].details["critics"]
    assert critics["fixed"] == {
        "score": 1.0,
        "weight": 3.0,
        "passed": True,
        "details": {"value": 1.0},
    }
    assert critics["fixed#2"]["weight"] == 1.0  # duplicate names get distinct labels


def test_verdict_false_when_any_member_fails_and_none_without_verdicts():
    assert (
        evaluate(Ensemble([(Fixed(1, True), 1), (Fixed(1, False), 1)]), IMAGES, PROMPTS)[0].passed
        is False
    )
    assert evaluate(Ensemble([(Fixed(1), 1), (Fixed(0), 1)]), IMAGES, PROMPTS)[0].passed is None


def test_on_error_raise_is_default():
    with pytest.raises(RuntimeError, match="judge unreachable"):
        evaluate(Ensemble([(Fixed(1), 1), (Boom(), 1)]), IMAGES, PROMPTS)


def test_on_error_skip_records_the_failure():
    res = evaluate(Ensemble([(Fixed(0.4), 1), (Boom(), 5)], on_error="skip"), IMAGES, PROMPTS)
    assert res[0].score == pytest.approx(0.4)
    assert "judge unreachable" in res[0].details["critics"]["boom"]["error"]


def test_all_members_failing_raises_even_when_skipping():
    with pytest.raises(EnsembleError, match="image 0: every critic.*judge unreachable") as info:
        evaluate(Ensemble([(Boom(), 1)], on_error="skip"), IMAGES, PROMPTS)
    assert isinstance(info.value, milr.MilrError) and isinstance(info.value, RuntimeError)
    assert not isinstance(info.value, milr.MilrUserError)


@pytest.mark.parametrize(
    ("mode", "fragment"),
    [("nan", "nan"), ("range", "1.5"), ("short", "1 results for a batch of 2"), ("json", "JSON")],
)
def test_contract_violations_name_the_critic_and_value(mode, fragment):
    with pytest.raises(ContractViolation, match="'bad'") as info:
        evaluate(Bad(mode), IMAGES, PROMPTS)
    assert fragment in str(info.value)
    # an ensemble never averages a broken member away, even when skipping failures
    with pytest.raises(ContractViolation):
        evaluate(Ensemble([(Fixed(1), 1), (Bad(mode), 1)], on_error="skip"), IMAGES, PROMPTS)


@pytest.mark.parametrize("members", [[], [(Fixed(1), -1.0)], [(Fixed(1), 0.0)]])
def test_bad_ensembles_are_user_errors(members):
    with pytest.raises(milr.MilrUserError):
        Ensemble(members)


def test_bad_policy():
    with pytest.raises(milr.MilrUserError, match="on_error='ignore'"):
        Ensemble([(Fixed(1), 1)], on_error="ignore")


def test_bind_reaches_members():
    seen = []

    class Binder(Fixed):
        def bind(self, *, generator=None):
            seen.append(generator)

    Ensemble([(Binder(1), 1), (Ensemble([(Binder(1), 1)]), 1)]).bind(generator="G")
    assert seen == ["G", "G"]


def test_ensemble_is_a_critic_with_single_image_helper():
    ens = milr.build_critic(["color:target=red,weight=2", "colorfulness"])
    red = Image.new("RGB", (16, 16), (220, 30, 30))
    res = ens.score(red, "a red square")
    assert res.details["critics"]["color"]["score"] == 1.0
    assert 0 < res.score <= 1

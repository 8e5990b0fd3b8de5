"""Weighted ensembles: aggregation, verdicts, failure policies, contract enforcement."""

from __future__ import annotations

import re
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


# -- conditional weights (weights_by_tag) and routes ------------------------------------------


class Tagged(Critic):
    """Scores 1 on images whose metadata 'tag' or 'category' is in `good`, else 0."""

    name: ClassVar[str] = "tagged"
    description: ClassVar[str] = "test critic"

    def __init__(self, value: float, passed: bool | None = None):
        self.value, self.passed, self.calls = value, passed, []

    def score_batch(self, images, prompts, metadata):
        self.calls.append([m.get("category") or m.get("tag") for m in metadata])
        return [CriticResult(self.value, self.passed, {}) for _ in images]


MIXED_TAGS = {"colors": 0.5, "color_attr": 0.5}


def _mixed():
    det, vqa = Tagged(1.0), Tagged(0.2)
    ens = Ensemble(
        [
            milr.Member(det, 0.75, MIXED_TAGS, label="gdino"),
            milr.Member(vqa, 0.25, MIXED_TAGS, label="git"),
        ]
    )
    return ens


@pytest.mark.parametrize(
    ("meta", "w_det", "rule"),
    [
        ({"tag": "colors"}, 0.5, "tag:colors"),
        ({"tag": "color_attr"}, 0.5, "tag:color_attr"),
        ({"tag": "counting"}, 0.75, "default"),
        ({}, 0.75, "default"),
        ({"category": "colors"}, 0.5, "tag:colors"),  # T2I-CompBench / WISE use 'category'
        ({"wise_category": "colors"}, 0.5, "tag:colors"),
        ({"tag": "position", "category": "colors"}, 0.75, "default"),  # 'tag' is read first
        ({"tag": 3}, 0.75, "default"),  # not a string: no tag
    ],
)
def test_weights_by_tag_replace_the_weight(meta, w_det, rule):
    res = evaluate(_mixed(), IMAGES[:1], PROMPTS[:1], [meta])[0]
    w_vqa = 1 - w_det
    assert res.score == pytest.approx((w_det * 1.0 + w_vqa * 0.2) / (w_det + w_vqa))
    critics = res.details["critics"]
    assert critics["gdino"]["weight"] == w_det and critics["git"]["weight"] == w_vqa
    assert critics["gdino"]["weight_rule"] == rule


def test_mixed_batch_uses_each_images_weight_and_calls_each_member_once():
    ens = _mixed()
    res = evaluate(ens, IMAGES, PROMPTS, [{"tag": "colors"}, {"tag": "two_object"}])
    assert res[0].score == pytest.approx(0.6) and res[1].score == pytest.approx(0.8)
    assert [len(c.calls) for _, c, _ in ens.members] == [1, 1]


def test_plain_ensemble_breakdown_and_config_unchanged():
    """No weights_by_tag: no weight_rule, no new config key (old score caches stay valid)."""
    ens = Ensemble([(Fixed(1.0), 2.0)])
    res = evaluate(ens, IMAGES[:1], PROMPTS[:1], [{"tag": "colors"}])[0]
    assert "weight_rule" not in res.details["critics"]["fixed"]
    assert ens.config()["members"][0].keys() == {"label", "name", "weight", "config"}
    assert _mixed().config()["members"][0]["weights_by_tag"] == {"color_attr": 0.5, "colors": 0.5}


def test_a_tag_that_gives_every_member_weight_zero_is_a_user_error():
    ens = Ensemble([milr.Member(Fixed(1.0), 0.0, {"colors": 1.0})])
    assert evaluate(ens, IMAGES[:1], PROMPTS[:1], [{"tag": "colors"}])[0].score == 1.0
    with pytest.raises(milr.MilrUserError, match="tag 'counting' \\(metadata 'tag'\\).*weight 0"):
        evaluate(ens, IMAGES[:1], PROMPTS[:1], [{"tag": "counting"}])


@pytest.mark.parametrize(
    ("member", "fragment"),
    [
        (milr.Member(Fixed(1), 1, {"colors": -1}), "weights_by_tag.colors .* >= 0"),
        (milr.Member(Fixed(1), 1, {"colors": True}), "is not a number"),
        (milr.Member(Fixed(1), 1, {"colors": float("nan")}), ">= 0"),
        (milr.Member(Fixed(1), 1, ["colors"]), "must be a table"),  # type: ignore[arg-type]
        (milr.Member(Fixed(1), 0, {"colors": 0}), "weights sum to 0"),
        (milr.Member(Fixed(1), 1, when=("color",)), "when= belongs to route members"),
    ],
)
def test_bad_conditional_weights(member, fragment):
    with pytest.raises(milr.MilrUserError, match=fragment):
        Ensemble([member])


def _route(**kw):
    vqa, det, clip = Tagged(0.9, True), Tagged(0.5, False), Tagged(0.3)
    members = [
        milr.Member(vqa, when=("color", "complex"), label="vqa"),
        milr.Member(det, when=("spatial", "complex"), label="det"),
        milr.Member(clip, 2.0, when=("non_spatial", "complex"), label="clip"),
    ]
    return milr.Route(members, **kw), (vqa, det, clip)


def test_route_sends_each_image_to_its_members_only():
    route, (vqa, det, clip) = _route(field="category")
    cats = ["color", "spatial", "non_spatial", "complex"]
    images = IMAGES + IMAGES
    res = evaluate(route, images, ["p"] * 4, [{"category": c} for c in cats])
    assert [r.score for r in res[:3]] == pytest.approx([0.9, 0.5, 0.3])
    # complex: weighted mean of the three (clip weighs 2)
    assert res[3].score == pytest.approx((0.9 + 0.5 + 2 * 0.3) / 4)
    assert [r.passed for r in res] == [True, False, None, False]
    assert res[3].details["route"] == {
        "field": "category",
        "value": "complex",
        "critics": ["vqa", "det", "clip"],
    }
    assert set(res[0].details["critics"]) == {"vqa"}
    # each member ran once, on its images only
    assert vqa.calls == [["color", "complex"]] and det.calls == [["spatial", "complex"]]
    assert clip.calls == [["non_spatial", "complex"]]


def test_route_unrouted_value_is_an_error_naming_it_or_goes_to_default():
    route, _ = _route(field="category")
    with pytest.raises(milr.MilrUserError, match="category='3d_spatial' is routed to no critic"):
        evaluate(route, IMAGES[:1], ["p"], [{"category": "3d_spatial"}])
    with pytest.raises(milr.MilrUserError, match="no string 'category'"):
        evaluate(route, IMAGES[:1], ["p"], [{"tag": "colors"}])
    routed, _ = _route(field="category", default="clip")
    res = evaluate(routed, IMAGES, ["p"] * 2, [{"category": "3d_spatial"}, {}])
    assert [r.details["route"]["critics"] for r in res] == [["clip"], ["clip"]]
    assert res[1].details["route"]["value"] is None


def test_route_default_field_is_the_tag():
    route, _ = _route()
    res = evaluate(route, IMAGES[:1], ["p"], [{"tag": "spatial", "category": "color"}])[0]
    assert res.details["route"]["field"] == "tag" and res.score == 0.5


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"default": "nope"}, "default='nope' is not a member label"),
        ({"field": ""}, "field=''"),
        ({"on_error": "ignore"}, "on_error='ignore'"),
    ],
)
def test_bad_routes(kwargs, fragment):
    with pytest.raises(milr.MilrUserError, match=fragment):
        _route(**kwargs)


def test_route_member_without_when_must_be_the_default():
    with pytest.raises(milr.MilrUserError, match="'fixed' has no when"):
        milr.Route([milr.Member(Fixed(1))])
    assert milr.Route([milr.Member(Fixed(1))], default="fixed").routes == {}


def test_route_skip_policy_and_config():
    route = milr.Route(
        [milr.Member(Boom(), when=("a",)), milr.Member(Fixed(0.4), when=("a", "b"))],
        field="k",
        on_error="skip",
    )
    res = evaluate(route, IMAGES, ["p"] * 2, [{"k": "a"}, {"k": "b"}])
    assert res[0].score == pytest.approx(0.4) and "judge unreachable" in str(res[0].details)
    with pytest.raises(EnsembleError):
        evaluate(
            milr.Route([milr.Member(Boom(), when=("a",))], field="k", on_error="skip"),
            IMAGES[:1],
            ["p"],
            [{"k": "a"}],
        )
    cfg = route.config()
    assert cfg["field"] == "k" and [m["when"] for m in cfg["members"]] == [["a"], ["a", "b"]]


def test_score_cache_keeps_per_tag_results_apart(tmp_path):
    """Same image and prompt, different tags: different weights, so different cache entries."""
    from milr.bench.cache import ScoreCache, cached_evaluate

    cache = ScoreCache(tmp_path / "cache.sqlite")
    try:
        first = cached_evaluate(_mixed(), IMAGES[:1], ["p"], [{"tag": "colors"}], cache)
        second = cached_evaluate(_mixed(), IMAGES[:1], ["p"], [{"tag": "counting"}], cache)
        again = cached_evaluate(_mixed(), IMAGES[:1], ["p"], [{"tag": "colors"}], cache)
        other = Ensemble([milr.Member(Tagged(1.0), 0.75, {"colors": 0.9}), (Tagged(0.2), 0.25)])
        changed = cached_evaluate(other, IMAGES[:1], ["p"], [{"tag": "colors"}], cache)
    finally:
        cache.close()
    assert first[0].score == pytest.approx(0.6) and second[0].score == pytest.approx(0.8)
    assert again[0].score == pytest.approx(0.6) and cache.hits == 1
    assert changed[0].score == pytest.approx((0.9 + 0.25 * 0.2) / 1.15)


# -- external-service failures keep what was scored ----------------------------------------------


IMAGES3, PROMPTS3 = [*IMAGES, IMAGES[0]], ["a", "b", "c"]


class PartlyDown(Critic):
    """Scores every image 0.5 except those at `down`, which fail at an "external service";
    `kept` replaces the results it hands on with the error (to break the contract)."""

    name: ClassVar[str] = "partly-down"
    description: ClassVar[str] = "fails at a service for some images"

    def __init__(self, down, kept=None):
        self.down, self.kept = set(down), kept

    def score_batch(self, images, prompts, metadata):
        results = [None if i in self.down else CriticResult(0.5) for i in range(len(images))]
        raise milr.ExternalServiceError(
            "svc", [(i, "down") for i in sorted(self.down)], self.kept or results
        )


def test_evaluate_checks_the_kept_results_against_the_contract():
    with pytest.raises(milr.ExternalServiceError) as info:
        evaluate(PartlyDown([1]), IMAGES3, PROMPTS3)
    assert [r and r.score for r in info.value.results] == [0.5, None, 0.5]
    bad = [
        ([CriticResult(0.5), None], "keeping 2 results for a batch of 3"),
        ([CriticResult(0.5), CriticResult(0.5), CriticResult(0.5)], "failed images [1]"),
        ([CriticResult(float("nan")), None, None], "scores must lie in [0, 1]"),
    ]
    for kept, fragment in bad:
        with pytest.raises(ContractViolation, match=re.escape(fragment)):
            evaluate(PartlyDown([1], kept), IMAGES3, PROMPTS3)


def test_external_failure_survives_pickling_with_its_results():
    import pickle

    exc = milr.ExternalServiceError("svc", [(1, "down")], [CriticResult(0.5), None])
    back = pickle.loads(pickle.dumps(exc))
    assert (back.service, back.failures, back.kept()) == ("svc", [(1, "down")], exc.kept())


def test_route_fails_only_the_images_its_member_could_not_score():
    route = milr.Route(
        [
            milr.Member(PartlyDown([0]), when=("a",), label="down"),
            milr.Member(Fixed(1.0), when=("b",), label="up"),
        ]
    )
    meta = [{"tag": "a"}, {"tag": "a"}, {"tag": "b"}]
    with pytest.raises(milr.ExternalServiceError) as info:
        evaluate(route, IMAGES3, PROMPTS3, meta)
    exc = info.value
    assert exc.service == "svc" and exc.failures == [(0, "down")]
    assert [r and r.score for r in exc.results] == [None, 0.5, 1.0]


def test_two_members_failing_name_both_services_per_image():
    ens = Ensemble(
        [
            milr.Member(PartlyDown([0]), label="a"),
            milr.Member(PartlyDown([0, 2]), label="b"),
            milr.Member(Fixed(1.0), label="up"),
        ]
    )
    with pytest.raises(milr.ExternalServiceError) as info:
        evaluate(ens, IMAGES3, PROMPTS3)
    exc = info.value
    assert exc.service == "ensemble (a, b)"
    assert exc.failures == [(0, "svc: down; svc: down"), (2, "svc: down")]
    assert [r and r.score for r in exc.results] == [None, (0.5 + 0.5 + 1.0) / 3, None]

"""The registered `route` critic: the critic contract, its declared parameters, its breakdown."""

from __future__ import annotations

import pytest

from milr import MilrUserError, evaluate, get_registry
from milr.critics.route import RouteCritic
from milr.testing import CriticContract
from milr.testing.contract import sample_batch

MEMBERS = [
    {"name": "color", "target": "red", "when": ["color"], "label": "red"},
    {"name": "sharpness", "when": ["texture", "complex"]},
    {"name": "colorfulness", "when": ["complex"], "weight": 3},
]


class TestRouteContract(CriticContract):
    def make_critic(self):
        return RouteCritic(member=MEMBERS, field="category", default="red")

    def make_batch(self):
        images, prompts, _ = sample_batch()
        cats = ["color", "texture", "complex", "unknown"]
        return images, prompts, [{"category": c} for c in cats]


def test_registered_as_a_builtin():
    entry = get_registry().critic_entry("route")
    assert entry.cls is RouteCritic and entry.builtin


def test_scores_are_the_routed_members():
    critic = RouteCritic(member=MEMBERS, field="category")
    images, prompts, _ = sample_batch()
    meta = [{"category": c} for c in ("color", "texture", "complex", "color")]
    got = evaluate(critic, images, prompts, meta)
    members = {label: m.critic for label, m in critic.route._members}
    red = evaluate(members["red"], images, prompts, meta)
    sharp = evaluate(members["sharpness"], images, prompts, meta)
    vivid = evaluate(members["colorfulness"], images, prompts, meta)
    assert got[0].score == pytest.approx(red[0].score)
    assert got[1].score == pytest.approx(sharp[1].score)
    assert got[2].score == pytest.approx((sharp[2].score + 3 * vivid[2].score) / 4)
    assert got[2].details["critics"]["colorfulness"]["weight"] == 3.0
    assert critic.config()["members"][0]["config"] == members["red"].config()


def test_member_errors_name_the_member():
    with pytest.raises(
        MilrUserError, match=r"critic 'route': member 1 \('color'\): critic 'color'"
    ):
        RouteCritic(member=[{"name": "color", "target": "mauve-ish", "when": ["a"]}])
    with pytest.raises(MilrUserError, match="parameter 'member' is required"):
        RouteCritic()
    with pytest.raises(MilrUserError, match="'member'"):
        RouteCritic(member=[])


@pytest.mark.parametrize(
    ("member", "fragment"),
    [
        ({"when": ["a"]}, "member 1 ('?'): 'name' is required"),
        (
            {"name": "color", "when": ["a"], "weight": True},
            "member 1 ('color'): 'weight' = True is not a number",
        ),
        ({"name": "color", "when": ["a"], "weight": -1}, "'weight' = -1 must be a finite"),
        ({"name": "color", "when": ["a"], "weight": "2"}, "'weight' = '2' is not a number"),
        ({"name": "color", "when": "a"}, "'when'='a': must be a list of values"),
    ],
)
def test_bad_member_tables_name_the_member_and_key(member, fragment):
    with pytest.raises(MilrUserError) as info:
        RouteCritic(member=[member])
    assert fragment in str(info.value) and "\n" not in str(info.value)

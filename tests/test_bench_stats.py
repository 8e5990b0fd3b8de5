"""`milr.bench.stats`: bootstrap intervals and the exact McNemar test against hand-checked cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from milr.bench.record import BenchRecord, SideResult
from milr.bench.stats import (
    attribution,
    bootstrap,
    interval,
    is_oracle,
    mcnemar_exact,
    paired,
    run_statistics,
    side_interval,
)


@pytest.mark.parametrize(
    ("b", "c", "p"),
    [
        (8, 2, 112 / 1024),  # 2 · (C(10,0) + C(10,1) + C(10,2)) / 2^10
        (2, 8, 112 / 1024),
        (5, 5, 1.0),
        (3, 0, 2 / 8),  # 2 · (1/2)^3
        (0, 0, 1.0),
        (10, 0, 2 / 1024),
    ],
)
def test_mcnemar_exact_hand_checked(b, c, p):
    assert mcnemar_exact(b, c) == pytest.approx(p, rel=1e-12)


def test_bootstrap_of_two_prompts_has_the_exact_distribution():
    """Prompts [pass], [fail]: a resample's mean is 0, 1/2 or 1 with probability 1/4, 1/2, 1/4;
    the 95% percentile interval is [0, 1]."""
    reps = bootstrap({"g": [[[1.0]], [[0.0]]]}, resamples=20_000, seed=1)[:, 0]
    assert set(np.unique(reps)) <= {0.0, 0.5, 1.0}
    for value, prob in ((0.0, 0.25), (0.5, 0.5), (1.0, 0.25)):
        assert np.mean(reps == value) == pytest.approx(prob, abs=0.015)
    assert interval(reps) == [0.0, 1.0]


def test_bootstrap_variance_matches_the_binomial_and_nests_seeds():
    # 20 prompts, 6 pass, one seed each: sd of the resampled mean = sqrt(p(1-p)/n)
    prompts = [[[1.0]]] * 6 + [[[0.0]]] * 14
    reps = bootstrap({"g": prompts}, resamples=20_000, seed=2)[:, 0]
    assert reps.mean() == pytest.approx(0.3, abs=0.005)
    assert reps.std() == pytest.approx(math.sqrt(0.3 * 0.7 / 20), rel=0.05)
    # one prompt, four seeds [1, 1, 0, 0]: only the seeds vary, sd = sqrt(0.25 / 4)
    reps = bootstrap({"g": [[[1.0], [1.0], [0.0], [0.0]]]}, resamples=20_000, seed=3)[:, 0]
    assert reps.std() == pytest.approx(math.sqrt(0.25 / 4), rel=0.05)
    # prompts always pass or always fail over their seeds: the seeds add nothing
    a = bootstrap({"g": [[[1.0], [1.0]], [[0.0], [0.0]]]}, resamples=20_000, seed=4)[:, 0]
    assert set(np.unique(a)) <= {0.0, 0.5, 1.0}


def test_bootstrap_keeps_groups_and_weights():
    """Overall = weighted mean of group means; a group whose prompts all agree has no spread."""
    groups = {"a": [[[1.0]]] * 5, "b": [[[0.0]]] * 3}
    reps = bootstrap(groups, {"a": 0.25, "b": 0.75}, resamples=500, seed=5)[:, 0]
    assert np.allclose(reps, 0.25)
    assert np.allclose(bootstrap(groups, None, resamples=500, seed=5)[:, 0], 0.5)


def _rec(pid, group, base, milr, control=None, seed_index=0, optimised=None):
    def side(v):
        return None if v is None else SideResult(score=float(v), passed=bool(v))

    traj = {"steps": 1}
    if optimised is not None:
        traj["selected_optimised"] = optimised
    return BenchRecord(
        prompt_id=pid, seed_index=seed_index, group=group, base=side(base), milr=side(milr),
        control=side(control), trajectory=traj,
    )  # fmt: skip


def test_paired_difference_and_mcnemar_on_records():
    # 10 prompts: MILR passes 7, the control 4; discordant: 4 MILR-only, 1 control-only
    pattern = [(1, 1)] * 3 + [(1, 0)] * 4 + [(0, 1)] * 1 + [(0, 0)] * 2
    recs = [_rec(str(i), "t", 0, m, c) for i, (m, c) in enumerate(pattern)]
    d = paired(recs, "milr", "control", "accuracy")
    assert d["difference"] == pytest.approx(0.3)
    assert (d["only_a"], d["only_b"]) == (4, 1)
    assert d["mcnemar_p"] == pytest.approx(2 * (1 + 5) / 32)  # b=4, c=1: 2·P(X≤1 | 5, 1/2)
    lo, hi = d["ci95"]
    assert lo < 0.3 < hi and hi <= 0.7 and lo >= -0.1
    # each side's own interval is the same bootstrap on one column
    one = side_interval(recs, "milr", "accuracy")
    assert one["value"] == pytest.approx(0.7) and one["images"] == 10


def test_a_record_missing_a_side_is_left_out_of_the_pair():
    recs = [_rec("0", "t", 0, 1, 0), _rec("1", "t", 0, 1, None), _rec("2", "t", 0, 0, 0)]
    assert paired(recs, "milr", "control", "accuracy")["images"] == 2
    assert side_interval(recs, "milr", "accuracy")["images"] == 3


def test_oracle_label_compares_resolved_configurations():
    cfg = {"label": "shapes", "params": {"x": 1}}
    assert is_oracle({"critic_config": cfg, "eval_critic_config": dict(cfg)}) is True
    other = {"label": "shapes", "params": {"x": 2}}
    assert is_oracle({"critic_config": cfg, "eval_critic_config": other}) is False
    assert is_oracle({}) is None


def test_attribution_counts_resample_fixes():
    recs = [
        _rec("0", "t", 0, 1, optimised=False),
        _rec("1", "t", 0, 1, optimised=True),
        _rec("2", "t", 0, 1, optimised=False),
        _rec("3", "t", 1, 1, optimised=True),  # not a fix: the base passed
        _rec("4", "t", 0, 1),  # written before attribution: unknown
    ]
    a = attribution(recs)
    assert a == {"fixes": 4, "resample_fixes": 2, "unknown": 1, "resample_share": 2 / 3}


def test_run_statistics_are_deterministic():
    recs = [_rec(str(i), "ab"[i % 2], i % 3 == 0, i % 2, i % 4 == 0) for i in range(12)]
    settings = {"critic_config": {"a": 1}, "eval_critic_config": {"a": 1}, "control": "resample"}
    one = run_statistics(recs, "accuracy", lambda groups: None, settings)
    two = run_statistics(recs, "accuracy", lambda groups: None, settings)
    assert one == two and one["oracle"] is True and one["control"] == "resample"
    assert set(one["groups"]) == {"a", "b"} and "milr-control" in one["groups"]["a"]


def test_accuracy_by_budget_for_a_control():
    """The control's budget curve comes from its own trajectory; a best-of-N control counts at
    budget b the verdict of the best-scoring of its first b + 1 draws."""
    from milr.bench.report import accuracy_by_budget

    rec = BenchRecord.from_dict(
        {
            "prompt_id": "0",
            "base": {"score": 0.2, "passed": False},
            "milr": {"score": 1.0, "passed": True},
            "control": {"score": 0.9, "passed": True},
            "trajectory": {"steps": 2, "passed": [False, False, True], "scores": [0.2, 0.3, 1.0]},
            "control_trajectory": {
                "steps": 3, "selected": "best",
                "passed": [False, True, False, False], "scores": [0.2, 0.9, 0.5, 0.1],
            },
        }
    )  # fmt: skip
    assert accuracy_by_budget([rec]) == ([0, 1, 2], [0.0, 0.0, 1.0])
    assert accuracy_by_budget([rec], "control") == ([0, 1, 2, 3], [0.0, 1.0, 1.0, 1.0])

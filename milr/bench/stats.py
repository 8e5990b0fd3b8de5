"""Statistics of a bench run: bootstrap intervals, paired differences, McNemar, oracle label.

Every bench summary carries them (``summary.json`` ``statistics``, and a section of
``summary.md``):

- a 95% interval for each side's overall number (accuracy for GenEval / ShapesEval, mean score
  for the score benchmarks), by a nested bootstrap: prompts are resampled with replacement
  within each group (tag / category, so each group keeps its size and the overall keeps its
  aggregation), and each drawn prompt's seeds are resampled with replacement inside it;
  `B_RESAMPLES` resamples from the fixed seed `BOOTSTRAP_SEED` (numpy), percentile interval;
- paired differences (MILR − base, and MILR − control with ``--control``) over the records
  where both images were scored, with the same resampling applied to both sides;
- an exact McNemar test (two-sided binomial test on the discordant pairs,
  ``scipy.stats.binomtest``) for the accuracy benchmarks;
- ``oracle``: True when the reward critic's resolved configuration equals the evaluation
  critic's, i.e. the run was scored by the critic it optimised (its numbers measure reaching
  the critic's verdict, not agreement with an independent judge).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from milr.bench.record import CONTROL, BenchRecord
from milr.bench.records import canonical_json

#: Bootstrap resamples and the seed of their generator (fixed: a summary is reproducible).
B_RESAMPLES = 10_000
BOOTSTRAP_SEED = 20_250_926
LEVEL = 0.95
_CHUNK = 1_000  # resamples drawn at once (bounds memory for large suites)


def is_oracle(settings: dict[str, Any] | None) -> bool | None:
    """Whether the reward critic's resolved configuration equals the evaluation critic's
    (``run.json`` settings ``critic_config`` / ``eval_critic_config``); None when unknown."""
    if not settings or "critic_config" not in settings or "eval_critic_config" not in settings:
        return None
    return canonical_json(settings["critic_config"]) == canonical_json(
        settings["eval_critic_config"]
    )


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for `b` pairs where only the first side passed and `c`
    where only the second did: the binomial test of ``b`` successes in ``b + c`` trials at 0.5
    (1.0 when there are no discordant pairs). E.g. ``b=8, c=2``: 112/1024 = 0.109375."""
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be >= 0, got b={b}, c={c}")
    if b + c == 0:
        return 1.0
    from scipy.stats import binomtest

    return float(binomtest(b, b + c, 0.5, alternative="two-sided").pvalue)


def bootstrap(
    groups: Mapping[str, Sequence[Sequence[Sequence[float]]]],
    weights: dict[str, float] | None = None,
    *,
    resamples: int = B_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> np.ndarray:
    """Nested bootstrap replicates of a grouped mean: ``[resamples, S]`` for S statistics.

    ``groups[g]`` lists the prompts of group `g`; each prompt lists its seeds; each seed holds
    S values (e.g. MILR's and the control's verdict as 0/1). A replicate draws each group's
    prompts with replacement, then each drawn prompt's seeds with replacement, takes the mean
    per group over the drawn images, and combines the groups with `weights` (None: equal), as
    the summary's overall does. Groups without prompts are left out.
    """
    names = [g for g, prompts in groups.items() if prompts]
    if not names:
        raise ValueError("no prompts to bootstrap")
    w = np.array([1.0 if weights is None else float(weights.get(g, 0.0)) for g in names])
    if w.sum() <= 0:
        w = np.ones(len(names))
    w = w / w.sum()
    rng = np.random.default_rng(seed)
    n_stats = len(groups[names[0]][0][0])
    out = np.zeros((resamples, n_stats))
    packed = []
    for g in names:
        prompts = groups[g]
        k_max = max(len(p) for p in prompts)
        vals = np.zeros((len(prompts), k_max, n_stats))
        counts = np.array([len(p) for p in prompts])
        for i, p in enumerate(prompts):
            vals[i, : len(p)] = np.asarray(p, dtype=float)
        packed.append((vals, counts, k_max))
    for start in range(0, resamples, _CHUNK):
        b = min(_CHUNK, resamples - start)
        total = np.zeros((b, n_stats))
        for (vals, counts, k_max), wg in zip(packed, w):
            n = len(counts)
            pick = rng.integers(0, n, size=(b, n))  # prompts, with replacement
            k = counts[pick]  # [b, n] seeds of each drawn prompt
            seeds = (rng.random((b, n, k_max)) * k[..., None]).astype(int)  # within its seeds
            mask = np.arange(k_max)[None, None, :] < k[..., None]
            drawn = vals[pick[..., None], seeds]  # [b, n, k_max, S]
            means = (drawn * mask[..., None]).sum((1, 2)) / mask.sum((1, 2))[:, None]
            total += wg * means
        out[start : start + b] = total
    return out


def interval(replicates: np.ndarray, level: float = LEVEL) -> list[float]:
    """The percentile interval ``[lo, hi]`` of bootstrap replicates (1-D)."""
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(replicates, [alpha, 1.0 - alpha])
    return [float(lo), float(hi)]


def _value(rec: BenchRecord, side: str, metric: str) -> float | None:
    """A side's per-image value: 1/0 for the verdict (accuracy) or the score; None if unusable."""
    s = rec.side(side)
    if s is None or not rec.side_usable(side):
        return None
    if metric == "accuracy":
        return None if s.passed is None else float(bool(s.passed))
    return float(s.score)  # type: ignore[arg-type]  # side_usable: not None


def _grouped(
    records: list[BenchRecord], sides: Sequence[str], metric: str
) -> dict[str, list[list[list[float]]]]:
    """``{group: [prompt: [seed: [value per side]]]}`` over records where every side is usable."""
    by: dict[str, dict[str, list[list[float]]]] = defaultdict(lambda: defaultdict(list))
    for rec in records:
        vals = [_value(rec, s, metric) for s in sides]
        if any(v is None for v in vals):
            continue
        by[rec.group][rec.prompt_id].append(vals)  # type: ignore[arg-type]
    return {g: list(prompts.values()) for g, prompts in by.items()}


def _point(groups: dict[str, list[list[list[float]]]], weights: dict[str, float] | None):
    names = [g for g, p in groups.items() if p]
    w = np.array([1.0 if weights is None else float(weights.get(g, 0.0)) for g in names])
    if w.sum() <= 0:
        w = np.ones(len(names))
    w = w / w.sum()
    means = [np.mean([v for p in groups[g] for v in p], axis=0) for g in names]
    return np.sum([wg * m for wg, m in zip(w, means)], axis=0)


def side_interval(
    records: list[BenchRecord],
    side: str,
    metric: str,
    weights: dict[str, float] | None = None,
) -> dict[str, Any] | None:
    """One side's overall value and its bootstrap interval (None when nothing is usable)."""
    groups = _grouped(records, [side], metric)
    if not groups:
        return None
    reps = bootstrap(groups, weights)[:, 0]
    return {
        "value": float(_point(groups, weights)[0]),
        "ci95": interval(reps),
        "images": sum(len(p) for ps in groups.values() for p in ps),
    }


def paired(
    records: list[BenchRecord],
    a: str,
    b: str,
    metric: str,
    weights: dict[str, float] | None = None,
) -> dict[str, Any] | None:
    """Side `a` − side `b` over the records where both were scored: the difference, its
    bootstrap interval (the same resamples for both sides), and for accuracy the discordant
    counts and the exact McNemar p-value. None when no record has both."""
    groups = _grouped(records, [a, b], metric)
    if not groups:
        return None
    reps = bootstrap(groups, weights)
    point = _point(groups, weights)
    out: dict[str, Any] = {
        "a": a,
        "b": b,
        "difference": float(point[0] - point[1]),
        "ci95": interval(reps[:, 0] - reps[:, 1]),
        "images": sum(len(p) for ps in groups.values() for p in ps),
    }
    if metric == "accuracy":
        pairs = [v for ps in groups.values() for p in ps for v in p]
        only_a = sum(1 for x, y in pairs if x > y)
        only_b = sum(1 for x, y in pairs if y > x)
        out.update(
            only_a=only_a,
            only_b=only_b,
            mcnemar_p=mcnemar_exact(only_a, only_b),
        )
    return out


def attribution(records: list[BenchRecord]) -> dict[str, Any]:
    """MILR's fixes (base fails, MILR passes) and how many of them carry no optimised change
    (the returned image's text and image prefixes are what the unoptimised latents give under
    the same draws: a "resample fix"). Records written before attribution existed count as
    unknown."""
    fixes = resample = unknown = 0
    for rec in records:
        if rec.verdict("base") is False and rec.verdict("milr") is True:
            fixes += 1
            flag = rec.traj.get("selected_optimised")
            if flag is None:
                unknown += 1
            elif not flag:
                resample += 1
    known = fixes - unknown
    return {
        "fixes": fixes,
        "resample_fixes": resample,
        "unknown": unknown,
        "resample_share": (resample / known) if known else None,
    }


def run_statistics(
    records: list[BenchRecord],
    metric: str,
    weights_for: Callable[[list[str]], dict[str, float] | None],
    settings: dict[str, Any] | None,
) -> dict[str, Any]:
    """The ``statistics`` block of a summary (see the module docstring).

    `weights_for` maps the run's groups to the overall's weights (None: equal weights).
    """
    weights = weights_for(list(dict.fromkeys(r.group for r in records)))
    has_control = any(r.control is not None for r in records)
    sides = ["base", "milr"] + ([CONTROL] if has_control else [])
    out: dict[str, Any] = {
        "level": LEVEL,
        "method": (
            f"nested bootstrap: prompts resampled within each group, seeds within each prompt; "
            f"{B_RESAMPLES} resamples, numpy seed {BOOTSTRAP_SEED}, percentile interval; "
            "paired differences over records with both images scored; exact McNemar "
            "(binomial test on discordant pairs, scipy)"
        ),
        "oracle": is_oracle(settings),
        "control": (settings or {}).get("control") if has_control else None,
        "sides": {s: side_interval(records, s, metric, weights) for s in sides},
        "groups": {
            g: {s: side_interval([r for r in records if r.group == g], s, metric) for s in sides}
            for g in dict.fromkeys(r.group for r in records)  # the records' (suite) order
        },
        "paired": {"milr-base": paired(records, "milr", "base", metric, weights)},
        "attribution": attribution(records),
    }
    if has_control:
        steps = [
            r.control_traj["steps"] for r in records if r.control_traj.get("steps") is not None
        ]
        calls = [r.control_traj.get("critic_calls") or 0 for r in records if r.control_traj]
        out["control_optimizer"] = {
            "mean_steps": float(np.mean(steps)) if steps else None,
            "total_critic_calls": int(sum(calls)),
        }
    if has_control:
        out["paired"]["milr-control"] = paired(records, "milr", CONTROL, metric, weights)
        out["paired"]["control-base"] = paired(records, CONTROL, "base", metric, weights)
        for g, entry in out["groups"].items():
            mine = [r for r in records if r.group == g]
            entry["milr-control"] = paired(mine, "milr", CONTROL, metric)
    return out


def _ci(x: dict[str, Any] | None, key: str = "value") -> str:
    if not x:
        return "–"
    lo, hi = x["ci95"]
    sign = "+" if key == "difference" else ""
    return f"{x[key]:{sign}.3f} [{lo:{sign}.3f}, {hi:{sign}.3f}]"


def statistics_markdown(stats: dict[str, Any], metric: str) -> list[str]:
    """The summary.md lines of the statistics block."""
    names = {"base": "base", "milr": "MILR", CONTROL: f"control ({stats.get('control')})"}
    oracle = stats.get("oracle")
    lines = ["", "## Statistics", ""]
    if oracle:
        lines += [
            "**Oracle run**: the reward critic's resolved configuration equals the evaluation "
            "critic's, so these numbers measure reaching the critic's own verdict, not "
            "agreement with an independent judge.",
            "",
        ]
    elif oracle is False:
        lines += ["Not an oracle run: the evaluation critic differs from the reward critic.", ""]
    sides = list(stats["sides"])
    control = CONTROL in sides
    head = " | ".join(f"{names[s]}, 95% CI" for s in sides)
    lines += [
        f"{metric.capitalize()} with 95% intervals:",
        "",
        f"| Group | {head} |" + (" MILR − control, 95% CI |" if control else ""),
        "|---" + "|---:" * (len(sides) + int(control)) + "|",
    ]
    for g, entry in stats["groups"].items():
        cells = [_ci(entry.get(s)) for s in sides]
        if control:
            cells.append(_ci(entry.get("milr-control"), "difference"))
        lines.append(f"| {g} | " + " | ".join(cells) + " |")
    cells = [f"**{_ci(stats['sides'][s])}**" for s in sides]
    if control:
        cells.append(f"**{_ci(stats['paired'].get('milr-control'), 'difference')}**")
    lines.append("| **overall** | " + " | ".join(cells) + " |")
    lines += ["", "| paired difference | Δ, 95% CI | only first passes | only second | McNemar p |"]
    lines.append("|---|---:|---:|---:|---:|")
    for key, x in stats["paired"].items():
        a, b = key.split("-")
        label = f"{names.get(a, a)} − {names.get(b, b)}"
        if x is None:
            lines.append(f"| {label} | – | – | – | – |")
            continue
        p = x.get("mcnemar_p")
        lines.append(
            f"| {label} | {_ci(x, 'difference')} | {x.get('only_a', '–')} | "
            f"{x.get('only_b', '–')} | {'–' if p is None else f'{p:.3g}'} |"
        )
    at = stats["attribution"]
    share = at["resample_share"]
    lines += [
        "",
        f"- MILR fixes (base fails, MILR passes): {at['fixes']}; with no optimised change in "
        f"the passing image (resample fixes): {at['resample_fixes']}"
        + (f" ({100 * share:.0f}%)" if share is not None else "")
        + (f", unknown (older records): {at['unknown']}" if at["unknown"] else ""),
        f"- {stats['method']}.",
    ]
    ctl = stats.get("control_optimizer")
    if ctl:
        steps = ctl.get("mean_steps")
        lines.insert(
            -1,
            f"- control ({stats.get('control')}): mean steps "
            f"{'–' if steps is None else f'{steps:.1f}'}, reward-critic calls "
            f"{ctl.get('total_critic_calls')}",
        )
    return lines
